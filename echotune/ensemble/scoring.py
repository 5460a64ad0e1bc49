"""Metrics of a fused selection of cached predictions, with the project's metric code and names.

Boxes are compared in original-image pixels; the IoU-based metrics do not change under the letterbox's
uniform scale and shift, so a single member's numbers equal those of `evaluate_checkpoint`. P/R/F1 are read at
an operating confidence: chosen on the split itself when `conf` is None (val), applied as given otherwise
(the one val chose, on test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from echotune.ensemble.fusion import FusionParams, fuse_detections, fuse_views
from echotune.ensemble.inference import SplitPredictions
from echotune.metrics import EvaluationSet, metrics_dict


def fused(
    preds: SplitPredictions,
    weights: Sequence[float],
    params: FusionParams,
    members: Sequence[int] | None = None,
    tta: bool = True,
) -> tuple[list[dict], np.ndarray]:
    """Fuse `members` (default all; weights indexed by member) over their TTA variants (only the plain run
    when tta=False) -> per-image predictions and (N, V) view probabilities."""
    members = range(preds.n_members) if members is None else members
    sets = [(m, t) for m in members for t in (range(preds.n_variants(m)) if tta else [0])]
    set_weights = [float(weights[m]) for m, _ in sets]
    detections = [
        fuse_detections([preds.detections[m][t][i] for m, t in sets], set_weights, preds.image_wh[i], params)
        for i in range(len(preds.paths))
    ]
    probs = np.stack([preds.view_probs[m][t] for m, t in sets])  # (S, N, V)
    return detections, fuse_views(probs.transpose(1, 0, 2), set_weights)


def evaluation_set(
    preds: SplitPredictions,
    weights: Sequence[float],
    params: FusionParams,
    members: Sequence[int] | None = None,
    tta: bool = True,
) -> EvaluationSet:
    """The fused selection's matches, cached per image with each image's source video (for bootstrap CIs)."""
    detections, probs = fused(preds, weights, params, members, tta)
    return EvaluationSet.build(
        detections, preds.targets, probs, preds.view_targets, preds.nc, probs.shape[-1], groups=preds.groups
    )


def split_metrics(
    preds: SplitPredictions,
    weights: Sequence[float],
    params: FusionParams,
    members: Sequence[int] | None = None,
    tta: bool = True,
    score_weights: Mapping[str, float] | None = None,
    conf: float | None = None,
) -> dict[str, float]:
    """`{split}/map50, map50_95, precision, recall, f1, view_acc, view_f1, score, conf` of the fused selection."""
    evaluation = evaluation_set(preds, weights, params, members, tta)
    return metrics_dict(evaluation.detection(conf), evaluation.view(), prefix=f"{preds.split}/", weights=score_weights)


def member_metrics(
    preds: SplitPredictions, member: int, score_weights: Mapping[str, float] | None = None, conf: float | None = None
) -> dict[str, float]:
    """One member on its own, plain run (no TTA, no fusion): what validation measured for it."""
    return split_metrics(
        preds, [1.0] * preds.n_members, FusionParams(), [member], tta=False, score_weights=score_weights, conf=conf
    )
