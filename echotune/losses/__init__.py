"""EchoTune losses: YOLOv5-style detection loss, the anchor-free head's task-aligned loss, view-classification
loss, and the multi-task criterion."""

from __future__ import annotations

from torch import Tensor, nn

from .anchorfree import AnchorFreeLoss, distribution_focal_loss
from .assign import LevelTargets, build_targets
from .detection import DetectionLoss
from .functional import BINARY_LOSSES, BOX_LOSSES, DETECTION_LOSS_KEYS, FOCAL_LOSSES, VIEW_LOSS_KEY
from .view import VIEW_LOSSES, ViewLoss, class_balanced_weights

__all__ = [
    "BINARY_LOSSES",
    "BOX_LOSSES",
    "DETECTION_LOSS_KEYS",
    "FOCAL_LOSSES",
    "VIEW_LOSSES",
    "VIEW_LOSS_KEY",
    "AnchorFreeLoss",
    "DetectionLoss",
    "LevelTargets",
    "MultiTaskCriterion",
    "ViewLoss",
    "build_targets",
    "class_balanced_weights",
    "distribution_focal_loss",
]


class MultiTaskCriterion:
    """Both task losses; the caller (a task balancer) combines them.

    `criterion(det_raw, view_logits, targets, model)` -> {"loss/box", "loss/obj", "loss/cls_det", "loss/view"},
    reading the strides (L,) and, for the anchor head, the anchors (L, na, 2) px from the model's buffers. The
    detection loss must match the model's head (`det.head == model.head_kind`): DetectionLoss for "anchor",
    AnchorFreeLoss for "anchorfree".
    """

    def __init__(self, det: DetectionLoss | AnchorFreeLoss, view: ViewLoss):
        self.det, self.view = det, view

    def __call__(
        self, det_raw: list[Tensor], view_logits: Tensor, targets: dict, model: nn.Module
    ) -> dict[str, Tensor]:
        """Also returns "per_image": (B,) detached detection + view loss of each image (for hard-example mining)."""
        kind = getattr(model, "head_kind", "anchor")
        if self.det.head != kind:
            raise ValueError(
                f"{type(self.det).__name__} is the loss of head={self.det.head!r}, but the model has "
                f"head={kind!r} (build the criterion from the same TrainConfig.head)"
            )
        if kind == "anchor":
            losses = self.det(det_raw, targets, model.anchors, model.strides)
        else:
            losses = self.det(det_raw, targets, model.strides)
        losses[VIEW_LOSS_KEY] = self.view(view_logits, targets["views"])
        losses["per_image"] = self.det.last_per_image + self.view.last_per_image
        return losses

    def set_label_smoothing(self, eps: float) -> None:
        """Binary label smoothing of the detection class targets (stage 3); view smoothing comes via soft targets."""
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {eps}")
        self.det.eps = eps
