"""The search-efficiency benchmark: its curve arithmetic on hand-made cases, and its quick mode end to end with
real Ray (schema and sanity of the outputs; never a speed or quality threshold)."""
from __future__ import annotations

import json
import math

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


def test_headline_fraction_of_budget_and_not_reached():
    runs = [{"method": "random", "seed": 0, "best_val_score": 0.3, "best_so_far": [0.1, 0.3]},
            {"method": "asha+tpe", "seed": 0, "best_val_score": 0.4, "best_so_far": [0.3, 0.4]},
            {"method": "random", "seed": 1, "best_val_score": 0.5, "best_so_far": [0.5, 0.5]},
            {"method": "asha+tpe", "seed": 1, "best_val_score": 0.4, "best_so_far": [0.2, 0.4]}]
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
    run_benchmark("search_efficiency.py", "--quick", "--data", str(tiny_synthetic.config.yaml_path),
                  "--out", str(tmp_path))
    result = json.loads((tmp_path / "search_efficiency-quick.json").read_text())
    assert {"date", "machine", "versions", "command", "settings", "runs", "baselines", "summary", "headline"} <= set(result)
    settings = result["settings"]
    budget, concurrency = settings["budget"], settings["concurrency"]
    assert settings["seeds"] == [0] and settings["model_scale"] == "test" and settings["img_size"] == 64
    assert sorted(r["method"] for r in result["runs"]) == ["asha+tpe", "random", "tpe"]
    for run in result["runs"]:
        # The budget holds, overrun by at most one result per concurrent trial.
        assert budget <= run["trial_epochs_used"] <= budget + concurrency - 1
        assert run["stopper_count"] == run["trial_epochs_used"]
        curve = run["best_so_far"]
        assert len(curve) == run["trial_epochs_used"] and all(_finite_unit(v) for v in curve)
        assert all(a <= b for a, b in zip(curve, curve[1:]))  # best so far never decreases
        assert run["best_val_score"] == max(curve) and run["trials"] >= 2 and run["wall_s"] > 0
        assert all(_finite_unit(v) for v in run["test"].values())
    (baseline,) = result["baselines"]
    assert baseline["epochs"] == budget and len(baseline["per_epoch_val_score"]) == budget
    assert baseline["best_val_score"] == max(baseline["per_epoch_val_score"])
    assert all(_finite_unit(v) for v in baseline["test"].values())
    for method in ("asha+tpe", "tpe"):
        (seed,) = result["headline"][method]["per_seed"].values()
        assert seed["fraction_of_budget"] is None or 0 < seed["fraction_of_budget"] <= (budget + concurrency) / budget
        assert result["headline"][method]["mean"] > 0
    table = (tmp_path / "search_efficiency-quick.md").read_text()
    for method in se.METHODS:
        assert table.count(f"| {method} |") == 1
    assert "Command: `python benchmarks/search_efficiency.py --quick" in table
    assert (tmp_path / "search_efficiency-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each search kept its own Ray experiment folder
    assert {p.name for p in (tmp_path / "search_efficiency-quick").iterdir()} == {"asha+tpe-seed0", "tpe-seed0",
                                                                                  "random-seed0"}
