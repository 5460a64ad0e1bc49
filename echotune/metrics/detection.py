"""Detection metrics of one pass: COCO mAPs plus P/R/F1 (Ultralytics convention) at an operating confidence.

Feed the predictions the usual protocol evaluates: the model's output *after* NMS at a low confidence
threshold (0.001) - a high threshold truncates the precision/recall curve and lowers mAP. COCO counts at most
the top 100 detections per image and class (maxDets=100); the rest count neither for mAP nor for P/R/F1.

pycocotools matches once (:mod:`echotune.metrics.coco`); mAP (:mod:`echotune.metrics.ap`) and P/R/F1
(:mod:`echotune.metrics.prf`, where the convention is spelled out) are numpy on the cached matches.
:class:`echotune.metrics.EvaluationSet` keeps that cache for bootstrap intervals; :func:`detection_metrics`
is the one-shot form.

Speed (measured on the 2-core CPU box, one thread, other jobs running): 100 images x 300 predictions
(4 classes, 0-3 GT per image) take 0.37-0.55 s (best of 5: 0.37 s), nearly all of it pycocotools'
matching (loadRes + evaluate); the numpy part (AP, choosing the confidence, P/R/F1) is a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echotune.metrics._arrays import mean_over_classes, parse_batch
from echotune.metrics.ap import CocoAveragePrecision
from echotune.metrics.coco import CocoMatches, coco_matches
from echotune.metrics.prf import choose_conf, prf_at


@dataclass
class DetectionMetrics:
    """Detection metrics of one pass; every mean is over the classes that have GT.

    ``map50`` / ``map50_95``: COCO mAP@0.5 and mAP@0.5:0.95. ``precision`` / ``recall`` / ``f1``: IoU 0.5,
    Ultralytics convention (means of per-class P, R and F1 at confidence ``conf``; see
    :mod:`echotune.metrics.prf`). ``conf``: the operating confidence - chosen on this pass (maximum of the
    smoothed mean F1 curve) or given by the caller (e.g. chosen on val, applied to test). Per-class dicts map
    class id -> value for classes with GT only: ``ap50_per_class``, ``ap_per_class`` (AP@0.5:0.95),
    ``precision_per_class``, ``recall_per_class``, ``f1_per_class``, ``gt_per_class`` (number of GT boxes).
    """

    map50: float = 0.0
    map50_95: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    conf: float = 0.0
    ap50_per_class: dict[int, float] = field(default_factory=dict)
    ap_per_class: dict[int, float] = field(default_factory=dict)
    precision_per_class: dict[int, float] = field(default_factory=dict)
    recall_per_class: dict[int, float] = field(default_factory=dict)
    f1_per_class: dict[int, float] = field(default_factory=dict)
    gt_per_class: dict[int, int] = field(default_factory=dict)


def summarize_detection(matches: CocoMatches, ap: CocoAveragePrecision, conf: float | None = None) -> DetectionMetrics:
    """:class:`DetectionMetrics` of the cached ``matches`` (``ap`` built from them) at ``conf``.

    ``conf=None`` chooses the operating confidence on these matches; a float is applied as given.
    """
    conf = choose_conf(matches) if conf is None else float(conf)
    ones = np.ones((1, matches.n_images))
    ap_ct = ap(ones)[0]  # (K, T)
    p, r, f1 = (x[0] for x in prf_at(matches, conf, ones))
    gt = matches.gt_counts.sum(axis=0)
    classes = [int(c) for c in np.flatnonzero(gt)]
    per_class = lambda values: {c: float(values[c]) for c in classes}  # noqa: E731
    return DetectionMetrics(
        map50=float(mean_over_classes(ap_ct[None, :, 0])[0]),
        map50_95=float(mean_over_classes(ap_ct.mean(axis=1)[None])[0]),
        precision=float(mean_over_classes(p[None])[0]),
        recall=float(mean_over_classes(r[None])[0]),
        f1=float(mean_over_classes(f1[None])[0]),
        conf=conf,
        ap50_per_class=per_class(ap_ct[:, 0]),
        ap_per_class=per_class(ap_ct.mean(axis=1)),
        precision_per_class=per_class(p),
        recall_per_class=per_class(r),
        f1_per_class=per_class(f1),
        gt_per_class={c: int(gt[c]) for c in classes},
    )


def detection_metrics(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    num_classes: int,
    conf: float | None = None,
) -> DetectionMetrics:
    """Compute :class:`DetectionMetrics` for one dataset pass.

    ``predictions[i]``: ``{"boxes": (K, 4) float xyxy pixels, "scores": (K,), "labels": (K,) int}``;
    ``targets[i]``: ``{"boxes": (N, 4) float xyxy pixels, "labels": (N,) int}``; numpy arrays or torch
    tensors, one entry per image in the same order. Images without GT and/or without predictions are valid.
    Labels must lie in ``[0, num_classes)`` and boxes/scores be finite with x2 >= x1, y2 >= y1 (else
    ValueError). ``conf``: None chooses the operating confidence on this pass, a float applies it.
    Empty cases give 0.0, never NaN: no predictions -> zeros (AP 0 for classes with GT); no GT -> zeros
    and empty per-class dicts.
    """
    preds, gts = parse_batch(predictions, targets, num_classes)
    matches = coco_matches(preds, gts, num_classes)
    return summarize_detection(matches, CocoAveragePrecision(matches), conf)
