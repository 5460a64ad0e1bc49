"""Real Ray end-to-end searches (2 CPUs, tiny model, 64 px): files, leaderboard rows, Optuna states, divergence.
Ray is always shut down by run_search / the fixtures. Resume after a killed driver: tests/reliability/test_faults.py."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest

from echotune.results.leaderboard import SCHEMA
from echotune.search.search_config import SearchConfig
from tests.search.conftest import ERRORING_TRIAL, POISONED_TRIAL, probe_search

pytestmark = pytest.mark.ray


def optuna_states(cfg: SearchConfig) -> list[str]:
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{cfg.experiment_dir}/optuna.db")
    return [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]


def test_search_end_to_end_with_a_diverging_and_an_erroring_trial(e2e_search):
    cfg, summary, experiment = e2e_search
    for name in ("optuna.db", "leaderboard.parquet", "best_config.yaml", "tuner.pkl", "search.json"):
        assert (experiment / name).is_file(), name
    table = pq.read_table(experiment / "leaderboard.parquet")
    assert table.schema.equals(SCHEMA) and table.num_rows == 5
    rows = table.to_pylist()
    trial_dirs = sorted(p.name for p in experiment.glob("trial_*"))
    assert trial_dirs == sorted(f"trial_{r['trial_id']}" for r in rows)
    for row in rows:  # a trial that raised before its first report has no progress.csv, but its error file
        expected = {"params.json", "result.json"} | ({"error.txt"} if row["status"] == "ERROR" else {"progress.csv"})
        assert expected <= {p.name for p in (experiment / f"trial_{row['trial_id']}").iterdir()}, row["status"]
    diverged = [r for r in rows if r["status"] == "DIVERGED"]
    assert len(diverged) == 1 and "non-finite" in diverged[0]["error"]
    assert diverged[0]["hp/lr_stage1"] == 1e38
    errored = [r for r in rows if r["status"] == "ERROR"]
    assert len(errored) == 1 and "loss_box" in errored[0]["error"], errored
    states = optuna_states(cfg)
    assert states[POISONED_TRIAL] == states[ERRORING_TRIAL] == "FAIL" and "RUNNING" not in states
    # every other trial: Optuna's state agrees with what happened in Ray
    by_lr = {r["hp/gn_alpha"]: r for r in rows}
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{cfg.experiment_dir}/optuna.db")
    for trial in study.trials:
        row = by_lr[trial.params["gn_alpha"]]
        expected = {"TERMINATED": "COMPLETE", "STOPPED_EARLY": "PRUNED", "DIVERGED": "FAIL", "ERROR": "FAIL"}[
            row["status"]
        ]
        assert trial.state.name == expected, (row["status"], trial.state.name)
        if expected == "PRUNED":
            assert max(trial.intermediate_values) == row["epochs_trained"]
        if expected in ("COMPLETE", "PRUNED"):  # one number: what Optuna holds is what the leaderboard ranks by
            told = trial.value if expected == "COMPLETE" else trial.intermediate_values[max(trial.intermediate_values)]
            assert told == pytest.approx(row["best/val/score"], abs=1e-12), (trial.number, told, row)
            # optuna-dashboard's columns: the validation metrics of the epoch Optuna's value comes from
            attrs = trial.user_attrs
            assert attrs["val/score"] == pytest.approx(told, abs=1e-12)
            assert {"val/map50", "val/map50_95", "val/view_acc", "val/view_kappa", "val/f1"} <= set(attrs)
            assert 1 <= attrs["best_epoch"] <= row["epochs_trained"]
    assert summary["baseline"] is not None and summary["baseline"]["is_baseline"]
    # ASHA never stops the baseline: it trained every epoch, like the trial its gain is measured against
    assert (summary["baseline"]["status"], summary["baseline"]["epochs_trained"]) == ("TERMINATED", cfg.max_epochs)
    (gain,) = summary["report"].gains
    assert gain["epochs"] == cfg.max_epochs
    finished = [r for r in rows if r["status"] in ("TERMINATED", "STOPPED_EARLY")]
    assert all(r["best/val/score"] is not None and r["checkpoint_path"] for r in finished)
    assert {t.user_attrs.get("ray_trial_id") for t in study.trials} == {r["trial_id"] for r in rows}


def test_asha_lets_the_baseline_train_every_epoch_while_it_is_the_worst_at_every_rung(
    tiny_synthetic, probe_space, tmp_path
):
    """The rungs already hold a trial scoring 1.0 at every epoch (as after a resume: EpochASHA reads every
    result.json in the experiment folder first), so the baseline is below the cutoff at each rung (1, 2 of 4).
    It trains all 4 epochs; the normal trial (3; 1 diverges, 2 errors) is stopped at the first rung."""
    from echotune.search.orchestrate import run_search

    cfg = probe_search(tmp_path, "worst_baseline", num_samples=4, max_failures=0)
    planted = Path(cfg.experiment_dir, "trial_planted")
    planted.mkdir(parents=True)
    planted.joinpath("result.json").write_text(
        "".join(
            json.dumps({"trial_id": "planted", "epoch": e, "val/score": 1.0, "val/best_score": 1.0}) + "\n"
            for e in range(1, 5)
        )
    )
    summary = run_search(cfg, tiny_synthetic, resume=False)
    rows = {r["trial_id"]: r for r in summary["rows"]}
    baseline = summary["baseline"]
    assert (baseline["status"], baseline["epochs_trained"]) == ("TERMINATED", 4)
    assert baseline["best/val/score"] < 1.0  # below the cutoff at every rung
    normal = [r for r in rows.values() if not r["is_baseline"] and r["status"] not in ("DIVERGED", "ERROR")]
    assert [(r["status"], r["epochs_trained"]) for r in normal] == [("STOPPED_EARLY", 1)]
    (gain,) = summary["report"].gains  # only the baseline trained the full budget: it is also the best at it
    assert (gain["best_trial"], gain["epochs"], gain["gain"]) == (baseline["trial_id"], 4, 0.0)
