"""Fault injection on real searches (`search/run.py` subprocesses, real Ray and Optuna): a trial worker and the
driver are SIGKILLed mid-search, and the tests check that nothing finished is lost or re-run.

Node loss on a multi-node cluster is in tests/search/test_cluster_loopback.py (it needs the loopback cluster);
divergence (a non-finite loss ends the trial with its reason, the search goes on) in tests/search/test_search_ray.py.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest

from echotune.trainables.trial import WORK_PREFIX
from tests.reliability.faults import (
    SearchProcess,
    assert_leaderboard_sees_the_interrupted_search,
    run_cli,
    search_argv,
    trial_results,
    trial_statuses,
    wait_for,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EPOCHS = 6


@pytest.fixture(scope="module")
def fault_data(tmp_path_factory) -> Path:
    """A small synthetic set (64 px, 48 training images: about a second per epoch, long enough to kill mid-epoch)."""
    from echotune.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(train_videos=12, val_videos=4, test_videos=4, frames_per_video=4, img_size=64, seed=1)
    return generate(tmp_path_factory.mktemp("fault-data") / "data", spec)


def search_args(data: Path, root: Path, name: str, *extra: str) -> list[str]:
    """The fault tests' search: EPOCHS per trial, two trials at once (one CPU each), then EXTRA."""
    return search_argv(data, root, name, "--max-epochs", EPOCHS, "--concurrency", 2, *extra)


def leaderboard(experiment: Path) -> list[dict]:
    return pq.read_table(experiment / "leaderboard.parquet").to_pylist()


