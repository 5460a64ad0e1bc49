"""Live status of a running search, printed by the driver: a Ray Tune callback.

    status = SearchStatus(cfg.num_samples, cfg.max_epochs, label=cfg.name, every_s=10)
    status.note("starting Ray ...")                  # before ray.init / the study: the first line at once
    tuner = build_tuner(cfg, data, [status]); tuner.fit()

What it prints (stdout), each line prefixed with the seconds since the search started:

- `status NAME: starting Ray ...` and `Ray is up ...` while Ray starts (seconds, before any trial);
- a **status line** when the Tuner starts and then every `every_s` seconds (0: never): trials running, pending
  (not started yet, including those the searcher has not proposed; "starting": those Ray has created and is
  starting a worker for, or waits for resources to start), finished, pruned (stopped early: ASHA, or a budget
  that stopped the search), failed (errored or diverged), the best `val/best_score` so far with its trial,
  trial-epochs done / done + left, and the ETA: trial-epochs left x the mean epoch time of this run's results
  (Ray's time_this_iter_s) / the trials that can run at once (the most seen running, at most those left).
  Trial-epochs left = what each running or pending trial still plans, capped by a TrialEpochBudget; ASHA frees
  the rest of a trial it stops, so the ETA is an upper bound on the work and shrinks as trials are pruned; it
  leaves out worker start-up and the gaps between trials (about a second each with reused workers). The counts
  use the leaderboard's rules (search/trial_table.py): finished = TERMINATED after every planned epoch, pruned =
  STOPPED_EARLY, failed = ERROR + DIVERGED.
- one line per epoch result and per trial end (as the search always printed);
- for a trial that raised (or whose worker died): its id, whether Ray retries it, the error message, the last
  lines of Ray's error.txt for it (the traceback) and the last lines of its worker's stderr
  (`<ray session>/logs/worker-*-<pid>.err`, found by the pid Ray names in the error or the trial's last
  result; the search starts Ray with log_to_driver=False, so nothing else shows them). A worker is reused by
  later trials (reuse_actors), so its stderr may also hold earlier trials' lines. On a multi-node cluster the
  file is on the trial's node: the block says so instead.

On a terminal the status line stays at the bottom and is redrawn in place (the other lines scroll above it; a
line another program writes meanwhile, e.g. Ray's "(raylet) A worker died ...", can start on its row); the lines
before the Tuner and the run's last status line are ordinary lines. When stdout is not a terminal (CI logs, a
file, a pipe) every status is a plain line: no escape sequences, no carriage returns. search/orchestrate.py turns
off Ray's own log of each failed trial's whole traceback (TUNE_PRINT_ALL_TRIAL_ERRORS=0; set it to 1 for both).

The callback is pickled into the experiment's tuner.pkl (Ray restores it on `--resume`): it keeps no stream or
open file, and the state of a run is rebuilt in `setup`. `ProgressPrinter` (search/orchestrate.py), the printer
of earlier versions, is this class, so experiments saved by them resume.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from echotune.metrics import SCORE_METRIC, SELECTION_METRIC
from echotune.search.budget import TrialEpochBudget
from echotune.trainables.trial import DIVERGED_KEY, ERROR_KEY

DEFAULT_EVERY_S = 10.0  # seconds between two status lines
TAIL_LINES = 20  # lines of a failed trial's error file and of its worker's stderr
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RAY_LOG_MARKERS = (":job_id:", ":actor_name:", ":task_name:")  # Ray's own lines in a worker's .err
_PID = re.compile(r"\bpid[=:]\s*(\d+)")
_CLEAR_LINE = "\r\x1b[2K"


# ---------------------------------------------------------------------------------------------------- counting
@dataclass(frozen=True)
class Counts:
    """Where the trials of a search stand. `epochs_left`: trial-epochs that running, paused and pending trials
    still plan (capped by a budget); `best`: (val/best_score, trial id) of the best trial so far, or None."""

    running: int = 0
    pending: int = 0
    starting: int = 0  # of `pending`: created by Ray (PENDING), a worker being started or awaited
    paused: int = 0
    finished: int = 0
    pruned: int = 0
    failed: int = 0
    diverged: int = 0  # of `failed`
    epochs_done: int = 0
    epochs_left: int = 0
    best: tuple[float, str] | None = None

    @property
    def ended(self) -> int:
        return self.finished + self.pruned + self.failed


def outcome(status: str, last_result: dict | None, planned: int | None) -> str:
    """A trial's state in the status line, by the leaderboard's rules: running, pending, paused, finished,
    pruned (TERMINATED before its planned epochs: STOPPED_EARLY), failed (ERROR) or diverged."""
    last = last_result or {}
    if last.get(DIVERGED_KEY):
        return "diverged"
    if status == "ERROR":
        return "failed"
    if status == "TERMINATED":
        return "pruned" if int(last.get("epoch", 0) or 0) < int(planned or 0) else "finished"
    return {"RUNNING": "running", "PAUSED": "paused"}.get(status, "pending")


def count_trials(
    trials,
    num_samples: int | None,
    max_epochs: int | None,
    budget_left: int | None = None,
    ending: dict[str, str] | None = None,
) -> Counts:
    """Counts over Ray trials (anything with trial_id, status, last_result and config). Trials the searcher has
    not proposed yet (num_samples - len(trials)) are pending with `max_epochs` each. `ending`: trial id -> the
    status a trial is about to get (Ray calls on_trial_complete before it marks the trial TERMINATED)."""
    tally = {"running": 0, "pending": 0, "paused": 0, "finished": 0, "pruned": 0, "failed": 0, "diverged": 0}
    done = left = 0
    best: tuple[float, str] | None = None
    for trial in trials:
        last = trial.last_result or {}
        planned = int((trial.config or {}).get("epochs") or last.get("epochs_planned") or max_epochs or 0)
        state = outcome((ending or {}).get(trial.trial_id, trial.status), last, planned)
        tally[state] += 1
        epochs = int(last.get("epoch", 0) or 0)
        done += epochs
        if state in ("running", "paused", "pending"):
            left += max(0, planned - epochs)
        score = last.get(SELECTION_METRIC)
        if (
            state not in ("failed", "diverged")
            and isinstance(score, (int, float))
            and math.isfinite(score)
            and (best is None or score > best[0])
        ):  # as the leaderboard's best: never a failed trial
            best = (float(score), trial.trial_id)
    unproposed = max(0, (num_samples or 0) - len(trials)) if num_samples and num_samples > 0 else 0
    left += unproposed * int(max_epochs or 0)
    if budget_left is not None:
        left = min(left, max(0, budget_left))
    return Counts(
        running=tally["running"],
        pending=tally["pending"] + unproposed,
        starting=tally["pending"],
        paused=tally["paused"],
        finished=tally["finished"],
        pruned=tally["pruned"],
        failed=tally["failed"] + tally["diverged"],
        diverged=tally["diverged"],
        epochs_done=done,
        epochs_left=left,
        best=best,
    )


def eta_s(epochs_left: int, epoch_s: float | None, lanes: int) -> float | None:
    """Seconds until `epochs_left` trial-epochs are done: each takes `epoch_s` (the mean so far; None before the
    first epoch) and `lanes` trials train at once."""
    if epochs_left <= 0:
        return 0.0
    if epoch_s is None or not epoch_s > 0:
        return None
    return epochs_left * epoch_s / max(1, lanes)


def lanes(peak_running: int, counts: Counts) -> int:
    """Trials that can train at once from now on: the most seen running, at most the trials not yet ended."""
    return max(1, min(max(peak_running, counts.running), counts.running + counts.pending + counts.paused))


def format_duration(seconds: float | None) -> str:
    """1:05, 12:00, 1:02:03; '?' for None."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    total = int(round(max(0.0, seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_status(label: str, counts: Counts, elapsed_s: float, eta: float | None) -> str:
    """`   20s status NAME: 2 running, 3 pending, 0 finished, 0 pruned, 1 failed (1 diverged) | best 0.123
    (trial 1a2b3c4d) | 7/40 trial-epochs, ETA 2:10`"""
    parts = [
        f"{counts.running} running",
        f"{counts.pending} pending" + (f" ({counts.starting} starting)" if counts.starting else ""),
    ]
    if counts.paused:
        parts.append(f"{counts.paused} paused")
    parts += [
        f"{counts.finished} finished",
        f"{counts.pruned} pruned",
        f"{counts.failed} failed" + (f" ({counts.diverged} diverged)" if counts.diverged else ""),
    ]
    best = f"best {counts.best[0]:.3f} (trial {counts.best[1]})" if counts.best else "best -"
    total = counts.epochs_done + counts.epochs_left
    return (
        f"{_elapsed(elapsed_s)} status {label}: {', '.join(parts)} | {best} | {counts.epochs_done}/{total} "
        f"trial-epochs, ETA {format_duration(eta) if eta is not None else '-'}"
    )


