"""P/R/F1 in the Ultralytics convention against an independent loop-based implementation (tests/metrics/reference.py),
at the chosen and at given confidences, plus small hand-made cases of the convention's edges."""

from __future__ import annotations

import numpy as np
import pytest

from echotune.metrics import detection_metrics
from echotune.metrics._arrays import parse_batch
from echotune.metrics.coco import coco_matches
from echotune.metrics.prf import CONF_GRID, box_smooth, prf_at
from tests.metrics.cases import random_case
from tests.metrics.reference import reference_prf

TOL = 1e-12


def _assert_matches_reference(m, ref):
    assert m.conf == pytest.approx(ref["conf"], abs=TOL)
    assert (m.precision, m.recall, m.f1) == pytest.approx((ref["precision"], ref["recall"], ref["f1"]), abs=TOL)
    assert set(m.f1_per_class) == set(ref["per_class"]) == set(m.gt_per_class)
    for c, (p, r, f1) in ref["per_class"].items():
        got = (m.precision_per_class[c], m.recall_per_class[c], m.f1_per_class[c])
        assert got == pytest.approx((p, r, f1), abs=TOL)


@pytest.mark.parametrize("seed", range(12))
def test_chosen_conf_matches_independent_implementation(seed):
    # odd seeds: an extra predicted class without GT (its predictions must be ignored)
    extra = seed % 2 == 1
    preds, targets = random_case(seed, num_images=14, extra_class=extra)
    m = detection_metrics(preds, targets, num_classes=4 + extra)
    ref = reference_prf(preds, targets, num_classes=4 + extra)
    assert 0.0 < m.f1 < 1.0 and 0.0 < m.conf < 1.0  # a non-degenerate case
    _assert_matches_reference(m, ref)


@pytest.mark.parametrize("seed", range(12))
def test_given_conf_matches_independent_implementation(seed):
    preds, targets = random_case(100 + seed, num_images=12, extra_class=True)
    some_score = float(preds[2]["scores"][0])  # exactly a detection's score: no interpolation
    for conf in (0.0, 0.05, 0.3, 0.5, 0.77, some_score, 0.999, 1.0):
        m = detection_metrics(preds, targets, num_classes=5, conf=conf)
        assert m.conf == conf
        _assert_matches_reference(m, reference_prf(preds, targets, num_classes=5, conf=conf))


def test_given_chosen_conf_reproduces_the_numbers_exactly():
    preds, targets = random_case(7)
    chosen = detection_metrics(preds, targets, num_classes=4)
    given = detection_metrics(preds, targets, num_classes=4, conf=chosen.conf)
    assert given == chosen
    other = detection_metrics(preds, targets, num_classes=4, conf=min(chosen.conf + 0.2, 1.0))
    assert other.f1 != chosen.f1 and other.map50 == chosen.map50  # mAP does not depend on conf


def test_mean_of_per_class_f1_not_f1_of_means():
    # At conf 0.0 (below every score) each class reads the end of its curve. Class 0: one TP -> P = R = F1 = 1.
    # Class 1: an FP (0.8) then a TP (0.05) -> P = 1/2, R = 1, F1 = 2 * 0.5 / 1.5 = 2/3.
    # Means: P = 3/4, R = 1, F1 = (1 + 2/3) / 2 = 5/6 - not 2PR/(P+R) of the means, which is 6/7.
    gt = {"boxes": np.array([[0, 0, 10, 10], [50, 50, 70, 70]], float), "labels": np.array([0, 1])}
    pred = {
        "boxes": np.array([[0, 0, 10, 10], [200, 200, 220, 220], [50, 50, 70, 70]], float),
        "scores": np.array([0.9, 0.8, 0.05]),
        "labels": np.array([0, 1, 1]),
    }
    m = detection_metrics([pred], [gt], num_classes=2, conf=0.0)
    assert (m.precision, m.recall) == pytest.approx((0.75, 1.0))
    assert m.f1 == pytest.approx(5 / 6)
    assert m.f1_per_class == pytest.approx({0: 1.0, 1: 2 / 3})


def test_above_highest_score_recall_0_precision_1_and_class_without_predictions():
    gt = {"boxes": np.array([[0, 0, 10, 10], [50, 50, 70, 70]], float), "labels": np.array([0, 1])}
    pred = {"boxes": np.array([[0, 0, 10, 10]], float), "scores": np.array([0.6]), "labels": np.array([0])}
    m = detection_metrics([pred], [gt], num_classes=2, conf=0.7)
    # class 0 above its only score: R 0, P 1 (F1 0); class 1 has GT but no prediction: P = R = F1 = 0
    assert m.precision_per_class == {0: 1.0, 1: 0.0} and m.recall_per_class == {0: 0.0, 1: 0.0}
    assert (m.precision, m.recall, m.f1) == (0.5, 0.0, 0.0)


def test_box_smooth_window_and_edges():
    y = np.zeros(1000)
    y[500] = 101.0
    s = box_smooth(y)
    # 101-point window (round(1000 * 0.1 * 2) // 2 + 1): the spike spreads to indices 450..550 as 1.0 each
    assert np.flatnonzero(s > 0.5).tolist() == list(range(450, 551))
    assert s[450:551] == pytest.approx(np.ones(101))
    ramp = np.linspace(0, 1, 1000)
    # edge padding with 50 copies of y[0] = 0: s[0] = sum(ramp[:51]) / 101
    assert box_smooth(ramp)[0] == pytest.approx(ramp[:51].sum() / 101)


def test_prf_at_reproduces_np_interp_bit_for_bit():
    # prf_at reads the curves through the cached matches and image counts; with counts 1 it must give exactly
    # what np.interp gives on the per-class curves (the docstring's claim the chosen/given equality rests on)
    preds, targets = random_case(4)
    matches = coco_matches(*parse_batch(preds, targets, 4), 4)
    n_gt = matches.gt_counts.sum(axis=0)
    for conf in (*CONF_GRID[::37], float(matches.classes[0].scores[3])):
        p, r, _ = prf_at(matches, conf, np.ones((1, matches.n_images)))
        for c, cm in enumerate(matches.classes):
            ctp = np.cumsum(cm.tp[0]).astype(float)
            assert p[0, c] == np.interp(-conf, -cm.scores, ctp / np.arange(1, len(ctp) + 1), left=1.0)
            assert r[0, c] == np.interp(-conf, -cm.scores, ctp / n_gt[c], left=0.0)


def test_boxes_outside_coco_area_range_are_refused():
    huge = {"boxes": np.array([[0.0, 0.0, 2e5, 2e5]]), "labels": np.array([0])}  # area 4e10 > 1e10
    pred = {"boxes": np.array([[0.0, 0.0, 10.0, 10.0]]), "scores": np.array([0.5]), "labels": np.array([0])}
    with pytest.raises(ValueError, match="area range"):
        detection_metrics([pred], [huge], num_classes=1)
