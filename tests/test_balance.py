from __future__ import annotations

import pytest
import torch
from torch import nn

from echotune.balance import FixedBalancer, GradNormBalancer, UncertaintyBalancer, create_balancer


class TwoTaskRegression(nn.Module):
    """A shared linear layer W feeding two linear heads: the paper's toy setting."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(8, 16)
        self.heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 1)])

    def forward(self, x):
        h = torch.tanh(self.shared(x))
        return [head(h).squeeze(-1) for head in self.heads]


def make_data(scale_second: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y1 = x @ torch.randn(8, generator=g)
    y2 = (x @ torch.randn(8, generator=g)) * scale_second
    return x, y1, y2


def train(balancer, scale_second=100.0, steps=60, clip=None):
    torch.manual_seed(0)
    model = TwoTaskRegression()
    params = list(model.parameters()) + [p for n, p in balancer.named_parameters() if n == "log_var"]
    opt = torch.optim.SGD(params, lr=1e-3)
    x, y1, y2 = make_data(scale_second)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        p1, p2 = model(x)
        losses = torch.stack([((p1 - y1) ** 2).mean(), ((p2 - y2) ** 2).mean()])
        balancer.weighted_loss(losses, model.shared.weight).backward()
        balancer.after_backward(model.shared.weight)
        opt.step()
        history.append(balancer.weights())
    return history


def test_gradnorm_invariants_sum_to_T_and_positive():
    history = train(GradNormBalancer(alpha=1.5, lr=0.05))
    for weights in history:
        assert sum(weights.values()) == pytest.approx(2.0, abs=1e-5)
        assert all(w > 0 for w in weights.values())


def test_gradnorm_lowers_the_weight_of_the_task_with_100x_larger_gradients():
    # Task 2's targets are x100, so its gradient norm on W is ~100x larger: GradNorm must shrink w_2
    # and grow w_1 so the weighted gradient norms approach each other (paper, Sec. 3).
    history = train(GradNormBalancer(alpha=0.0, lr=0.05))
    assert history[-1]["view"] < 0.2 < 1.8 < history[-1]["det"]
    assert history[10]["view"] > history[-1]["view"]  # monotone drift, not a single jump


def test_gradnorm_min_weight_bounds_the_task_it_would_starve():
    # The same 100x gradient gap: unbounded, w_2 sinks below 0.2 (above); with a floor of 0.5 it stops there, the
    # weights still sum to T = 2, and the other task takes the rest. min_weight 0 is the paper (same history).
    bounded = train(GradNormBalancer(alpha=0.0, lr=0.05, min_weight=0.5))
    for weights in bounded:
        assert sum(weights.values()) == pytest.approx(2.0, abs=1e-5)
        assert min(weights.values()) >= 0.5 - 1e-6
    assert bounded[-1]["view"] == pytest.approx(0.5, abs=1e-6) and bounded[-1]["det"] == pytest.approx(1.5, abs=1e-6)
    assert train(GradNormBalancer(alpha=0.0, lr=0.05, min_weight=0.0)) == train(GradNormBalancer(alpha=0.0, lr=0.05))
    with pytest.raises(ValueError, match="min_weight"):
        GradNormBalancer(min_weight=1.0)


def test_renormalise_keeps_the_floor_and_the_sum():
    from echotune.balance import renormalise

    w = renormalise(torch.tensor([0.05, 1.2, 2.0]), min_weight=0.3)
    assert float(w.sum()) == pytest.approx(3.0) and float(w.min()) == pytest.approx(0.3)
    assert float(w[2] - 0.3) / float(w[1] - 0.3) == pytest.approx(1.7 / 0.9)  # the parts above the floor keep ratios
    torch.testing.assert_close(renormalise(torch.tensor([0.5, 1.5])), torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(renormalise(torch.tensor([0.1, 0.1]), min_weight=0.5), torch.tensor([1.0, 1.0]))


def test_gradnorm_scaling_is_symmetric():
    # Scale the first task instead: the direction flips.
    torch.manual_seed(0)
    balancer = GradNormBalancer(alpha=0.0, lr=0.05)
    model = TwoTaskRegression()
    x, y1, y2 = make_data(1.0)
    for _ in range(40):
        model.zero_grad()
        p1, p2 = model(x)
        losses = torch.stack([((p1 - 100 * y1) ** 2).mean(), ((p2 - y2) ** 2).mean()])
        balancer.weighted_loss(losses, model.shared.weight).backward()
        balancer.after_backward(model.shared.weight)
    weights = balancer.weights()
    assert weights["det"] < 0.2 < 1.8 < weights["view"]


def test_gradnorm_gradient_norms_match_explicit_autograd():
    torch.manual_seed(0)
    model = TwoTaskRegression()
    x, y1, y2 = make_data(10.0)
    balancer = GradNormBalancer(alpha=1.0)
    with torch.no_grad():
        balancer.w.copy_(torch.tensor([0.7, 1.3]))
    p1, p2 = model(x)
    losses = torch.stack([((p1 - y1) ** 2).mean(), ((p2 - y2) ** 2).mean()])
    expected = torch.stack(
        [torch.autograd.grad(losses[i], model.shared.weight, retain_graph=True)[0].norm() for i in range(2)]
    )
    balancer.weighted_loss(losses, model.shared.weight).backward()
    got = balancer.task_gradient_norms(model.shared.weight)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_gradnorm_alpha_favours_the_slower_task():
    # Equal gradient scales; with alpha > 0 the task whose loss falls more slowly (higher r_i) gets more weight.
    torch.manual_seed(0)
    balancer = GradNormBalancer(alpha=2.0, lr=0.05)
    w_param = nn.Parameter(torch.ones(4))
    for step in range(30):
        balancer.zero_grad()
        w_param.grad = None
        base = (w_param**2).sum()
        # task 0 loss decays fast (factor 0.5 per step), task 1 stays: same gradient norm per unit loss
        losses = torch.stack([base * 0.5**step, base * 1.0])
        balancer.weighted_loss(losses, w_param).backward()
        balancer.after_backward(w_param)
    weights = balancer.weights()
    assert weights["view"] > weights["det"]


def test_gradnorm_state_round_trip_includes_its_optimizer():
    a = GradNormBalancer(alpha=1.5, lr=0.05)
    train(a, steps=5)
    b = GradNormBalancer(alpha=1.5, lr=0.05)
    b.load_state_dict(a.state_dict())
    assert b.weights() == a.weights()
    assert torch.equal(b.initial_losses, a.initial_losses) and bool(b.has_initial)
    assert b.optimizer.state_dict()["state"][0]["step"] == 5


def test_fixed_and_uncertainty():
    fixed = FixedBalancer((2.0, 0.5))
    assert fixed.weighted_loss(torch.tensor([1.0, 4.0])).item() == pytest.approx(4.0)
    unc = UncertaintyBalancer()
    losses = torch.tensor([1.0, 4.0], requires_grad=True)
    total = unc.weighted_loss(losses)
    assert total.item() == pytest.approx(5.0)  # s = 0: exp(0) * L + 0
    total.backward()
    assert unc.log_var.grad.tolist() == pytest.approx([0.0, -3.0])  # d/ds (e^-s L + s) = 1 - L
    history = train(UncertaintyBalancer(), scale_second=10.0, steps=50)
    assert history[-1]["view"] < history[-1]["det"]  # the noisier (larger-loss) task is down-weighted


def test_errors():
    with pytest.raises(ValueError, match="valid: fixed, gradnorm, uncertainty"):
        create_balancer("nope")
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        GradNormBalancer(alpha=-1)
    with pytest.raises(ValueError, match="dual model has none"):
        GradNormBalancer().weighted_loss(torch.ones(2), None)
    with pytest.raises(RuntimeError, match="call weighted_loss"):
        GradNormBalancer().after_backward(nn.Parameter(torch.ones(2)))


# ---------------------------------------------------------------------------------------------------------------
# Mixed precision. bf16 and fp16 keep 8 and 11 significant bits: unit roundoff u = 2^-8 = 3.9e-3 (bf16) and
# u = 2^-11 = 4.9e-4 (fp16), the largest relative error of one rounding.
# ---------------------------------------------------------------------------------------------------------------


def train_autocast(dtype, low_precision, steps=40, decay=0.9):
    """The toy under CPU autocast `dtype` (None: fp32). Task 0's loss is multiplied by decay^step: it trains much
    faster than task 1, so with alpha = 1.5 GradNorm holds w_0 G_0 well below w_1 G_1 -- the regime where deriving
    G_0 from W.grad - w_1 g_1 cancels. Returns (steps, 2) weights and (steps, 2) task gradient norms."""
    torch.manual_seed(0)
    model = TwoTaskRegression()
    balancer = GradNormBalancer(alpha=1.5, lr=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y1, y2 = make_data(10.0)
    weights, norms = [], []
    for step in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            p1, p2 = model(x)
        losses = torch.stack([decay**step * ((p1.float() - y1) ** 2).mean(), ((p2.float() - y2) ** 2).mean()])
        balancer.weighted_loss(losses, model.shared.weight, low_precision=low_precision).backward()
        norms.append(balancer.task_gradient_norms(model.shared.weight))
        balancer.after_backward(model.shared.weight)
        opt.step()
        weights.append(balancer.w.detach().clone())
    return torch.stack(weights), torch.stack(norms)


def test_gradnorm_under_bf16_autocast_matches_fp32():
    steps, lr = 60, 0.05
    w32, g32 = train_autocast(None, low_precision=False, steps=steps)
    w16, g16 = train_autocast(torch.bfloat16, low_precision=True, steps=steps)
    # G_i: the bf16 gradient passes ~6 roundings (shared/head matmuls and tanh, forward and backward), each
    # <= u; independent errors add to ~sqrt(6) u = 1e-2 (6u = 2.3e-2 if all aligned), and the norm over W's
    # elements averages them further: measured max 1.7e-3 = 0.45u. rtol 4u = 1.6e-2 (9x the measurement).
    g_rtol = 4 * 2**-8
    assert ((g16 - g32).abs() / g32).max() < g_rtol
    # w: Adam's step on w is ~lr * sign(...) here (the signs do not flip in this regime), so a relative error
    # delta in G moves each step by <= ~lr * delta; over `steps` steps with delta <= u (measured 0.45u):
    # steps * lr * u = 1.2e-2. Measured max |dw| 3e-5.
    w_atol = steps * lr * 2**-8
    assert (w16 - w32).abs().max() < w_atol
    # The same run deriving G_0 from W.grad (the float32 shortcut) fails both: its error is
    # u * w_1 G_1 / (w_0 G_0), and G_0 comes out tens of times too large (measured: G 62x off, |dw| 5e-2).
    w_bad, g_bad = train_autocast(torch.bfloat16, low_precision=False, steps=steps)
    assert ((g_bad - g32).abs() / g32).max() > 1.0
    assert (w_bad - w32).abs().max() > w_atol


def test_gradnorm_fp16_underflow_needs_the_grad_scale():
    # A task loss 1e-6 times smaller (e.g. a small loss gain over a batch mean): its gradients on the head output
    # are ~1e-8, below fp16's smallest subnormal 2^-24 = 6e-8, so an unscaled fp16 backward flushes them to 0.
    torch.manual_seed(0)
    model = TwoTaskRegression()
    x, y1, y2 = make_data(1.0)

    def norms(dtype, **kw):
        model.zero_grad()
        balancer = GradNormBalancer()
        with torch.autocast("cpu", dtype=torch.float16, enabled=dtype is not None):
            p1, p2 = model(x)
        losses = torch.stack([((p1.float() - y1) ** 2).mean(), 1e-6 * ((p2.float() - y2) ** 2).mean()])
        scale = kw.get("grad_scale") or 1.0
        (balancer.weighted_loss(losses, model.shared.weight, **kw) * scale).backward()  # as GradScaler does
        model.shared.weight.grad /= scale
        return balancer.task_gradient_norms(model.shared.weight)

    exact = norms(None)
    assert exact[1] > 1e-6  # fp32: ~2.5e-6
    assert norms(torch.float16)[1] == 0  # the old path: unscaled autograd.grad on the fp16 graph
    assert norms(torch.float16, low_precision=True)[1] == 0  # direct, but unscaled: still flushed
    # Scaled by 2^16 (GradScaler's initial scale), unscaled in fp32: fp16 rounding only, ~6 roundings of
    # u = 2^-11: <= 6u = 2.9e-3; measured 3.5e-5. rtol 4u = 2e-3 (as for bf16 above).
    torch.testing.assert_close(norms(torch.float16, grad_scale=2.0**16), exact, rtol=4 * 2**-11, atol=0)


class TinyEchoModel(nn.Module):
    """The engine's model contract in miniature: forward(images, targets) -> named losses, a shared layer W.

    The view loss carries a gain of 1e-7, so under unscaled fp16 its gradient on W underflows to 0 (at 1e-6 it
    lands in fp16's subnormals: G_view came out 1.1-2.6x too large)."""

    def __init__(self, n_views=3, view_gain=1e-7, input_scale=1.0):
        super().__init__()
        self.n_views, self.view_gain, self.input_scale = n_views, view_gain, input_scale
        self.stem = nn.Linear(3 * 4 * 4, 16)
        with torch.no_grad():  # inputs input_scale x larger, same activations: the stem's weight gradient grows
            self.stem.weight.div_(input_scale)
        self.shared = nn.Linear(16, 16)
        self.det, self.view = nn.Linear(16, 1), nn.Linear(16, n_views)

    @property
    def gradnorm_shared_weight(self):
        return self.shared.weight

    def forward(self, images, targets):
        h = torch.tanh(self.shared(torch.tanh(self.stem(images.flatten(1)))))
        box = ((self.det(h).squeeze(-1).float() - images.float().mean((1, 2, 3)) / self.input_scale) ** 2).mean()
        view = -(targets["views"] * torch.log_softmax(self.view(h).float(), -1)).sum(-1).mean()
        zero = box * 0
        return {"loss/box": box, "loss/obj": zero, "loss/cls_det": zero, "loss/view": self.view_gain * view}


class RecordingGradNorm(GradNormBalancer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.norms, self.skipped = [], []

        self.history = []

    def after_backward(self, shared_weight, skip_update=False):
        self.norms.append(self.task_gradient_norms(shared_weight))
        self.skipped.append(skip_update)
        super().after_backward(shared_weight, skip_update)
        self.history.append(self.w.detach().clone())


def tiny_batches(device, n=4, batch=8, image_scale=1.0):
    g = torch.Generator().manual_seed(1)
    return [
        {
            "images": torch.rand(batch, 3, 4, 4, generator=g) * image_scale,
            "boxes": [torch.zeros(0, 4)] * batch,
            "classes": [torch.zeros(0, dtype=torch.long)] * batch,
            "views": torch.randint(0, 3, (batch,), generator=g),
            "indices": list(range(batch)),
        }
        for _ in range(n)
    ]


def run_engine_epoch(device, scaler=None, autocast_dtype=None, image_scale=1.0, **model_kw):
    model_kw.setdefault("input_scale", image_scale)
    from echotune.engine.steps import StepSettings, train_one_epoch

    torch.manual_seed(0)
    model = TinyEchoModel(**model_kw).to(device)
    balancer = RecordingGradNorm(alpha=1.5, lr=0.05).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train_one_epoch(
        model,
        balancer,
        tiny_batches(device, image_scale=image_scale),
        optimizer,
        StepSettings(lr_at_step=lambda step: 0.01),
        0,
        torch.device(device),
        scaler=scaler,
        autocast_dtype=autocast_dtype,
    )
    return model, balancer


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_train_one_epoch_fp16_gradscaler_gradnorm_matches_fp32(device):
    # train_one_epoch with float16 autocast + GradScaler (CUDA AMP; CPU float16 autocast reproduces it) must
    # measure GradNorm's G_i like the fp32 run. Tolerance 4u = 2e-3 with fp16's u = 2^-11 (as for bf16 above;
    # the 4 steps' fp16-rounded trajectory adds little): measured 2.2e-4; w within 1e-4 (measured 1.2e-7).
    _, fp32 = run_engine_epoch(device)
    _, amp = run_engine_epoch(device, scaler=torch.amp.GradScaler(device))
    assert len(amp.norms) == 4 and not any(amp.skipped)
    torch.testing.assert_close(torch.stack(amp.norms), torch.stack(fp32.norms), rtol=4 * 2**-11, atol=0)
    torch.testing.assert_close(amp.w.detach(), fp32.w.detach(), rtol=1e-3, atol=1e-4)
    # Control: the same fp16 autocast without the scale -- the view's G_i underflows to 0.
    _, unscaled = run_engine_epoch(device, autocast_dtype=torch.float16)
    assert all(float(n[1]) == 0 for n in unscaled.norms)
    assert all(float(n[1]) > 1e-8 for n in fp32.norms)  # fp32: 1.4e-8 .. 3.1e-8


def test_train_one_epoch_bf16_autocast_gradnorm_matches_fp32():
    # bf16 (optional in train_one_epoch, no scaler): rtol 4u = 1.6e-2 as in the toy test; measured 2.6e-3.
    # The view gradient dominates W's 1000x, so G_det derived from W.grad (the float32 shortcut,
    # if train_one_epoch did not flag low precision) would be ~90 % off.
    _, fp32 = run_engine_epoch("cpu", view_gain=1e3)
    _, bf16 = run_engine_epoch("cpu", autocast_dtype=torch.bfloat16, view_gain=1e3)
    torch.testing.assert_close(torch.stack(bf16.norms), torch.stack(fp32.norms), rtol=4 * 2**-8, atol=0)


def test_train_one_epoch_overflow_skips_gradnorm_with_the_model_step():
    # Inputs 30x larger (stem weights 30x smaller, same activations) give the stem a weight gradient of a few
    # units: at the GradScaler's initial scale 2^16 it overflows fp16, while W's (smaller) gradient and G_i stay
    # finite. The scaler skips the model's step and halves its scale until it fits; GradNorm must skip with it.
    scaler = torch.amp.GradScaler("cpu")
    _, balancer = run_engine_epoch("cpu", scaler=scaler, image_scale=30.0, view_gain=1.0)
    assert balancer.skipped[0] and not all(balancer.skipped) and scaler.get_scale() < 2.0**16
    assert all(torch.isfinite(n).all() for n in balancer.norms)  # GradNorm's own check would not have skipped
    before = [torch.ones(2)] + balancer.history[:-1]
    for skipped, w_before, w_after in zip(balancer.skipped, before, balancer.history):
        assert torch.equal(w_before, w_after) == skipped  # w moves exactly on the steps the model moves
    assert balancer.optimizer.state[balancer.w]["step"] == balancer.skipped.count(False)