def _elapsed(seconds: float) -> str:
    return f"{seconds:6.0f}s"


# ------------------------------------------------------------------------------------------------ failed trials
def last_failure(error_text: str) -> list[str]:
    """The lines of the last failure in a Ray error.txt ('Failure # N (occurred at ...)' sections), without
    colour codes and the section header."""
    lines = _ANSI.sub("", error_text).rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Failure # ")]
    return lines[starts[-1] + 1 :] if starts else lines


def error_message(lines: list[str]) -> str:
    """The exception line of a failure (its last non-blank line), cut to 200 characters."""
    text = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return (text[:197] + "..." if len(text) > 200 else text) or "(no error text)"


def worker_pid(lines: list[str], last_result: dict | None) -> int | None:
    """The pid of the worker that ran the trial: Ray names it in the error ('(pid=123, ip=...)'), else the
    trial's last result has it."""
    for line in lines:
        if (match := _PID.search(line)) is not None:
            return int(match.group(1))
    pid = (last_result or {}).get("pid")
    return int(pid) if isinstance(pid, (int, float)) and not isinstance(pid, bool) else None


def ray_logs_dir() -> Path | None:
    """This node's Ray session logs folder (None without a local Ray node, e.g. through Ray Client)."""
    try:
        import ray._private.worker as ray_worker  # no public API names the session folder

        node = ray_worker._global_node
        return Path(node.get_logs_dir_path()) if node is not None else None
    except Exception:  # noqa: BLE001 - best effort: the block says the file was not found
        return None


