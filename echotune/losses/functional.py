"""Small loss helpers shared by the detection and view losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss, sigmoid_focal_loss

# The loss vocabularies (TrainConfig.loss_box / loss_obj / loss_cls validate against them, the search spaces offer
# them). Their order is the order the spaces' categorical parameters hold in stored Optuna studies.
BOX_LOSS_FNS = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}
BOX_LOSSES = tuple(BOX_LOSS_FNS)
BINARY_LOSSES = ("bce", "focal", "varifocal")  # objectness and detection-class losses (binary_loss)
FOCAL_LOSSES = ("focal", "varifocal")  # the binary losses that read focal_gamma (bce ignores it)
# The criterion's output names, whichever the detection head: the detection task is the sum of DETECTION_LOSS_KEYS
# (what the balancers weigh against the view loss), and the engine reports each one as train/<key>.
DETECTION_LOSS_KEYS = ("loss/box", "loss/obj", "loss/cls_det")
VIEW_LOSS_KEY = "loss/view"


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Raise a ValueError listing the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value


def check_detection_args(nc: int, label_smoothing: float, box: str, **binary: str) -> tuple[str, ...]:
    """The arguments both detection losses (anchor and anchor-free) validate the same way: nc, label_smoothing,
    the box loss (one of BOX_LOSSES) and each binary loss, by name (obj=, cls=: one of BINARY_LOSSES).
    Returns (box, *binary's values)."""
    if nc < 1:
        raise ValueError(f"nc must be >= 1, got {nc}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return check_choice("box", box, BOX_LOSSES), *(check_choice(k, v, BINARY_LOSSES) for k, v in binary.items())


def graph_zero(x: Tensor) -> Tensor:
    """A float 0 that is still connected to `x`'s graph (so backward() works and DDP sees every parameter used).

    Uses one element rather than x.sum(): a half-precision sum of a large tensor can overflow to inf, and inf * 0
    is NaN.
    """
    return x.reshape(-1)[:1].float().sum() * 0.0


def smooth_one_hot(cls: Tensor, nc: int, eps: float) -> Tensor:
    """cls (M,) int64 -> (M, nc) float targets: positives 1 - eps/2, negatives eps/2 (binary label smoothing)."""
    return F.one_hot(cls, nc).float() * (1.0 - eps) + eps / 2


def varifocal_loss(
    logits: Tensor,
    q: Tensor,
    pos: Tensor | None = None,
    alpha: float = 0.75,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
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


def binary_loss(
    kind: str,
    logits: Tensor,
    target: Tensor,
    alpha: float,
    gamma: float,
    pos: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Sigmoid loss of `kind` in BINARY_LOSSES; logits and (soft) target of the same shape.
    reduction "mean" (a scalar) or "none" (per element, same shape as logits)."""
    check_choice("loss", kind, BINARY_LOSSES)
    check_choice("reduction", reduction, ("mean", "none"))
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)
    if kind == "focal":
        return sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction=reduction)
    return varifocal_loss(logits, target, pos, alpha=alpha, gamma=gamma, reduction=reduction)
