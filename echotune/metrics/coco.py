"""COCO matching through pycocotools' own COCOeval, run once and cached as flat numpy arrays.

Protocol: COCOeval ``iouType="bbox"``, IoU thresholds 0.50:0.05:0.95, area range "all", maxDets 100. Only
``COCOeval.evaluate()`` runs here (the per-image, per-class greedy matching); everything computed from the
matches afterwards (COCO's 101-point AP in :mod:`echotune.metrics.ap`, the P/R/F1 curves in
:mod:`echotune.metrics.prf`) is numpy on the cached arrays, for any image multiplicity vector (a bootstrap
resample), without running pycocotools again.

What ``evaluate()`` leaves in ``evalImgs`` and what is kept, per (image, class):

* ``dtScores``: the image's detections of that class in descending score order (stable mergesort of the
  result list's order), **truncated to the top 100** (maxDets is applied per image *and* class);
* ``dtMatches`` (T=10, D): id of the matched GT per IoU threshold, 0 = unmatched -> ``tp = dtMatches > 0``;
* ``gtIgnore`` / ``dtIgnore``: all GT are non-crowd and area range "all" is [0, 1e10] px^2, so nothing is
  ignored unless a box is larger than 1e5 x 1e5 px; that case raises ValueError rather than being modelled.

For each class, the kept detections of all images are concatenated in image order and sorted once by
descending score with a stable sort - exactly the order ``COCOeval.accumulate`` uses, so ties between images
break by image index as there.

pycocotools details handled here:

* boxes go in as xywh; GT annotations need ``iscrowd: 0`` and ``area`` (w*h; only used by area ranges);
* GT annotation ids start at 1: COCOeval treats a match to GT id 0 as "no match";
* every image is listed in ``images``, also those without GT (their detections are false positives);
* ``loadRes`` fails on an empty result list, so "no predictions" (and "no GT", where nothing can count)
  skip COCOeval and keep no detections at all.
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
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCOeval's params.iouThrs; index 0 is IoU 0.5


@dataclass(frozen=True)
class ClassMatches:
    """One class's kept detections over all images, sorted by descending score (stable, COCO's order).

    ``scores`` (D,) float64 non-increasing; ``image`` (D,) int64 image index; ``tp`` (T=10, D) bool, true
    positive at IoU threshold ``IOU_THRESHOLDS[t]``.
    """

    scores: np.ndarray
    image: np.ndarray
    tp: np.ndarray

    @classmethod
    def empty(cls) -> ClassMatches:
        return cls(np.zeros(0), np.zeros(0, np.int64), np.zeros((len(IOU_THRESHOLDS), 0), bool))


@dataclass(frozen=True)
class CocoMatches:
    """The cached matching of one dataset pass: ``gt_counts`` (N, K) int64 GT boxes per image and class,
    ``classes`` K :class:`ClassMatches`."""

    gt_counts: np.ndarray
    classes: tuple[ClassMatches, ...]

    @property
    def n_images(self) -> int:
        return self.gt_counts.shape[0]

    @property
    def num_classes(self) -> int:
        return self.gt_counts.shape[1]


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
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": label,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
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
        {"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in zip(img_ids, labels, boxes, scores)
    ]


def _evaluate(gt_dataset: dict, results: list[dict]) -> list[dict | None]:
    """``COCOeval.evalImgs`` for area "all" and maxDets 100: index ``class * n_images + image``."""
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
    assert np.allclose(ev.params.iouThrs, IOU_THRESHOLDS)
    return ev.evalImgs


def _class_matches(per_image: list[dict]) -> ClassMatches:
    """Concatenate one class's ``evalImgs`` entries (image order) and sort by score, stable like COCO."""
    if not per_image:
        return ClassMatches.empty()
    scores = np.concatenate([np.asarray(e["dtScores"], np.float64) for e in per_image])
    image = np.concatenate([np.full(len(e["dtScores"]), e["image_id"], np.int64) for e in per_image])
    tp = np.concatenate([e["dtMatches"] > 0 for e in per_image], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    return ClassMatches(scores[order], image[order], tp[:, order])


def coco_matches(predictions: list[ImageBoxes], targets: list[ImageBoxes], num_classes: int) -> CocoMatches:
    """Run pycocotools' matching once on validated per-image arrays and cache it (see the module docstring)."""
    n = len(targets)
    gt_counts = np.zeros((n, num_classes), np.int64)
    for i, t in enumerate(targets):
        gt_counts[i] = np.bincount(t.labels, minlength=num_classes)
    results = _results(predictions)
    if not results or not gt_counts.any():
        return CocoMatches(gt_counts, tuple(ClassMatches.empty() for _ in range(num_classes)))
    eval_imgs = _evaluate(_gt_dataset(targets, num_classes), results)
    classes = []
    for c in range(num_classes):
        kept = [e for e in eval_imgs[c * n : (c + 1) * n] if e is not None]
        for e in kept:
            if np.any(e["gtIgnore"]) or np.any(e["dtIgnore"]):
                raise ValueError(
                    f"image {e['image_id']}: a box larger than 1e5 x 1e5 px is outside COCO's "
                    "area range 'all'; ignored boxes are not supported"
                )
        kept = [e for e in kept if len(e["dtScores"])]
        classes.append(_class_matches(kept))
    return CocoMatches(gt_counts, tuple(classes))
