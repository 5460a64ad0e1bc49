"""Small loss helpers shared by the detection and view losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

BINARY_LOSSES = ("bce", "focal", "varifocal")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Raise a ValueError listing the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")
    return value


def graph_zero(x: Tensor) -> Tensor:
    """A float 0 that is still connected to `x`'s graph (so backward() works and DDP sees every parameter used).

    Uses one element rather than x.sum(): a half-precision sum of a large tensor can overflow to inf, and inf * 0
    is NaN.
    """
    return x.reshape(-1)[:1].float().sum() * 0.0


def smooth_one_hot(cls: Tensor, nc: int, eps: float) -> Tensor:
    """cls (M,) int64 -> (M, nc) float targets: positives 1 - eps/2, negatives eps/2 (binary label smoothing)."""
    return F.one_hot(cls, nc).float() * (1.0 - eps) + eps / 2


def varifocal_loss(logits: Tensor, q: Tensor, pos: Tensor | None = None, alpha: float = 0.75,
                   gamma: float = 2.0, reduction: str = "mean") -> Tensor:
    """Varifocal loss (Zhang et al., CVPR 2021), mean over elements (reduction="none": per element).

    logits, q: same shape; q = IoU-aware soft target (the IoU for the positive class, 0 elsewhere). BCE with soft
    targets, weighted by q on positives (so well-localised positives count more) and by alpha * p^gamma on
    negatives (easy negatives are down-weighted as in focal loss). pos: bool mask of positives, default q > 0;
    pass it explicitly when negatives carry a non-zero (label-smoothed) target.
    """
    pos = q > 0 if pos is None else pos
    p = logits.sigmoid()
    weight = torch.where(pos, q, alpha * p.pow(gamma))
    loss = F.binary_cross_entropy_with_logits(logits, q, reduction="none") * weight
    return loss.mean() if reduction == "mean" else loss


def binary_loss(kind: str, logits: Tensor, target: Tensor, alpha: float, gamma: float,
                pos: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Sigmoid loss of `kind` in BINARY_LOSSES; logits and (soft) target of the same shape.
    reduction "mean" (a scalar) or "none" (per element, same shape as logits)."""
    check_choice("loss", kind, BINARY_LOSSES)
    check_choice("reduction", reduction, ("mean", "none"))
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)
    if kind == "focal":
        return sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction=reduction)
    return varifocal_loss(logits, target, pos, alpha=alpha, gamma=gamma, reduction=reduction)
