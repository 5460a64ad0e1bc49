"""Fuse several prediction sets of one image (members x TTA variants) into one, with ensemble-boxes.

A prediction set is ``{"boxes": (K, 4) float32 xyxy original-image pixels, "scores": (K,), "labels": (K,) int64}``.
ensemble-boxes wants boxes in [0, 1]. They are normalised over a square frame of side 2 * max(W, H) centred on
the image - a uniform scale and shift, so IoUs are unchanged - which holds every box a member can predict (they
lie inside its letterbox square: the image's long side, centred), so nothing is clipped and fused boxes keep
the members' frame (the predictor clips its final boxes to the image). Zero-area boxes (clamped at the square's
edge) are dropped here, as ensemble-boxes would, without its warning per call.

One set is returned unchanged (fusion of one is the identity), so an ensemble of one member without TTA
reproduces that member exactly. WBF of k identical sets gives the set back (less zero-area boxes) as long as
iou_thr is at least the members' own NMS IoU (0.6): no two boxes of one class in a set overlap enough to merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from ensemble_boxes import nms, weighted_boxes_fusion
from ensemble_boxes.ensemble_boxes_nms import cpu_soft_nms_float

FUSIONS = ("wbf", "soft-nms", "nms")
MAX_DET = 300  # as the members' own post-processing


@dataclass(frozen=True)
class FusionParams:
    method: str = "wbf"
    iou_thr: float = 0.55  # wbf / nms: boxes of one class overlapping more than this are fused / suppressed
    skip_box_thr: float = 0.0  # boxes scoring below this are ignored (soft-nms: also after decay)
    sigma: float = 0.5  # soft-nms only: Gaussian decay score * exp(-IoU^2 / sigma)
    max_det: int = MAX_DET

    def __post_init__(self):
        if self.method not in FUSIONS:
            raise ValueError(f"fusion={self.method!r} is not valid; choose one of: {', '.join(FUSIONS)}")

    def to_dict(self) -> dict:
        return asdict(self)


def empty_prediction() -> dict[str, np.ndarray]:
    return {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0, np.int64)}


def _frame(image_wh: tuple[int, int]) -> tuple[np.ndarray, float]:
    """(origin (4,) px, side px) of the normalisation frame: a square of side 2 * max(W, H) centred on the image."""
    w, h = image_wh
    side = 2.0 * max(w, h)
    return np.array([(w - side) / 2, (h - side) / 2] * 2, np.float64), side


def _normalised(pred: dict, origin: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.clip((np.asarray(pred["boxes"], np.float64).reshape(-1, 4) - origin) / side, 0.0, 1.0)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], np.asarray(pred["scores"], np.float64)[keep], np.asarray(pred["labels"])[keep]


def _soft_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, params: FusionParams):
    """Gaussian soft-NMS per class with ensemble-boxes' kernel, returning the *decayed* scores.

    ensemble_boxes.soft_nms() returns the kept boxes' original scores, so a duplicate keeps its full score; its
    kernel cpu_soft_nms_float decays the score array it is given in place, in the order of the indices it
    returns, so those are read back here (tests/ensemble check that duplicates come back decayed).
    """
    parts = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        decayed = scores[idx].astype(np.float64)
        keep = cpu_soft_nms_float(
            boxes[idx].copy(), decayed, Nt=params.iou_thr, sigma=params.sigma, thresh=params.skip_box_thr, method=2
        )
        parts.append((boxes[idx][keep], decayed[decayed > params.skip_box_thr], labels[idx][keep]))
    return tuple(np.concatenate(column) for column in zip(*parts))


def fuse_detections(
    sets: Sequence[dict], weights: Sequence[float], image_wh: tuple[int, int], params: FusionParams = FusionParams()
) -> dict[str, np.ndarray]:
    """Fuse prediction sets of one image (one weight per set) -> one prediction set in original pixels,
    sorted by decreasing score, at most params.max_det boxes."""
    if len(sets) != len(weights):
        raise ValueError(f"{len(sets)} prediction sets but {len(weights)} weights")
    if len(sets) == 1:
        return sets[0]
    origin, side = _frame(image_wh)
    boxes, scores, labels = zip(*(_normalised(p, origin, side) for p in sets))
    weights = [float(w) for w in weights]
    if params.method != "wbf":  # weight each set's scores relative to the heaviest set: scores keep their scale
        top = max(weights)
        scaled = [s * (w / top) for s, w in zip(scores, weights)]
        kept = [s >= params.skip_box_thr for s in scaled]
        boxes, scores, labels = ([a[k] for a, k in zip(arrays, kept)] for arrays in (boxes, scaled, labels))
    if sum(len(s) for s in scores) == 0:
        return empty_prediction()
    if params.method == "wbf":
        fused = weighted_boxes_fusion(
            list(boxes),
            list(scores),
            list(labels),
            weights=weights,
            iou_thr=params.iou_thr,
            skip_box_thr=params.skip_box_thr,
        )
    elif params.method == "nms":
        fused = nms(list(boxes), list(scores), list(labels), iou_thr=params.iou_thr)
    else:
        fused = _soft_nms(np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels), params)
    out_boxes, out_scores, out_labels = fused
    order = np.argsort(-np.asarray(out_scores), kind="stable")[: params.max_det]
    return {
        "boxes": (np.asarray(out_boxes, np.float64)[order] * side + origin).astype(np.float32).reshape(-1, 4),
        "scores": np.asarray(out_scores, np.float32)[order],
        "labels": np.asarray(out_labels)[order].astype(np.int64),
    }


def fuse_views(probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """(..., S, V) view probabilities of S sets, one weight per set -> (..., V) weighted mean (sums to 1)."""
    w = np.asarray(weights, np.float64)
    return (np.asarray(probs, np.float64) * w[:, None]).sum(-2) / w.sum()
