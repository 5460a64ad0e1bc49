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
    expected = torch.stack([torch.autograd.grad(losses[i], model.shared.weight, retain_graph=True)[0].norm()
                            for i in range(2)])
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
        base = (w_param ** 2).sum()
        # task 0 loss decays fast (factor 0.5 per step), task 1 stays: same gradient norm per unit loss
        losses = torch.stack([base * 0.5 ** step, base * 1.0])
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
