"""Precision, recall and F1 in the Ultralytics convention, from the cached COCO matches.

The convention (as Ultralytics' validator documents and reports P, R and F1; implemented here from that
behaviour):

1. **Matches**: true positives at IoU 0.5 are COCO's (:mod:`echotune.metrics.coco`: per image and class,
   greedy by descending score, at most 100 detections per image and class), so P/R/F1 and mAP agree on
   which detection hit which box.
2. **Per-class curves**: for each class ``c`` with GT (``n_gt_c > 0``), its detections sorted by descending
   score give cumulative ``ctp`` / ``cfp`` and, as functions of the score, the recall curve
   ``R_c = ctp / n_gt_c`` and the precision curve ``P_c = ctp / (ctp + cfp)``.
3. **Interpolation in score space**: at a confidence ``x``, ``R_c(x) = np.interp(-x, -scores, R_c, left=0)``
   and ``P_c(x) = np.interp(-x, -scores, P_c, left=1)``: linear between the two detections whose scores
   bracket ``x``; above the highest score R = 0 and P = 1, below the lowest the values at the last detection.
   A class with GT but no detection has P = R = 0 everywhere. ``F1_c(x) = 2 P R / (P + R + 1e-16)``.
4. **Choosing the operating confidence** (only when none is given): the curves on the grid
   ``x = linspace(0, 1, 1000)``; the mean over classes with GT of ``F1_c`` is smoothed with a box filter of
   fractional width 0.1 (``nf = round(1000 * 0.1 * 2) // 2 + 1 = 101`` points, both ends padded with
   ``nf // 2`` copies of the edge value, ``np.convolve(..., mode="valid")``); ``conf`` is the grid point of
   its first maximum.
5. **Reported numbers** at ``conf`` (chosen, or given - e.g. chosen on val and applied to test):
   ``precision = mean_c P_c(conf)``, ``recall = mean_c R_c(conf)``, ``f1 = mean_c F1_c(conf)`` (the mean of
   the per-class F1, not 2PR/(P+R) of the means), over classes with GT only. Predictions of classes without
   GT are ignored. No GT at all -> zeros; no predictions or no true positive -> zeros at conf 0.0.

:func:`prf_at` evaluates step 3 at one confidence for image multiplicities ``counts`` (B, N) without
building repeated lists: in the list with each image repeated ``count`` times, ``np.interp`` reads the
*last* copy of the lowest-scored detection with score >= x (weighted cumulative sums over the detections at
or above x) and the *first* copy of the next detection below x (those sums plus that one detection);
detections of images with count 0 are absent. The same float operations as ``np.interp`` are used, so with
``counts`` all 1 the values equal ``np.interp`` on the curves bit for bit.
"""

from __future__ import annotations

import numpy as np

from echotune.metrics.coco import CocoMatches

CONF_GRID = np.linspace(0.0, 1.0, 1000)
SMOOTH_FRACTION = 0.1
EPS = 1e-16


