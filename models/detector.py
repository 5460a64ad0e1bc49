"""A YOLOv5-style detector written from scratch: CSP backbone + SPPF, PAN neck, 3-level head (anchor-based
DetectHead, or the anchor-free AnchorFreeHead of models.anchorfree: ``head="anchorfree"``).

Layout (published YOLOv5 v6 configuration; base channels / C3 depths before scaling):
  backbone: stem 6x6/2 (64) -> 3x3/2 (128) C3x3 -> 3x3/2 (256) C3x6 [C3, stride 8] -> 3x3/2 (512) C3x9
            [C4, stride 16] -> 3x3/2 (1024) C3x3 -> SPPF (1024) [C5, stride 32]
  neck:     top-down: 1x1(C5) -> up, cat C4 -> C3 -> 1x1 -> up, cat C3 -> C3 = P3
            bottom-up: 3x3/2(P3), cat -> C3 = P4 -> 3x3/2(P4), cat -> C3 = P5  (no shortcuts in neck C3s)
Scales multiply depths (round, min 1) and widths (ceil to a multiple of 8, min 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .anchorfree import AnchorFreeHead
from .anchors import default_anchors
from .blocks import C3, SPPF, ConvBNAct
from .heads import DEFAULT_STRIDES, DETECT_HEADS, DetectHead

# scale -> (depth multiplier, width multiplier); "test" is a tiny network for unit tests.
SCALES: dict[str, tuple[float, float]] = {
    "test": (0.33, 0.0625),
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
}
BASE_CHANNELS = (64, 128, 256, 512, 1024)  # stem, strides 4, 8, 16, 32
BASE_DEPTHS = (3, 6, 9, 3)  # C3 repeats at strides 4, 8, 16, 32
NECK_DEPTH = 3
STRIDE_MULTIPLE = max(DEFAULT_STRIDES)  # inputs must be divisible by the coarsest stride
FEATURE_NAMES = ("backbone", "P3", "P4", "P5")


def scale_width(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scaled channel count rounded up to a multiple of ``divisor`` (>= divisor): friendlier to SIMD/tensor cores."""
    return max(divisor, math.ceil(channels * width_mult / divisor) * divisor)


def scale_depth(n: int, depth_mult: float) -> int:
    """Scaled number of block repeats, at least 1."""
    return max(1, round(n * depth_mult))