def worker_stderr(pid: int | None, logs_dir: Path | None) -> Path | None:
    """`worker-*-<pid>.err` in `logs_dir` (the newest, if a pid was reused), or None."""
    if pid is None or logs_dir is None or not logs_dir.is_dir():
        return None
    files = sorted(logs_dir.glob(f"worker-*-{pid}.err"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def tail(path: Path, n: int, skip: tuple[str, ...] = ()) -> list[str]:
    """The last `n` non-blank lines of a text file (reads at most its last 256 kB), lines starting with `skip`
    left out, colour codes removed."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 262144))
        text = f.read().decode("utf-8", errors="replace")
    lines = [line.rstrip() for line in _ANSI.sub("", text).replace("\r", "\n").splitlines()]
    return [line for line in lines if line.strip() and not line.startswith(skip)][-n:]


def failure_report(trial, retrying: bool, n: int = TAIL_LINES, logs_dir: Path | None = None) -> list[str]:
    """The lines printed for a trial that raised: a headline (id, retrying or failed, the error message), the
    last `n` lines of its error.txt and of its worker's stderr."""
    error_file = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    error_lines = last_failure(error_file.read_text(errors="replace")) if error_file and error_file.is_file() else []
    failures = int(getattr(getattr(trial, "run_metadata", None), "num_failures", 0) or 0)
    what = (
        f"failed (failure {failures}); Ray retries it from its last checkpoint"
        if retrying
        else f"FAILED (ERROR{f' after {failures} failures' if failures > 1 else ''})"
    )
    lines = [f"trial {trial.trial_id} {what}: {error_message(error_lines)}"]
    if error_lines:  # named where the experiment keeps it (Ray copies it there from its staging folder)
        shown = Path(trial.path, error_file.name) if getattr(trial, "path", None) else error_file
        lines.append(f"  last lines of its error file {shown}:")
        lines += [f"  | {line}" for line in [line for line in error_lines if line.strip()][-n:]]
    else:
        lines.append("  (Ray wrote no error file for it)")
    pid = worker_pid(error_lines, trial.last_result)
    stderr = worker_stderr(pid, logs_dir if logs_dir is not None else ray_logs_dir())
    if stderr is None:
        where = f"pid {pid}" if pid is not None else "its pid is unknown"
        lines.append(
            f"  (its worker's stderr is not on this machine: {where}; on a cluster it is in the Ray logs of "
            f"the trial's node)"
        )
        return lines
    try:
        stderr_lines = tail(stderr, n, _RAY_LOG_MARKERS)
    except OSError as exc:
        return lines + [f"  (cannot read its worker's stderr {stderr}: {exc})"]
    if not stderr_lines:
        return lines + [f"  its worker's stderr ({stderr}) is empty"]
    lines.append(
        f"  last lines of its worker's stderr (pid {pid}, {stderr}; a reused worker also holds earlier trials' output):"
    )
    return lines + [f"  | {line}" for line in stderr_lines]


# ------------------------------------------------------------------------------------------------ the callback
def _budget_in(stop) -> TrialEpochBudget | None:
    """The TrialEpochBudget among a run's stoppers (Ray may wrap them in a CombinedStopper)."""
    if isinstance(stop, TrialEpochBudget):
        return stop
    for inner in getattr(stop, "_stoppers", None) or ():
        if (found := _budget_in(inner)) is not None:
            return found
    return None


class SearchStatus(tune.Callback):
    """The live status of one Tuner run (the search, or the final round): see the module docstring.

    `num_samples`: trials the run will start; `max_epochs`: epochs each plans (default: read from the trials'
    configs); `label`: the name in the status line; `every_s`: seconds between status lines (0: none, the
    per-epoch, per-trial and failure lines stay); `stream`: where to print (default: sys.stdout at each print)."""

    def __init__(
        self,
        num_samples: int | None = None,
        max_epochs: int | None = None,
        *,
        label: str = "search",
        every_s: float = DEFAULT_EVERY_S,
        stream=None,
        tail_lines: int = TAIL_LINES,
    ):
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0 (0: no status lines), got {every_s}")
        self.num_samples, self.max_epochs, self.label = num_samples, max_epochs, label
        self.every_s, self.tail_lines = float(every_s), tail_lines
        self._stream = stream
        self._reset_clock()
        self._reset_run()

    # --- state: nothing here survives pickling (tuner.pkl) but the settings
    def _reset_clock(self) -> None:
        self.started_at = time.monotonic()  # the search's start as the user sees it (before Ray starts)
        self.first_status_at: float | None = None  # when the first status line (with counts) was printed
        self.lines: list[tuple[float, str]] = []  # (monotonic time, line) of every status line printed

    def _reset_run(self) -> None:
        self.tuner_started_at: float | None = None
        self.last_status_at: float | None = None
        self.last_counts: Counts | None = None
        self._seen: set[tuple[str, int]] = set()  # (trial id, training_iteration) of this run's results
        self._epoch_s: list[float] = []  # time_this_iter_s of this run's results: seconds per trial-epoch
        self._peak_running = 0
        self._budget: TrialEpochBudget | None = None
        self._sticky: str | None = None  # the status line shown at the bottom of a terminal

    def __getstate__(self) -> dict:
        keep = ("num_samples", "max_epochs", "label", "every_s", "tail_lines")
        return {k: self.__dict__.get(k) for k in keep}

    def __setstate__(self, state: dict) -> None:
        if "total" in state and "num_samples" not in state:  # a ProgressPrinter pickled by an earlier version
            state = {"num_samples": state["total"]}
        self.__init__(
            state.get("num_samples"),
            state.get("max_epochs"),
            label=state.get("label") or "search",
            every_s=DEFAULT_EVERY_S if state.get("every_s") is None else state["every_s"],
            tail_lines=state.get("tail_lines") or TAIL_LINES,
        )

    # --- output
    def _out(self):
        return self._stream if self._stream is not None else sys.stdout

    def live(self) -> bool:
        """Whether the status line is redrawn in place: stdout is a terminal (not dumb)."""
        stream = self._out()
        try:
            return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
        except (AttributeError, ValueError):
            return False

    def _write(self, text: str) -> None:
        stream = self._out()
        stream.write(text)
        stream.flush()

    def emit(self, text: str) -> None:
        """Print lines above the status line (which a terminal then shows again below them)."""
        if self._sticky is not None:
            self._write(f"{_CLEAR_LINE}{text}\n{self._fit(self._sticky)}")
        else:
            self._write(f"{text}\n")

    def _fit(self, line: str) -> str:
        width = shutil.get_terminal_size((120, 24)).columns
        return line if len(line) < width else line[: max(10, width - 4)] + "..."

    def _show(self, line: str, permanent: bool = False) -> None:
        """A status line: on a terminal it replaces the one at the bottom (a `permanent` one is left in place as
        an ordinary line); otherwise a plain line."""
        now = time.monotonic()
        self.lines.append((now, line))
        if self.live():
            self._sticky = None if permanent else line
            self._write(f"{_CLEAR_LINE}{line}\n" if permanent else f"{_CLEAR_LINE}{self._fit(line)}")
        else:
            self._write(f"{line}\n")

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def note(self, text: str) -> None:
        """A status line about what the search is doing before the Tuner runs (starting Ray, ...); none when the
        status is off (every_s 0)."""
        if self.every_s > 0:  # an ordinary line: Ray and Optuna write their own lines while they start
            self._show(f"{_elapsed(self.elapsed())} status {self.label}: {text}", permanent=True)

    def status_line(self, trials, ending: dict[str, str] | None = None) -> str:
        budget_left = self._budget.total - self._budget.used if self._budget is not None else None
        counts = count_trials(trials, self.num_samples, self._max_epochs(trials), budget_left, ending)
        self.last_counts = counts
        self._peak_running = max(self._peak_running, counts.running)
        epoch_s = sum(self._epoch_s) / len(self._epoch_s) if self._epoch_s else None
        eta = eta_s(counts.epochs_left, epoch_s, lanes(self._peak_running, counts))
        return format_status(self.label, counts, self.elapsed(), eta)

    def print_status(self, trials, final: bool = False, ending: dict[str, str] | None = None) -> None:
        """The status line now (`final`: the run's last, left in place on a terminal)."""
        line = self.status_line(trials, ending)
        if self.every_s <= 0:
            return
        now = time.monotonic()
        self.last_status_at = now
        if self.first_status_at is None:
            self.first_status_at = now
        self._show(line, permanent=final)

    def _max_epochs(self, trials) -> int | None:
        if self.max_epochs:
            return self.max_epochs
        return next((int(t.config["epochs"]) for t in trials if (t.config or {}).get("epochs")), None)

    # --- Ray Tune hooks
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        """Called when the Tuner starts (also when a resumed search starts): this run's counters."""
        self._reset_run()
        self.tuner_started_at = time.monotonic()
        self._budget = _budget_in(stop)
        if self.num_samples is None:
            self.num_samples = total_num_samples or num_samples

    def on_step_begin(self, iteration, trials, **info):
        if self.every_s <= 0:
            return
        now = time.monotonic()
        if self.last_status_at is None or now - self.last_status_at >= self.every_s:
            self.print_status(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = (trial.trial_id, int(result.get("training_iteration", 0) or 0))
        seconds = result.get("time_this_iter_s")
        if key not in self._seen and isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0:
            self._epoch_s.append(float(seconds))
        self._seen.add(key)
        self._peak_running = max(self._peak_running, sum(t.status == "RUNNING" for t in trials))
        if result.get(DIVERGED_KEY):
            return  # on_trial_complete says so
        nan = float("nan")
        self.emit(
            f"{_elapsed(self.elapsed())} {trial.trial_id} epoch {result.get('epoch', 0):>2}/"
            f"{result.get('epochs_planned', '?')} stage {result.get('stage', '?')} | score "
            f"{result.get(SCORE_METRIC, nan):.3f} (best {result.get(SELECTION_METRIC, nan):.3f}) mAP50 "
            f"{result.get('val/map50', nan):.3f} view_acc {result.get('val/view_acc', nan):.3f} kappa "
            f"{result.get('val/view_kappa', nan):.3f} | {trial.config.get('arch')} "
            f"{trial.config.get('model_scale')}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if last.get(DIVERGED_KEY):
            what = f"DIVERGED: {str(last.get(ERROR_KEY, ''))[:120]}"
        elif last.get("epoch", 0) < last.get("epochs_planned", 0):
            what = f"stopped by ASHA after epoch {last.get('epoch')} (stage {last.get('stage')})"
        else:
            what = f"finished, best score {last.get(SELECTION_METRIC, float('nan')):.3f}"
        ending = {trial.trial_id: "TERMINATED"}  # Ray marks it so right after this hook
        counts = count_trials(trials, self.num_samples, self._max_epochs(trials), None, ending)
        self.emit(
            f"{_elapsed(self.elapsed())} {trial.trial_id} {what}  [{counts.ended}/{self.num_samples or '?'} "
            f"trials done]"
        )

    def _failure(self, trial, retrying: bool) -> None:
        lines = failure_report(trial, retrying, self.tail_lines)
        self.emit("\n".join([f"{_elapsed(self.elapsed())} {lines[0]}", *lines[1:]]))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._failure(trial, retrying=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._failure(trial, retrying=False)
        if self.every_s > 0:
            self.print_status(trials)

    def on_experiment_end(self, trials, **info):
        """The run's last status line: its totals (on a terminal it stays, as an ordinary line)."""
        self.print_status(trials, final=True)
