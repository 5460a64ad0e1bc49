"""View-classification metrics: accuracy, macro-F1 and Cohen's kappa (sklearn-style, by hand: the batched forms
work on many count-weighted confusions at once, for bootstrap resamples) and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echotune.metrics._arrays import as_int_labels, to_numpy

NO_VIEW = -1


@dataclass
class ViewMetrics:
    """``accuracy``, ``macro_f1`` and ``kappa`` (Cohen's, chance-corrected: 0 for any guess that ignores the
    image, negative below chance) over images with a view label; ``confusion`` (V, V) int64, rows = true,
    cols = predicted; ``count`` = number of labelled images (0 -> all metrics 0.0)."""

    accuracy: float = 0.0
    macro_f1: float = 0.0
    kappa: float = 0.0
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


def weighted_confusions(true: np.ndarray, pred: np.ndarray, num_views: int, counts: np.ndarray) -> np.ndarray:
    """Confusion matrices of image multiplicities ``counts`` (B, N) -> (B, V, V) float.

    ``true`` (N,) may hold NO_VIEW (those images do not count); ``pred`` (N,) in [0, V).
    """
    keep = true != NO_VIEW
    onehot = np.zeros((len(true), num_views * num_views))
    onehot[np.flatnonzero(keep), true[keep] * num_views + pred[keep]] = 1.0
    return (counts @ onehot).reshape(len(counts), num_views, num_views)


def accuracy_batch(confusion: np.ndarray) -> np.ndarray:
    """(..., V, V) confusions -> (...) accuracy = trace / total (0.0 where nothing is labelled)."""
    total = confusion.sum(axis=(-2, -1))
    correct = np.trace(confusion, axis1=-2, axis2=-1)
    return np.divide(correct, total, out=np.zeros(np.shape(total)), where=total > 0)


def macro_f1_batch(confusion: np.ndarray) -> np.ndarray:
    """(..., V, V) confusions -> (...) mean per-class F1 = 2TP / (2TP + FP + FN) over classes present in
    targets or predictions (sklearn's macro average with labels = those present); 0.0 where none is."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    seen = confusion.sum(axis=-1) + confusion.sum(axis=-2)  # support + predicted = 2TP + FP + FN
    present = seen > 0
    f1 = np.divide(2 * tp, seen, out=np.zeros(seen.shape), where=present)
    n = present.sum(axis=-1)
    return np.divide(f1.sum(axis=-1), n, out=np.zeros(np.shape(n)), where=n > 0)


def kappa_batch(confusion: np.ndarray) -> np.ndarray:
    """(..., V, V) confusions -> (...) Cohen's kappa ``(p_o - p_e) / (1 - p_e)``, as
    ``sklearn.metrics.cohen_kappa_score``: p_o the accuracy, p_e the agreement expected by chance from the
    true and predicted view frequencies. Constant or random guesses score 0 in expectation whatever the view
    mix (macro-F1 of a random guess is about 1/V). 0.0 where nothing is labelled or p_e = 1 (one view only,
    always predicted: agreement that carries no information)."""
    confusion = np.asarray(confusion, np.float64)
    total = confusion.sum(axis=(-2, -1))
    safe_total = np.where(total > 0, total, 1.0)
    observed = np.trace(confusion, axis1=-2, axis2=-1) / safe_total
    expected = (confusion.sum(axis=-1) * confusion.sum(axis=-2)).sum(axis=-1) / safe_total**2
    informative = (total > 0) & (expected < 1.0 - 1e-12)
    return np.divide(observed - expected, 1.0 - expected, out=np.zeros(np.shape(total)), where=informative)


def macro_f1(confusion: np.ndarray) -> float:
    """Macro-F1 of one (V, V) confusion matrix (see :func:`macro_f1_batch`)."""
    return float(macro_f1_batch(confusion))


def parse_views(logits_or_pred: Any, targets: Any, num_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one pass's view outputs -> ``(true, pred)`` (N,) int64; ``true`` keeps NO_VIEW entries.

    ``logits_or_pred``: (N, V) logits (argmax taken) or (N,) predicted view indices; ``targets``: (N,) int
    view ids, -1 = no view label. numpy or torch. Targets must be -1 or in ``[0, num_views)``.
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
    return true, pred


def summarize_views(true: np.ndarray, pred: np.ndarray, num_views: int) -> ViewMetrics:
    """:class:`ViewMetrics` of validated ``(true, pred)`` (see :func:`parse_views`)."""
    keep = true != NO_VIEW
    confusion = confusion_matrix(true[keep], pred[keep], num_views)
    count = int(keep.sum())
    if count == 0:
        return ViewMetrics(0.0, 0.0, 0.0, confusion, 0)
    return ViewMetrics(
        float(np.trace(confusion) / count), macro_f1(confusion), float(kappa_batch(confusion)), confusion, count
    )


def view_metrics(logits_or_pred: Any, targets: Any, num_views: int) -> ViewMetrics:
    """View metrics of one pass (arguments as :func:`parse_views`; unlabelled images are ignored)."""
    return summarize_views(*parse_views(logits_or_pred, targets, num_views), num_views)
