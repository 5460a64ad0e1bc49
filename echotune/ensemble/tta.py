"""Test-time augmentation: which views of an image each member sees, and how boxes map back.

A variant is a letterbox size plus an optional horizontal flip *of the letterboxed square*. Flipping the square
(not the original image) makes the inverse exact even when the letterbox padding is off-centre by a pixel:
x1' = S - x2, x2' = S - x1 in the square, then `Letterbox.to_original` undoes the resize and padding.
The identity variant (the member's own img_size, no flip) always comes first, so variant 0 of every member is
exactly what validation saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from echotune.data.dataset import Letterbox

TTA_MODES = ("none", "flip", "scales", "flip+scales")
SCALE_FACTORS = (0.83, 1.17)  # besides 1.0
MIN_SIZE, STRIDE = 64, 32


@dataclass(frozen=True)
class Variant:
    size: int  # side of the letterboxed square the model sees (a multiple of 32)
    flip: bool  # horizontal flip of that square


def scaled_size(img_size: int, factor: float) -> int:
    """img_size * factor rounded *away* from img_size to a multiple of 32 (so a scale never collapses onto
    img_size), at least 64: 160 -> 128 / 192, 640 -> 512 / 768, 64 -> 64 / 96."""
    steps = img_size * factor / STRIDE
    steps = math.floor(steps) if factor < 1 else math.ceil(steps)
    return max(MIN_SIZE, steps * STRIDE)


def tta_variants(mode: str, img_size: int) -> list[Variant]:
    """Variants of `mode` for a member trained at `img_size`; identity first, duplicates removed."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta={mode!r} is not valid; choose one of: {', '.join(TTA_MODES)}")
    sizes = [img_size]
    if "scales" in mode:
        sizes += [s for s in (scaled_size(img_size, f) for f in SCALE_FACTORS) if s not in sizes]
    flips = (False, True) if "flip" in mode else (False,)
    return [Variant(size, flip) for size in sizes for flip in flips]


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """(K, 4) xyxy boxes in an image `width` wide -> the same boxes in its horizontal mirror image."""
    out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    out[:, 0], out[:, 2] = width - out[:, 2], width - out[:, 0]
    return out


def to_tensor(squares: np.ndarray, variant: Variant) -> torch.Tensor:
    """(B, S, S, 3) uint8 RGB letterboxed squares -> contiguous (B, 3, S, S) float in [0, 1], exactly as
    EchoDataset feeds the model (a channels-last view would take another conv kernel and change the last
    float bits), flipped horizontally when the variant says so."""
    tensor = torch.from_numpy(np.ascontiguousarray(squares.transpose(0, 3, 1, 2))).float().div_(255.0)
    return tensor.flip(-1) if variant.flip else tensor


def boxes_to_original(boxes_sq: np.ndarray, variant: Variant, lb: Letterbox) -> np.ndarray:
    """Boxes the model predicted on the variant's square -> original-image pixels (un-flip, then un-letterbox)."""
    boxes = flip_boxes(boxes_sq, variant.size) if variant.flip else np.asarray(boxes_sq, np.float32).reshape(-1, 4)
    return lb.to_original(boxes).astype(np.float32)
