"""The live search status (search/progress.py): counting, ETA arithmetic and formatting on hand-made trials, the
terminal and plain-line output, pickling into tuner.pkl; then real Ray searches: the first status line within 5 s,
final counts equal to the leaderboard's, a failed trial's error lines and its worker's stderr printed."""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ray import tune

from echotune.search.progress import (
    TAIL_LINES,
    Counts,
    SearchStatus,
    count_trials,
    error_message,
    eta_s,
    failure_report,
    format_duration,
    format_status,
    lanes,
    last_failure,
    outcome,
    worker_pid,
)
from tests.search.conftest import probe_search


def trial(
    trial_id: str, status: str, epoch: int | None = None, best: float | None = None, planned: int = 4, **extra
) -> SimpleNamespace:
    """What SearchStatus reads of a Ray trial: id, status, last result, config."""
    last = (
        {}
        if epoch is None
        else {
            "epoch": epoch,
            "epochs_planned": planned,
            "training_iteration": epoch,
            **({"val/best_score": best} if best is not None else {}),
            **extra,
        }
    )
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=last, config={"epochs": planned})


HAND_MADE = [
    trial("run1", "RUNNING", 1, 0.10),  # 3 epochs left
    trial("run2", "RUNNING", 3, 0.20),  # 1 left
    trial("pend", "PENDING"),  # created, waiting for a worker: 4 left
    trial("done", "TERMINATED", 4, 0.30),
    trial("asha", "TERMINATED", 2, 0.25),  # stopped at a rung: pruned, frees its last 2 epochs
    trial("err", "ERROR", 2, 0.90),  # a failed trial is never the best
    trial("nan", "TERMINATED", 1, 0.0, diverged=1.0),
]


def test_trials_are_counted_by_the_leaderboards_rules():
    assert outcome("TERMINATED", {"epoch": 4}, 4) == "finished"
    assert outcome("TERMINATED", {"epoch": 3}, 4) == "pruned"
    assert outcome("TERMINATED", {"epoch": 1, "diverged": 1.0}, 4) == "diverged"
    assert outcome("ERROR", {}, 4) == "failed" and outcome("PAUSED", {}, 4) == "paused"
    assert outcome("PENDING", None, 4) == "pending" and outcome("RUNNING", {"epoch": 1}, 4) == "running"
    counts = count_trials(HAND_MADE, num_samples=10, max_epochs=4)
    assert counts == Counts(
        running=2,
        pending=1 + 3,
        starting=1,
        paused=0,
        finished=1,
        pruned=1,
        failed=2,
        diverged=1,
        epochs_done=1 + 3 + 4 + 2 + 2 + 1,
        epochs_left=3 + 1 + 4 + 3 * 4,
        best=(0.30, "done"),
    )
    assert counts.ended == 4
    # a trial-epoch budget caps what is left; a trial Ray is about to mark TERMINATED counts as ended
    assert count_trials(HAND_MADE, 10, 4, budget_left=5).epochs_left == 5
    ending = count_trials(HAND_MADE, 10, 4, ending={"run2": "TERMINATED"})
    assert (ending.running, ending.pruned, ending.epochs_left) == (1, 2, 3 + 4 + 12)


