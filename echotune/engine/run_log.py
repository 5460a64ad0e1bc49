"""Per-epoch logs of one run, for people: OUT/results.csv and TensorBoard events in OUT/tensorboard/.

    run_log = RunLog(out_dir, history=checkpoint_history)     # history: the epochs before a resume, if any
    fit(cfg, data, report=run_log, ...)                        # the engine's report(metrics, checkpoint_path)
    run_log.close()

results.csv has one row per epoch and one column per metric (the names `fit` reports: epoch, stage, val/*,
train/loss*, gradnorm/w_*, lr, ...), the header being every name seen so far. It is rewritten whole through
echotune.atomic every epoch (a few kB), so a kill never leaves a half row, and a resume rebuilds it from the
checkpoint's history: the epochs after the checkpoint that a killed run had logged are replaced, never duplicated.

The events hold one scalar tag per metric (the metric's name; `val/map50` lands in TensorBoard's `val` group) at
step = epoch. Event files are append-only by design, so on every start the writer first tells TensorBoard to
purge all earlier steps of this folder (a SessionLog START at step 1, what SummaryWriter(purge_step=1) writes),
then writes the history again: TensorBoard shows exactly the rows of results.csv, one value per tag and epoch.

Ray-free (the engine's layer): searches get the same from Ray's own CSV and TensorBoard loggers per trial.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable
from pathlib import Path

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.summary import scalar

from echotune.atomic import atomic_write_text

CSV_NAME = "results.csv"
TENSORBOARD_DIR = "tensorboard"
STEP_KEY = "epoch"  # the x axis; not a tag of its own
LEADING_COLUMNS = ("epoch", "stage")  # first in the CSV, so a spreadsheet opens on them


def is_scalar(value) -> bool:
    """A number TensorBoard can plot: int or float, not bool (True is an int to Python), finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def csv_columns(rows: Iterable[dict]) -> list[str]:
    """epoch and stage first, then every other name in the order first seen: the header stays the same from one
    epoch to the next (a name that appears later, e.g. lr after a resume from an older checkpoint, is appended)."""
    names = dict.fromkeys(name for name in LEADING_COLUMNS if any(name in row for row in rows))
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


def render_csv(rows: list[dict]) -> str:
    """The whole table as text; a metric missing from an epoch is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> Event:
    return Event(wall_time=wall_time, step=step, summary=scalar(tag, float(value)))


class EventLog:
    """TensorBoard scalars in `folder`, written synchronously.

    tensorboardX's SummaryWriter queues events for a background thread whose flush() does not wait for the
    queue, so an epoch's scalars could still be in memory when the process is killed; its EventsWriter (the
    same file format) writes and flushes here, so what report() returned for is on disk."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        # The file name carries the start time in seconds only; two starts within one second would open the
        # same file and truncate it. A nanosecond suffix keeps the names unique and sorted by start time, the
        # order TensorBoard reads (and purges) them in.
        self._writer = EventsWriter(str(folder / "events"), filename_suffix=f".{time.time_ns()}")
        self._writer.write_event(Event(wall_time=time.time(), step=1, session_log=SessionLog(status=SessionLog.START)))
        self._writer.flush()

    def write(self, metrics: dict) -> None:
        step, now = int(metrics[STEP_KEY]), time.time()
        for tag, value in metrics.items():
            if tag != STEP_KEY and is_scalar(value):
                self._writer.write_event(scalar_event(tag, value, step, now))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class RunLog:
    """The engine's `report` callback for a single run: results.csv and, unless tensorboard=False, events.

    history: the metrics of the epochs already trained (a checkpoint's `history` on resume); they are logged
    again at once, so a resume into another folder still gets the whole curve."""

    def __init__(self, out_dir: str | Path, history: Iterable[dict] = (), tensorboard: bool = True):
        out_dir = Path(out_dir)
        self.csv_path = out_dir / CSV_NAME
        self.tensorboard_dir = out_dir / TENSORBOARD_DIR if tensorboard else None
        self.rows: list[dict] = []
        self._events = EventLog(self.tensorboard_dir) if tensorboard else None
        for metrics in history:
            self.log(metrics)

    def __call__(self, metrics: dict, checkpoint_path: Path | None = None) -> None:
        self.log(metrics)

    def log(self, metrics: dict) -> None:
        epoch = int(metrics[STEP_KEY])
        # an epoch logged again (a resume from an earlier checkpoint than the last logged epoch) replaces the rows
        # from it on: the table follows the checkpoint's training, not the run that was killed
        self.rows = [row for row in self.rows if int(row[STEP_KEY]) < epoch] + [dict(metrics)]
        atomic_write_text(self.csv_path, render_csv(self.rows))
        if self._events is not None:
            self._events.write(metrics)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
