"""Tests for echotune.metrics: input handling, hand-made cases (P/R/F1 in the Ultralytics convention), view
metrics, the search score, the flat metrics dict. COCOeval equality, the convention against an independent
implementation, and the bootstrap: tests/metrics/."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echotune.metrics import (
    DEFAULT_WEIGHTS,
    DetectionMetrics,
    ViewMetrics,
    detection_metrics,
    metrics_dict,
    validation_score,
    view_metrics,
)
from tests.metrics.cases import random_case

# metrics_dict's names, in its order: the contract every reporter builds on (the engine's per-epoch metrics,
# tests/engine/test_fit.py; the leaderboard's best/ columns and Optuna's user attributes, tests/search/); this is
# the one place the tests spell them out.
METRIC_KEYS = [
    "val/map50",
    "val/map50_95",
    "val/precision",
    "val/recall",
    "val/f1",
    "val/view_acc",
    "val/view_f1",
    "val/view_kappa",
    "val/score",
    "val/conf",
]


# ----------------------------------------------------------------------------------------------- helpers
def _det(boxes, labels, scores=None) -> dict:
    out = {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "labels": np.asarray(labels, np.int64)}
    if scores is not None:
        out["scores"] = np.asarray(scores, np.float64)
    return out


# ---------------------------------------------------------------------- 1. inputs (COCOeval equality: tests/metrics)
def test_torch_inputs_match_numpy():
    preds, targets = random_case(11, num_images=8)
    as_torch = lambda d: {k: torch.as_tensor(v) for k, v in d.items()}  # noqa: E731
    a = detection_metrics(preds, targets, 4)
    b = detection_metrics([as_torch(p) for p in preds], [as_torch(t) for t in targets], 4)
    assert a == b


# --------------------------------------------------------------------------------------- 2. hand-made cases
# P/R/F1 follow the Ultralytics convention (echotune/metrics/prf.py): per class with GT, recall/precision
# curves over the detections sorted by score, linearly interpolated in score space (above the highest score
# R = 0, P = 1; below the lowest, the values at the last detection), means over classes at the operating
# confidence. The chosen confidence is the first maximum, on the grid linspace(0, 1, 1000) (point i is
# i / 999), of the mean F1 curve smoothed by a 101-point box filter (edges padded with the end values): when
# mean F1 is constant and maximal below some score, the smoothed curve is flat there and conf = 0.0.
GT = _det([[10, 10, 50, 60], [100, 100, 180, 150], [200, 20, 260, 90]], [0, 1, 0])


def test_perfect_predictions():
    pred = _det(GT["boxes"], GT["labels"], [0.9, 0.8, 0.7])
    m = detection_metrics([pred, _det([], [], [])], [GT, _det([], [])], num_classes=2)
    # COCO divides by (tp + fp + np.spacing(1)), so its "1" can be 1 - 1e-16: compare approximately
    assert (m.map50, m.map50_95) == pytest.approx((1.0, 1.0), abs=1e-12)
    # every class reaches P = R = F1 = 1 at and below its lowest score (0.7): flat maximum -> conf 0.0
    assert (m.precision, m.recall, m.f1, m.conf) == (1.0, 1.0, 1.0, 0.0)
    assert m.ap50_per_class == pytest.approx({0: 1.0, 1: 1.0}, abs=1e-12)
    assert m.ap_per_class == pytest.approx({0: 1.0, 1: 1.0}, abs=1e-12)
    assert m.gt_per_class == {0: 2, 1: 1}
    # given conf 0.8: class 0 (TPs at 0.9 and 0.7, 2 GT) has R = 0.5 + 0.5 * (0.9 - 0.8) / (0.9 - 0.7) = 0.75,
    # P = 1, F1 = 1.5 / 1.75 = 6/7; class 1 (TP at exactly 0.8): P = R = F1 = 1. Means: 1, 0.875, 13/14
    g = detection_metrics([pred, _det([], [], [])], [GT, _det([], [])], num_classes=2, conf=0.8)
    assert (g.precision, g.recall, g.f1, g.conf) == pytest.approx((1.0, 0.875, 13 / 14, 0.8))
    assert g.recall_per_class == pytest.approx({0: 0.75, 1: 1.0})
    assert g.map50 == m.map50


def test_empty_predictions_give_zeros():
    m = detection_metrics([_det([], [], [])], [GT], num_classes=2)
    assert (m.map50, m.map50_95, m.precision, m.recall, m.f1, m.conf) == (0.0,) * 6
    assert m.ap50_per_class == {0: 0.0, 1: 0.0} and m.f1_per_class == {0: 0.0, 1: 0.0}
    empty = detection_metrics([], [], num_classes=2)
    assert empty == DetectionMetrics()


def test_no_gt_gives_zeros():
    m = detection_metrics([_det(GT["boxes"], GT["labels"], [0.9, 0.8, 0.7])], [_det([], [])], num_classes=2)
    assert (m.map50, m.map50_95, m.precision, m.recall, m.f1, m.conf) == (0.0,) * 6
    assert m.ap50_per_class == {} and m.ap_per_class == {} and m.f1_per_class == {} and m.gt_per_class == {}


def test_wrong_class_or_far_away_gives_zeros():
    wrong = _det(GT["boxes"], 1 - GT["labels"], [0.9, 0.8, 0.7])
    far = _det(GT["boxes"] + 1000, GT["labels"], [0.9, 0.8, 0.7])
    for pred in (wrong, far):
        m = detection_metrics([pred], [GT], num_classes=2)
        # no TP: F1 = 0 everywhere -> conf 0.0, where P = 0 (all FPs) and R = 0
        assert (m.map50, m.map50_95, m.precision, m.recall, m.f1, m.conf) == (0.0,) * 6


def test_one_tp_one_fp_fp_scored_higher():
    gt = _det([[0, 0, 10, 10]], [0])
    pred = _det([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [0.6, 0.9])
    m = detection_metrics([pred], [gt], num_classes=1)
    # curve points: 0.9 (FP): P 0, R 0; 0.6 (TP): P 1/2, R 1. Between them P = R / 2 so F1 = 2R/3 < 2/3;
    # at and below 0.6 F1 = 2 * 0.5 * 1 / 1.5 = 2/3, the flat maximum -> conf 0.0
    assert (m.precision, m.recall, m.conf) == (0.5, 1.0, 0.0)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.map50 == pytest.approx(0.5)  # COCO: precision 1/2 at every recall level up to 1


def test_one_tp_one_fp_tp_scored_higher_two_gt():
    gt = _det([[0, 0, 10, 10], [100, 100, 120, 120]], [0, 0])
    pred = _det([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [0.9, 0.6])
    m = detection_metrics([pred], [gt], num_classes=1)
    # curve points: 0.9 (TP): P 1, R 1/2; 0.6 (FP): P 1/2, R 1/2. F1 is 0 above 0.9, P / (P + 0.5) on
    # (0.6, 0.9] with P = 1 - (0.9 - x) / 0.6 (rising to 2/3), 1/2 below 0.6. The 101-point window average
    # rises while its right end stays at grid points <= 0.9 (the last is 899/999) and falls once it takes in
    # zeros: conf = (899 - 50) / 999.
    assert m.conf == pytest.approx(849 / 999)
    p = 1 - (0.9 - m.conf) / 0.6
    assert (m.precision, m.recall, m.f1) == pytest.approx((p, 0.5, p / (p + 0.5)))
    # given conf 0.75: P = 1 - 0.15 / 0.6 = 0.75, R = 0.5, F1 = 0.75 / 1.25 = 0.6
    g = detection_metrics([pred], [gt], num_classes=1, conf=0.75)
    assert (g.precision, g.recall, g.f1) == pytest.approx((0.75, 0.5, 0.6))
    assert m.map50 == pytest.approx(51 / 101)  # precision 1 at recall 0..0.5 (51 of 101 points), 0 after


def test_iou_threshold_and_single_gt_match():
    gt = _det([[0, 0, 10, 10]], [0])
    # IoU of [0,0,10,5] with the GT is exactly 0.5 (counts); duplicate of the GT at a lower score is a FP
    pred = _det([[0, 0, 10, 5], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])
    m = detection_metrics([pred], [gt], num_classes=1, conf=0.85)
    # 0.9 is the TP (IoU 0.5 counts), 0.8 the FP: at 0.85 R = 1, P = 1 - 0.5 * 0.05 / 0.1 = 0.75, F1 = 6/7.
    # (Were IoU 0.5 a miss, 0.8 would be the TP and R(0.85) = 0.5.)
    assert (m.precision, m.recall, m.f1) == pytest.approx((0.75, 1.0, 6 / 7))
    assert m.map50 == pytest.approx(1.0)  # P = 1 at R = 1 from the first detection


def test_class_without_gt_does_not_drag_the_mean():
    pred = _det(np.concatenate([GT["boxes"], [[300, 300, 340, 340]]]), [0, 1, 0, 2], [0.9, 0.8, 0.7, 0.95])
    m = detection_metrics([pred], [GT], num_classes=3)  # class 2 has no GT, one FP
    assert (m.map50, m.map50_95) == pytest.approx((1.0, 1.0), abs=1e-12)
    assert set(m.ap50_per_class) == {0, 1}
    # P/R/F1 average the classes with GT only: the class-2 FP is ignored, classes 0 and 1 are perfect at and
    # below 0.7 (flat maximum -> conf 0.0)
    assert (m.precision, m.recall, m.f1, m.conf) == (1.0, 1.0, 1.0, 0.0)
    assert set(m.f1_per_class) == {0, 1}


def test_maxdets_caps_predictions_per_image_and_class():
    gt = _det([[0, 0, 10, 10]], [0])
    far = np.array([[500.0, 500, 510, 510]])
    for n_fp, expected in ((100, 0.0), (99, 1 / 100)):
        boxes = np.concatenate([np.repeat(far, n_fp, 0), gt["boxes"]])
        scores = np.concatenate([np.linspace(0.99, 0.5, n_fp), [0.1]])
        m = detection_metrics([_det(boxes, np.zeros(n_fp + 1), scores)], [gt], num_classes=1)
        # COCO: precision at recall 1 is 1/(n_fp+1) and is the interpolated precision at every recall level
        assert m.map50 == pytest.approx(expected)
        # P/R/F1 use the same capped matches: with 100 FPs ranked above it the TP is dropped (R = 0);
        # with 99 it is the 100th detection: below 0.1 R = 1, P = 1/100 - the flat maximum of F1 -> conf 0.0
        assert (m.recall, m.precision, m.conf) == ((0.0, 0.0, 0.0) if n_fp == 100 else (1.0, 0.01, 0.0))


def test_invalid_inputs_raise():
    good = _det([[0, 0, 10, 10]], [0], [0.5])
    with pytest.raises(ValueError, match="labels"):
        detection_metrics([_det([[0, 0, 10, 10]], [3], [0.5])], [GT], num_classes=2)
    with pytest.raises(ValueError, match="labels"):
        detection_metrics([good], [_det([[0, 0, 1, 1]], [-1])], num_classes=2)
    with pytest.raises(ValueError, match="scores"):
        detection_metrics([_det([[0, 0, 10, 10]], [0], [float("nan")])], [GT], num_classes=2)
    with pytest.raises(ValueError, match="xyxy"):
        detection_metrics([_det([[10, 0, 0, 10]], [0], [0.5])], [GT], num_classes=2)
    with pytest.raises(ValueError, match="entries"):
        detection_metrics([good, good], [GT], num_classes=2)
    with pytest.raises(ValueError, match="scores"):
        detection_metrics([_det([[0, 0, 10, 10]], [0], [0.5, 0.4])], [GT], num_classes=2)


# --------------------------------------------------------------------------------------------- 3. view metrics
def test_view_metrics_by_hand():
    true = np.array([0, 1, 2, 2, -1])
    pred = np.array([0, 2, 2, 1, 0])
    m = view_metrics(pred, true, num_views=4)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = expected[1, 2] = expected[2, 2] = expected[2, 1] = 1
    assert m.count == 4 and m.accuracy == 0.5
    # F1: class 0 = 1, class 1 = 0, class 2 = 2*1/(2+2) = 0.5; class 3 absent everywhere -> excluded
    assert m.macro_f1 == pytest.approx(0.5)
    np.testing.assert_array_equal(m.confusion, expected)
    logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 4).float() * 3 - 1
    m2 = view_metrics(logits, torch.as_tensor(true), num_views=4)
    assert (m2.accuracy, m2.macro_f1, m2.count) == (m.accuracy, m.macro_f1, m.count)
    np.testing.assert_array_equal(m2.confusion, expected)


def test_view_class_only_predicted_counts_in_macro_f1():
    m = view_metrics(np.array([0, 1]), np.array([0, 0]), num_views=3)
    assert m.accuracy == 0.5
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.0) / 2)  # class 0: 2TP/(2TP+FP+FN) = 2/3; class 1: 0


def test_view_all_unlabelled_gives_zeros():
    m = view_metrics(np.array([0, 1, 2]), np.array([-1, -1, -1]), num_views=3)
    assert (m.accuracy, m.macro_f1, m.count) == (0.0, 0.0, 0)
    np.testing.assert_array_equal(m.confusion, np.zeros((3, 3)))
    assert view_metrics(np.zeros((0, 3)), np.zeros(0, np.int64), num_views=3).count == 0


def test_view_invalid_inputs_raise():
    with pytest.raises(ValueError):
        view_metrics(np.array([0, 1]), np.array([0, 3]), num_views=3)
    with pytest.raises(ValueError):
        view_metrics(np.array([0, 5]), np.array([0, 1]), num_views=3)
    with pytest.raises(ValueError):
        view_metrics(np.zeros((2, 4)), np.array([0, 1]), num_views=3)
    with pytest.raises(ValueError):
        view_metrics(np.array([0]), np.array([0, 1]), num_views=3)


# ------------------------------------------------------------------------------------ 4. score and dict
def _metrics(
    map50: float, map50_95: float, view_kappa: float, view_f1: float = 0.9
) -> tuple[DetectionMetrics, ViewMetrics]:
    return (
        DetectionMetrics(map50=map50, map50_95=map50_95),
        ViewMetrics(macro_f1=view_f1, kappa=view_kappa, accuracy=0.9, count=5),
    )


def test_validation_score_arithmetic():
    det, view = _metrics(0.8, 0.2, 0.6)
    assert DEFAULT_WEIGHTS == {"map50": 0.25, "map50_95": 0.25, "view_kappa": 0.5, "view_f1": 0.0}
    assert validation_score(det, view) == pytest.approx(0.5 * (0.5 * 0.8 + 0.5 * 0.2) + 0.5 * 0.6)
    assert validation_score(det, view, {"view_kappa": 0}) == pytest.approx(0.5)  # missing keys keep defaults
    assert validation_score(det, view, {"map50": 1, "map50_95": 0, "view_kappa": 0}) == pytest.approx(0.8)
    assert validation_score(det, view, {"map50": 2, "map50_95": 0, "view_kappa": 2}) == pytest.approx(0.7)
    # macro-F1 only where asked for, in place of kappa
    assert validation_score(det, view, {"view_kappa": 0, "view_f1": 0.5}) == pytest.approx(0.5 * 0.5 + 0.5 * 0.9)
    # worse than chance counts as chance: kappa is clipped at 0, the score stays in [0, 1]
    assert validation_score(*_metrics(0.0, 0.0, -0.4)) == 0.0


@pytest.mark.parametrize(
    "weights", [{"map50": -0.1}, {"bogus": 1.0}, {"map50": float("nan")}, {"map50": 0, "map50_95": 0, "view_kappa": 0}]
)
def test_validation_score_rejects_bad_weights(weights):
    det, view = _metrics(0.8, 0.2, 0.6)
    with pytest.raises(ValueError, match="map50_95"):  # the message names the valid keys
        validation_score(det, view, weights)


def test_metrics_dict_keys_and_finite():
    preds, targets = random_case(3, num_images=6)
    det = detection_metrics(preds, targets, 4)
    view = view_metrics(np.array([0, 1, 1]), np.array([0, 1, -1]), 2)
    for d, v in ((det, view), (DetectionMetrics(), ViewMetrics())):
        out = metrics_dict(d, v)
        assert list(out) == METRIC_KEYS
        assert all(type(x) is float and math.isfinite(x) for x in out.values())
    out = metrics_dict(det, view)
    assert out["val/score"] == pytest.approx(validation_score(det, view))
    assert out["val/view_acc"] == 1.0 and out["val/map50"] == det.map50
    assert list(metrics_dict(det, view, prefix="test/")) == [k.replace("val/", "test/") for k in METRIC_KEYS]
