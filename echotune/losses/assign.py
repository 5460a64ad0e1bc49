"""Target assignment for the anchor-based (YOLOv5-style) detector, written from the published rule.

Per pyramid level, a ground-truth box matches an anchor when, for both width and height, the ratio
r = gt_wh / anchor_wh satisfies max(r, 1/r) < anchor_t. Each match is placed in the cell holding the GT centre and
in up to two neighbouring cells: the left (right) neighbour when the centre's fractional x is < 0.5 (> 0.5), the
upper (lower) one likewise for y, skipping neighbours outside the grid. Neighbour cells can still reach the centre
because the decoded offset sigmoid(t) * 2 - 0.5 spans (-0.5, 1.5) cells. Extra positives per GT speed up training.

Everything in `LevelTargets` is in that level's grid units (input pixels / stride); IoU-style losses are scale
invariant, so nothing needs converting back to pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Candidate cells relative to the centre cell, as (dx, dy): centre, left, up, right, down.
_OFFSETS = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1))


@dataclass
class LevelTargets:
    """Matches of one level; M = number of (GT, anchor, cell) matches."""

    img: Tensor  # (M,) int64 image index in the batch
    anchor: Tensor  # (M,) int64 anchor index in 0..na-1
    gy: Tensor  # (M,) int64 cell row
    gx: Tensor  # (M,) int64 cell column
    box: Tensor  # (M, 4) float cx, cy relative to the cell's top-left corner (in (-0.5, 1.5)), w, h
    cls: Tensor  # (M,) int64 class index
    anchor_wh: Tensor  # (M, 2) float matched anchor's w, h

    def __len__(self) -> int:
        return int(self.img.numel())


def flatten_targets(targets: dict, device: torch.device) -> Tensor:
    """Per-image box lists -> (T, 6) float rows (img, cls, cx, cy, w, h) in input pixels; degenerate boxes dropped."""
    boxes = [b.reshape(-1, 4).to(device, torch.float32) for b in targets["boxes"]]
    if not boxes:
        return torch.zeros(0, 6, device=device)
    counts = torch.tensor([len(b) for b in boxes], device=device)
    img = torch.repeat_interleave(torch.arange(len(boxes), device=device), counts)
    cls = torch.cat([c.reshape(-1).to(device) for c in targets["classes"]])
    xyxy = torch.cat(boxes)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    rows = torch.cat([img[:, None].float(), cls[:, None].float(), (xyxy[:, :2] + xyxy[:, 2:]) / 2, wh], 1)
    return rows[(wh > 0).all(1)]


def build_targets(
    raw: Sequence[Tensor], targets: dict, anchors: Tensor, strides: Tensor, anchor_t: float = 4.0
) -> list[LevelTargets]:
    """raw: per level (B, na, H, W, 5 + nc) (only shapes/device used); anchors (L, na, 2) px; strides (L,).

    Returns one `LevelTargets` per level.
    """
    device = raw[0].device
    gt = flatten_targets(targets, device)  # (T, 6)
    offsets = torch.tensor(_OFFSETS, device=device)  # (5, 2)
    out = []
    for level, p in enumerate(raw):
        h, w = p.shape[2], p.shape[3]
        stride = float(strides[level])
        anchor_wh = anchors[level].to(device, torch.float32) / stride  # (na, 2)
        xy, wh = gt[:, 2:4] / stride, gt[:, 4:6] / stride  # (T, 2) each

        ratio = wh[None] / anchor_wh[:, None]  # (na, T, 2)
        a, t = (torch.maximum(ratio, 1 / ratio).amax(-1) < anchor_t).nonzero(as_tuple=True)  # (K,) each

        centre = xy[t]  # (K, 2)
        size = torch.tensor([w, h], device=device)
        cell = centre.floor().long().clamp(min=torch.zeros_like(size), max=size - 1)  # (K, 2) x, y
        frac = centre - cell  # (K, 2) position inside the cell
        use = torch.stack(
            [
                torch.ones_like(t, dtype=torch.bool),
                (frac[:, 0] < 0.5) & (cell[:, 0] > 0),
                (frac[:, 1] < 0.5) & (cell[:, 1] > 0),
                (frac[:, 0] > 0.5) & (cell[:, 0] < w - 1),
                (frac[:, 1] > 0.5) & (cell[:, 1] < h - 1),
            ]
        )  # (5, K)
        k, m = use.nonzero(as_tuple=True)  # (M,) candidate kind, match index
        cells = cell[m] + offsets[k]  # (M, 2)
        rows, a = gt[t[m]], a[m]
        out.append(
            LevelTargets(
                img=rows[:, 0].long(),
                anchor=a,
                gy=cells[:, 1],
                gx=cells[:, 0],
                box=torch.cat([centre[m] - cells, wh[t[m]]], 1),
                cls=rows[:, 1].long(),
                anchor_wh=anchor_wh[a],
            )
        )
    return out