def test_eta_is_trial_epochs_left_times_the_epoch_time_over_the_trials_running_at_once():
    assert eta_s(epochs_left=30, epoch_s=10.0, lanes=2) == pytest.approx(150.0)
    assert eta_s(30, None, 2) is None  # no epoch yet: no rate
    assert eta_s(0, None, 2) == 0.0  # nothing left
    counts = count_trials(HAND_MADE, 10, 4)  # 2 running, 4 pending, 0 paused
    assert lanes(peak_running=2, counts=counts) == 2 and lanes(3, counts) == 3  # 3 ran at once before
    tail = Counts(running=1, epochs_left=3)  # the last trial: its epochs cannot be shared out
    assert lanes(2, tail) == 1 and eta_s(tail.epochs_left, 10.0, lanes(2, tail)) == pytest.approx(30.0)
    assert [format_duration(s) for s in (0, 59.6, 65, 3600 + 62, None)] == ["0:00", "1:00", "1:05", "1:01:02", "?"]
    line = format_status("demo", counts, elapsed_s=42.4, eta=eta_s(counts.epochs_left, 20.0, lanes(2, counts)))
    assert line == (
        "    42s status demo: 2 running, 4 pending (1 starting), 1 finished, 1 pruned, 2 failed "
        "(1 diverged) | best 0.300 (trial done) | 13/33 trial-epochs, ETA 3:20"
    )
    quiet = format_status("demo", Counts(pending=8, epochs_left=32), 3.0, None)
    assert quiet == (
        "     3s status demo: 0 running, 8 pending, 0 finished, 0 pruned, 0 failed | best - | 0/32 trial-epochs, ETA -"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal_and_one_redrawn_line_on_it(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "300")  # wide enough: a terminal's status line is cut to its width
    for stream in (io.StringIO(), Terminal()):
        status = SearchStatus(4, 4, label="demo", every_s=60, stream=stream)
        status.setup()
        status.on_step_begin(0, HAND_MADE[:3])  # the first step prints at once
        status.on_step_begin(1, HAND_MADE[:3])  # too soon for another
        status.on_trial_result(
            2,
            HAND_MADE[:3],
            HAND_MADE[0],
            {"epoch": 2, "epochs_planned": 4, "stage": 1, "training_iteration": 2, "val/score": 0.1},
        )
        status.last_status_at -= 60  # a minute later
        status.on_step_begin(3, HAND_MADE[:3])
        status.on_experiment_end(HAND_MADE[:3])
        assert len(status.lines) == 3 and status.first_status_at is not None
        out = stream.getvalue()
        if isinstance(stream, Terminal):  # the status stays at the bottom: cleared, the epoch line above, redrawn
            first = status.lines[0][1]
            assert out.startswith(f"\r\x1b[2K{first}\r\x1b[2K") and "run1 epoch  2/4 stage 1" in out
            assert out.count("\n") == 2 and out.endswith(f"\r\x1b[2K{status.lines[-1][1]}\n")
        else:
            assert "\x1b" not in out and "\r" not in out
            lines = out.splitlines()
            assert lines[1].endswith(
                "run1 epoch  2/4 stage 1 | score 0.100 (best nan) mAP50 nan view_acc nan kappa nan | None None"
            )
            assert [lines[0], lines[2], lines[3]] == [line for _, line in status.lines]
    before = SearchStatus(4, 4, label="demo", stream=Terminal())  # while Ray starts: ordinary lines
    before.note("starting Ray (local) ...")
    assert before._out().getvalue() == "\r\x1b[2K     0s status demo: starting Ray (local) ...\n"
    off = SearchStatus(4, 4, every_s=0, stream=io.StringIO())
    off.setup()
    off.note("starting Ray ...")
    off.on_step_begin(0, HAND_MADE)
    off.on_experiment_end(HAND_MADE)
    assert off._out().getvalue() == "" and off.last_counts.failed == 2  # counted, not printed


def test_the_status_pickles_without_its_stream_and_old_printers_resume_as_it():
    status = SearchStatus(7, 12, label="x", every_s=3, stream=io.StringIO())
    clone = pickle.loads(pickle.dumps(status))
    assert (clone.num_samples, clone.max_epochs, clone.label, clone.every_s, clone._stream) == (7, 12, "x", 3.0, None)
    from echotune.search import orchestrate  # tuner.pkl of earlier searches names search.orchestrate.ProgressPrinter

    assert orchestrate.ProgressPrinter is SearchStatus
    old = object.__new__(orchestrate.ProgressPrinter)
    old.__setstate__({"total": 16, "start": 1.0, "done": 3})  # what pickle hands an old ProgressPrinter
    assert (old.num_samples, old.every_s, old.lines) == (16, 10.0, [])


ERROR_TXT = """Failure # 1 (occurred at 2026-11-28_17-49-59)
\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=111, ip=10.0.0.1, actor_id=ab, repr=train_any)
KeyError: 'first failure'
Failure # 2 (occurred at 2026-11-28_17-50-30)
\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=222, ip=10.0.0.1, actor_id=cd, repr=train_any)
  File "/work/main/trainables/trial.py", line 70, in train_with_tune
    cfg = TrainConfig.from_dict(config)
ValueError: loss_box='no_such_loss' is not valid
"""


def test_a_failed_trials_error_and_worker_stderr_lines(tmp_path):
    lines = last_failure(ERROR_TXT)
    assert lines[0] == "ray::ImplicitFunc.train() (pid=222, ip=10.0.0.1, actor_id=cd, repr=train_any)"
    assert error_message(lines) == "ValueError: loss_box='no_such_loss' is not valid"
    assert worker_pid(lines, {"pid": 5}) == 222 and worker_pid(["no pid"], {"pid": 5}) == 5
    trial_dir, logs = tmp_path / "trial_x", tmp_path / "logs"
    trial_dir.mkdir(), logs.mkdir()
    (trial_dir / "error.txt").write_text(ERROR_TXT)
    stderr = [":job_id:01000000", ":actor_name:ImplicitFunc"] + [f"line {i}" for i in range(30)]
    (logs / "worker-ffff-01000000-222.err").write_text("\n".join(stderr) + "\n")
    failed = SimpleNamespace(
        trial_id="x",
        error_file=str(trial_dir / "error.txt"),
        path="/results/exp/trial_x",
        last_result={"pid": 5},
        run_metadata=SimpleNamespace(num_failures=2),
    )
    report = failure_report(failed, retrying=False, logs_dir=logs)
    assert report[0] == "trial x FAILED (ERROR after 2 failures): ValueError: loss_box='no_such_loss' is not valid"
    assert report[1] == "  last lines of its error file /results/exp/trial_x/error.txt:"
    assert report[2:6] == [
        "  | ray::ImplicitFunc.train() (pid=222, ip=10.0.0.1, actor_id=cd, repr=train_any)",
        '  |   File "/work/main/trainables/trial.py", line 70, in train_with_tune',
        "  |     cfg = TrainConfig.from_dict(config)",
        "  | ValueError: loss_box='no_such_loss' is not valid",
    ]
    assert report[6].startswith("  last lines of its worker's stderr (pid 222, ")
    assert report[7:] == [f"  | line {i}" for i in range(30 - TAIL_LINES, 30)]  # Ray's markers left out
    retried = failure_report(failed, retrying=True, logs_dir=tmp_path / "elsewhere")
    assert "failed (failure 2); Ray retries it from its last checkpoint" in retried[0]
    assert "its worker's stderr is not on this machine: pid 222" in retried[-1]


def test_status_every_option():
    from tests.search.test_cli import load

    run = load("run")
    assert run.build_parser().parse_args([]).status_every == 10.0
    assert run.build_parser().parse_args(["--status-every", "0"]).status_every == 0.0
    with pytest.raises(SystemExit):
        run.build_parser().parse_args(["--status-every", "-1"])


def hand_made_predictions(split: str = "val"):
    """Two members' cached predictions on 6 images (boxes near the truth, jittered; random view probabilities)."""
    from echotune.ensemble.inference import SplitPredictions

    rng = np.random.default_rng(0)
    truth = [np.array([[10 + 5 * i, 12, 40 + 5 * i, 44]], np.float32) for i in range(6)]
    members, probs = [], []
    for _ in range(2):
        members.append(
            [
                [
                    {
                        "boxes": t + rng.normal(0, 3, t.shape).astype(np.float32),
                        "scores": rng.uniform(0.3, 0.9, 1).astype(np.float32),
                        "labels": np.array([i % 4]),
                    }
                    for i, t in enumerate(truth)
                ]
            ]
        )
        probs.append(rng.dirichlet(np.ones(3), size=(1, 6)).astype(np.float32))
    return SplitPredictions(
        split,
        4,
        [f"im{i}.png" for i in range(6)],
        [(96, 96)] * 6,
        members,
        probs,
        [{"boxes": t, "labels": np.array([i % 4])} for i, t in enumerate(truth)],
        np.array([0, 1, 2, 0, 1, 2]),
        [f"v{i // 2}" for i in range(6)],
    )


def test_ensemble_tuning_progress_bar_shows_on_a_terminal_only_and_changes_nothing(monkeypatch):
    from echotune.ensemble.tuning import tune_fusion

    preds = hand_made_predictions()
    results, outputs = [], []
    for stream in (io.StringIO(), Terminal()):
        monkeypatch.setattr(sys, "stderr", stream)
        results.append(tune_fusion(preds, n_trials=6, seed=3, log=lambda _: None))
        outputs.append(stream.getvalue())
    assert outputs[0] == "" and "tuning wbf on val" in outputs[1] and "trial" in outputs[1]
    plain, shown = results
    assert (plain.weights, plain.params, plain.val_score, plain.default_score) == (
        shown.weights,
        shown.params,
        shown.val_score,
        shown.default_score,
    )


# ------------------------------------------------------------------------------------------- real Ray searches
class TimedStream(io.TextIOBase):
    """sys.stdout for a search: each line with the monotonic time it was written (not a terminal)."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        now = time.monotonic()
        self.lines += [(now, line) for line in complete]
        return len(text)

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines) + self._partial


@pytest.mark.ray
def test_first_status_within_5_s_and_final_counts_equal_the_leaderboards(
    tiny_synthetic, probe_space, tmp_path, monkeypatch
):
    """The probe search (tests/search/conftest.py): the baseline, a diverging trial, an erroring one and two
    others, ASHA at epochs 1 and 2 of 4, a status line every second."""
    from echotune.search.orchestrate import run_search
    from echotune.search.trial_table import trial_rows

    cfg = probe_search(tmp_path, "live", num_samples=5, max_failures=0)
    stream = TimedStream()
    monkeypatch.setattr(sys, "stdout", stream)
    called = time.monotonic()
    summary = run_search(cfg, tiny_synthetic, resume=False, status_every=1.0)
    monkeypatch.undo()
    status, text = summary["status"], stream.text()
    timed = stream.lines
    # the first line (before Ray starts) at once; the first counts within 5 s of Ray being up and of the Tuner's start
    assert timed[0][1].endswith("status live: starting Ray (local) ...") and timed[0][0] - called < 5.0
    ray_up = next(t for t, line in timed if line.endswith("Ray is up; starting the Tuner ..."))
    first_counts = next(t for t, line in timed if " running, " in line)
    assert first_counts - ray_up < 5.0 and status.first_status_at - status.tuner_started_at < 5.0
    # then every second or so while trials run (the driver's loop may pause briefly: a generous bound)
    times = [t for t, line in status.lines if " running, " in line]
    assert len(times) >= 5 and max(b - a for a, b in zip(times, times[1:])) < 5.0
    # the final counts are the leaderboard's
    rows = trial_rows(cfg.experiment_dir)
    by_status = {s: sum(r["status"] == s for r in rows) for s in ("TERMINATED", "STOPPED_EARLY", "ERROR", "DIVERGED")}
    final = status.last_counts
    assert (final.running, final.pending, final.paused) == (0, 0, 0) and len(rows) == cfg.num_samples
    assert (final.finished, final.pruned, final.failed, final.diverged) == (
        by_status["TERMINATED"],
        by_status["STOPPED_EARLY"],
        by_status["ERROR"] + by_status["DIVERGED"],
        by_status["DIVERGED"],
    )
    assert (final.failed, final.diverged) == (2, 1)  # the probe's erroring and diverging trials
    assert final.epochs_done == sum(r["epochs_trained"] for r in rows) and final.epochs_left == 0
    scored = [r["best/val/score"] for r in rows if r["status"] not in ("ERROR", "DIVERGED")]
    assert final.best[0] == pytest.approx(max(scored))
    last_line = status.lines[-1][1]
    assert (
        last_line in text
        and (f"0 running, 0 pending, {final.finished} finished, {final.pruned} pruned, 2 failed (1 diverged)")
        in last_line
        and last_line.endswith("ETA 0:00")
    )
    # the erroring trial: its id, the error, the end of its traceback; per-epoch and per-trial lines as before
    errored = next(r for r in rows if r["status"] == "ERROR")
    assert f"trial {errored['trial_id']} FAILED (ERROR): ValueError: loss_box='no_such_loss' is not valid" in text
    assert f"  last lines of its error file {cfg.experiment_dir}/trial_{errored['trial_id']}/error.txt:" in text
    assert "  | ValueError: loss_box='no_such_loss' is not valid" in text
    assert f"{summary['baseline']['trial_id']} epoch  1/4 stage 1 | score" in text and "trials done]" in text
    assert "\x1b" not in text and "\r" not in text  # not a terminal: plain lines only


class CrashWorker(tune.Callback):
    """Fault injection: after a trial's first epoch its worker writes `lines` to its own stderr (through
    /proc/<pid>/fd/2, the file Ray redirected it to) and dies by SIGKILL, as a crashing native library would."""

    def __init__(self, lines: list[str]):
        self.lines, self.crashed = lines, None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.crashed is None:
            self.crashed = (trial.trial_id, result["pid"])
            with open(f"/proc/{result['pid']}/fd/2", "a") as stderr:
                stderr.write("".join(f"{line}\n" for line in self.lines))
            os.kill(result["pid"], signal.SIGKILL)


@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc/self/fd/2").exists(), reason="needs /proc to write into a worker's stderr")
def test_a_crashed_trials_worker_stderr_is_printed(tiny_synthetic, probe_space, tmp_path):
    import ray

    from echotune.search.tuner import build_tuner

    cfg = probe_search(tmp_path, "crash", num_samples=1, concurrency=1, max_failures=0)
    out = io.StringIO()
    status = SearchStatus(cfg.num_samples, cfg.max_epochs, label=cfg.name, every_s=0, stream=out)
    crash = CrashWorker([f"worker's last words {i}" for i in range(TAIL_LINES + 5)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        build_tuner(cfg, tiny_synthetic, [status, crash]).fit()
    finally:
        ray.shutdown()
    trial_id, pid = crash.crashed
    lines = out.getvalue().splitlines()
    head = next(i for i, line in enumerate(lines) if f"trial {trial_id} FAILED (ERROR)" in line)
    assert "actor" in lines[head].lower() or "worker" in lines[head].lower(), lines[head]  # Ray's message: it died
    start = next(
        i for i in range(head, len(lines)) if lines[i].startswith(f"  last lines of its worker's stderr (pid {pid}, ")
    )
    shown = lines[start + 1 : start + 1 + TAIL_LINES]
    assert shown == [f"  | worker's last words {i}" for i in range(5, TAIL_LINES + 5)], "\n".join(lines[head:])
    assert status.last_counts.failed == 1 and status.last_counts.finished == 0
