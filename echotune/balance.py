"""Task-loss balancing for the multi-task model: fixed weights, GradNorm, or uncertainty weighting.

GradNorm (Chen et al., ICML 2018), exactly as the paper: learnable weights w_i; G_i = ||grad_W (w_i L_i)||_2 on
the last shared layer's weight W; r_i = (L_i(t) / L_i(0)) / mean_j(L_j(t) / L_j(0)); target_i = mean(G) * r_i^alpha
held constant; L_grad = sum_i |G_i - target_i| updates only w (its own optimizer); then w is renormalised so
that sum w_i = T. The model itself is trained on sum_i w_i L_i with w treated as a constant.

Cost: the paper's G_i need one gradient per task on W. In float32 we get the detection gradient for free: after the
normal backward of sum w_i L_i, W.grad = sum_i w_i grad_W L_i, so the first task's gradient is W.grad minus the
others' contributions, and only the cheap tasks (the view head sits right after W) get an extra `autograd.grad`.

Mixed precision (autocast fp16/bf16): that subtraction cancels catastrophically. Its relative error on G_0 is about
u * sum_{i>0} w_i G_i / (w_0 G_0), u = 2^-8 (bf16) or 2^-11 (fp16) unit roundoff: measured on the two-task toy, 100x
gradient ratio at w = (0.2, 1.8), G_0 was 83 % off in bf16 and 3 % in fp16 (float32: 2e-5). So under autocast
(`low_precision=True`, implied by `grad_scale`) every task's gradient is taken directly by `autograd.grad` (one
extra partial backward, from the losses down to W only). With fp16 the backward also needs the GradScaler's
scale: unscaled, gradients below 2^-24 flush to zero in fp16 and G_i comes out 0 (or wrong) while the model's own
backward is protected. The per-task gradients are therefore taken on scale * w_i * L_i -- the magnitude of task
i's share of the model's scaled backward, so they underflow/overflow exactly when the model's own would -- and
divided by that factor in float32. A non-finite result (overflow) skips the update, as the scaler skips the step.

Uncertainty weighting (Kendall et al., CVPR 2018): total = sum_i exp(-s_i) L_i + s_i with learnable s_i trained by
the model's optimizer; the reported weight is exp(-s_i).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from echotune.metrics.score import TASKS

BALANCERS = ("fixed", "gradnorm", "uncertainty")


class FixedBalancer(nn.Module):
    """total = sum_i w_i L_i with constant weights."""

    def __init__(self, weights: Sequence[float] = (1.0, 1.0), tasks: Sequence[str] = TASKS):
        super().__init__()
        if len(weights) != len(tasks) or any(w < 0 for w in weights):
            raise ValueError(f"fixed weights must be {len(tasks)} non-negative numbers for {tasks}, got {weights}")
        self.tasks = tuple(tasks)
        self.register_buffer("w", torch.tensor(list(weights), dtype=torch.float32))

    def weighted_loss(self, losses: torch.Tensor, shared_weight: nn.Parameter | None = None) -> torch.Tensor:
        """losses: (T,) task losses -> scalar total for the model's backward."""
        return (self.w.to(losses.dtype) * losses).sum()

    def after_backward(self, shared_weight: nn.Parameter | None) -> None:
        """Called after the model's backward (grads unscaled); nothing to learn here."""

    def weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.tasks, self.w)}


class UncertaintyBalancer(FixedBalancer):
    """Homoscedastic-uncertainty weighting; log-variances s_i are model parameters (give them to its optimizer)."""

    def __init__(self, tasks: Sequence[str] = TASKS):
        super().__init__((1.0,) * len(tasks), tasks)
        self.log_var = nn.Parameter(torch.zeros(len(tasks)))

    def weighted_loss(self, losses: torch.Tensor, shared_weight: nn.Parameter | None = None) -> torch.Tensor:
        return (torch.exp(-self.log_var) * losses + self.log_var).sum()

    def weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.tasks, torch.exp(-self.log_var.detach()))}


