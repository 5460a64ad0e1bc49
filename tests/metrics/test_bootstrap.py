"""EvaluationSet API and bootstrap intervals over source videos."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echotune.metrics import (
    METRIC_LABELS,
    METRIC_NAMES,
    Estimate,
    EvaluationSet,
    bootstrap_ci,
    bootstrap_draws,
    detection_metrics,
    format_estimates,
    metrics_dict,
    paired_bootstrap,
    per_class_metrics,
    percentile_interval,
    view_metrics,
)
from echotune.metrics.bootstrap import resample_counts
from tests.metrics.cases import VideoCase, video_case


def _build(case: VideoCase, groups=True) -> EvaluationSet:
    return EvaluationSet.build(
        case.predictions, case.targets, case.view_logits, case.view_targets, 4, 3, case.groups if groups else None
    )


@pytest.fixture(scope="module")
def case30() -> VideoCase:
    return video_case(30, frames_per_video=5, seed=3)


@pytest.fixture(scope="module")
def es30(case30) -> EvaluationSet:
    return _build(case30)


# ------------------------------------------------------------------------------------------ EvaluationSet
def test_evaluation_set_point_metrics_equal_the_one_shot_functions(case30, es30):
    assert (es30.n_images, es30.n_groups) == (150, 30)
    assert es30.groups == tuple(case30.groups) and es30.group_index[:6].tolist() == [0] * 5 + [1]
    det = detection_metrics(case30.predictions, case30.targets, 4)
    assert es30.detection() == det
    assert es30.detection(0.4) == detection_metrics(case30.predictions, case30.targets, 4, conf=0.4)
    view = view_metrics(case30.view_logits, case30.view_targets, 3)
    assert (es30.view().accuracy, es30.view().macro_f1) == (view.accuracy, view.macro_f1)
    assert es30.metrics(prefix="test/") == metrics_dict(det, view, prefix="test/")
    assert es30.metrics()["val/conf"] == det.conf > 0
    # the full-data row of resampled() is the point estimate
    row = es30.resampled(np.ones((1, 150)), det.conf)
    assert {k: float(v[0]) for k, v in row.items()} == pytest.approx(
        {k.removeprefix("val/"): v for k, v in es30.metrics(det.conf).items() if k != "val/conf"}, abs=1e-12
    )


def test_evaluation_set_validates_inputs(case30):
    with pytest.raises(ValueError, match="group"):
        EvaluationSet.build(
            case30.predictions, case30.targets, case30.view_logits, case30.view_targets, 4, 3, case30.groups[:-1]
        )
    with pytest.raises(ValueError, match="view"):
        EvaluationSet.build(case30.predictions, case30.targets, case30.view_logits[:-1], case30.view_targets[:-1], 4, 3)
    with pytest.raises(ValueError, match="labels"):
        EvaluationSet.build(case30.predictions, case30.targets, case30.view_logits, case30.view_targets, 2, 3)


def test_per_class_metrics_table(case30, es30):
    det = es30.detection()
    table = per_class_metrics(det, ["AR", "MR", "PR", "TR"])
    assert list(table) == [["AR", "MR", "PR", "TR"][c] for c in sorted(det.gt_per_class)]
    for c, name in enumerate(["AR", "MR", "PR", "TR"]):
        if name in table:
            assert table[name] == {
                "ap50": det.ap50_per_class[c],
                "ap50_95": det.ap_per_class[c],
                "precision": det.precision_per_class[c],
                "recall": det.recall_per_class[c],
                "f1": det.f1_per_class[c],
                "gt": det.gt_per_class[c],
            }
    assert sum(row["gt"] for row in table.values()) == sum(len(t["labels"]) for t in case30.targets)


# ------------------------------------------------------------------------------------------------ bootstrap
def test_resample_counts_draw_whole_groups():
    group_index = np.array([0, 0, 1, 2, 2, 2])
    counts = resample_counts(group_index, 3, n_resamples=50, seed=1)
    assert counts.shape == (50, 6)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 3] == counts[:, 5]).all()
    assert (counts[:, [0, 2, 3]].sum(axis=1) == 3).all()  # 3 groups drawn per resample
    assert len({tuple(r) for r in counts}) > 5


def test_interval_contains_point_estimate_default_1000_resamples(es30):
    conf = es30.detection().conf
    ci = bootstrap_ci(es30, conf)  # the defaults: 1000 resamples, 95 %
    assert list(ci) == list(METRIC_NAMES) == [name for name, _ in METRIC_LABELS]
    point = es30.metrics(conf, prefix="")
    for name, est in ci.items():
        assert est.value == pytest.approx(point[name], abs=1e-12)
        assert est.low <= est.value <= est.high, (name, est)
        assert est.low < est.high
        assert all(math.isfinite(x) for x in (est.value, est.low, est.high))


def test_interval_narrows_with_more_videos():
    # mean width over 4 generator seeds (one 8-video draw alone is noisy); ~1/sqrt(videos): 64 videos should
    # give intervals about sqrt(8) = 2.8 times narrower
    widths = {8: np.zeros(2), 64: np.zeros(2)}
    for seed in range(4):
        for n_videos in widths:
            es = _build(video_case(n_videos, frames_per_video=4, seed=seed, dets_per_image=6))
            ci = bootstrap_ci(es, 0.3, n_resamples=200, seed=0)
            widths[n_videos] += [ci[k].high - ci[k].low for k in ("map50", "view_acc")]
    assert (widths[64] < 0.7 * widths[8]).all(), widths


def test_grouping_by_video_widens_the_interval(case30):
    # frames of a video are correlated (per-video skill): resampling frames as if independent understates it
    by_video = bootstrap_ci(_build(case30), 0.3, n_resamples=300)
    by_frame = bootstrap_ci(_build(case30, groups=False), 0.3, n_resamples=300)
    width = lambda ci, k: ci[k].high - ci[k].low  # noqa: E731
    assert width(by_video, "view_acc") > 1.2 * width(by_frame, "view_acc")


def test_same_seed_same_interval_other_seed_different(es30):
    a = bootstrap_ci(es30, 0.3, n_resamples=200, seed=7)
    b = bootstrap_ci(es30, 0.3, n_resamples=200, seed=7)
    c = bootstrap_ci(es30, 0.3, n_resamples=200, seed=8)
    assert a == b
    assert any((a[k].low, a[k].high) != (c[k].low, c[k].high) for k in METRIC_NAMES)
    assert all(a[k].value == c[k].value for k in METRIC_NAMES)


def test_bootstrap_draws_are_the_resamples_behind_the_interval(case30, es30):
    conf = es30.choose_conf()
    draws = bootstrap_draws(es30, conf, n_resamples=300, seed=5)
    assert set(draws) == set(METRIC_NAMES) and all(v.shape == (300,) for v in draws.values())
    ci = bootstrap_ci(es30, conf, n_resamples=300, seed=5)
    assert (ci["score"].low, ci["score"].high) == percentile_interval(draws["score"], 0.95)
    # Another model on the same images with the same seed draws the same videos: its draws pair with these,
    # so their difference has the paired bootstrap's interval.
    preds = [{**p, "scores": np.where(p["labels"] == 0, p["scores"], p["scores"] * 0.5)} for p in case30.predictions]
    other = EvaluationSet.build(
        preds, case30.targets, case30.view_logits[::-1].copy(), case30.view_targets, 4, 3, case30.groups
    )
    other_draws = bootstrap_draws(other, 0.2, n_resamples=300, seed=5)
    paired = paired_bootstrap(other, es30, 0.2, conf, n_resamples=300, seed=5)
    for name in ("map50", "view_acc", "score"):
        assert (paired[name].low, paired[name].high) == pytest.approx(
            percentile_interval(other_draws[name] - draws[name], 0.95), abs=1e-12
        )
    assert paired["view_acc"].low < paired["view_acc"].high  # a real difference, not two copies of one model


def test_paired_difference_with_itself_is_exactly_zero(es30):
    diff = paired_bootstrap(es30, es30, 0.3, 0.3, n_resamples=200)
    assert all((d.value, d.low, d.high) == (0.0, 0.0, 0.0) for d in diff.values())


def test_paired_difference_of_two_models(case30, es30):
    # model b: the same images, worse boxes (every score halved except class 0) and shuffled view logits
    rng = np.random.default_rng(0)
    preds_b = [{**p, "scores": np.where(p["labels"] == 0, p["scores"], p["scores"] * 0.5)} for p in case30.predictions]
    es_b = EvaluationSet.build(
        preds_b, case30.targets, rng.permutation(case30.view_logits), case30.view_targets, 4, 3, case30.groups
    )
    diff = paired_bootstrap(es30, es_b, 0.3, 0.2, n_resamples=200, seed=1)
    a, b = es30.metrics(0.3, prefix=""), es_b.metrics(0.2, prefix="")
    for name in METRIC_NAMES:
        assert diff[name].value == pytest.approx(a[name] - b[name], abs=1e-12)
        assert diff[name].low <= diff[name].high
    assert diff["view_acc"].low > 0  # the shuffled view head is clearly worse
    # the difference's interval is not just the two marginal intervals combined: same resamples for both
    assert diff == paired_bootstrap(es30, es_b, 0.3, 0.2, n_resamples=200, seed=1)


def test_paired_bootstrap_needs_the_same_images(case30, es30):
    other_groups = EvaluationSet.build(
        case30.predictions, case30.targets, case30.view_logits, case30.view_targets, 4, 3, None
    )
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(es30, other_groups, 0.3, 0.3, n_resamples=10)
    short = video_case(29, frames_per_video=5, seed=3)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(es30, _build(short), 0.3, 0.3, n_resamples=10)


def test_bootstrap_argument_checks(es30):
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(es30, 0.3, n_resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(es30, 0.3, level=1.0)


def test_estimate_format_and_dict():
    est = Estimate(0.41234, 0.3512, 0.4699)
    assert str(est) == "0.412 [0.351, 0.470]"
    assert f"{est:.2f}" == "0.41 [0.35, 0.47]"
    assert est.to_dict() == {"value": 0.41234, "low": 0.3512, "high": 0.4699}
    line = format_estimates({"map50": est, "f1": Estimate(0.5, 0.4, 0.6)}, names=("f1", "map50"))
    assert line == "f1 0.500 [0.400, 0.600] | map50 0.412 [0.351, 0.470]"
