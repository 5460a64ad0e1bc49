"""The forward contract shared by the multi-task models (``shared`` and ``dual``).

  forward_raw(images) -> (det_raw: 3 level tensors for s = 8, 16, 32, view_logits: (B, n_views))
                          det_raw per level: head="anchor" (B, 3, S/s, S/s, 5 + nc) (models.decode),
                          head="anchorfree" (B, S/s, S/s, 4 * reg_max + nc) (models.anchorfree)
  forward(images, targets=None):
    train mode -> self.criterion(det_raw, view_logits, targets, model=self), a dict of named losses
                  ("loss/box", "loss/obj", "loss/cls_det", "loss/view"), whichever the head
    eval mode  -> {"detections": nms_detections(head.decode(det_raw), ...), "view_logits": view_logits}

Images are (B, 3, S, S) floats in [0, 1], S a multiple of 32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .decode import nms_detections
from .detector import Detector, check_image_size

Criterion = Callable[..., dict[str, torch.Tensor]]


class MultiTaskModel(nn.Module):
    """Base class: owns the detector, the criterion reference, thresholds and the train/eval forward routing.

    The criterion is deliberately NOT registered as a submodule: it stays out of ``parameters()``,
    ``state_dict()`` (checkpoints do not depend on the loss configuration) and parameter counts, and ``.to()``
    does not move it — a criterion with tensors of its own should follow its inputs' device.
    """

    has_shared_layer = False

    def __init__(
        self,
        scale: str,
        nc: int,
        n_views: int,
        img_size: int,
        anchors: Any = None,
        criterion: Criterion | None = None,
        head: str = "anchor",
    ):
        super().__init__()
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        self.detector = Detector(scale, nc, img_size, anchors, head)
        self.scale, self.nc, self.n_views, self.img_size = scale, nc, n_views, img_size
        self.criterion = criterion
        self.conf_thres, self.iou_thres, self.max_det = 0.001, 0.6, 300

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "criterion":  # bypass nn.Module's submodule registration (see class docstring)
            self.__dict__["_criterion"] = value
        else:
            super().__setattr__(name, value)

    @property
    def criterion(self) -> Criterion | None:
        return self.__dict__.get("_criterion")

    @property
    def strides(self) -> torch.Tensor:
        """(3,) detection strides 8, 16, 32."""
        return self.detector.head.strides

    @property
    def head_kind(self) -> str:
        """The detection head: "anchor" or "anchorfree" (models.heads.DETECT_HEADS)."""
        return self.detector.head.kind

    @property
    def anchors(self) -> torch.Tensor | None:
        """(3, 3, 2) anchor (w, h) in input pixels, per level; None for the anchor-free head (it has none)."""
        return self.detector.head.anchors

    def shared_parameters(self) -> list[nn.Parameter]:
        """Weights of the last layer shared by both tasks ([] when the tasks share nothing)."""
        return []

    @property
    def gradnorm_shared_weight(self) -> nn.Parameter:
        """The single weight GradNorm measures task gradients on (overridden by models with a shared layer)."""
        # ValueError, not AttributeError: nn.Module.__getattr__ would replace an AttributeError's message.
        raise ValueError(
            f"{type(self).__name__} has no shared layer: GradNorm is not applicable; use fixed or uncertainty balancing"
        )

    @staticmethod
    def check_images(images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")
        check_image_size(images.shape[2], images.shape[3])

    def forward_raw(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, targets: Any = None) -> dict[str, Any]:
        det_raw, view_logits = self.forward_raw(images)
        if self.training:
            if self.criterion is None:
                raise ValueError(
                    "train-mode forward needs a criterion: pass criterion=... to create_model or set "
                    "model.criterion (or call forward_raw for the raw outputs)"
                )
            if targets is None:
                raise ValueError(
                    "train-mode forward needs targets (or call model.eval() for detections, or "
                    "forward_raw for the raw outputs)"
                )
            return self.criterion(det_raw, view_logits, targets, model=self)
        detections = nms_detections(
            self.detector.head.decode(det_raw),
            images.shape[-2:],
            conf_thres=self.conf_thres,
            iou_thres=self.iou_thres,
            max_det=self.max_det,
        )
        return {"detections": detections, "view_logits": view_logits}
