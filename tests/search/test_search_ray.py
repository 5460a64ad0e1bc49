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
from spaces import register_space

pytestmark = pytest.mark.ray
PROBE = "probe_for_tests"
POISONED_TRIAL = 1


def _probe_constants() -> dict:
    return {"arch": "shared", "balance": "gradnorm", "model_scale": "test", "optimizer": "adamw",
            "lr_stage1": 3e-3, "lr_stage2": 1e-3, "lr_stage3": 3e-4, "stage_split": (0.3, 0.5, 0.2), "img_size": 64}


def _probe_config(profile) -> dict:
    return {**_probe_constants(), "gn_alpha": 1.5}


def _probe(trial, profile) -> dict:
    """Test space: one real parameter; trial 1 gets a learning rate that overflows float32 (diverges)."""
    trial.suggest_float("gn_alpha", 0.0, 3.0)
    constants = _probe_constants()
    if getattr(trial, "number", None) == POISONED_TRIAL:  # the baseline replay has no number
        constants.update(optimizer="sgd", lr_stage1=1e38, warmup_epochs=0.0, grad_clip=0.0)
    return constants


@pytest.fixture
def probe_space():
    """Registered only while a test runs, so the parametrised space tests never see it."""
    from spaces.registry import _SPACES

    register_space(PROBE, baseline_config=_probe_config)(_probe)
    try:
        yield PROBE
    finally:
        _SPACES.pop(PROBE, None)


def probe_search(tmp_path, name, **overrides) -> SearchConfig:
    values = dict(space=PROBE, name=name, storage=str(tmp_path / "results"), num_samples=4, max_epochs=4,
                  img_size=64, concurrency=2, seed=0)
    values.update(overrides)
    return SearchConfig(**values)


def optuna_states(cfg: SearchConfig) -> list[str]:
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{cfg.experiment_dir}/optuna.db")
    return [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]


def test_search_end_to_end_with_a_diverging_trial(tiny_synthetic, tmp_path, probe_space):
    cfg = probe_search(tmp_path, "e2e")
    summary = run_search(cfg, tiny_synthetic, resume=False)
    experiment = tmp_path / "results" / "e2e"
    for name in ("optuna.db", "leaderboard.parquet", "best_config.yaml", "tuner.pkl"):
        assert (experiment / name).is_file(), name
    table = pq.read_table(experiment / "leaderboard.parquet")
    assert table.schema.equals(SCHEMA) and table.num_rows == 4
    rows = table.to_pylist()
    trial_dirs = sorted(p.name for p in experiment.glob("trial_*"))
    assert trial_dirs == sorted(f"trial_{r['trial_id']}" for r in rows)
    for trial_dir in trial_dirs:
        assert {"params.json", "progress.csv", "result.json"} <= {p.name for p in (experiment / trial_dir).iterdir()}
    diverged = [r for r in rows if r["status"] == "DIVERGED"]
    assert len(diverged) == 1 and "non-finite" in diverged[0]["error"]
    assert diverged[0]["hp/lr_stage1"] == 1e38
    states = optuna_states(cfg)
    assert states[POISONED_TRIAL] == "FAIL" and "RUNNING" not in states
    # every other trial: Optuna's state agrees with what happened in Ray
    by_lr = {r["hp/gn_alpha"]: r for r in rows}
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{cfg.experiment_dir}/optuna.db")
    for trial in study.trials:
        row = by_lr[trial.params["gn_alpha"]]
        expected = {"TERMINATED": "COMPLETE", "STOPPED_EARLY": "PRUNED", "DIVERGED": "FAIL"}[row["status"]]
        assert trial.state.name == expected, (row["status"], trial.state.name)
        if expected == "PRUNED":
            assert max(trial.intermediate_values) == row["epochs_trained"]
    assert summary["baseline"] is not None and summary["baseline"]["is_baseline"]
    finished = [r for r in rows if r["status"] in ("TERMINATED", "STOPPED_EARLY")]
    assert all(r["best/val/score"] is not None and r["checkpoint_path"] for r in finished)


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
