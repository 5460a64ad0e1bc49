"""Honest validation metrics: COCO mAP (pycocotools), P/R/F1 at best confidence, view metrics, search score."""
from __future__ import annotations

from echotune.metrics.detection import DetectionMetrics, detection_metrics
from echotune.metrics.score import DEFAULT_WEIGHTS, metrics_dict, validation_score
from echotune.metrics.view import NO_VIEW, ViewMetrics, view_metrics

__all__ = [
    "DEFAULT_WEIGHTS",
    "NO_VIEW",
    "DetectionMetrics",
    "ViewMetrics",
    "detection_metrics",
    "metrics_dict",
    "validation_score",
    "view_metrics",
]
