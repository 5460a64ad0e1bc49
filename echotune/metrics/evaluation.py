"""One evaluated pass (detections + views of N images) with its matching cached, for point metrics and resamples.

``EvaluationSet.build`` validates the inputs and runs pycocotools' matching once; afterwards every metric -
on the data as it is (:meth:`EvaluationSet.detection`, :meth:`EvaluationSet.view`,
:meth:`EvaluationSet.metrics`) or on image multiplicities such as bootstrap resamples
(:meth:`EvaluationSet.resampled`) - is numpy on the cached arrays. ``groups`` names each image's source video
so that :mod:`echotune.metrics.bootstrap` can resample whole videos (frames of one video are not
independent).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from echotune.metrics._arrays import mean_over_classes, parse_batch
from echotune.metrics.ap import CocoAveragePrecision
from echotune.metrics.coco import CocoMatches, coco_matches
from echotune.metrics.detection import DetectionMetrics, summarize_detection
from echotune.metrics.prf import choose_conf, prf_at
from echotune.metrics.score import VAL_PREFIX, combine_score, metrics_dict
from echotune.metrics.view import (
    ViewMetrics,
    accuracy_batch,
    kappa_batch,
    macro_f1_batch,
    parse_views,
    summarize_views,
    weighted_confusions,
)


class EvaluationSet:
    """Cached evaluation of one pass. Build it with :meth:`build`.

    Attributes: ``matches`` (:class:`echotune.metrics.coco.CocoMatches`), ``view_true`` / ``view_pred``
    (N,) int64 (true may be -1 = no label), ``num_views``, ``groups`` (tuple of N hashable source-video ids),
    ``group_index`` (N,) int64 index into ``group_names`` (order of first appearance).
    """

    def __init__(
        self,
        matches: CocoMatches,
        view_true: np.ndarray,
        view_pred: np.ndarray,
        num_views: int,
        groups: Sequence[Hashable],
    ):
        self.matches = matches
        self.view_true, self.view_pred, self.num_views = view_true, view_pred, num_views
        self.groups = tuple(groups)
        index: dict[Hashable, int] = {}
        self.group_index = np.array([index.setdefault(g, len(index)) for g in self.groups], np.int64)
        self.group_names = tuple(index)
        self._ap = CocoAveragePrecision(matches)

    @classmethod
    def build(
        cls,
        predictions: Sequence[Mapping[str, Any]],
        targets: Sequence[Mapping[str, Any]],
        view_logits_or_pred: Any,
        view_targets: Any,
        num_classes: int,
        num_views: int,
        groups: Sequence[Hashable] | None = None,
    ) -> EvaluationSet:
        """Validate one pass and match it once.

        ``predictions`` / ``targets``: as :func:`echotune.metrics.detection_metrics`; ``view_logits_or_pred``
        (N, V) logits/probabilities (argmax) or (N,) ints; ``view_targets`` (N,) ints, -1 = no view label;
        ``groups`` (N,) hashable source-video id per image (None: each image is its own group).
        """
        preds, gts = parse_batch(predictions, targets, num_classes)
        true, pred = parse_views(view_logits_or_pred, view_targets, num_views)
        n = len(gts)
        if len(true) != n:
            raise ValueError(f"{n} detection entries but {len(true)} view entries")
        groups = list(range(n)) if groups is None else list(groups)
        if len(groups) != n:
            raise ValueError(f"{n} images but {len(groups)} group ids")
        return cls(coco_matches(preds, gts, num_classes), true, pred, num_views, groups)

    @property
    def n_images(self) -> int:
        return self.matches.n_images

    @property
    def num_classes(self) -> int:
        return self.matches.num_classes

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def choose_conf(self) -> float:
        """The operating confidence chosen on this set (see :mod:`echotune.metrics.prf`)."""
        return choose_conf(self.matches)

    def detection(self, conf: float | None = None) -> DetectionMetrics:
        """Detection metrics; ``conf=None`` chooses the operating confidence here, a float applies it."""
        return summarize_detection(self.matches, self._ap, conf)

    def view(self) -> ViewMetrics:
        return summarize_views(self.view_true, self.view_pred, self.num_views)

    def metrics(
        self, conf: float | None = None, prefix: str = VAL_PREFIX, weights: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """The flat dict of :func:`echotune.metrics.metrics_dict` (incl. ``{prefix}conf``)."""
        return metrics_dict(self.detection(conf), self.view(), prefix, weights)

    def resampled(
        self, counts: np.ndarray, conf: float, weights: Mapping[str, float] | None = None
    ) -> dict[str, np.ndarray]:
        """Metrics for image multiplicities ``counts`` (B, N) at the fixed confidence ``conf``.

        Row b is what this class computes on the list where image i appears ``counts[b, i]`` times:
        ``{name: (B,) float64}`` for ``METRIC_NAMES`` (mAP the COCO way, P/R/F1 at ``conf``, view accuracy
        macro-F1 and kappa from count-weighted confusions, score by :func:`echotune.metrics.score.combine_score`).
        """
        counts = np.asarray(counts, np.float64)
        if counts.ndim != 2 or counts.shape[1] != self.n_images:
            raise ValueError(f"counts must have shape (B, {self.n_images}), got {counts.shape}")
        ap = self._ap(counts)  # (B, K, T)
        p, r, f1 = prf_at(self.matches, conf, counts)
        confusion = weighted_confusions(self.view_true, self.view_pred, self.num_views, counts)
        out = {
            "map50": mean_over_classes(ap[:, :, 0]),
            "map50_95": mean_over_classes(ap.mean(axis=2)),
            "precision": mean_over_classes(p),
            "recall": mean_over_classes(r),
            "f1": mean_over_classes(f1),
            "view_acc": accuracy_batch(confusion),
            "view_f1": macro_f1_batch(confusion),
            "view_kappa": kappa_batch(confusion),
        }
        out["score"] = combine_score(out, weights)
        return out