def scale_multipliers(scale: str) -> tuple[float, float]:
    """(depth, width) multipliers of a named scale; ValueError listing the valid scales."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    return SCALES[scale]


def check_image_size(height: int, width: int) -> None:
    if height % STRIDE_MULTIPLE or width % STRIDE_MULTIPLE or height <= 0 or width <= 0:
        raise ValueError(f"image size must be a positive multiple of {STRIDE_MULTIPLE}, got {height}x{width}")


class Backbone(nn.Module):
    """CSP backbone. (B, 3, S, S) -> (C3 (B, c8, S/8, S/8), C4 (B, c16, S/16, ..), C5 = SPPF out (B, c32, S/32, ..)).

    ``out_channels`` = (c8, c16, c32).
    """

    def __init__(self, depth_mult: float, width_mult: float):
        super().__init__()
        c = [scale_width(ch, width_mult) for ch in BASE_CHANNELS]
        n = [scale_depth(d, depth_mult) for d in BASE_DEPTHS]
        self.stem = ConvBNAct(3, c[0], k=6, s=2)  # stride 2

        def stage(i: int) -> nn.Sequential:  # 3x3/2 downsample then C3: stride 4, 8, 16, 32 for i = 0..3
            return nn.Sequential(ConvBNAct(c[i], c[i + 1], k=3, s=2), C3(c[i + 1], c[i + 1], n[i]))

        self.stage4, self.stage8, self.stage16, self.stage32 = (stage(i) for i in range(4))
        self.sppf = SPPF(c[4], c[4])
        self.out_channels = (c[2], c[3], c[4])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c8 = self.stage8(self.stage4(self.stem(x)))
        c16 = self.stage16(c8)
        c32 = self.sppf(self.stage32(c16))
        return c8, c16, c32


class PANNeck(nn.Module):
    """Top-down FPN then bottom-up PAN. (C3, C4, C5) -> (P3, P4, P5) with the same channels as its inputs.

    ``p3_out`` / ``p4_out`` / ``p5_out`` are the C3 blocks whose ``fuse`` conv produces P3 / P4 / P5.
    """

    def __init__(self, in_channels: Sequence[int], n: int):
        super().__init__()
        c8, c16, c32 = in_channels
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral32 = ConvBNAct(c32, c16, 1)  # also the P5 path's skip input
        self.td16 = C3(2 * c16, c16, n, shortcut=False)
        self.lateral16 = ConvBNAct(c16, c8, 1)  # also the P4 path's skip input
        self.p3_out = C3(2 * c8, c8, n, shortcut=False)
        self.down8 = ConvBNAct(c8, c8, k=3, s=2)
        self.p4_out = C3(2 * c8, c16, n, shortcut=False)
        self.down16 = ConvBNAct(c16, c16, k=3, s=2)
        self.p5_out = C3(2 * c16, c32, n, shortcut=False)
        self.out_channels = (c8, c16, c32)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c8, c16, c32 = feats
        lat32 = self.lateral32(c32)  # (B, c16, S/32)
        lat16 = self.lateral16(self.td16(torch.cat((self.up(lat32), c16), 1)))  # (B, c8, S/16)
        p3 = self.p3_out(torch.cat((self.up(lat16), c8), 1))  # (B, c8, S/8)
        p4 = self.p4_out(torch.cat((self.down8(p3), lat16), 1))  # (B, c16, S/16)
        p5 = self.p5_out(torch.cat((self.down16(p4), lat32), 1))  # (B, c32, S/32)
        return p3, p4, p5


class Detector(nn.Module):
    """Backbone + PANNeck + a detection head. forward: (B, 3, S, S) -> raw list of 3 level tensors, s = 8, 16, 32:
    head="anchor": [(B, 3, S/s, S/s, 5 + nc)] (models.decode); head="anchorfree": [(B, S/s, S/s, 4 * 16 + nc)]
    (models.anchorfree). ``head.decode(raw)`` turns either into (B, N, 5 + nc) rows for ``nms_detections``.

    anchors (anchor head only): None (defaults scaled to img_size) or array-like (3, 3, 2) / (3, 6) in pixels.
    img_size is the nominal training size (used for default anchors and the bias priors); any multiple of 32 runs.
    """

    def __init__(self, scale: str = "s", nc: int = 4, img_size: int = 160, anchors=None, head: str = "anchor"):
        super().__init__()
        if nc < 1:
            raise ValueError(f"nc (number of detection classes) must be >= 1, got {nc}")
        if head not in DETECT_HEADS:
            raise ValueError(f"unknown head {head!r}; valid: {', '.join(DETECT_HEADS)}")
        if head != "anchor" and anchors is not None:
            raise ValueError(f"anchors apply only to head='anchor'; the {head!r} head has none")
        check_image_size(img_size, img_size)
        depth_mult, width_mult = scale_multipliers(scale)
        self.scale, self.nc, self.img_size = scale, nc, img_size
        self.backbone = Backbone(depth_mult, width_mult)
        self.neck = PANNeck(self.backbone.out_channels, scale_depth(NECK_DEPTH, depth_mult))
        if head == "anchor":
            anchors = torch.as_tensor(default_anchors(img_size) if anchors is None else anchors, dtype=torch.float32)
            if anchors.numel() != len(DEFAULT_STRIDES) * 3 * 2 or not bool((anchors > 0).all()):
                raise ValueError(f"anchors must be (3, 3, 2) positive (w, h) pixels, got shape {tuple(anchors.shape)}")
            self.head = DetectHead(self.neck.out_channels, nc, anchors.reshape(3, 3, 2), img_size)
        else:
            self.head = AnchorFreeHead(self.neck.out_channels, nc, img_size)
        # channels of each tappable feature map (see features())
        self.feature_channels = dict(zip(FEATURE_NAMES, (self.backbone.out_channels[2], *self.neck.out_channels)))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"backbone": SPPF output (B, c32, S/32, ..), "P3", "P4", "P5": neck outputs}."""
        c8, c16, c32 = self.backbone(x)
        return dict(zip(FEATURE_NAMES, (c32, *self.neck((c8, c16, c32)))))

    def detect(self, feats: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Head on the neck outputs of ``features()``: raw list of 3 level tensors."""
        return self.head([feats["P3"], feats["P4"], feats["P5"]])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.detect(self.features(x))
