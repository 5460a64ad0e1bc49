"""Detection metrics for the search: COCO mAPs (via pycocotools) plus P/R/F1 at the best confidence.

Feed the predictions the usual protocol evaluates: the model's output *after* NMS at a low confidence
threshold (0.001) - a high threshold truncates the precision/recall curve and lowers mAP. COCO counts at most
the top 100 detections per image and class (maxDets=100); the rest do not count towards mAP.

Speed (measured on the 2-core CPU box, one thread): 100 images x 300 predictions (4 classes, 0-3 GT per
image) take 0.3-0.45 s (best of 5: 0.31 s), ~75% of it inside pycocotools (loadRes + evaluate).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from echotune.metrics._arrays import parse_batch
from echotune.metrics.coco import coco_ap
from echotune.metrics.matching import best_f1


@dataclass
class DetectionMetrics:
    """Detection metrics of one validation pass.

    ``map50`` / ``map50_95``: COCO mAP@0.5 and mAP@0.5:0.95 (mean over classes that have GT);
    ``precision`` / ``recall`` / ``f1``: at IoU 0.5, micro over classes, at confidence ``best_conf`` (the one
    maximising F1); ``ap50_per_class`` / ``ap_per_class``: class id -> AP@0.5 / AP@0.5:0.95, classes with GT only.
    """

    map50: float = 0.0
    map50_95: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    best_conf: float = 0.0
    ap50_per_class: dict[int, float] = field(default_factory=dict)
    ap_per_class: dict[int, float] = field(default_factory=dict)


def detection_metrics(
    predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], num_classes: int
) -> DetectionMetrics:
    """Compute :class:`DetectionMetrics` for one dataset pass.

    ``predictions[i]``: ``{"boxes": (K, 4) float xyxy pixels, "scores": (K,), "labels": (K,) int}``;
    ``targets[i]``: ``{"boxes": (N, 4) float xyxy pixels, "labels": (N,) int}``; numpy arrays or torch
    tensors, one entry per image in the same order. Images without GT and/or without predictions are valid.
    Labels must lie in ``[0, num_classes)`` and boxes/scores be finite with x2 >= x1, y2 >= y1 (else
    ValueError). Empty cases give 0.0, never NaN: no predictions -> all zeros (AP 0 for classes with GT);
    no GT -> all zeros and empty per-class dicts.
    """
    preds, gts = parse_batch(predictions, targets, num_classes)
    ap = coco_ap(preds, gts, num_classes)
    point = best_f1(preds, gts)
    return DetectionMetrics(
        map50=ap.map50, map50_95=ap.map50_95,
        precision=point.precision, recall=point.recall, f1=point.f1, best_conf=point.conf,
        ap50_per_class=ap.ap50_per_class, ap_per_class=ap.ap_per_class,
    )
