"""View-classification metrics: accuracy, macro-F1 (sklearn-style, by hand) and confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echotune.metrics._arrays import as_int_labels, to_numpy

NO_VIEW = -1


@dataclass
class ViewMetrics:
    """``accuracy`` and ``macro_f1`` over images with a view label; ``confusion`` (V, V) int64, rows = true,
    cols = predicted; ``count`` = number of labelled images (0 -> all metrics 0.0)."""

    accuracy: float = 0.0
    macro_f1: float = 0.0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    count: int = 0


def _predicted_views(logits_or_pred: Any, num_views: int) -> np.ndarray:
    """(B, V) logits -> argmax, or (B,) predicted indices -> as is; returns (B,) int64."""
    arr = to_numpy(logits_or_pred)
    if arr.ndim == 2:
        if arr.shape[1] != num_views:
            raise ValueError(f"logits have {arr.shape[1]} columns, expected num_views={num_views}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("view logits contain NaN/inf")
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim > 2:
        raise ValueError(f"expected (B, V) logits or (B,) predictions, got shape {arr.shape}")
    pred = as_int_labels(arr, "view predictions")
    if pred.size and (pred.min() < 0 or pred.max() >= num_views):
        raise ValueError(f"view predictions must be in [0, {num_views}), got {np.unique(pred).tolist()}")
    return pred


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_views: int) -> np.ndarray:
    """(V, V) int64 counts, rows = true view, cols = predicted view; ``true``/``pred`` (B,) in [0, V)."""
    flat = np.bincount(true * num_views + pred, minlength=num_views * num_views)
    return flat.reshape(num_views, num_views).astype(np.int64)


def macro_f1(confusion: np.ndarray) -> float:
    """Mean per-class F1 = 2TP / (2TP + FP + FN) over classes present in targets or predictions."""
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    f1 = 2 * tp[present] / (support[present] + predicted[present])  # 2TP+FP+FN = support + predicted
    return float(f1.mean())


def view_metrics(logits_or_pred: Any, targets: Any, num_views: int) -> ViewMetrics:
    """View metrics of one pass.

    ``logits_or_pred``: (B, V) logits (argmax taken) or (B,) predicted view indices; ``targets``: (B,) int
    view ids, -1 = no view label (ignored). numpy or torch. Targets must be -1 or in ``[0, num_views)``.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    pred = _predicted_views(logits_or_pred, num_views)
    true = as_int_labels(targets, "view targets")
    if len(pred) != len(true):
        raise ValueError(f"{len(pred)} view predictions but {len(true)} targets")
    bad = (true != NO_VIEW) & ((true < 0) | (true >= num_views))
    if bad.any():
        raise ValueError(f"view targets must be -1 or in [0, {num_views}), got {np.unique(true[bad]).tolist()}")
    keep = true != NO_VIEW
    true, pred = true[keep], pred[keep]
    confusion = confusion_matrix(true, pred, num_views)
    count = int(keep.sum())
    if count == 0:
        return ViewMetrics(0.0, 0.0, confusion, 0)
    return ViewMetrics(float(np.trace(confusion) / count), macro_f1(confusion), confusion, count)
