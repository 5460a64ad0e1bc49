"""The leaderboard on a real tiny search (the session's e2e search: baseline, diverged, errored, normal trials),
plus table arithmetic, importance and the Pareto front on hand-made data."""

from __future__ import annotations

import json
import math
import shutil

import optuna
import pandas as pd
import pyarrow.parquet as pq
import pytest

from echotune.reporting.held_out import write_held_out
from echotune.reporting.tables import (
    architecture_comparison,
    baseline_gain,
    format_frame,
    metric_column,
    rank,
    top_table,
)
from echotune.results.leaderboard import SCHEMA
from echotune.search import leaderboard
from echotune.search.importance import importances, pareto_front
from echotune.search.leaderboard_report import build_report, figure_builders
from tests.search.test_cli import INVOCATIONS, command
from tests.test_metrics import METRIC_KEYS

pytestmark = pytest.mark.ray


def test_cli_writes_parquet_tables_plots_and_html(e2e_search, tmp_path, capsys):
    _, _, experiment = e2e_search
    plots, page = tmp_path / "plots", tmp_path / "report.html"
    board = experiment / "leaderboard.parquet"
    board.unlink()
    assert leaderboard.main([str(experiment), "--top", "1"]) == 0  # a read command: nothing written by default
    assert not board.exists()
    capsys.readouterr()
    assert (
        command("leaderboard", "echotune")([experiment, "--top-k", "1", "--plots", plots, "--html", page, "--write"])
        == 0
    )
    out = capsys.readouterr().out
    table = pq.read_table(experiment / "leaderboard.parquet")
    assert table.schema.equals(SCHEMA) and table.num_rows == 5
    scores = [s for s in table.column("best/val/score").to_pylist() if s is not None]
    assert scores == sorted(scores, reverse=True)
    rows = table.to_pylist()
    baseline = next(r for r in rows if r["is_baseline"])
    best = rows[0]
    assert f"gain {best['best/val/score'] - baseline['best/val/score']:+.4f}" in out
    assert "(baseline)" in out  # shown even with --top 1 when the baseline is not the best
    assert "shared/gradnorm" in out and "Per architecture" in out
    for name in ("best_so_far", "learning_curves", "gradnorm_weights", "parallel_coordinates"):
        png = plots / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name
    html = page.read_text()
    assert html.count("data:image/png;base64,") == len(list(plots.glob("*.png")))
    assert best["trial_id"] in html and "Per architecture" in html


