"""``shared``: one detector whose feature map also feeds a view-classification head (hard parameter sharing).

Where the view head branches off (``view_level``) and the last layer both tasks share (GradNorm's W):
  "P3"       view head reads P3  (B, c8,  S/8,  ..); W = detector.neck.p3_out.fuse.conv.weight
             (P3 feeds the stride-8 detect conv and the bottom-up path; the view head reads it too)
  "P4"       view head reads P4  (B, c16, S/16, ..); W = detector.neck.p4_out.fuse.conv.weight
  "P5"       view head reads P5  (B, c32, S/32, ..); W = detector.neck.p5_out.fuse.conv.weight
  "backbone" view head reads the SPPF output (B, c32, S/32, ..), the deepest backbone feature, before the
             neck; W = detector.backbone.sppf.fuse.conv.weight
W is the conv weight; its BatchNorm's affine parameters sit after it and are shared too, but the conv holds
nearly all of the layer's parameters and is what GradNorm (Chen et al. 2018) measures on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Criterion, MultiTaskModel
from .heads import ViewHead
from .registry import register_model

# view_level -> dotted path (from the model) of the block whose ``fuse`` conv produces that feature map
VIEW_LEVELS: dict[str, str] = {
    "P3": "detector.neck.p3_out",
    "P4": "detector.neck.p4_out",
    "P5": "detector.neck.p5_out",
    "backbone": "detector.backbone.sppf",
}


@register_model("shared")
class SharedMultiTask(MultiTaskModel):
    """Detector + ViewHead on the ``view_level`` feature map; both tasks share everything up to that map."""

    has_shared_layer = True

    def __init__(
        self,
        scale: str = "s",
        nc: int = 4,
        n_views: int = 3,
        img_size: int = 160,
        view_level: str = "P3",
        dropout: float = 0.2,
        anchors: Any = None,
        criterion: Criterion | None = None,
        head: str = "anchor",
    ):
        if view_level not in VIEW_LEVELS:
            raise ValueError(f"unknown view_level {view_level!r}; valid: {', '.join(VIEW_LEVELS)}")
        super().__init__(scale, nc, n_views, img_size, anchors, criterion, head)
        self.view_level = view_level
        self.view_head = ViewHead(self.detector.feature_channels[view_level], n_views, dropout)

    def forward_raw(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        self.check_images(images)
        feats = self.detector.features(images)
        return self.detector.detect(feats), self.view_head(feats[self.view_level])

    def shared_parameters(self) -> list[nn.Parameter]:
        """[W]: the conv weight producing the view head's input (see the module docstring, per level)."""
        return [self.gradnorm_shared_weight]

    @property
    def gradnorm_shared_weight(self) -> nn.Parameter:
        return self.get_submodule(VIEW_LEVELS[self.view_level]).fuse.conv.weight
