"""Real Ray end-to-end searches (2 CPUs, tiny model, 64 px): files, leaderboard rows, Optuna states, divergence,
and resume after an interrupted driver. Ray is always shut down by run_search / the fixtures."""
from __future__ import annotations

import optuna
import pyarrow.parquet as pq
import pytest
import ray
from ray import tune

from search.orchestrate import run_search, start_ray
from search.trial_table import SCHEMA
from search.tuner import SearchConfig, build_tuner
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
        expected = {"TERMINATED": "COMPLETE", "STOPPED_EARLY": "PRUNED", "DIVERGED": "FAIL",
                    "ERROR": "FAIL"}[row["status"]]
        assert trial.state.name == expected, (row["status"], trial.state.name)
        if expected == "PRUNED":
            assert max(trial.intermediate_values) == row["epochs_trained"]
    assert summary["baseline"] is not None and summary["baseline"]["is_baseline"]
    finished = [r for r in rows if r["status"] in ("TERMINATED", "STOPPED_EARLY")]
    assert all(r["best/val/score"] is not None and r["checkpoint_path"] for r in finished)
    assert {t.user_attrs.get("ray_trial_id") for t in study.trials} == {r["trial_id"] for r in rows}


class InterruptOnce(tune.Callback):
    """Raises in the driver after `after` results, once (a marker file keeps the resumed run going)."""

    def __init__(self, after: int, marker: str):
        self.after, self.marker, self.seen = after, marker, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        import os

        self.seen += 1
        if self.seen >= self.after and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise KeyboardInterrupt("injected driver interruption")


def test_resume_after_interruption_runs_every_trial_exactly_once(tiny_synthetic, tmp_path):
    cfg = probe_search(tmp_path, "resume", num_samples=4, space="gradnorm", max_epochs=3)
    start_ray(None)
    try:
        tuner = build_tuner(cfg, tiny_synthetic, callbacks=[InterruptOnce(3, str(tmp_path / "interrupted"))])
        with pytest.raises(BaseException):
            tuner.fit()
    finally:
        ray.shutdown()
    assert (tmp_path / "interrupted").exists()
    before = sorted(p.name for p in (tmp_path / "results" / "resume").glob("trial_*"))
    _leaderboard_sees_the_interrupted_search(tmp_path / "results" / "resume")
    summary = run_search(cfg, tiny_synthetic, resume=True)
    rows = summary["rows"]
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 4
    assert set(before) <= {f"trial_{i}" for i in ids}
    assert all(r["status"] in ("TERMINATED", "STOPPED_EARLY", "DIVERGED") for r in rows)
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{cfg.experiment_dir}/optuna.db")
    orphans = [t for t in study.trials if "orphaned" in t.user_attrs]
    assert all(t.state.name == "FAIL" for t in orphans)  # asked just before the interruption, never run
    assert len(study.trials) - len(orphans) == 4
    assert "RUNNING" not in {t.state.name for t in study.trials}


def _leaderboard_sees_the_interrupted_search(experiment):
    """Unfinished trials are listed: as Ray recorded them while the state is fresh, INTERRUPTED once it is stale."""
    import os
    import time

    from search.analysis.experiment import LIVE_STATE_MAX_AGE_S, load_experiment

    fresh = load_experiment(experiment)
    assert fresh.live and any(r["status"] in ("RUNNING", "PENDING", "PAUSED") for r in fresh.rows)
    stale = time.time() - 2 * LIVE_STATE_MAX_AGE_S
    for state in experiment.glob("experiment_state-*.json"):
        os.utime(state, (stale, stale))
    old = load_experiment(experiment)
    assert not old.live and {r["status"] for r in old.rows} & {"INTERRUPTED"}
    assert not {r["status"] for r in old.rows} & {"RUNNING", "PENDING", "PAUSED"}
    assert any("--resume" in note for note in old.notes)