class GradNormBalancer(FixedBalancer):
    """GradNorm with its own Adam optimizer on w; call weighted_loss, the model's backward, then after_backward."""

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, tasks: Sequence[str] = TASKS, min_weight: float = 0.0):
        super().__init__((1.0,) * len(tasks), tasks)
        if alpha < 0:
            raise ValueError(f"GradNorm alpha must be >= 0, got {alpha}")
        if lr <= 0:
            raise ValueError(f"GradNorm lr must be > 0, got {lr}")
        if not 0.0 <= min_weight < 1.0:
            raise ValueError(
                f"GradNorm min_weight must be in [0, 1) (a share of the uniform weight 1), got {min_weight}"
            )
        self.alpha, self.min_weight = float(alpha), float(min_weight)
        self.w = nn.Parameter(torch.ones(len(tasks)))  # replaces the fixed buffer
        self.register_buffer("initial_losses", torch.zeros(len(tasks)))
        self.register_buffer("has_initial", torch.tensor(False))
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self._losses: torch.Tensor | None = None  # (T,) this step's losses, detached
        self._task_grads: list[torch.Tensor] = []  # fp32 grad_W L_i taken before the backward: tasks 1..T-1, or all
        self._direct = False  # True: _task_grads holds every task (mixed precision); False: task 0 from W.grad

    def weighted_loss(
        self,
        losses: torch.Tensor,
        shared_weight: nn.Parameter | None = None,
        grad_scale: float | torch.Tensor | None = None,
        low_precision: bool = False,
    ) -> torch.Tensor:
        """Total for the model's backward; also takes the per-task gradients on W while the graph lives.

        grad_scale: the GradScaler's current scale (`scaler.get_scale()`) when the model's backward is scaled (fp16
        AMP); low_precision: the losses come from an autocast (fp16/bf16) graph. Either one makes every task's
        gradient a direct, fp32-unscaled `autograd.grad` (see the module docstring); neither: the float32 path.
        """
        if shared_weight is None:
            raise ValueError(
                "GradNorm needs the model's last shared layer (the dual model has none: "
                "use --balance fixed or uncertainty)"
            )
        self._losses = losses.detach().float()
        self._direct = bool(low_precision) or grad_scale is not None
        if self._direct:
            scale = torch.as_tensor(
                1.0 if grad_scale is None else grad_scale, dtype=torch.float32, device=losses.device
            )
            w = self.w.detach().to(losses.device)
            self._task_grads = [
                self._scaled_gradient(losses[i], shared_weight, scale * w[i]) for i in range(len(self.tasks))
            ]
        else:
            self._task_grads = [
                torch.autograd.grad(losses[i], shared_weight, retain_graph=True)[0].detach().float()
                for i in range(1, len(self.tasks))
            ]
        if not bool(self.has_initial):
            self.initial_losses.copy_(losses.detach().float().clamp_min(1e-12))
            self.has_initial.fill_(True)
        return (self.w.detach().to(losses.dtype) * losses).sum()

    @staticmethod
    def _scaled_gradient(loss: torch.Tensor, shared_weight: nn.Parameter, factor: torch.Tensor) -> torch.Tensor:
        """grad_W loss in float32, taken on factor * loss (a 0-dim fp32 tensor) and divided by it in float32."""
        grad = torch.autograd.grad(loss.float() * factor, shared_weight, retain_graph=True)[0]
        return grad.detach().float() / factor

    def task_gradient_norms(self, shared_weight: nn.Parameter) -> torch.Tensor:
        """(T,) ||grad_W L_i|| in float32: task 0 from W.grad (after the model's backward) in float32, or, under
        mixed precision, every task from its own `autograd.grad` taken in weighted_loss.

        Must run before the optimizer step and before gradient clipping changes W.grad.
        """
        if self._losses is None or shared_weight.grad is None:
            raise RuntimeError("GradNorm: call weighted_loss(...) and the model's backward before after_backward()")
        if self._direct:
            return torch.stack([g.norm() for g in self._task_grads])
        w = self.w.detach()
        total_grad = shared_weight.grad.detach().float()
        others = self._task_grads
        first = (total_grad - sum(w[i] * g for i, g in zip(range(1, len(self.tasks)), others))) / w[0]
        return torch.stack([first.norm()] + [g.norm() for g in others])

    def after_backward(self, shared_weight: nn.Parameter | None, skip_update: bool = False) -> None:
        """One GradNorm step on w from this step's task gradients (W.grad already unscaled).

        skip_update: the model's optimizer step is skipped (the GradScaler found inf/NaN gradients), so w keeps
        its value too. Non-finite task gradient norms or losses (an overflow in GradNorm's own gradients) skip it
        as well.
        """
        if shared_weight is None:
            raise ValueError(
                "GradNorm needs the model's last shared layer (the dual model has none: "
                "use --balance fixed or uncertainty)"
            )
        grad_norms = self.task_gradient_norms(shared_weight)  # (T,) ||grad_W L_i||
        losses, self._losses, self._task_grads = self._losses, None, []
        if skip_update or not (torch.isfinite(grad_norms).all() and torch.isfinite(losses).all()):
            return  # an overflowed AMP step: the model's step is skipped too
        g = self.w.detach() * grad_norms  # G_i = ||grad_W (w_i L_i)||
        ratios = losses / self.initial_losses
        r = ratios / ratios.mean()  # relative inverse training rate
        target = (g.mean() * r.pow(self.alpha)).detach()  # held constant, as in the paper
        # d/dw_i sum_j |w_j n_j - target_j| = sign(w_i n_i - target_i) * n_i  (n = grad_norms, independent of w)
        self.optimizer.zero_grad(set_to_none=True)
        self.w.grad = torch.sign(g - target) * grad_norms
        self.optimizer.step()
        with torch.no_grad():
            self.w.copy_(renormalise(self.w, self.min_weight))

    def weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.tasks, self.w.detach())}

    def get_extra_state(self) -> dict:
        """Saved inside state_dict(): the weights' own optimizer, so resuming continues it exactly."""
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def renormalise(w: torch.Tensor, min_weight: float = 0.0) -> torch.Tensor:
    """(T,) weights -> (T,) weights summing to T, each >= max(min_weight, 1e-4): the floor first, then the parts
    above it rescaled to share what the floors leave (T - T * floor). min_weight 0 is the paper's renormalisation."""
    n, floor = len(w), max(float(min_weight), 1e-4)
    if min_weight <= 0:  # the paper's step exactly (GradNorm's sign dynamics amplify even 1e-4 differences)
        w = w.clamp(min=floor)
        return w * (n / w.sum())
    above = w.clamp(min=floor) - floor
    spare = n - n * floor
    total = above.sum()
    if total <= 0:  # every weight at the floor: share the rest equally
        return torch.full_like(w, 1.0)
    return floor + above * (spare / total)


def create_balancer(
    kind: str, alpha: float = 1.5, lr: float = 0.025, weights: Sequence[float] = (1.0, 1.0), min_weight: float = 0.0
) -> FixedBalancer:
    if kind == "fixed":
        return FixedBalancer(weights)
    if kind == "gradnorm":
        return GradNormBalancer(alpha=alpha, lr=lr, min_weight=min_weight)
    if kind == "uncertainty":
        return UncertaintyBalancer()
    raise ValueError(f"unknown balance {kind!r}; valid: {', '.join(BALANCERS)}")
