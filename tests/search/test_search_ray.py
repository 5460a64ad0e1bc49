"""Real Ray end-to-end searches (2 CPUs, tiny model, 64 px): files, leaderboard rows, Optuna states, divergence.
Ray is always shut down by run_search / the fixtures. Resume after a killed driver: tests/reliability/test_faults.py."""
from __future__ import annotations

import optuna
import pyarrow.parquet as pq
import pytest

from search.trial_table import SCHEMA
from search.tuner import SearchConfig
from tests.search.conftest import ERRORING_TRIAL, POISONED_TRIAL

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
        expected = {"TERMINATED": "COMPLETE", "STOPPED_EARLY": "PRUNED", "DIVERGED": "FAIL",
                    "ERROR": "FAIL"}[row["status"]]
        assert trial.state.name == expected, (row["status"], trial.state.name)
        if expected == "PRUNED":
            assert max(trial.intermediate_values) == row["epochs_trained"]
    assert summary["baseline"] is not None and summary["baseline"]["is_baseline"]
    finished = [r for r in rows if r["status"] in ("TERMINATED", "STOPPED_EARLY")]
    assert all(r["best/val/score"] is not None and r["checkpoint_path"] for r in finished)
    assert {t.user_attrs.get("ray_trial_id") for t in study.trials} == {r["trial_id"] for r in rows}