def box_smooth(y: np.ndarray, fraction: float = SMOOTH_FRACTION) -> np.ndarray:
    """Box filter over ``fraction`` of ``len(y)`` points (odd), ends padded with the edge values; same length."""
    nf = round(len(y) * fraction * 2) // 2 + 1
    pad = np.ones(nf // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(padded, np.ones(nf) / nf, mode="valid")


def f1_score(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """Element-wise ``2 P R / (P + R + 1e-16)`` (0 where P = R = 0)."""
    return 2 * precision * recall / (precision + recall + EPS)


def choose_conf(matches: CocoMatches) -> float:
    """The operating confidence: grid point of the maximum of the smoothed mean-over-classes F1 curve.

    0.0 when no class has GT (or when F1 is 0 everywhere, the first grid point).
    """
    n_gt = matches.gt_counts.sum(axis=0)
    f1_curves = []
    for c in np.flatnonzero(n_gt):
        cm = matches.classes[c]
        if len(cm.scores) == 0:
            f1_curves.append(np.zeros_like(CONF_GRID))
            continue
        ctp = np.cumsum(cm.tp[0]).astype(np.float64)
        precision = ctp / np.arange(1, len(ctp) + 1)
        recall = ctp / n_gt[c]
        p = np.interp(-CONF_GRID, -cm.scores, precision, left=1.0)
        r = np.interp(-CONF_GRID, -cm.scores, recall, left=0.0)
        f1_curves.append(f1_score(p, r))
    if not f1_curves:
        return 0.0
    return float(CONF_GRID[int(np.argmax(box_smooth(np.mean(f1_curves, axis=0))))])


def _interp(x: float, s_left: np.ndarray, y_left: np.ndarray, s_right: np.ndarray, y_right: np.ndarray):
    """``np.interp``'s arithmetic between xp = -s_left and -s_right at -x (s_left > x > s_right)."""
    slope = (y_right - y_left) / (-s_right - -s_left)
    return slope * (-x - -s_left) + y_left


def prf_at(matches: CocoMatches, conf: float, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class P, R, F1 at ``conf`` for image multiplicities ``counts`` (B, N) -> three (B, K) arrays.

    NaN where a class has no GT in that resample (left out of class means).
    """
    conf = float(conf)
    n_images, num_classes = matches.gt_counts.shape
    n_gt = counts @ matches.gt_counts.astype(np.float64)  # (B, K)
    present = counts > 0
    precision = np.zeros(n_gt.shape)
    recall = np.zeros(n_gt.shape)
    for c, cm in enumerate(matches.classes):
        d = len(cm.scores)
        if d == 0:
            continue  # no detections: P = R = 0
        tp = cm.tp[0]
        split = int(np.searchsorted(-cm.scores, -conf, side="right"))  # detections with score >= conf
        above, below = cm.image[:split], cm.image[split:]
        n_above = np.bincount(above, minlength=n_images).astype(np.float64)
        tp_above = np.bincount(above, weights=tp[:split], minlength=n_images)
        last = np.full(n_images, -1)  # per image: position of its lowest-scored detection >= conf
        img, idx = np.unique(above[::-1], return_index=True)
        last[img] = split - 1 - idx
        first = np.full(n_images, d)  # per image: position of its highest-scored detection < conf
        img, idx = np.unique(below, return_index=True)
        first[img] = split + idx
        left = np.where(present, last, -1).max(axis=1)  # (B,) -1: nothing at or above conf
        right = np.where(present, first, d).min(axis=1)  # (B,) d: nothing below conf
        has_left, has_right = left >= 0, right < d
        ctp, n_det = counts @ tp_above, counts @ n_above  # at the left neighbour
        gt = np.where(n_gt[:, c] > 0, n_gt[:, c], 1.0)
        p_left = ctp / np.where(has_left, n_det, 1.0)
        r_left = ctp / gt
        s_left, s_right = cm.scores[np.maximum(left, 0)], cm.scores[np.minimum(right, d - 1)]
        tp_right = tp[np.minimum(right, d - 1)]
        p_right = (ctp + tp_right) / (n_det + 1)
        r_right = (ctp + tp_right) / gt
        between = has_left & has_right  # (at s_left == conf the formula gives y_left exactly)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(between, _interp(conf, s_left, p_left, s_right, p_right), p_left)
            r = np.where(between, _interp(conf, s_left, r_left, s_right, r_right), r_left)
        # above the highest score present (np.interp's left values): R = 0, P = 1; no detection at all: 0, 0
        precision[:, c] = np.where(has_left, p, np.where(has_right, 1.0, 0.0))
        recall[:, c] = np.where(has_left, r, 0.0)
    f1 = f1_score(precision, recall)
    missing = n_gt == 0
    for arr in (precision, recall, f1):
        arr[missing] = np.nan
    return precision, recall, f1
