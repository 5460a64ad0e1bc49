"""Anchor-free decoupled detection head with the integral (distribution) box representation.

Written from the papers, no code copied: the decoupled head of YOLOX (Ge et al. 2021: separate box and class
branches, one prediction per location, no anchors), the general distribution of GFL (Li et al. 2020: each side's
distance is a softmax over ``reg_max`` bins and the box uses the distribution's expectation), and no objectness:
the class score itself is trained to predict localisation quality (TOOD's task-aligned targets, see
``echotune.losses.tal``).

Raw format (the contract), per level i of stride s_i: (B, H_i, W_i, 4 * reg_max + nc) logits, last dim
``l_0 .. l_{R-1}, t_0 .., r_0 .., b_0 .. b_{R-1}, cls_0 .. cls_{nc-1}`` (R = reg_max, side-major).
Decoding: the anchor point of cell (x, y) is ((x + 0.5) * s, (y + 0.5) * s) px; each side's distance is
s * sum_k k * softmax(bins)_k (so 0 .. (R - 1) * s px); the box is (px - l, py - t, px + r, py + b); the
score of class c is sigmoid(cls_c). Decoded rows follow the anchor head's layout (``models.decode``):
cx, cy, w, h px, obj (= 1: there is no objectness), per-class probabilities; rows ordered level, y, x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .blocks import ConvBNAct
from .heads import DEFAULT_STRIDES

REG_MAX = 16  # distance bins per side: a side reaches (REG_MAX - 1) strides, 120 px on P3, 480 px on P5
# Class-bias prior (RetinaNet's prior-probability init): the constant score that minimises the initial BCE is the
# mean class target, ~1 unit of target mass per image and level (top-k = 10 points per jet, ~1 jet per frame,
# targets q of 0.1-0.3 early, spread over 3 levels) over its nc * cells entries.
TARGET_MASS_PER_IMAGE_LEVEL = 1.0
# Box-bias prior: each side's initial expected distance, in strides (a box 4 strides wide: 32 px on P3, 64 px on
# P4, 128 px on P5, the sizes each level's positives hold). None: a constant bias, i.e. a uniform distribution
# (expected (REG_MAX - 1) / 2 = 7.5 strides, a box 15 strides wide).
PRIOR_DISTANCE = 2.0


def anchor_points(
    sizes: Sequence[tuple[int, int]], strides: Sequence[float] | torch.Tensor, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of every level: sizes [(H_i, W_i)] -> ((N, 2) x, y px, (N,) stride of each point), N = sum H*W.

    Rows are ordered level, then y, then x (the raw tensors' order once flattened)."""
    strides = strides.tolist() if isinstance(strides, torch.Tensor) else list(strides)
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=torch.float32),
            torch.arange(w, device=device, dtype=torch.float32),
            indexing="ij",
        )
        points.append((torch.stack((xs, ys), -1).reshape(-1, 2) + 0.5) * float(s))
        point_strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(point_strides)


def flatten_levels(raw: Sequence[torch.Tensor]) -> torch.Tensor:
    """[(B, H_i, W_i, C)] -> (B, N, C), rows ordered level, y, x."""
    return torch.cat([r.flatten(1, 2) for r in raw], dim=1)


def expected_distance(bin_logits: torch.Tensor) -> torch.Tensor:
    """(..., 4, R) bin logits -> (..., 4) expected distance in bins (strides): sum_k k * softmax_k (GFL's integral)."""
    project = torch.arange(bin_logits.shape[-1], device=bin_logits.device, dtype=torch.float32)
    # a product and sum, not a matmul: autocast would run a matmul in float16 (distances up to 15 bins)
    return (bin_logits.float().softmax(-1) * project).sum(-1)


