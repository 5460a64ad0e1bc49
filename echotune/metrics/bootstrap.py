"""Bootstrap confidence intervals over source videos, from an :class:`~echotune.metrics.EvaluationSet`.

Frames of one video are strongly correlated, so the resampling unit is the video (``groups``), not the
frame: each resample draws G videos with replacement out of the set's G (``numpy.random.default_rng(seed)``),
and image i then counts as often as its video was drawn. Every metric of a resample is computed from the
cached matches with those counts (:meth:`EvaluationSet.resampled`): mAP exactly as pycocotools would on the
explicitly repeated image list, P/R/F1 (Ultralytics convention) at the **fixed** operating confidence given
by the caller - it is not re-chosen per resample, so the interval is that of the deployed threshold, not
of an oracle one -, view accuracy and macro-F1 from count-weighted confusion matrices, and the score with the
weighted formula of :mod:`echotune.metrics.score`. Intervals are percentile intervals of the resampled values;
``value`` is the metric on the data as it is.

:func:`paired_bootstrap` compares two models on the same images: the same resamples for both, so the
interval of the difference a - b benefits from their correlation (a set compared with itself gives exactly
0, 0, 0).

Cost (measured on the 2-core CPU box, one thread, best of 3, with other jobs running on the box:
``OMP_NUM_THREADS=1 .venv/bin/python -m tests.metrics.bench_bootstrap``): 300 images from 30 videos, 100
detections per image (30,000; 4 classes, 1-2 GT per image): ``EvaluationSet.build`` (pycocotools' matching,
once) 0.36 s; then 1,000 resamples take 0.13-0.18 s for :func:`bootstrap_ci` and 0.23-0.33 s for
:func:`paired_bootstrap`. Re-running pycocotools per resample would cost 0.4 s (restricted COCOeval, as
``detection_metrics`` used to) to 1.2-1.5 s (default COCOeval) each, i.e. 7-25 minutes per 1,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from echotune.metrics.evaluation import EvaluationSet
from echotune.metrics.score import METRIC_NAMES

CHUNK = 256  # resamples evaluated together: bounds the (chunk, N) and (chunk, detections) temporaries


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval: ``value`` [``low``, ``high``]."""

    value: float
    low: float
    high: float

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return format(self)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def format_estimates(estimates: Mapping[str, Estimate], names: Iterable[str] | None = None, spec: str = ".3f") -> str:
    """One line ``name value [low, high] | ...`` for ``names`` (default: all, in the mapping's order)."""
    return " | ".join(f"{name} {estimates[name]:{spec}}" for name in (names or estimates))


def resample_counts(group_index: np.ndarray, n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, N) image multiplicities: draw ``n_groups`` groups with replacement per resample, each image
    counts as often as its group (``group_index`` (N,) in [0, n_groups)) was drawn."""
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n_resamples, n_groups))
    offsets = np.arange(n_resamples)[:, None] * n_groups
    per_group = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_groups)
    return per_group.reshape(n_resamples, n_groups)[:, group_index].astype(np.float64)


def _check(n_resamples: int, level: float, es: EvaluationSet) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if es.n_images == 0:
        raise ValueError("cannot bootstrap an evaluation set without images")


def _resampled(es: EvaluationSet, conf: float, counts: np.ndarray, weights) -> dict[str, np.ndarray]:
    """:meth:`EvaluationSet.resampled` over all rows of ``counts``, in chunks of ``CHUNK``."""
    parts = [es.resampled(counts[i : i + CHUNK], conf, weights) for i in range(0, len(counts), CHUNK)]
    return {name: np.concatenate([p[name] for p in parts]) for name in METRIC_NAMES}


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap_draws(
    es: EvaluationSet,
    conf: float | None,
    n_resamples: int = 1000,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """The resampled metrics themselves: ``{name: (n_resamples,) values}`` for ``METRIC_NAMES``.

    Resample r draws the same videos for every evaluation set of the same images and ``seed``, so the draws of
    two models (or of one model trained with several seeds) on one test set are paired: this is what lets a
    caller combine them, e.g. a mean over training seeds with an interval over seeds and videos together.
    ``conf`` and ``weights`` as in :func:`bootstrap_ci`.
    """
    _check(n_resamples, 0.95, es)
    conf = es.choose_conf() if conf is None else float(conf)
    return _resampled(es, conf, resample_counts(es.group_index, es.n_groups, n_resamples, seed), weights)


def bootstrap_ci(
    es: EvaluationSet,
    conf: float | None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    weights: Mapping[str, float] | None = None,
) -> dict[str, Estimate]:
    """Percentile bootstrap intervals over source videos: ``{name: Estimate}`` for ``METRIC_NAMES``.

    ``conf``: the operating confidence for precision/recall/f1, held fixed across resamples (None: chosen once
    on ``es`` itself). ``weights``: score weights (see :func:`echotune.metrics.validation_score`). The same
    ``seed`` gives identical intervals.
    """
    _check(n_resamples, level, es)
    conf = es.choose_conf() if conf is None else float(conf)
    full = _resampled(es, conf, np.ones((1, es.n_images)), weights)
    samples = bootstrap_draws(es, conf, n_resamples, seed, weights)
    return {name: Estimate(float(full[name][0]), *percentile_interval(samples[name], level)) for name in METRIC_NAMES}


def paired_bootstrap(
    es_a: EvaluationSet,
    es_b: EvaluationSet,
    conf_a: float | None,
    conf_b: float | None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    weights: Mapping[str, float] | None = None,
) -> dict[str, Estimate]:
    """Paired bootstrap of the difference a - b: ``{name: Estimate(value=metric_a - metric_b, low, high)}``.

    Both sets must cover the same images in the same order (same groups, GT counts and view labels; else
    ValueError); each resample applies the same video draw to both. Confidences as in :func:`bootstrap_ci`.
    """
    _check(n_resamples, level, es_a)
    if (
        es_a.groups != es_b.groups
        or not np.array_equal(es_a.matches.gt_counts, es_b.matches.gt_counts)
        or not np.array_equal(es_a.view_true, es_b.view_true)
    ):
        raise ValueError(
            "paired_bootstrap needs two evaluations of the same images in the same order "
            "(groups, GT per image and class, and view labels must agree)"
        )
    conf_a = es_a.choose_conf() if conf_a is None else float(conf_a)
    conf_b = es_b.choose_conf() if conf_b is None else float(conf_b)
    ones = np.ones((1, es_a.n_images))
    counts = resample_counts(es_a.group_index, es_a.n_groups, n_resamples, seed)
    full_a, full_b = _resampled(es_a, conf_a, ones, weights), _resampled(es_b, conf_b, ones, weights)
    a, b = _resampled(es_a, conf_a, counts, weights), _resampled(es_b, conf_b, counts, weights)
    return {
        name: Estimate(float(full_a[name][0] - full_b[name][0]), *percentile_interval(a[name] - b[name], level))
        for name in METRIC_NAMES
    }
