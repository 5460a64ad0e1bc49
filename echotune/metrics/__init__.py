"""Honest evaluation metrics: COCO mAP (pycocotools' matching), P/R/F1 in the Ultralytics convention at an
operating confidence, view metrics, the search score, and bootstrap intervals over source videos."""

from __future__ import annotations

from echotune.metrics.bootstrap import (
    Estimate,
    bootstrap_ci,
    bootstrap_draws,
    format_estimates,
    paired_bootstrap,
    percentile_interval,
)
from echotune.metrics.detection import DetectionMetrics, detection_metrics
from echotune.metrics.evaluation import EvaluationSet
from echotune.metrics.score import (
    DEFAULT_WEIGHTS,
    METRIC_LABELS,
    METRIC_NAMES,
    OBJECTIVES,
    REPORTED_VAL_METRICS,
    SCORE_METRIC,
    SELECTION_METRIC,
    SHORT_METRICS,
    TASK_WEIGHT_METRICS,
    TRAIN_LOSS,
    VAL_METRICS,
    VAL_PREFIX,
    metrics_dict,
    per_class_metrics,
    validation_score,
)
from echotune.metrics.view import NO_VIEW, ViewMetrics, view_metrics

__all__ = [
    "DEFAULT_WEIGHTS",
    "METRIC_LABELS",
    "METRIC_NAMES",
    "OBJECTIVES",
    "NO_VIEW",
    "REPORTED_VAL_METRICS",
    "SCORE_METRIC",
    "SELECTION_METRIC",
    "SHORT_METRICS",
    "TASK_WEIGHT_METRICS",
    "TRAIN_LOSS",
    "VAL_METRICS",
    "VAL_PREFIX",
    "DetectionMetrics",
    "Estimate",
    "EvaluationSet",
    "ViewMetrics",
    "bootstrap_ci",
    "bootstrap_draws",
    "detection_metrics",
    "format_estimates",
    "metrics_dict",
    "paired_bootstrap",
    "percentile_interval",
    "per_class_metrics",
    "validation_score",
    "view_metrics",
]
