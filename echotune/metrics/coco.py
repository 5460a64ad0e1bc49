"""COCO mAP through pycocotools' own COCOeval, built in memory from arrays (no json files).

Protocol: COCOeval ``iouType="bbox"``, IoU thresholds 0.50:0.05:0.95, 101-point interpolated precision,
area range "all", maxDets 100. The evaluator is restricted to that one area range and that one maxDets value
(COCO evaluates each (area range, maxDets) independently, so the numbers are identical to a default
COCOeval's ``stats[0]`` / ``stats[1]``; skipping the unused small/medium/large ranges makes it ~3x faster).

pycocotools details handled here:

* boxes go in as xywh; GT annotations need ``iscrowd: 0`` and ``area`` (w*h; only used by area ranges);
* GT annotation ids start at 1: COCOeval treats a match to GT id 0 as "no match";
* every image is listed in ``images``, also those without GT (their detections are false positives);
* ``loadRes`` fails on an empty result list, so "no predictions at all" is answered without COCOeval
  (AP 0 for every class with GT, which is what COCO would give);
* ``maxDets`` is applied per image *and class* (COCOeval keeps the top 100 scores of each (image, class)):
  lower-scored predictions beyond that do not count;
* ``precision`` holds -1 for classes without GT; they are excluded from every mean, as COCO's summarize does.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from echotune.metrics._arrays import ImageBoxes

MAX_DETS = 100


@dataclass(frozen=True)
class CocoAP:
    """mAP@0.5, mAP@0.5:0.95 and per-class APs (class id -> AP, only classes with GT)."""

    map50: float
    map50_95: float
    ap50_per_class: dict[int, float]
    ap_per_class: dict[int, float]


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) xywh."""
    out = boxes.copy()
    out[:, 2:] -= boxes[:, :2]
    return out


def _gt_dataset(targets: list[ImageBoxes], num_classes: int) -> dict:
    """COCO ground-truth dataset dict; image id = index in ``targets``, category id = class id."""
    annotations = []
    for img_id, t in enumerate(targets):
        for (x, y, w, h), label in zip(_xywh(t.boxes).tolist(), t.labels.tolist()):
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id, "category_id": label,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
            })
    return {
        "images": [{"id": i} for i in range(len(targets))],
        "categories": [{"id": c, "name": str(c)} for c in range(num_classes)],
        "annotations": annotations,
    }


def _results(predictions: list[ImageBoxes]) -> list[dict]:
    """COCO result list: one ``{image_id, category_id, bbox (xywh), score}`` per prediction."""
    if not predictions:
        return []
    img_ids = np.concatenate([np.full(len(p.labels), i) for i, p in enumerate(predictions)]).tolist()
    boxes = _xywh(np.concatenate([p.boxes for p in predictions])).tolist()
    labels = np.concatenate([p.labels for p in predictions]).tolist()
    scores = np.concatenate([p.scores for p in predictions]).tolist()
    return [
        {"image_id": i, "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(img_ids, labels, boxes, scores)
    ]


def _run_cocoeval(gt_dataset: dict, results: list[dict]) -> np.ndarray:
    """COCOeval ``eval["precision"]`` restricted to area "all" and maxDets 100: shape (T=10, R=101, K)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dataset
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.areaRng = [ev.params.areaRng[0]]  # "all": [0, 1e5 ** 2]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [MAX_DETS]
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, :, 0, 0]


def _mean_valid(x: np.ndarray) -> float:
    """Mean over entries > -1 (COCO's summarize); 0.0 when there are none."""
    valid = x[x > -1]
    return float(valid.mean()) if valid.size else 0.0


def coco_ap(predictions: list[ImageBoxes], targets: list[ImageBoxes], num_classes: int) -> CocoAP:
    """COCO APs of validated per-image arrays (see :func:`echotune.metrics.detection_metrics`)."""
    gt_classes = sorted({int(c) for t in targets for c in t.labels})
    results = _results(predictions)
    if not results or not gt_classes:
        zeros = {c: 0.0 for c in gt_classes}
        return CocoAP(0.0, 0.0, zeros, dict(zeros))
    precision = _run_cocoeval(_gt_dataset(targets, num_classes), results)  # (T, R, K), K = class id
    ap50 = {c: _mean_valid(precision[0, :, c]) for c in gt_classes}
    ap = {c: _mean_valid(precision[:, :, c]) for c in gt_classes}
    return CocoAP(_mean_valid(precision[0]), _mean_valid(precision), ap50, ap)
