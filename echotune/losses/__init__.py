"""EchoTune losses: YOLOv5-style detection loss, view-classification loss, and the multi-task criterion."""
from __future__ import annotations

from torch import Tensor, nn

from .assign import LevelTargets, build_targets
from .detection import BOX_LOSSES, CLS_LOSSES, OBJ_LOSSES, DetectionLoss
from .view import VIEW_LOSSES, ViewLoss, class_balanced_weights

__all__ = ["BOX_LOSSES", "CLS_LOSSES", "OBJ_LOSSES", "VIEW_LOSSES", "DetectionLoss", "LevelTargets",
           "MultiTaskCriterion", "ViewLoss", "build_targets", "class_balanced_weights"]


class MultiTaskCriterion:
    """Both task losses; the caller (a task balancer) combines them.

    `criterion(det_raw, view_logits, targets, model)` -> {"loss/box", "loss/obj", "loss/cls_det", "loss/view"},
    reading the anchors (L, na, 2) px and strides (L,) from the model's `anchors` / `strides` buffers.
    """

    def __init__(self, det: DetectionLoss, view: ViewLoss):
        self.det, self.view = det, view

    def __call__(self, det_raw: list[Tensor], view_logits: Tensor, targets: dict,
                 model: nn.Module) -> dict[str, Tensor]:
        """Also returns "per_image": (B,) detached detection + view loss of each image (for hard-example mining)."""
        losses = self.det(det_raw, targets, model.anchors, model.strides)
        losses["loss/view"] = self.view(view_logits, targets["views"])
        losses["per_image"] = self.det.last_per_image + self.view.last_per_image
        return losses

    def set_label_smoothing(self, eps: float) -> None:
        """Binary label smoothing of the detection class targets (stage 3); view smoothing comes via soft targets."""
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {eps}")
        self.det.eps = eps
