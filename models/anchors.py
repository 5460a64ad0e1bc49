"""Anchor boxes: YOLOv5's published defaults (scaled to the image size) and IoU k-means on the data's boxes.

All anchors are (width, height) in INPUT PIXELS, shaped (levels=3, anchors_per_level=3, 2), levels ordered by
stride 8, 16, 32 (small anchors on the fine level).
"""

from __future__ import annotations

import warnings

import numpy as np

# YOLOv5's published P3/P4/P5 anchors for 640 px inputs, as (w, h) pairs flattened per level.
DEFAULT_ANCHORS: tuple[tuple[int, ...], ...] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)
DEFAULT_IMG_SIZE = 640
MIN_BOX_PX = 2.0  # boxes smaller than this are label noise, not anchor evidence


def default_anchors(img_size: int = DEFAULT_IMG_SIZE) -> np.ndarray:
    """(3, 3, 2) float32: the default anchors scaled by img_size / 640."""
    return np.asarray(DEFAULT_ANCHORS, dtype=np.float32).reshape(3, 3, 2) * (img_size / DEFAULT_IMG_SIZE)


def _centred_iou(wh: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors sharing one centre: (N, 2), (K, 2) -> (N, K)."""
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
    union = wh[:, None].prod(-1) + centres[None].prod(-1) - inter
    return inter / union


def _init_centres(wh: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with distance 1 - IoU: each new centre is drawn proportionally to its squared distance."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(n - 1):
        d = 1.0 - _centred_iou(wh, np.asarray(centres)).max(1)  # (N,) distance to the nearest centre
        p = d**2
        idx = rng.choice(len(wh), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(wh))
        centres.append(wh[idx])
    return np.asarray(centres, dtype=np.float64)


def kmeans_anchors(
    wh: np.ndarray, n: int = 9, img_size: int = DEFAULT_IMG_SIZE, seed: int = 0, max_iter: int = 300
) -> np.ndarray:
    """k-means anchors (Lloyd's algorithm, distance 1 - IoU of centred boxes, median update as in YOLOv2).

    wh: (N, 2) box widths/heights in pixels AT THE TRAINING SIZE img_size (e.g. normalised YOLO wh * img_size).
    Boxes under 2 px are dropped. Returns (3, n // 3, 2) float32 anchors in pixels, sorted by area (the smallest
    three go to the stride-8 level). With fewer than n distinct boxes it warns and returns default_anchors(img_size).
    """
    if n <= 0 or n % 3:
        raise ValueError(f"n must be a positive multiple of 3 (3 detection levels), got {n}")
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh >= MIN_BOX_PX).all(1) & np.isfinite(wh).all(1)]
    if len(np.unique(wh, axis=0)) < n:
        warnings.warn(
            f"kmeans_anchors: only {len(np.unique(wh, axis=0))} distinct boxes >= {MIN_BOX_PX} px "
            f"for {n} anchors; using the default anchors scaled to {img_size} px",
            stacklevel=2,
        )
        return default_anchors(img_size)
    rng = np.random.default_rng(seed)
    centres = _init_centres(wh, n, rng)
    assign = np.full(len(wh), -1)
    for _ in range(max_iter):
        iou = _centred_iou(wh, centres)  # (N, n)
        new_assign = iou.argmax(1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        for k in range(n):
            members = wh[assign == k]
            if len(members):
                centres[k] = np.median(members, axis=0)
            else:  # empty cluster: restart it on the box the current anchors fit worst
                centres[k] = wh[iou.max(1).argmin()]
    centres = centres[np.argsort(centres.prod(1))]
    return centres.reshape(3, n // 3, 2).astype(np.float32)
