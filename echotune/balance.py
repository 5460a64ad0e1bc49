"""Task-loss balancing for the multi-task model: fixed weights, GradNorm, or uncertainty weighting.

GradNorm (Chen et al., ICML 2018), exactly as the paper: learnable weights w_i; G_i = ||grad_W (w_i L_i)||_2 on
the last shared layer's weight W; r_i = (L_i(t) / L_i(0)) / mean_j(L_j(t) / L_j(0)); target_i = mean(G) * r_i^alpha
held constant; L_grad = sum_i |G_i - target_i| updates only w (its own optimizer); then w is renormalised so
that sum w_i = T. The model itself is trained on sum_i w_i L_i with w treated as a constant.

Cost: the paper's G_i need one gradient per task on W. We get the detection gradient for free: after the normal
backward of sum w_i L_i, W.grad = sum_i w_i grad_W L_i, so the first task's gradient is W.grad minus the others'
contributions, and only the cheap tasks (the view head sits right after W) get an extra `autograd.grad`.

Uncertainty weighting (Kendall et al., CVPR 2018): total = sum_i exp(-s_i) L_i + s_i with learnable s_i trained by
the model's optimizer; the reported weight is exp(-s_i).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

BALANCERS = ("fixed", "gradnorm", "uncertainty")
TASKS = ("det", "view")


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

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, tasks: Sequence[str] = TASKS):
        super().__init__((1.0,) * len(tasks), tasks)
        if alpha < 0:
            raise ValueError(f"GradNorm alpha must be >= 0, got {alpha}")
        if lr <= 0:
            raise ValueError(f"GradNorm lr must be > 0, got {lr}")
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(tasks)))  # replaces the fixed buffer
        self.register_buffer("initial_losses", torch.zeros(len(tasks)))
        self.register_buffer("has_initial", torch.tensor(False))
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self._losses: torch.Tensor | None = None  # (T,) this step's losses, detached
        self._other_grads: list[torch.Tensor] = []  # grad_W L_i for tasks 1..T-1, taken before the backward

    def weighted_loss(self, losses: torch.Tensor, shared_weight: nn.Parameter | None = None) -> torch.Tensor:
        """Total for the model's backward; also takes the cheap per-task gradients on W while the graph lives."""
        if shared_weight is None:
            raise ValueError("GradNorm needs the model's last shared layer (the dual model has none: "
                             "use --balance fixed or uncertainty)")
        self._losses = losses.detach().float()
        self._other_grads = [torch.autograd.grad(losses[i], shared_weight, retain_graph=True)[0].detach().float()
                             for i in range(1, len(self.tasks))]
        if not bool(self.has_initial):
            self.initial_losses.copy_(losses.detach().float().clamp_min(1e-12))
            self.has_initial.fill_(True)
        return (self.w.detach().to(losses.dtype) * losses).sum()

    def task_gradient_norms(self, shared_weight: nn.Parameter) -> torch.Tensor:
        """(T,) ||grad_W L_i||: task 0 from W.grad (after the model's backward), the others by autograd.grad.

        Must run before the optimizer step and before gradient clipping changes W.grad.
        """
        if self._losses is None or shared_weight.grad is None:
            raise RuntimeError("GradNorm: call weighted_loss(...) and the model's backward before after_backward()")
        w = self.w.detach()
        total_grad = shared_weight.grad.detach().float()
        others = self._other_grads
        first = (total_grad - sum(w[i] * g for i, g in zip(range(1, len(self.tasks)), others))) / w[0]
        return torch.stack([first.norm()] + [g.norm() for g in others])

    def after_backward(self, shared_weight: nn.Parameter | None) -> None:
        if shared_weight is None:
            raise ValueError("GradNorm needs the model's last shared layer (the dual model has none: "
                             "use --balance fixed or uncertainty)")
        grad_norms = self.task_gradient_norms(shared_weight)  # (T,) ||grad_W L_i||
        losses, self._losses, self._other_grads = self._losses, None, []
        if not (torch.isfinite(grad_norms).all() and torch.isfinite(losses).all()):
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
            self.w.clamp_(min=1e-4)
            self.w.mul_(len(self.tasks) / self.w.sum())

    def weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.tasks, self.w.detach())}

    def get_extra_state(self) -> dict:
        """Saved inside state_dict(): the weights' own optimizer, so resuming continues it exactly."""
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def create_balancer(kind: str, alpha: float = 1.5, lr: float = 0.025,
                    weights: Sequence[float] = (1.0, 1.0)) -> FixedBalancer:
    if kind == "fixed":
        return FixedBalancer(weights)
    if kind == "gradnorm":
        return GradNormBalancer(alpha=alpha, lr=lr)
    if kind == "uncertainty":
        return UncertaintyBalancer()
    raise ValueError(f"unknown balance {kind!r}; valid: {', '.join(BALANCERS)}")
