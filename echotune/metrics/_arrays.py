"""Array helpers shared by the metric modules: numpy/torch -> validated numpy arrays, class means."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def to_numpy(x: Any, dtype: type | None = None) -> np.ndarray:
    """A numpy copy of ``x`` (numpy array, torch tensor, list or scalar); torch tensors are detached first."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr.astype(dtype) if dtype is not None else arr


def as_int_labels(x: Any, what: str) -> np.ndarray:
    """``x`` as a 1-D int64 array; raises ValueError on non-integral values."""
    arr = to_numpy(x).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{what} must be integers, got {arr.dtype} values {arr[:5]}")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class ImageBoxes:
    """One image's boxes: ``boxes`` (N, 4) float64 xyxy pixels, ``labels`` (N,) int64, ``scores`` (N,) or None."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None


def _check_boxes(boxes: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{where}: boxes contain NaN/inf")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError(f"{where}: boxes must be xyxy with x2 >= x1 and y2 >= y1")


def parse_image(entry: Mapping[str, Any], num_classes: int, where: str, with_scores: bool) -> ImageBoxes:
    """Validate one prediction/target dict and return its arrays.

    ``entry["boxes"]`` (N, 4) xyxy, ``entry["labels"]`` (N,) ints in ``[0, num_classes)``, and when
    ``with_scores`` ``entry["scores"]`` (N,) finite floats. Empty arrays of any shape with size 0 are accepted.
    """
    for key in ("boxes", "labels") + (("scores",) if with_scores else ()):
        if key not in entry:
            raise ValueError(f"{where}: missing key {key!r} (has {sorted(entry)})")
    boxes = to_numpy(entry["boxes"], np.float64)
    if boxes.size % 4:
        raise ValueError(f"{where}: boxes must have shape (N, 4), got {boxes.shape}")
    boxes = boxes.reshape(-1, 4)
    labels = as_int_labels(entry["labels"], f"{where}: labels")
    n = len(boxes)
    if len(labels) != n:
        raise ValueError(f"{where}: {n} boxes but {len(labels)} labels")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels must be in [0, {num_classes}), got {np.unique(labels).tolist()}")
    _check_boxes(boxes, where)
    scores = None
    if with_scores:
        scores = to_numpy(entry["scores"], np.float64).reshape(-1)
        if len(scores) != n:
            raise ValueError(f"{where}: {n} boxes but {len(scores)} scores")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{where}: scores contain NaN/inf")
    return ImageBoxes(boxes, labels, scores)


def parse_batch(
    predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], num_classes: int
) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """Validate and convert ``predictions`` / ``targets`` (one dict per image, same order)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction entries but {len(targets)} target entries")
    preds = [parse_image(p, num_classes, f"predictions[{i}]", True) for i, p in enumerate(predictions)]
    gts = [parse_image(t, num_classes, f"targets[{i}]", False) for i, t in enumerate(targets)]
    return preds, gts


def mean_over_classes(values: np.ndarray) -> np.ndarray:
    """(B, K) per-class values, NaN for classes without GT -> (B,) mean over the others (0.0 where none).

    Classes without GT are left out of every mean (COCO's summarize, Ultralytics' per-class averages).
    """
    valid = ~np.isnan(values)
    n = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1)
    return np.divide(total, n, out=np.zeros(len(values)), where=n > 0)
