"""The search-efficiency benchmark: its curve arithmetic on hand-made cases, and its quick mode end to end with
real Ray (schema and sanity of the outputs; never a speed or quality threshold)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import search_efficiency as se  # benchmarks/ is on sys.path (conftest.py)


def test_best_so_far_is_a_running_max_that_skips_diverged_epochs():
    assert se.best_so_far([None, 0.2, 0.1, None, 0.3, 0.25]) == [None, 0.2, 0.2, 0.2, 0.3, 0.3]
    assert se.best_so_far([]) == []


def test_epochs_to_reach_counts_trial_epochs_from_one():
    curve = [None, 0.2, 0.2, 0.3]
    assert se.epochs_to_reach(curve, 0.2) == 2
    assert se.epochs_to_reach(curve, 0.3) == 4
    assert se.epochs_to_reach(curve, 0.31) is None


def test_band_over_curves_of_different_lengths():
    stats = se.band([[0.1, 0.2, 0.4], [0.3, 0.3]], 4)
    assert stats["mean"][:3] == pytest.approx([0.2, 0.25, 0.4]) and stats["mean"][3] is None
    assert stats["min"][:3] == [0.1, 0.2, 0.4] and stats["max"][:3] == [0.3, 0.3, 0.4]


def test_epoch_scores_count_each_trial_epoch_once_in_arrival_order():
    events = [
        {"trial_id": "a", "iteration": 1, "score": 0.1},
        {"trial_id": "b", "iteration": 1, "score": 0.3},
        {"trial_id": "a", "iteration": 2, "score": 0.2, "diverged": True},
        {"trial_id": "b", "iteration": 1, "score": 0.3},  # Ray hands a trial's last result a second time
        {"trial_id": "b", "iteration": 2, "score": float("nan")},
    ]
    assert se.epoch_scores(events) == [0.1, 0.3, None, None]


def test_seeds_and_videos_one_seed_is_the_video_interval():
    draws = np.linspace(0.1, 0.3, 1000)
    est = se.seeds_and_videos([0.2], [draws])
    assert est["mean"].value == 0.2
    assert (est["mean"].low, est["mean"].high) == pytest.approx(np.percentile(draws, [2.5, 97.5]))


def test_seeds_and_videos_resamples_the_seeds_and_pairs_the_reference():
    # No video noise at all (every draw equals the seed's value): the interval comes from the seeds alone.
    values, ref = [0.2, 0.4], [0.1, 0.2]
    draws = [np.full(2000, v) for v in values]
    ref_draws = [np.full(2000, v) for v in ref]
    est = se.seeds_and_videos(values, draws, ref, ref_draws, seed=1)
    assert est["mean"].value == pytest.approx(0.3) and (est["mean"].low, est["mean"].high) == pytest.approx((0.2, 0.4))
    assert est["reference"].value == pytest.approx(0.15)
    # Paired: a resample that draws seed 0 twice compares 0.2 with 0.1 (ratio 2), never 0.2 with 0.2.
    assert (est["ratio"].value, est["ratio"].low, est["ratio"].high) == pytest.approx((2.0, 2.0, 2.0))
    assert (est["difference"].low, est["difference"].high) == pytest.approx((0.1, 0.2))
    same = se.seeds_and_videos(values, draws, values, draws)
    assert (same["difference"].low, same["difference"].high) == (0.0, 0.0)


def test_seeds_and_videos_ratio_without_a_positive_reference_is_nan():
    est = se.seeds_and_videos([0.2], [np.full(10, 0.2)], [0.0], [np.zeros(10)])
    assert math.isnan(est["ratio"].value) and math.isnan(est["ratio"].low)
    assert est["difference"].value == pytest.approx(0.2)


def test_strip_draws_leaves_everything_else():
    result = {"runs": [{"pick": {"test": {"score": 1}, "_draws": np.zeros(3)}}], "finals": [], "x": 1}
    assert se.strip_draws(result) == {"runs": [{"pick": {"test": {"score": 1}}}], "finals": [], "x": 1}
    assert "_draws" in result["runs"][0]["pick"]  # a copy: the caller's result keeps its resamples


def test_goals_report_met_missed_and_not_measurable():
    estimate = lambda v, lo, hi: {"value": v, "low": lo, "high": hi}  # noqa: E731
    result = {
        "settings": {"budget": 48, "max_epochs": 12},
        "summary": {
            "arms": {
                "tpe": {"vs_baseline": {"ratio": estimate(1.3, 1.0, 1.6)}},
                "random": {"vs_baseline": {"ratio": estimate(0.9, 0.7, 1.1)}},
                "baseline": {"vs_baseline": None},
            },
            "final_fit": {"ratio": estimate(1.5, 1.1, 2.0), "difference": estimate(0.1, -0.01, 0.2)},
        },
        "headline": {"asha+tpe": {"mean": 0.5, "mean_is_lower_bound": True, "per_seed": {}}},
    }
    a, b, c = se.goals(result)
    assert a.startswith("- (a)") and "tpe 1.30 [1.00, 1.60]" in a and "met;" in a
    assert "**missed**" in b  # ratio 1.5 but the difference's interval reaches below 0
    assert "**missed**" in c
    result["summary"]["arms"] = {"tpe": {"vs_baseline": {"ratio": estimate(None, None, None)}}}
    assert "not measurable" in se.goals(result)[0]


def test_headline_fraction_of_budget_and_not_reached():
    runs = [
        {"method": "random", "seed": 0, "best_val_score": 0.3, "best_so_far": [0.1, 0.3]},
        {"method": "asha+tpe", "seed": 0, "best_val_score": 0.4, "best_so_far": [0.3, 0.4]},
        {"method": "random", "seed": 1, "best_val_score": 0.5, "best_so_far": [0.5, 0.5]},
        {"method": "asha+tpe", "seed": 1, "best_val_score": 0.4, "best_so_far": [0.2, 0.4]},
    ]
    h = se.headline(runs, budget=10, method="asha+tpe")
    assert h["per_seed"]["0"] == {"target": 0.3, "trial_epochs": 1, "fraction_of_budget": 0.1}
    assert h["per_seed"]["1"]["trial_epochs"] is None and h["per_seed"]["1"]["fraction_of_budget"] is None
    assert h["mean"] == pytest.approx((0.1 + 1.0) / 2) and h["mean_is_lower_bound"]
    assert se._ratio_text(h) == "> 0.55 (0.10, not reached)"


def test_baseline_config_is_the_baseline_trial_trained_for_the_whole_budget():
    args = se.parse_args(["--quick", "--budget", "12"])
    config = se.baseline_config(args, seed=3)
    assert config["epochs"] == 12 and config["seed"] == 3 and config["model_scale"] == "test"
    assert config["img_size"] == 64 and config["cache_images"] and config["cpus"] == 1
    assert config["lr_stage1"] == 1e-2 and config["balance"] == "gradnorm" and "stage1_frac" not in config


def _finite_unit(value) -> bool:
    return value is not None and math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.ray
@pytest.mark.slow
def test_quick_mode_end_to_end(tiny_synthetic, tmp_path, run_benchmark):
    run_benchmark(
        "search_efficiency.py",
        "--quick",
        "--data",
        str(tiny_synthetic.config.yaml_path),
        "--out",
        str(tmp_path),
        timeout=400,
    )
    result = json.loads((tmp_path / "search_efficiency-quick.json").read_text())
    assert {
        "date",
        "machine",
        "versions",
        "command",
        "settings",
        "runs",
        "baselines",
        "finals",
        "summary",
        "headline",
    } <= set(result)
    settings = result["settings"]
    budget, concurrency, epochs = settings["budget"], settings["concurrency"], settings["max_epochs"]
    assert settings["seeds"] == settings["seeds_planned"] == [0] and not result["partial"]
    assert settings["model_scale"] == "test" and settings["img_size"] == 64
    assert [r["method"] for r in result["runs"]] == list(se.ARMS)
    for run in result["runs"]:
        if run["method"] == "pbt":  # a fixed population of budget / epochs members, each to the end
            assert run["trial_epochs_used"] == budget and run["trials"] == budget // epochs
        else:  # the budget holds, overrun by at most one result per concurrent trial
            assert budget <= run["trial_epochs_used"] <= budget + concurrency - 1
            assert run["stopper_count"] == run["trial_epochs_used"]
        curve = run["best_so_far"]
        assert len(curve) == run["trial_epochs_used"] and all(_finite_unit(v) for v in curve)
        assert all(a <= b for a, b in zip(curve, curve[1:]))  # best so far never decreases
        assert run["best_val_score"] == max(curve) and run["trials"] >= 2 and run["wall_s"] > 0
        _check_evaluation(run["pick"])
    (baseline,) = result["baselines"]
    assert baseline["epochs"] == budget and len(baseline["per_epoch_val_score"]) == budget
    assert baseline["best_val_score"] == max(baseline["per_epoch_val_score"])
    _check_evaluation(baseline["pick"])
    # (b): the final round after the asha+tpe search, its winner and the baseline at the trials' epochs
    (final,) = result["finals"]
    assert final["seed"] == 0 and final["epochs"] == epochs and final["final_seed"] == 1
    _check_evaluation(final["winner"]), _check_evaluation(final["baseline"])
    assert final["trial_epochs"]["final_round"] == final["candidates"] * epochs
    arms = result["summary"]["arms"]
    assert list(arms) == list(se.METHODS)
    for method, arm in arms.items():
        assert _finite_unit(arm["test_score"]["value"]) and arm["test_score"]["low"] <= arm["test_score"]["high"]
        if method != "baseline":
            assert arm["vs_baseline"]["seeds"] == 1
            assert arm["vs_baseline"]["difference"]["value"] == pytest.approx(
                arm["test_score"]["value"] - arms["baseline"]["test_score"]["value"]
            )
    assert result["summary"]["final_fit"]["difference"]["value"] == pytest.approx(
        final["winner"]["test"]["score"]["value"] - final["baseline"]["test"]["score"]["value"]
    )
    for method in ("asha+tpe", "asha+random", "tpe", "pbt"):
        (seed,) = result["headline"][method]["per_seed"].values()
        assert seed["fraction_of_budget"] is None or 0 < seed["fraction_of_budget"] <= (budget + concurrency) / budget
        assert result["headline"][method]["mean"] > 0
    table = (tmp_path / "search_efficiency-quick.md").read_text()
    for method in se.METHODS:
        assert table.count(f"| {method} |") == 1
    assert "Command: `python benchmarks/search_efficiency.py --quick" in table
    assert "- (b) final fit / baseline at 3 epochs:" in table and "- (c) asha+tpe" in table
    assert (tmp_path / "search_efficiency-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each search kept its own Ray experiment folder (the asha+tpe one with its final round), the baseline its run
    folders = {p.name for p in (tmp_path / "search_efficiency-quick").iterdir()}
    assert folders == {f"{m}-seed0" for m in se.ARMS} | {"baseline-seed0"}
    assert (tmp_path / "search_efficiency-quick" / "asha+tpe-seed0" / "final.json").exists()


def _check_evaluation(evaluation: dict) -> None:
    """An evaluated checkpoint: its test metrics with intervals, the resamples left out of the JSON."""
    assert evaluation["split"] == "test" and "_draws" not in evaluation
    for metric in se.TEST_METRICS:
        e = evaluation["test"][metric]
        assert all(math.isfinite(e[k]) for k in ("value", "low", "high")) and e["low"] <= e["high"], (metric, e)
