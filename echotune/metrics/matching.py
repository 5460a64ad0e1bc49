"""Precision / recall / F1 at the confidence that maximises F1 (IoU 0.5, micro-pooled over classes).

Matching, per image and class: predictions in descending score order each take the unmatched GT box of the
same class with the highest IoU, if that IoU is >= 0.5 (a true positive); every GT box is matched at most once
and everything else is a false positive. IoU comes from ``torchvision.ops.box_iou``.

Sweep: all predictions of all images and classes are pooled (micro averaging, so frequent classes weigh more,
as in one P/R/F1 number over all jets) and sorted by score; for every distinct score s the detections with
score >= s give P = TP / (TP + FP), R = TP / n_gt, F1 = 2PR / (P + R). The point with the highest F1 is
reported together with its confidence s (ties: the highest confidence). With no predictions, no GT or no true
positive at all, P = R = F1 = best_conf = 0. Unlike the COCO mAP, no per-image cap of 100 detections applies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from echotune.metrics._arrays import ImageBoxes

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class F1Point:
    """The maximum-F1 operating point."""

    precision: float
    recall: float
    f1: float
    conf: float


def _greedy_tp(iou: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy matching of an (D, G) IoU matrix whose rows are in descending score order -> (D,) bool TP."""
    tp = np.zeros(iou.shape[0], dtype=bool)
    if iou.shape[1] == 0:
        return tp
    iou = iou.copy()
    for d in np.flatnonzero(iou.max(axis=1) >= iou_threshold):  # other rows can never match
        g = int(np.argmax(iou[d]))
        if iou[d, g] >= iou_threshold:
            tp[d] = True
            iou[:, g] = -1.0  # GT g is taken
    return tp


def match_image(pred: ImageBoxes, gt: ImageBoxes, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """(K,) bool: which of one image's K predictions are true positives at ``iou_threshold``."""
    tp = np.zeros(len(pred.labels), dtype=bool)
    for c in np.unique(pred.labels):
        idx = np.flatnonzero(pred.labels == c)
        idx = idx[np.argsort(-pred.scores[idx], kind="mergesort")]
        gt_boxes = gt.boxes[gt.labels == c]
        if len(gt_boxes) == 0:
            continue
        iou = box_iou(torch.from_numpy(pred.boxes[idx]), torch.from_numpy(gt_boxes)).numpy()
        iou = np.nan_to_num(iou, nan=0.0)  # two zero-area boxes give 0/0
        tp[idx] = _greedy_tp(iou, iou_threshold)
    return tp


def best_f1(predictions: list[ImageBoxes], targets: list[ImageBoxes]) -> F1Point:
    """Sweep the confidence threshold over pooled predictions and return the maximum-F1 point."""
    n_gt = sum(len(t.labels) for t in targets)
    if n_gt == 0 or not any(len(p.labels) for p in predictions):
        return F1Point(0.0, 0.0, 0.0, 0.0)
    scores = np.concatenate([p.scores for p in predictions])
    tp = np.concatenate([match_image(p, t) for p, t in zip(predictions, targets)])
    order = np.argsort(-scores, kind="mergesort")
    scores, tp = scores[order], tp[order]
    ctp = np.cumsum(tp)
    n_det = np.arange(1, len(tp) + 1)
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))  # last index of each tie group
    prec, rec = ctp[ends] / n_det[ends], ctp[ends] / n_gt
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    if f1[best] <= 0:
        return F1Point(0.0, 0.0, 0.0, 0.0)
    return F1Point(float(prec[best]), float(rec[best]), float(f1[best]), float(scores[ends[best]]))
