"""Helpers for the fault-injection tests: a `search/run.py` subprocess that can be killed like a crashed process,
and readers of what Ray left on disk (the same files `--resume` and the leaderboard read).

Each search runs in its own session (process group), so a test can SIGKILL exactly one process (the driver or
one trial worker, as the OOM killer or a preempted VM would) and still clean up every process the search
started (Ray's agents outlive a killed driver) when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def search_argv(data: Path, root: Path, name: str, *more) -> list[str]:
    """A real search's command line at the tests' smallest: on DATA, into ROOT/results/NAME, 64 px, seed 0, no
    ensemble and no final round; then MORE (--max-epochs and the options the test is about)."""
    where = ["--data", str(data), "--storage", str(root / "results"), "--name", name]
    return [*where, "--img-size", "64", "--ensemble-top-k", "0", "--final-top-k", "0", "--seed", "0", *map(str, more)]


class SearchProcess:
    """`python search/run.py ARGV` in the background, its output in `log`."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None):
        self.log = log
        self._out = log.open("a")
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "search/run.py", *argv],
            cwd=REPO,
            env=child_env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"search still running after {timeout} s:\n{self.output()[-4000:]}") from None

    def kill_driver(self) -> None:
        """SIGKILL the driver process only (what it started keeps running or dies on its own, as in a crash)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        """SIGKILL everything left in the search's process group (Ray's agents survive a killed driver)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        finally:
            self._out.close()


def run_cli(argv: list[str], log: Path, timeout: float, env: dict | None = None) -> int:
    """Run `search/run.py ARGV` to the end (its process group is cleaned up either way); returns the exit code."""
    search = SearchProcess(argv, log, env)
    try:
        return search.wait(timeout)
    finally:
        search.cleanup()


def wait_for(
    condition: Callable[[], T | None], timeout: float, search: SearchProcess | None = None, what: str = "condition"
) -> T:
    """Poll `condition` until it returns something truthy; fail early if the search exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if search is not None and not search.alive():
            raise AssertionError(f"search exited ({search.proc.returncode}) before {what}:\n{search.output()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout} s" + (f":\n{search.output()[-4000:]}" if search else ""))


def trial_results(experiment: Path) -> dict[str, list[dict]]:
    """Every trial's results in the order Ray wrote them (result.json; a line being written is left out)."""
    results = {}
    for path in sorted(experiment.glob("trial_*/result.json")):
        rows = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        results[path.parent.name.removeprefix("trial_")] = rows
    return results


def trial_statuses(experiment: Path) -> dict[str, str]:
    """Trial id -> status in the newest experiment state Ray saved (what `--resume` will restore)."""
    states = sorted(experiment.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, OSError):  # replaced while we read it: the next poll gets the new one
        return {}
    return {json.loads(trial)["trial_id"]: json.loads(trial)["status"] for trial, _ in data["trial_data"]}


def assert_leaderboard_sees_the_interrupted_search(experiment: Path) -> None:
    """Unfinished trials are listed: as Ray recorded them while the state is fresh, INTERRUPTED once it is stale
    (with the --resume command in the notes)."""
    from echotune.search.experiment import LIVE_STATE_MAX_AGE_S, load_experiment

    fresh = load_experiment(experiment)
    assert fresh.live and any(r["status"] in ("RUNNING", "PENDING", "PAUSED") for r in fresh.rows)
    stale = time.time() - 2 * LIVE_STATE_MAX_AGE_S
    for state in experiment.glob("experiment_state-*.json"):
        os.utime(state, (stale, stale))
    old = load_experiment(experiment)
    assert not old.live and {r["status"] for r in old.rows} & {"INTERRUPTED"}
    assert not {r["status"] for r in old.rows} & {"RUNNING", "PENDING", "PAUSED"}
    assert any("--resume" in note for note in old.notes)
