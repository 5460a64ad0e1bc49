"""Independent reference implementations the metric tests compare against.

* :func:`reference_coco`: a plain, default-parameter pycocotools COCOeval (N x 7 result array, shifted ids).
* :func:`reference_prf`: the Ultralytics P/R/F1 convention written out straightforwardly with loops: its own
  IoU and greedy matching (per image and class, by descending score, top 100, IoU >= 0.5, best unmatched GT),
  its own linear interpolation in score space and its own box-filter smoothing.
"""

from __future__ import annotations

import bisect
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

GRID = [i / 999 for i in range(1000)]  # linspace(0, 1, 1000), up to the last bit of some points


def reference_coco(preds: list[dict], targets: list[dict], num_classes: int) -> tuple[float, float, dict]:
    """(mAP50, mAP50-95, {class: (AP50, AP50-95)}) from a default COCOeval; classes without GT left out."""
    annotations, rows = [], []
    for i, t in enumerate(targets):
        for (x1, y1, x2, y2), c in zip(np.asarray(t["boxes"]).reshape(-1, 4), t["labels"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 1000 + i,
                    "category_id": int(c) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    for i, p in enumerate(preds):
        for (x1, y1, x2, y2), s, c in zip(np.asarray(p["boxes"]).reshape(-1, 4), p["scores"], p["labels"]):
            rows.append([1000 + i, x1, y1, x2 - x1, y2 - y1, s, int(c) + 1])
    if not rows or not annotations:
        return 0.0, 0.0, {}
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1000 + i} for i in range(len(targets))],
        "categories": [{"id": c + 1} for c in range(num_classes)],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(np.array(rows, dtype=np.float64)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"][:, :, :, 0, 2]  # area "all", maxDets 100
    per_class = {
        c: (precision[0, :, c].mean(), precision[:, :, c].mean())
        for c in range(num_classes)
        if (precision[:, :, c] > -1).any()
    }
    return float(ev.stats[1]), float(ev.stats[0]), per_class


def _iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _image_class_tp(boxes, scores, gt_boxes) -> list[tuple[float, bool]]:
    """(score, is_tp) of one image's detections of one class, top 100 by score, greedy at IoU 0.5."""
    order = sorted(range(len(scores)), key=lambda j: -scores[j])[:100]  # stable like a mergesort
    taken, out = set(), []
    for j in order:
        best, best_iou = -1, 0.5
        for g, gt in enumerate(gt_boxes):
            iou = _iou(boxes[j], gt)
            if g not in taken and iou >= best_iou:
                best, best_iou = g, iou
        if best >= 0:
            taken.add(best)
        out.append((float(scores[j]), best >= 0))
    return out


def _curve_at(x: float, neg_scores: list[float], values: list[float], left: float) -> float:
    """Linear interpolation in score space: ``neg_scores`` ascending (-score), ``values`` the curve at each
    detection; above the highest score ``left``, below the lowest the last value."""
    j = bisect.bisect_right(neg_scores, -x) - 1  # last detection with score >= x
    if j < 0:
        return left
    if j == len(values) - 1 or neg_scores[j] == -x:
        return values[j]
    x0, x1 = neg_scores[j], neg_scores[j + 1]
    return values[j] + (values[j + 1] - values[j]) * (-x - x0) / (x1 - x0)


def _smooth(y: list[float], fraction: float = 0.1) -> list[float]:
    nf = round(len(y) * fraction * 2) // 2 + 1
    padded = [y[0]] * (nf // 2) + list(y) + [y[-1]] * (nf // 2)
    return [sum(padded[i : i + nf]) / nf for i in range(len(y))]


def reference_prf(preds: list[dict], targets: list[dict], num_classes: int, conf: float | None = None) -> dict:
    """{precision, recall, f1, conf, per_class: {c: (P, R, F1)}} in the Ultralytics convention (see module)."""
    dets = {c: [] for c in range(num_classes)}
    n_gt = [0] * num_classes
    for p, t in zip(preds, targets):
        p_boxes = np.asarray(p["boxes"]).reshape(-1, 4).tolist()
        t_boxes = np.asarray(t["boxes"]).reshape(-1, 4).tolist()
        p_labels, t_labels = [int(c) for c in p["labels"]], [int(c) for c in t["labels"]]
        scores = [float(s) for s in p["scores"]]
        for c in range(num_classes):
            n_gt[c] += t_labels.count(c)
            idx = [j for j, lab in enumerate(p_labels) if lab == c]
            gts = [b for b, lab in zip(t_boxes, t_labels) if lab == c]
            dets[c] += _image_class_tp([p_boxes[j] for j in idx], [scores[j] for j in idx], gts)
    classes = [c for c in range(num_classes) if n_gt[c] > 0]
    curves = {}
    for c in classes:
        ranked = sorted(dets[c], key=lambda d: -d[0])
        ctp = cfp = 0
        neg, prec, rec = [], [], []
        for score, tp in ranked:
            ctp, cfp = ctp + tp, cfp + (not tp)
            neg.append(-score)
            prec.append(ctp / (ctp + cfp))
            rec.append(ctp / n_gt[c])
        curves[c] = (neg, prec, rec)

    def at(c: int, x: float) -> tuple[float, float, float]:
        neg, prec, rec = curves[c]
        if not neg:
            return 0.0, 0.0, 0.0
        p, r = _curve_at(x, neg, prec, 1.0), _curve_at(x, neg, rec, 0.0)
        return p, r, 2 * p * r / (p + r + 1e-16)

    if not classes:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "conf": 0.0 if conf is None else conf, "per_class": {}}
    if conf is None:
        mean_f1 = [sum(at(c, x)[2] for c in classes) / len(classes) for x in GRID]
        smoothed = _smooth(mean_f1)
        conf = GRID[max(range(len(GRID)), key=lambda i: (smoothed[i], -i))]  # first maximum
    per_class = {c: at(c, conf) for c in classes}
    mean = [sum(v[k] for v in per_class.values()) / len(classes) for k in range(3)]
    return {"precision": mean[0], "recall": mean[1], "f1": mean[2], "conf": conf, "per_class": per_class}
