"""Search building blocks without a Ray cluster: Optuna trial states, stage-end rungs, resume of rungs."""
from __future__ import annotations

import json

import optuna
import pytest

from search.optuna_bridge import final_state
from search.scheduler import StageASHA
from trainables.common import stages_done
from echotune.engine.config import TrainConfig


def test_final_states():
    S = optuna.trial.TrialState
    assert final_state({"epoch": 8, "epochs_planned": 8}, error=False) == S.COMPLETE
    assert final_state({"epoch": 3, "epochs_planned": 8}, error=False) == S.PRUNED
    assert final_state({"epoch": 3, "epochs_planned": 8, "diverged": 1.0}, error=False) == S.FAIL
    assert final_state({"epoch": 8, "epochs_planned": 8}, error=True) == S.FAIL
    assert final_state(None, error=False) == S.PRUNED


def test_stage_rungs_are_exactly_the_stage_ends(tmp_path):
    scheduler = StageASHA("val/score", "max", tmp_path)
    assert scheduler.rung_milestones() == [1, 2]
    cfg = TrainConfig(epochs=10)  # 3 / 5 / 2 epochs
    assert [stages_done(cfg, e) for e in range(1, 11)] == [0, 0, 1, 1, 1, 1, 1, 2, 2, 3]


def test_rungs_are_rebuilt_from_result_files(tmp_path):
    for trial_id, scores in {"a": [0.1, 0.5, 0.6], "b": [0.2, 0.3]}.items():
        lines = [json.dumps({"trial_id": trial_id, "stages_done": i + 1, "val/score": s}) for i, s in enumerate(scores)]
        (tmp_path / f"trial_{trial_id}").mkdir()
        (tmp_path / f"trial_{trial_id}" / "result.json").write_text("\n".join(lines) + "\n{cut by a cra")
    scheduler = StageASHA("val/score", "max", tmp_path)
    assert scheduler.rebuild_rungs() == 4
    rungs = dict(scheduler._brackets[0]._rungs)
    assert rungs[1] == {"a": 0.1, "b": 0.2} and rungs[2] == {"a": 0.5, "b": 0.3}
