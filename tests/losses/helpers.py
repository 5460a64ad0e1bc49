"""Hand-built detector outputs for the loss tests: B=2, 64 px input, levels 8x8 / 4x4 / 2x2, 3 anchors, nc=4."""

from __future__ import annotations

import torch
from torch import Tensor

from echotune.losses import LevelTargets, build_targets

NC, NV, IMG = 4, 3, 64
ANCHORS = torch.tensor(
    [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]], dtype=torch.float32
).view(3, 3, 2) * (IMG / 640)
STRIDES = torch.tensor([8.0, 16.0, 32.0])


def make_raw(fill: float | None = None, nc: int = NC, grad: bool = True) -> list[Tensor]:
    """Per level (2, 3, S, S, 5 + nc) logits: random (fill=None) or constant."""
    raw = []
    for s in (8, 4, 2):
        shape = (2, 3, s, s, 5 + nc)
        raw.append(torch.randn(shape) if fill is None else torch.full(shape, fill))
    return [r.requires_grad_(grad) for r in raw]


def make_targets(boxes: list[list[list[float]]], classes: list[list[int]], views=None) -> dict:
    """Per-image lists of xyxy pixel boxes and class ids -> the data loader's target dict."""
    return {
        "boxes": [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes],
        "classes": [torch.tensor(c, dtype=torch.int64) for c in classes],
        "views": torch.tensor([0, -1]) if views is None else views,
    }


def two_boxes() -> dict:
    """One jet in image 0, two in image 1 that compete for some of the same (anchor, cell) slots."""
    return make_targets(
        [[[10.0, 10.0, 30.0, 25.0]], [[34.0, 20.0, 50.0, 52.0], [4.0, 40.0, 12.0, 50.0]]],
        [[2], [0, 3]],
        views=torch.tensor([1, -1]),
    )


def separate_boxes() -> dict:
    """One jet per image, so no (image, anchor, cell) is matched by two GTs and a perfect fit exists."""
    return make_targets(
        [[[10.0, 10.0, 30.0, 25.0]], [[34.0, 20.0, 50.0, 52.0]]], [[2], [0]], views=torch.tensor([1, -1])
    )


def no_boxes() -> dict:
    return make_targets([[], []], [[], []], views=torch.tensor([-1, -1]))


def logit(x: Tensor) -> Tensor:
    return torch.log(x / (1 - x))


def set_box_logits(raw: list[Tensor], matches: list[LevelTargets], shift: float = 0.0) -> None:
    """Write tx..th of every matched cell so its decoded box equals the target, then move cx by `shift` cells."""
    with torch.no_grad():
        for p, t in zip(raw, matches):
            xy = ((t.box[:, :2] + 0.5) / 2).clamp(0.01, 0.99)
            xy[:, 0] = ((t.box[:, 0] + shift + 0.5) / 2).clamp(0.01, 0.99)
            wh = (t.box[:, 2:] / t.anchor_wh).sqrt() / 2
            p[t.img, t.anchor, t.gy, t.gx, :4] = logit(torch.cat([xy, wh], 1))


def decoded_pixels(raw: list[Tensor], matches: list[LevelTargets]) -> tuple[Tensor, Tensor]:
    """Decoded boxes of all matched cells (M, 4) xyxy px, and their image indices (M,), with the spec's formula."""
    boxes, imgs = [], []
    for p, t, stride, anchors in zip(raw, matches, STRIDES, ANCHORS):
        ps = p[t.img, t.anchor, t.gy, t.gx].detach()
        xy = (ps[:, :2].sigmoid() * 2 - 0.5 + torch.stack([t.gx, t.gy], 1)) * stride
        wh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[t.anchor]
        boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], 1))
        imgs.append(t.img)
    return torch.cat(boxes), torch.cat(imgs)


def matches_for(targets: dict, raw: list[Tensor] | None = None, **kw) -> list[LevelTargets]:
    return build_targets(raw or make_raw(grad=False), targets, ANCHORS, STRIDES, **kw)
