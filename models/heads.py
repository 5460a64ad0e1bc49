"""Task heads: the view classifier head and the anchor-based detection head (the anchor-free one: models.anchorfree)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .decode import decode_level

# The detection heads a model can be built with (TrainConfig.head): "anchor" = DetectHead (YOLOv5-style),
# "anchorfree" = models.anchorfree.AnchorFreeHead (decoupled, distribution box, task-aligned training).
DETECT_HEADS = ("anchor", "anchorfree")
NUM_ANCHORS = 3  # anchors per level (na)
DEFAULT_STRIDES = (8, 16, 32)  # P3, P4, P5
# Prior number of objects per image and of the class probability, for the initial biases (RetinaNet-style
# prior-probability init: the first steps then start near the data's base rates instead of at p = 0.5).
OBJ_PRIOR_PER_IMAGE = 8.0
CLS_PRIOR = 0.6


class ViewHead(nn.Module):
    """Global average pool -> flatten -> dropout -> linear: (B, C, H, W) -> (B, n_views) logits."""

    def __init__(self, in_channels: int, n_views: int, dropout: float = 0.2):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, n_views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class DetectHead(nn.Module):
    """One 1x1 conv per level to na * (5 + nc) channels, reshaped to (B, na, H, W, 5 + nc) logits.

    The last dim is ``tx, ty, tw, th, obj, cls_0 .. cls_{nc-1}`` (see ``models.decode``). Buffers: ``anchors``
    (3, na, 2) (w, h) in input pixels and ``strides`` (3,) — saved in the state dict, moved by ``.to()``.
    """

    kind = "anchor"

    def __init__(
        self,
        in_channels: Sequence[int],
        nc: int,
        anchors: torch.Tensor,
        img_size: int,
        strides: Sequence[int] = DEFAULT_STRIDES,
    ):
        super().__init__()
        if anchors.shape != (len(strides), NUM_ANCHORS, 2):
            raise ValueError(f"anchors must be ({len(strides)}, {NUM_ANCHORS}, 2), got {tuple(anchors.shape)}")
        self.nc = nc
        self.na = NUM_ANCHORS
        self.no = 5 + nc  # outputs per anchor
        self.register_buffer("anchors", anchors.float().clone())
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.float32))
        self.convs = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in in_channels)
        self._init_biases(img_size)

    @torch.no_grad()
    def _init_biases(self, img_size: int) -> None:
        """Objectness bias log(8 / cells): ~8 objects per image spread over the level's (img/stride)^2 cells;
        class bias log(0.6 / (nc - 0.99)): each class starts near probability 0.6 / nc."""
        for conv, stride in zip(self.convs, self.strides.tolist()):
            bias = conv.bias.view(self.na, self.no)
            bias[:, 4] = math.log(OBJ_PRIOR_PER_IMAGE / (img_size / stride) ** 2)
            bias[:, 5:] = math.log(CLS_PRIOR / (self.nc - 0.99))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[(B, C_i, H_i, W_i)] -> [(B, na, H_i, W_i, 5 + nc)] logits."""
        out = []
        for conv, x in zip(self.convs, feats):
            y = conv(x)  # (B, na * no, H, W)
            b, _, h, w = y.shape
            # (B, na, no, H, W) -> (B, na, H, W, no); already contiguous (free) for channels_last inputs
            out.append(y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return out

    def decode(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw levels -> (B, N, 5 + nc) float32 cx, cy, w, h px, obj, class probabilities (``decode_level``)."""
        return torch.cat([decode_level(r, a, s) for r, a, s in zip(raw, self.anchors, self.strides.tolist())], 1)
