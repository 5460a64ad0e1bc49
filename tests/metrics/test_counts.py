"""COCO mAP from the cached matches equals pycocotools, also for image multiplicities (bootstrap resamples)
checked against pycocotools / the independent P/R/F1 reference on the explicitly replicated image list."""

from __future__ import annotations

import numpy as np
import pytest

from echotune.metrics import EvaluationSet, detection_metrics, view_metrics
from tests.metrics.cases import random_case, video_case
from tests.metrics.reference import reference_coco, reference_prf

TOL = 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_map_equals_pycocotools(seed):
    # images without GT / without predictions, > 100 detections of one class in image 1 (maxDets), and on odd
    # seeds a class with predictions but no GT (excluded from the means)
    extra = seed % 2 == 1
    preds, targets = random_case(seed, num_images=16, extra_class=extra)
    m = detection_metrics(preds, targets, num_classes=4 + extra)
    map50, map50_95, per_class = reference_coco(preds, targets, num_classes=4 + extra)
    assert 0.0 < m.map50 < 1.0
    assert (m.map50, m.map50_95) == pytest.approx((map50, map50_95), abs=TOL)
    assert set(m.ap50_per_class) == set(per_class) == set(m.ap_per_class) == set(m.gt_per_class)
    for c, (ap50, ap) in per_class.items():
        assert (m.ap50_per_class[c], m.ap_per_class[c]) == pytest.approx((ap50, ap), abs=TOL)


def _replicate(items, counts):
    return [items[i] for i in np.repeat(np.arange(len(items)), counts)]


@pytest.mark.parametrize("seed", range(4))
def test_counts_equal_the_explicitly_replicated_list(seed):
    """Row b of ``resampled(counts)`` = the metrics of the list where image i appears counts[b, i] times
    (replicated images get new image ids in pycocotools): mAP vs pycocotools, P/R/F1 vs the independent
    reference, view metrics vs view_metrics, and the whole row vs a set built on that list."""
    case = video_case(6, frames_per_video=3, seed=seed, dets_per_image=8)
    n = len(case.targets)
    es = EvaluationSet.build(case.predictions, case.targets, case.view_logits, case.view_targets, 4, 3, case.groups)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, size=(3, n))
    counts[0, :] = 1  # the data as it is
    conf = 0.31
    rows = es.resampled(counts, conf)
    for b, row in enumerate(counts):
        preds, targets = _replicate(case.predictions, row), _replicate(case.targets, row)
        map50, map50_95, _ = reference_coco(preds, targets, 4)
        assert (rows["map50"][b], rows["map50_95"][b]) == pytest.approx((map50, map50_95), abs=TOL)
        ref = reference_prf(preds, targets, 4, conf=conf)
        got = (rows["precision"][b], rows["recall"][b], rows["f1"][b])
        assert got == pytest.approx((ref["precision"], ref["recall"], ref["f1"]), abs=TOL)
        view = view_metrics(_replicate(list(case.view_logits), row), _replicate(list(case.view_targets), row), 3)
        assert (rows["view_acc"][b], rows["view_f1"][b]) == pytest.approx((view.accuracy, view.macro_f1), abs=TOL)
        explicit = EvaluationSet.build(
            preds, targets, _replicate(list(case.view_logits), row), _replicate(list(case.view_targets), row), 4, 3
        ).metrics(conf, prefix="")
        assert {k: rows[k][b] for k in rows} == pytest.approx({k: explicit[k] for k in rows}, abs=TOL)


def test_counts_with_crowded_image_and_class_without_gt():
    # maxDets per image and class, a predicted class without GT, and images dropped (count 0) or repeated
    preds, targets = random_case(3, num_images=10, extra_class=True)
    es = EvaluationSet.build(preds, targets, np.zeros(10, np.int64), np.zeros(10, np.int64), 5, 1)
    counts = np.array([[0, 3, 1, 0, 2, 1, 1, 0, 2, 1], [2, 1, 0, 1, 1, 0, 3, 1, 0, 1]])
    rows = es.resampled(counts, conf=0.5)
    for b, row in enumerate(counts):
        preds_b, targets_b = _replicate(preds, row), _replicate(targets, row)
        map50, map50_95, _ = reference_coco(preds_b, targets_b, 5)
        ref = reference_prf(preds_b, targets_b, 5, conf=0.5)
        assert (rows["map50"][b], rows["map50_95"][b]) == pytest.approx((map50, map50_95), abs=TOL)
        assert (rows["precision"][b], rows["recall"][b], rows["f1"][b]) == pytest.approx(
            (ref["precision"], ref["recall"], ref["f1"]), abs=TOL
        )


def test_counts_all_zero_or_no_gt_give_zeros():
    preds, targets = random_case(1, num_images=6)
    es = EvaluationSet.build(preds, targets, np.zeros(6, np.int64), np.zeros(6, np.int64), 4, 1)
    no_gt = np.array([[1, 0, 0, 0, 0, 0]])  # image 0 has no GT (every 5th image)
    for counts in (np.zeros((1, 6)), no_gt):
        rows = es.resampled(counts, conf=0.2)
        assert all(float(v[0]) == 0.0 for k, v in rows.items() if k not in ("view_acc", "view_f1", "score"))
        assert all(np.isfinite(v).all() for v in rows.values())