def optuna_trials(experiment: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{experiment / 'optuna.db'}").trials


def test_a_killed_trial_worker_is_retried_from_its_last_checkpoint(fault_data, tmp_path):
    """SIGKILL one trial's worker process (its pid from Ray's result) mid-training: Ray retries the trial from the
    checkpoint of its last reported epoch, and the trial ends exactly as if nothing had happened."""
    experiment = tmp_path / "results" / "worker"
    # The baseline space: every trial runs the same deterministic configuration, so the killed trial can be
    # compared value for value with the ones left alone. FIFO: every trial runs all its epochs.
    search = SearchProcess(
        search_args(fault_data, tmp_path, "worker", "--space", "baseline", "--num-samples", "3", "--scheduler", "fifo"),
        tmp_path / "worker.log",
    )
    try:

        def running_trial_past_epoch_2():
            for trial_id, rows in trial_results(experiment).items():
                if rows and 2 <= rows[-1]["epoch"] <= EPOCHS - 2:
                    return trial_id, rows[-1]["pid"]
            return None

        victim, pid = wait_for(running_trial_past_epoch_2, 240, search, "a trial past epoch 2")
        os.kill(pid, signal.SIGKILL)
        assert search.wait(300) == 0, search.output()[-4000:]
    finally:
        search.cleanup()
    # the killed worker could not remove its work folder; a later trial or the search's end did
    assert not list(Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}{pid}-*"))

    results = trial_results(experiment)
    assert len(results) == 3
    killed = results[victim]
    before = [r["epoch"] for r in killed if r["pid"] == pid]
    after = [r for r in killed if r["pid"] != pid]
    last_saved = max(before)
    assert before == list(range(1, last_saved + 1))
    # the retry started from the checkpoint of the last epoch reported before the kill, and redid nothing else
    assert {r["restored_from_epoch"] for r in after} == {last_saved}, [(r["epoch"], r["pid"]) for r in killed]
    assert [r["epoch"] for r in after] == list(range(last_saved + 1, EPOCHS + 1))
    # ... and trained exactly as the identical trials that were not killed (the checkpoint holds RNG states too)
    untouched = next(rows for trial_id, rows in results.items() if trial_id != victim)
    assert [r["train/loss"] for r in after] == [r["train/loss"] for r in untouched[last_saved:]]
    assert killed[-1]["val/score"] == untouched[-1]["val/score"]

    rows = {r["trial_id"]: r for r in leaderboard(experiment)}
    assert sorted(rows) == sorted(results)  # every trial exactly once
    assert {(r["status"], r["epochs_trained"]) for r in rows.values()} == {("TERMINATED", EPOCHS)}
    assert {i: r["retries"] for i, r in rows.items()} == {i: int(i == victim) for i in rows}
    trials = optuna_trials(experiment, "worker")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(sorted(t.intermediate_values) == list(range(1, EPOCHS + 1)) for t in trials)


def test_a_killed_driver_resumes_without_losing_or_rerunning_a_trial(fault_data, tmp_path):
    """SIGKILL run.py itself mid-search (TPE + ASHA, the default search), then `run.py --resume`: finished trials
    are kept as they were, running ones continue from at most one epoch back, pending ones run, Optuna agrees."""
    experiment = tmp_path / "results" / "driver"
    args = search_args(fault_data, tmp_path, "driver", "--space", "gradnorm", "--num-samples", "5")
    search = SearchProcess(args, tmp_path / "driver.log")
    try:

        def finished_and_running():
            statuses, results = trial_statuses(experiment), trial_results(experiment)
            running = [t for t, s in statuses.items() if s == "RUNNING" and len(results.get(t, [])) >= 2]
            return running and "TERMINATED" in statuses.values() and (statuses, results)

        wait_for(finished_and_running, 300, search, "a finished trial beside a running one")
        search.kill_driver()
        statuses, results = trial_statuses(experiment), trial_results(experiment)  # as the crash left them
        assert any(s == "RUNNING" for s in statuses.values()), statuses
        assert_leaderboard_sees_the_interrupted_search(experiment)
        # as the README says: only the name (and where results live); settings and dataset come from search.json
        resume = ["--storage", str(tmp_path / "results"), "--name", "driver", "--resume"]
        rc = run_cli(resume, tmp_path / "resume.log", 400)
        assert rc == 0, (tmp_path / "resume.log").read_text()[-4000:]
    finally:
        search.cleanup()

    final = trial_results(experiment)
    rows = {r["trial_id"]: r for r in leaderboard(experiment)}
    assert len(rows) == 5 and sorted(rows) == sorted(final)  # every trial exactly once
    assert {r["status"] for r in rows.values()} <= {"TERMINATED", "STOPPED_EARLY", "DIVERGED"}, rows
    for trial_id, status in statuses.items():
        if status == "TERMINATED":  # finished before the crash: not re-run, its results untouched
            assert final[trial_id] == results[trial_id], trial_id
        elif status == "RUNNING" and results.get(trial_id):
            reported = results[trial_id][-1]["epoch"]
            # the lines the resumed run wrote: not among the pre-kill ones (a trial restarted from scratch may have
            # its result.json rewritten, so its first new line can sit where the old epoch 1 was)
            resumed = [r for r in final[trial_id] if r not in results[trial_id]]
            if not resumed:  # only a trial whose last epoch was reported before the kill, its end unrecorded
                assert reported == EPOCHS, f"{trial_id} did not continue after the resume"
                assert rows[trial_id]["status"] == "TERMINATED", rows[trial_id]
                continue
            # at most one reported epoch lost (the experiment state is saved every second), never a restart
            assert resumed[0]["restored_from_epoch"] >= reported - 1, (trial_id, reported, resumed[0])
            assert resumed[0]["epoch"] == resumed[0]["restored_from_epoch"] + 1
    for trial_id, row in rows.items():
        assert row["epochs_trained"] == final[trial_id][-1]["epoch"]
    trials = optuna_trials(experiment, "driver")
    assert "RUNNING" not in {t.state.name for t in trials}
    told = [t for t in trials if "orphaned" not in t.user_attrs]  # orphans: asked by the dead driver, never run
    assert sorted(t.user_attrs["ray_trial_id"] for t in told) == sorted(rows)
    expected = {"TERMINATED": "COMPLETE", "STOPPED_EARLY": "PRUNED", "DIVERGED": "FAIL"}
    assert {t.user_attrs["ray_trial_id"]: t.state.name for t in told} == {
        i: expected[r["status"]] for i, r in rows.items()
    }
