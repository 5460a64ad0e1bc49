"""COCO average precision from cached matches, for any image multiplicity (bootstrap resamples), numpy only.

``COCOeval.accumulate`` per class and IoU threshold: the kept detections of all images sorted by descending
score, cumulative ``tp`` / ``fp``, recall ``rc = tp / n_gt``, precision ``pr = tp / (tp + fp + eps)``
(eps = ``np.spacing(1)``), the precision envelope ``pr[i] = max(pr[i:])``, then for each of the 101 recall
thresholds ``r = linspace(0, 1, 101)`` the envelope at ``searchsorted(rc, r, side="left")`` (0 beyond the
last recall); AP = the mean of those 101 values. Classes without GT get no AP (COCO's -1) and are left out
of the mAP means.

Multiplicities: ``counts`` (B, N) says how often each image appears in each of B evaluation lists (1 = the
data as it is, a bootstrap resample repeats some images and drops others). pycocotools on the explicitly
repeated list (copies with new image ids) gives the same numbers, computed here without building the list:

* repeating each detection of the pre-sorted list ``count`` times keeps it sorted (copies of one detection
  tie; their order does not matter, they carry the same TP flag), so cumulative sums become ``counts``-
  weighted cumulative sums;
* the envelope only needs the points right after a true positive: a false positive lowers precision at
  unchanged recall, so it is dominated by the point before it; within a run of copies of one TP the last
  copy has the highest precision. So per class and threshold only the TP detections are visited:
  ``ctp`` = weighted cumsum over them, the weighted number of detections ranked at or above each of them
  comes from a (N, U) table of per-image detection counts (U = TP positions over all thresholds) times
  ``counts`` - one matrix product for all resamples;
* detections of images with count 0 add points equal to an earlier point (or precision 0): no effect.

With ``counts`` all 1 the per-class APs equal ``COCOeval.accumulate``'s up to float summation order
(|diff| < 1e-15). Cost: see :mod:`echotune.metrics.bootstrap`.
"""

from __future__ import annotations

import numpy as np

from echotune.metrics.coco import IOU_THRESHOLDS, ClassMatches, CocoMatches

REC_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs


class _ClassTable:
    """Per-class precomputation: which detections are TPs per threshold and the per-image rank table."""

    def __init__(self, cm: ClassMatches, n_images: int):
        tp_pos = [np.flatnonzero(row) for row in cm.tp]  # T arrays of positions in score order
        union = np.unique(np.concatenate(tp_pos))
        # rank_counts[i, u]: detections of image i at sorted positions <= union[u]
        segment = np.searchsorted(union, np.arange(len(cm.scores)), side="left")  # first u with union[u] >= pos
        keep = segment < len(union)
        flat = np.bincount(cm.image[keep] * len(union) + segment[keep], minlength=n_images * len(union))
        self.rank_counts = np.cumsum(flat.reshape(n_images, len(union)), axis=1).astype(np.float64)
        self.columns = [np.searchsorted(union, pos) for pos in tp_pos]  # (n_t,) column of each TP
        self.tp_image = [cm.image[pos] for pos in tp_pos]  # (n_t,) image of each TP, in score order


class CocoAveragePrecision:
    """COCO AP per class and IoU threshold from :class:`CocoMatches`, for image multiplicities ``counts``."""

    def __init__(self, matches: CocoMatches):
        self.gt_counts = matches.gt_counts.astype(np.float64)  # (N, K)
        self.tables = [_ClassTable(cm, matches.n_images) for cm in matches.classes]

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """``counts`` (B, N) float image multiplicities -> AP (B, K, T); NaN where a class has no GT."""
        n_gt = counts @ self.gt_counts  # (B, K)
        b = len(counts)
        out = np.zeros((b, len(self.tables), len(IOU_THRESHOLDS)))
        for k, table in enumerate(self.tables):
            gt = n_gt[:, k : k + 1]
            safe_gt = np.where(gt > 0, gt, 1.0)
            n_ranked = counts @ table.rank_counts  # (B, U): detections at or above each TP position
            for t, (cols, images) in enumerate(zip(table.columns, table.tp_image)):
                if len(cols) == 0:
                    continue  # no true positive: AP 0
                ctp = np.cumsum(counts[:, images], axis=1)  # (B, n_t)
                rc = ctp / safe_gt
                pr = ctp / (n_ranked[:, cols] + np.spacing(1))  # COCO: tp / (fp + tp + eps), fp + tp = rank
                envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                # recall thresholds r with r <= rc[j]; those first reached at TP j read the envelope there
                reached = np.searchsorted(REC_THRESHOLDS, rc, side="right")
                first = np.diff(reached, axis=1, prepend=0)
                out[:, k, t] = (envelope * first).sum(axis=1) / len(REC_THRESHOLDS)
        out[n_gt == 0] = np.nan
        return out
