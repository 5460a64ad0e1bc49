"""The single search objective, the flat metrics dict that trials report, and the per-class table.

The objective needs both tasks: half detection (mean of mAP50 and mAP50-95), half view classification
measured by Cohen's kappa clipped at 0, which is chance-corrected (a model that guesses the view, or always
says the commonest one, gets 0 whatever the view mix; macro-F1 gave such a model about 1/3, so a model that
detected nothing scored 0.17 and could win a search). A model that detects nothing and guesses views therefore
scores about 0; see tests/metrics/test_score.py for the floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from echotune.metrics.detection import DetectionMetrics
from echotune.metrics.view import ViewMetrics

# Weight keys of the score; view_f1 may be weighted in (score_weights) but is not part of the default.
DEFAULT_WEIGHTS: dict[str, float] = {"map50": 0.25, "map50_95": 0.25, "view_kappa": 0.5, "view_f1": 0.0}
METRIC_NAMES = ("map50", "map50_95", "precision", "recall", "f1", "view_acc", "view_f1", "view_kappa", "score")
# (name, display label) for tables and reports, in METRIC_NAMES order
METRIC_LABELS = (
    ("map50", "mAP50"),
    ("map50_95", "mAP50-95"),
    ("precision", "P"),
    ("recall", "R"),
    ("f1", "F1"),
    ("view_acc", "view_acc"),
    ("view_f1", "view_f1"),
    ("view_kappa", "kappa"),
    ("score", "score"),
)
# What the search selects on (Optuna's value, ASHA's rungs, the leaderboard's rank): the best val/score over the
# epochs trained so far, reported by the engine each epoch. The model handed back is that epoch's checkpoint, so
# the number a trial is judged by is the number of the model it would hand back.
SELECTION_METRIC = "val/best_score"
VAL_PREFIX = "val/"  # validation metrics as reported; metrics_dict takes another prefix for other splits
VAL_METRICS = tuple(VAL_PREFIX + name for name in METRIC_NAMES)  # as reported each epoch: val/map50, ..., val/score
REPORTED_VAL_METRICS = (*VAL_METRICS, SELECTION_METRIC)  # every val/* number a trial reports each epoch
SHORT_METRICS = dict(zip(METRIC_NAMES, VAL_METRICS))  # map50 -> val/map50, ...: the names users type
SCORE_METRIC = SHORT_METRICS["score"]  # val/score: the epoch's own score (SELECTION_METRIC is its best so far)
TRAIN_LOSS = "train/loss"  # the epoch's mean balanced training loss; its parts follow as train/loss/box, ...
TASKS = ("det", "view")  # the two tasks, in the order the balancers (echotune.balance) weigh them
# Each task's weight as reported every epoch, whatever the balancer (fixed reports its constants)
TASK_WEIGHT_METRICS = {task: f"gradnorm/w_{task}" for task in TASKS}
# What a search can optimise (`--objectives`): score is SELECTION_METRIC, the number ASHA's rungs compare, Optuna
# is told and the leaderboard ranks by; the others are the last epoch's values.
OBJECTIVES = {
    "score": SELECTION_METRIC,
    **{name: SHORT_METRICS[name] for name in ("map50", "map50_95", "view_acc", "view_f1", "view_kappa", "f1")},
}

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
    """The weighted mean ``sum(w_k * v_k) / sum(w_k)`` over the weight keys, where v_k is ``values[k]`` except
    that view_kappa is clipped at 0 (worse than chance is no worse than guessing, and keeps the score in
    [0, 1]); ``values`` maps metric names (``METRIC_NAMES``) to floats or equally shaped arrays (resamples)."""
    w = resolve_weights(weights)
    terms = {k: np.maximum(values[k], 0.0) if k == "view_kappa" else values[k] for k in w if w[k] > 0}
    return sum(w[k] * terms[k] for k in terms) / sum(w.values())


def validation_score(det: DetectionMetrics, view: ViewMetrics, weights: Mapping[str, float] | None = None) -> float:
    """The search objective in [0, 1]: weighted mean ``sum(w_k * m_k) / sum(w_k)``.

    Default ``0.5 * (0.5 * map50 + 0.5 * map50_95) + 0.5 * max(0, view_kappa)``: the model has two jobs, so
    detection and view classification weigh the same. Detection quality is the mean of mAP@0.5 (does it find
    the jet at all - what matters clinically) and mAP@0.5:0.95 (how tightly it boxes it); view quality is
    Cohen's kappa, chance-corrected, so guessing earns nothing and rare views count through the chance term.
    ``weights`` may set any of ``map50``, ``map50_95``, ``view_kappa``, ``view_f1`` (missing keys keep their
    default; view_f1's is 0); dividing by the sum keeps the score in [0, 1]. A split without view labels has
    kappa = 0, which lowers the score rather than hiding it.
    """
    values = {"map50": det.map50, "map50_95": det.map50_95, "view_f1": view.macro_f1, "view_kappa": view.kappa}
    return float(combine_score(values, weights))


def metrics_dict(
    det: DetectionMetrics, view: ViewMetrics, prefix: str = VAL_PREFIX, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Flat, finite float metrics: ``{prefix}`` + ``METRIC_NAMES`` (map50, map50_95, precision, recall, f1,
    view_acc, view_f1, view_kappa, score), then ``{prefix}conf``, the operating confidence of precision/recall/f1 (store
    the val-chosen one to apply it to test)."""
    values = {
        "map50": det.map50,
        "map50_95": det.map50_95,
        "precision": det.precision,
        "recall": det.recall,
        "f1": det.f1,
        "view_acc": view.accuracy,
        "view_f1": view.macro_f1,
        "view_kappa": view.kappa,
        "score": validation_score(det, view, weights),
        "conf": det.conf,
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
            "ap50": det.ap50_per_class[c],
            "ap50_95": det.ap_per_class[c],
            "precision": det.precision_per_class[c],
            "recall": det.recall_per_class[c],
            "f1": det.f1_per_class[c],
            "gt": det.gt_per_class[c],
        }
        for c in sorted(det.gt_per_class)
    }