def test_run_search_builds_the_ensemble_and_the_leaderboard_reports_it(e2e_search, capsys):
    _, summary, experiment = e2e_search
    ensemble = summary["ensemble"]
    assert ensemble is not None and len(ensemble.members) == 2
    assert {m.trial_id for m in ensemble.members} <= {
        r["trial_id"] for r in summary["rows"] if r["status"] in ("TERMINATED", "STOPPED_EARLY")
    }
    split = ensemble.split
    assert ensemble.gain[f"{split}/score"] == pytest.approx(
        ensemble.ensemble_metrics[f"{split}/score"] - ensemble.single_best["metrics"][f"{split}/score"]
    )
    assert (experiment / "ensemble" / "manifest.yaml").is_file()
    assert leaderboard.main([str(experiment), "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "Ensemble of the top trials" in out and "ensemble (k=2)" in out
    gain = ensemble.ci["gain"]["score"]
    assert f"score: best_single {ensemble.ci['best_single']['score']:.3f}" in out and f"gain {gain:+.3f}" in out


def test_run_search_measures_best_and_baseline_on_test_with_paired_intervals(
    e2e_search, tiny_synthetic, tmp_path, capsys
):
    """held_out.json: the best trial and the baseline, each at its val-chosen confidence, on val and test with
    95 % intervals, and their paired difference; the leaderboard prints it and report.html shows it."""
    _, summary, experiment = e2e_search
    held = json.loads((experiment / "held_out.json").read_text())
    assert held["split"] == "test" and held["best"]["trial_id"] == summary["best"]["trial_id"]
    assert "Held-out evaluation" in (experiment / "report.html").read_text()
    if summary["baseline"]["trial_id"] == summary["best"]["trial_id"]:  # the baseline won: nothing to pair
        assert "baseline" not in held and "best_minus_baseline" not in held
    # Pair the best with the runner-up as the "baseline", in a copy of the experiment, to check the comparison.
    copy = tmp_path / experiment.name
    shutil.copytree(experiment, copy)
    scored = [r for r in summary["rows"] if r["best/val/score"] is not None and r["checkpoint_path"]]
    best, other = sorted(scored, key=lambda r: -r["best/val/score"])[:2]
    held = write_held_out(copy, tiny_synthetic, best, other, n_resamples=300, log=lambda _: None)
    for name in ("best", "baseline"):
        model = held[name]
        assert model["metrics"]["test"]["test/conf"] == model["conf"] == model["metrics"]["val"]["val/conf"]
        for split in ("val", "test"):
            for key, estimate in model["ci95"][split].items():
                assert estimate["value"] == model["metrics"][split][f"{split}/{key}"]
                assert estimate["low"] <= estimate["value"] <= estimate["high"]
    difference = held["best_minus_baseline"]["test"]["score"]
    test_scores = [held[name]["metrics"]["test"]["test/score"] for name in ("best", "baseline")]
    assert difference["value"] == pytest.approx(test_scores[0] - test_scores[1], abs=1e-12)
    assert difference["low"] <= difference["value"] <= difference["high"]
    assert leaderboard.main([str(copy), "--no-write"]) == 0
    out = capsys.readouterr().out
    assert f"{copy.name}: best trial and baseline on held-out data" in out
    score_row = [line for line in out.splitlines() if line.split()[:1] == ["score"] and "[" in line][-1]  # test
    assert f"{difference['value']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]" in score_row


def test_errored_and_diverged_trials_are_listed_and_marked(e2e_search):
    _, _, experiment = e2e_search
    report = build_report([experiment], top=10)
    statuses = dict(zip(report.ranked["trial_id"], report.ranked["status"]))
    assert sorted(statuses.values()).count("ERROR") == 1 and sorted(statuses.values()).count("DIVERGED") == 1
    assert set(report.table["trial"]) == set(statuses)  # failed trials are in the table too, ranked last
    errored = report.ranked[report.ranked["status"] == "ERROR"].iloc[0]
    assert pd.isna(errored["rank"]) and "loss_box" in errored["error"]
    comparison = report.architectures.set_index("architecture").loc["shared/gradnorm"]
    assert comparison["trials"] == 5 and comparison["failed"] == 2
    assert comparison["trial-epochs"] == report.ranked["epochs_trained"].sum()


def test_figures_have_the_expected_axes(e2e_search):
    _, _, experiment = e2e_search
    figures = {name: build() for name, build in figure_builders(build_report([experiment])).items()}
    progress = figures["best_so_far"].axes[0]
    assert progress.get_xlabel() == "cumulative trial-epochs" and "best" in progress.get_ylabel()
    baseline = build_report([experiment]).gains[0]["baseline"]
    assert any(list(line.get_ydata()) == [baseline, baseline] for line in progress.get_lines())
    curves = figures["learning_curves"].axes
    assert curves[0].get_xlabel() == "epoch" and curves[0].get_ylabel() == "val/score"
    assert figures["gradnorm_weights"].axes[0].get_ylabel() == "task weight"
    assert len(figures["parallel_coordinates"].axes) >= 2  # the coordinates and the colour bar


def test_several_experiments_merge_and_a_name_clash_is_refused(e2e_search, tmp_path):
    _, _, experiment = e2e_search
    copy = tmp_path / "e2e-copy"
    shutil.copytree(experiment, copy)
    report = build_report([experiment, copy])
    assert len(report.ranked) == 10 and set(report.ranked["experiment"]) == {"e2e", "e2e-copy"}
    assert "experiment" in report.table.columns and len(report.gains) == 2
    with pytest.raises(ValueError, match="share a name"):
        build_report([experiment, experiment])


def test_a_search_on_leaky_splits_is_flagged_at_the_top_of_every_output(e2e_search, tmp_path, capsys):
    _, _, experiment = e2e_search
    assert json.loads((experiment / "search.json").read_text())["leaky_splits"] is None  # the synthetic set
    assert leaderboard.main([str(experiment), "--no-write"]) == 0
    assert "leaky splits" not in capsys.readouterr().out
    copy = tmp_path / "leaky"
    shutil.copytree(experiment, copy)
    record = json.loads((copy / "search.json").read_text())
    record["leaky_splits"] = {
        "videos": 103,
        "videos_checked": 144,
        "frames": 1099,
        "pairs": {"train+val": 40, "train+test": 30, "val+test": 20, "train+val+test": 13},
    }
    (copy / "search.json").write_text(json.dumps(record))
    page = tmp_path / "report.html"
    assert leaderboard.main([str(copy), "--no-write", "--html", str(page)]) == 0
    warning = (
        "WARNING: leaky splits: 103 source videos in more than one split (train+val 40, train+test 30, "
        "val+test 20, all three 13): evaluation is optimistic"
    )
    assert capsys.readouterr().out.splitlines()[0] == warning
    html = page.read_text()
    assert f'<p class="banner" role="alert">{warning}</p>' in html
    assert html.index('class="banner"') < html.index("<nav>")  # above the contents, not in a section
    assert leaderboard.main([str(copy), "--no-write", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["leaky_splits"] == {"leaky": record["leaky_splits"]}


@pytest.mark.parametrize("how", INVOCATIONS)
def test_bad_paths_and_arguments_fail_clearly(how, tmp_path, capsys):
    board = command("leaderboard", how)
    assert board([tmp_path / "missing"]) == 2
    assert "no such experiment folder" in capsys.readouterr().err
    assert board([tmp_path]) == 2
    assert "no experiment_state-*.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        board([tmp_path, "--by", "accuracy"])
    assert exit_info.value.code == 2 and "valid: map50" in capsys.readouterr().err


def _frame(scores, baseline_index, arch=None):
    return pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(len(scores))],
            "experiment": "x",
            "best/val/score": scores,
            "is_baseline": [i == baseline_index for i in range(len(scores))],
            "status": ["TERMINATED"] * len(scores),
            "arch": arch or ["shared"] * len(scores),
            "hp/balance": ["gradnorm"] * len(scores),
            "epochs_trained": 4,
            "epochs_planned": 4,
            "wall_time_s": 3600.0,
            **{f"best/{m}": 0.0 for m in METRIC_KEYS if m != "val/score"},
        }
    )


def test_ranking_gain_and_baseline_row_arithmetic():
    ranked = rank(_frame([0.30, None, 0.50, 0.40], baseline_index=3))
    assert list(ranked["trial_id"]) == ["t2", "t3", "t0", "t1"] and pd.isna(ranked["rank"].iloc[-1])
    (gain,) = baseline_gain(ranked)
    assert gain["best_trial"] == "t2" and gain["baseline_trial"] == "t3"
    assert gain["gain"] == pytest.approx(0.10) and gain["relative_gain"] == pytest.approx(0.25)
    table = top_table(ranked, top=1)
    assert list(table["trial"]) == ["t2", "t3"] and "(baseline)" in table["status"].iloc[1]
    assert baseline_gain(rank(_frame([0.3, 0.2], baseline_index=-1))) == []


def test_gain_over_the_baseline_compares_only_trials_that_trained_every_epoch():
    frame = _frame([0.60, 0.40, 0.30, 0.70], baseline_index=2)
    frame.loc[0, ["status", "epochs_trained"]] = ["STOPPED_EARLY", 1]  # its best score is after 1 of 4 epochs
    frame.loc[3, ["status", "epochs_trained"]] = ["RUNNING", 2]
    (gain,) = baseline_gain(rank(frame))
    assert (gain["best_trial"], gain["baseline_trial"], gain["epochs"]) == ("t1", "t2", 4)
    assert gain["gain"] == pytest.approx(0.10)
    frame.loc[2, ["status", "epochs_trained"]] = ["STOPPED_EARLY", 1]  # a baseline stopped early: no gain to state
    assert baseline_gain(rank(frame)) == []


def test_architecture_comparison_counts_and_compute():
    frame = _frame([0.5, 0.3, 0.4, None], baseline_index=0, arch=["shared", "shared", "dual", "dual"])
    frame.loc[2:, "hp/balance"] = "fixed"
    frame.loc[3, "status"] = "DIVERGED"
    table = architecture_comparison(rank(frame)).set_index("architecture")
    assert table.loc["dual/fixed", "failed"] == 1 and table.loc["dual/fixed", "best score"] == 0.4
    assert table.loc["shared/gradnorm", "median score"] == pytest.approx(0.4)
    assert table.loc["shared/gradnorm", "compute h"] == pytest.approx(2.0)


def test_formats_and_metric_names():
    frame = pd.DataFrame({"trial": ["a", "b"], "score": [0.5, float("nan")], "lr": [3e-4, 0.01]})
    text = format_frame(frame, "table").splitlines()
    assert text[1].split() == ["a", "0.500", "0.0003"]
    assert format_frame(frame, "markdown").splitlines()[1] == "|---|---|---|"
    assert format_frame(frame, "csv").splitlines()[0] == "trial,score,lr"
    assert metric_column("map50") == metric_column("val/map50") == "best/val/map50"
    with pytest.raises(ValueError, match="valid: map50"):
        metric_column("auc")


def test_json_format_parses(e2e_search, capsys):
    _, _, experiment = e2e_search
    assert leaderboard.main([str(experiment), "--format", "json", "--no-write"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["ranked_by"] == "best/val/score" and len(payload["top"]) == 5
    assert math.isclose(
        payload["baseline_gain"][0]["gain"],
        payload["baseline_gain"][0]["best"] - payload["baseline_gain"][0]["baseline"],
    )


def test_importance_finds_the_parameter_that_matters():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 0, 1) * 10 + t.suggest_float("noise", 0, 1) * 0.1, n_trials=30)
    (found,), notes = importances(study, ["val/score"])
    assert not notes and found.n_trials == 30 and list(found.values)[0] == "lr" and found.values["lr"] > 0.9
    few = optuna.create_study(direction="maximize")
    few.optimize(lambda t: t.suggest_float("lr", 0, 1), n_trials=2)
    assert importances(few, ["val/score"])[0] == []


def test_pareto_front_flags_optunas_best_trials():
    study = optuna.create_study(directions=["maximize", "maximize"])
    for a, b in [(0.1, 0.9), (0.5, 0.5), (0.4, 0.4), (0.9, 0.1)]:
        study.enqueue_trial({"a": a, "b": b})
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=4)
    front = pareto_front(study, ["val/map50", "val/view_acc"])
    assert list(front["pareto"]) == [True, True, False, True]
    with pytest.raises(ValueError, match="multi-objective"):
        pareto_front(study, ["val/score"])
