"""The single search objective, the flat metrics dict that trials report, and the per-class table."""
from __future__ import annotations

import math
from typing import Mapping, Sequence, TypeVar

import numpy as np

from echotune.metrics.detection import DetectionMetrics
from echotune.metrics.view import ViewMetrics

DEFAULT_WEIGHTS: dict[str, float] = {"map50": 0.25, "map50_95": 0.25, "view_f1": 0.5}
METRIC_NAMES = ("map50", "map50_95", "precision", "recall", "f1", "view_acc", "view_f1", "score")
# (name, display label) for tables and reports, in METRIC_NAMES order
METRIC_LABELS = (("map50", "mAP50"), ("map50_95", "mAP50-95"), ("precision", "P"), ("recall", "R"), ("f1", "F1"),
                 ("view_acc", "view_acc"), ("view_f1", "view_f1"), ("score", "score"))

Value = TypeVar("Value", float, np.ndarray)


def resolve_weights(weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """``DEFAULT_WEIGHTS`` updated with ``weights`` (missing keys keep their default), validated.

    Raises ValueError (naming the valid keys) on an unknown key, a negative or non-finite weight, or a zero sum.
    """
    resolved = dict(DEFAULT_WEIGHTS)
    valid = f"valid keys: {sorted(DEFAULT_WEIGHTS)}"
    for key, value in (weights or {}).items():
        if key not in DEFAULT_WEIGHTS:
            raise ValueError(f"unknown score weight {key!r}; {valid}")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"score weight {key!r} must be finite and >= 0, got {value}; {valid}")
        resolved[key] = value
    if sum(resolved.values()) <= 0:
        raise ValueError(f"score weights must sum to > 0, got {resolved}; {valid}")
    return resolved


def combine_score(values: Mapping[str, Value], weights: Mapping[str, float] | None = None) -> Value:
    """The weighted mean ``sum(w_k * values[k]) / sum(w_k)`` over the weight keys; ``values`` maps metric
    names (``METRIC_NAMES``) to floats or to equally shaped arrays (bootstrap resamples)."""
    w = resolve_weights(weights)
    return sum(w[k] * values[k] for k in w) / sum(w.values())


def validation_score(det: DetectionMetrics, view: ViewMetrics, weights: Mapping[str, float] | None = None) -> float:
    """The search objective in [0, 1]: weighted mean ``sum(w_k * m_k) / sum(w_k)``.

    Default ``0.5 * (0.5 * map50 + 0.5 * map50_95) + 0.5 * view_f1``: the model has two jobs, so detection
    and view classification weigh the same. Detection quality is the mean of mAP@0.5 (does it find the jet at
    all - what matters clinically) and mAP@0.5:0.95 (how tightly it boxes it); view quality is macro-F1, not
    accuracy, so rare views count as much as common ones. ``weights`` may set any of ``map50``,
    ``map50_95``, ``view_f1`` (missing keys keep their default); dividing by the sum keeps the score in [0, 1].
    A split without view labels has view_f1 = 0, which lowers the score rather than hiding it.
    """
    return float(combine_score({"map50": det.map50, "map50_95": det.map50_95, "view_f1": view.macro_f1}, weights))


def metrics_dict(
    det: DetectionMetrics, view: ViewMetrics, prefix: str = "val/", weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Flat, finite float metrics: ``{prefix}`` + ``METRIC_NAMES`` (map50, map50_95, precision, recall, f1,
    view_acc, view_f1, score), then ``{prefix}conf``, the operating confidence of precision/recall/f1 (store
    the val-chosen one to apply it to test)."""
    values = {
        "map50": det.map50, "map50_95": det.map50_95, "precision": det.precision, "recall": det.recall,
        "f1": det.f1, "view_acc": view.accuracy, "view_f1": view.macro_f1,
        "score": validation_score(det, view, weights), "conf": det.conf,
    }
    out = {f"{prefix}{k}": float(v) for k, v in values.items()}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite metrics: {bad}")
    return out


def per_class_metrics(
    det: DetectionMetrics, names: Sequence[str] | Mapping[int, str]
) -> dict[str, dict[str, float | int]]:
    """Per-class table for metrics.json: ``{names[c]: {"ap50", "ap50_95", "precision", "recall", "f1", "gt"}}``
    for every class with GT, in class-id order (``gt`` is the number of GT boxes, an int)."""
    return {
        names[c]: {
            "ap50": det.ap50_per_class[c], "ap50_95": det.ap_per_class[c],
            "precision": det.precision_per_class[c], "recall": det.recall_per_class[c],
            "f1": det.f1_per_class[c], "gt": det.gt_per_class[c],
        }
        for c in sorted(det.gt_per_class)
    }