def distance_to_box(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """points (N, 2) px, ltrb (..., N, 4) px distances -> (..., N, 4) xyxy px."""
    return torch.cat((points - ltrb[..., :2], points + ltrb[..., 2:]), dim=-1)


def box_to_distance(points: torch.Tensor, xyxy: torch.Tensor) -> torch.Tensor:
    """Inverse of distance_to_box: points (N, 2), boxes (..., N, 4) xyxy -> (..., N, 4) l, t, r, b distances."""
    return torch.cat((points - xyxy[..., :2], xyxy[..., 2:] - points), dim=-1)


class AnchorFreeHead(nn.Module):
    """Per level a box branch (two 3x3 ConvBNAct, 1x1 conv to 4 * reg_max bin logits) and a class branch (two
    3x3 ConvBNAct, 1x1 conv to nc logits), concatenated to (B, H, W, 4 * reg_max + nc) (see the module docstring).

    Branch widths: the box branch at least 4 * reg_max channels (it must not bottleneck below its 64 outputs),
    the class branch as wide as the finest input (P3) and at least nc. ``strides`` is a buffer; ``anchors`` is
    None (the head has none: anchor-based code must not run on it silently).
    """

    kind = "anchorfree"
    anchors = None

    def __init__(
        self,
        in_channels: Sequence[int],
        nc: int,
        img_size: int,
        reg_max: int = REG_MAX,
        strides: Sequence[int] = DEFAULT_STRIDES,
        prior_distance: float | None = PRIOR_DISTANCE,
    ):
        super().__init__()
        if reg_max < 2:
            raise ValueError(f"reg_max must be >= 2 bins, got {reg_max}")
        self.nc, self.reg_max = nc, reg_max
        self.no = 4 * reg_max + nc  # outputs per location
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.float32))
        box_width = max(4 * reg_max, in_channels[0] // 4)
        cls_width = max(in_channels[0], nc)
        self.box_branches = nn.ModuleList(
            nn.Sequential(
                ConvBNAct(c, box_width, 3), ConvBNAct(box_width, box_width, 3), nn.Conv2d(box_width, 4 * reg_max, 1)
            )
            for c in in_channels
        )
        self.cls_branches = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, cls_width, 3), ConvBNAct(cls_width, cls_width, 3), nn.Conv2d(cls_width, nc, 1))
            for c in in_channels
        )
        self._init_biases(img_size, prior_distance)

    @torch.no_grad()
    def _init_biases(self, img_size: int, prior_distance: float | None) -> None:
        """Class bias: logit of p = 1 / (nc * cells) per level (RetinaNet's prior init, TARGET_MASS_PER_IMAGE_LEVEL).
        Without objectness every location's class logits meet the BCE, ~all of them negatives: at p = 0.5 their
        loss would swamp the few positives in the first steps.

        Box bias: bin k gets -k * log(1 + 1 / d), a geometric distribution with mean ~d = prior_distance strides
        (the anchor head's anchors play this role). The class loss is divided by the sum of the task-aligned
        targets, which scale with the best IoU of each jet's predictions: the usual constant bias (a uniform
        distribution, boxes 15 strides wide) starts that IoU near 0.06 for a 30 px jet and the class loss ~10x
        above its later level. Measured (shared n, 160 px, batch 16, first steps): uniform boxes and a 5x higher
        class prior gave class losses 930 -> 2400 -> 90 and GradNorm, reading the drop as fast learning, starved
        the detection task; with these two priors 100 -> 145 -> 93. The geometric distribution still covers every
        bin, so the task-aligned metric stays > 0 for every candidate."""
        bins = torch.arange(self.reg_max, dtype=torch.float32)
        box_bias = torch.zeros(self.reg_max) if prior_distance is None else -bins * math.log(1 + 1 / prior_distance)
        for box, cls, stride in zip(self.box_branches, self.cls_branches, self.strides.tolist()):
            box[-1].bias.copy_(box_bias.repeat(4))
            p = min(0.5, TARGET_MASS_PER_IMAGE_LEVEL / (self.nc * (img_size / stride) ** 2))
            cls[-1].bias.fill_(math.log(p / (1 - p)))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[(B, C_i, H_i, W_i)] -> [(B, H_i, W_i, 4 * reg_max + nc)] logits."""
        return [
            torch.cat((box(x), cls(x)), 1).permute(0, 2, 3, 1).contiguous()
            for box, cls, x in zip(self.box_branches, self.cls_branches, feats)
        ]

    def split(self, raw: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw levels -> (bin logits (B, N, 4, reg_max), class logits (B, N, nc)), rows ordered level, y, x."""
        flat = flatten_levels(raw)
        b, n, _ = flat.shape
        return flat[..., : 4 * self.reg_max].reshape(b, n, 4, self.reg_max), flat[..., 4 * self.reg_max :]

    def anchor_points(self, raw: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """((N, 2) px cell centres, (N,) their strides) for raw outputs of any input size."""
        return anchor_points([tuple(r.shape[1:3]) for r in raw], self.strides, raw[0].device)

    def decode(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw levels -> (B, N, 5 + nc) float32: cx, cy, w, h px, obj = 1, sigmoid class scores."""
        bins, cls = self.split(raw)
        points, point_strides = self.anchor_points(raw)
        xyxy = distance_to_box(points, expected_distance(bins) * point_strides[:, None])
        wh = xyxy[..., 2:] - xyxy[..., :2]
        obj = torch.ones_like(wh[..., :1])
        return torch.cat((xyxy[..., :2] + wh / 2, wh, obj, cls.float().sigmoid()), dim=-1)
