"""One row per trial of an experiment directory, written as `leaderboard.parquet` with an explicit schema.

Reads Ray's own files (experiment state, params, results) through `ExperimentAnalysis`, so it works on a
finished, running or interrupted search. Hyperparameters get one typed column per TrainConfig field (null
where a space does not use it) plus the full config as JSON.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import ExperimentAnalysis

from echotune.atomic import atomic_write_bytes
from echotune.engine.config import TrainConfig
from echotune.metrics import METRIC_NAMES
from search.analysis.lineage import is_pbt_search, lineage_columns, read_lineage

METRICS = tuple(f"val/{name}" for name in METRIC_NAMES)  # val/map50, ..., val/view_kappa, val/score
_HP_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


def _hp_fields() -> list[pa.Field]:
    fields = []
    for f in dataclasses.fields(TrainConfig):
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(str(f.type), str)
        fields.append(pa.field(f"hp/{f.name}", _HP_TYPES[kind]))
    return fields


SCHEMA = pa.schema([
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("experiment", pa.string()),
    pa.field("space", pa.string()),
    pa.field("arch", pa.string()),
    pa.field("is_baseline", pa.bool_()),
    pa.field("status", pa.string()),  # Ray's TERMINATED, RUNNING, PENDING, PAUSED, ERROR; ours: DIVERGED, STOPPED_EARLY, INTERRUPTED
    pa.field("stopped_early", pa.bool_()),
    pa.field("error", pa.string()),
    pa.field("retries", pa.int64()),  # worker crashes Ray recovered from (the trial resumed from its checkpoint)
    pa.field("epochs_trained", pa.int64()),
    pa.field("epochs_planned", pa.int64()),
    pa.field("wall_time_s", pa.float64()),
    pa.field("best_epoch", pa.int64()),
    *[pa.field(f"best/{m}", pa.float64()) for m in METRICS],
    *[pa.field(f"final/{m}", pa.float64()) for m in METRICS],
    pa.field("checkpoint_path", pa.string()),
    pa.field("config_json", pa.string()),
    # population-based training (search/pbt.py; null in other searches): the member's clones, "e2←<donor id>; ..."
    # ('' never cloned into), and the per-stage schedule it ended with, JSON (search/analysis/lineage.py)
    pa.field("pbt_lineage", pa.string()),
    pa.field("pbt_final_config", pa.string()),
    *_hp_fields(),
])


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _hp_value(field: pa.Field, value):
    if value is None:
        return None
    if pa.types.is_string(field.type):
        return value if isinstance(value, str) else json.dumps(value)
    if pa.types.is_boolean(field.type):
        return bool(value)
    return int(value) if pa.types.is_integer(field.type) else float(value)


def _error_message(experiment_dir: Path, trial) -> str | None:
    """Last line of the trial's error.txt (read from the experiment folder: Trial.error_file needs a live Ray)."""
    name = trial.run_metadata.error_filename or "error.txt"
    path = experiment_dir / (trial.storage.trial_dir_name or f"trial_{trial.trial_id}") / name
    if not path.is_file():
        return f"errored (no {name} in {path.parent})"
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][:500] if lines else None


def load_analysis(experiment_dir: str | Path) -> ExperimentAnalysis:
    """Ray's view of an experiment folder (finished, running or interrupted)."""
    with quiet_ray_analysis():
        return ExperimentAnalysis(str(experiment_dir), default_metric="val/score", default_mode="max")


@contextlib.contextmanager
def quiet_ray_analysis():
    """Ray logs a warning per trial without results yet (pending, or errored before its first epoch) and an
    error per trial without a checkpoint: normal in a running or interrupted search, and the rows say so."""
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def trial_rows(experiment_dir: str | Path, space: str | None = None, baseline: dict | None = None,
               analysis: ExperimentAnalysis | None = None) -> list[dict]:
    """Rows for every trial in the experiment (any status)."""
    analysis = analysis or load_analysis(experiment_dir)
    frames = analysis.trial_dataframes
    lineage = read_lineage(experiment_dir, {t.trial_id: (t.experiment_tag, t.config) for t in analysis.trials}) \
        if is_pbt_search(experiment_dir) else {}
    rows = []
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        clones = lineage[trial.trial_id].exploits if trial.trial_id in lineage else []
        if clones and frame is not None and "epoch" in frame:  # a PBT member is its models since its last clone
            frame = frame[frame["epoch"] > clones[-1].epoch]
        last = trial.last_result or {}
        best_row = {}
        if frame is not None and "val/score" in frame and len(frame):
            best_row = frame.loc[frame["val/score"].idxmax()].to_dict()
        planned = int(trial.config.get("epochs", 0) or 0)
        trained = int(last.get("epoch", 0) or 0)
        error = last.get("error") if last.get("diverged") else None
        if trial.status == "ERROR":
            error = _error_message(Path(experiment_dir), trial)
        status = trial.status
        if last.get("diverged"):
            status = "DIVERGED"
        elif status == "TERMINATED" and trained < planned:
            status = "STOPPED_EARLY"
        checkpoint = None
        try:
            with quiet_ray_analysis():
                best_checkpoint = analysis.get_best_checkpoint(trial, "val/score", "max")
            checkpoint = best_checkpoint.path if best_checkpoint is not None else None
        except (ValueError, KeyError, RuntimeError):
            checkpoint = None
        row = {"trial_id": trial.trial_id, "experiment": Path(experiment_dir).name, "space": space,
               "arch": trial.config.get("arch"), "status": status, "stopped_early": status == "STOPPED_EARLY",
               "is_baseline": baseline is not None and all(trial.config.get(k) == v for k, v in baseline.items()),
               "error": error, "retries": int(trial.run_metadata.num_failures or 0), "epochs_trained": trained, "epochs_planned": planned,
               "wall_time_s": _finite(last.get("time_total_s")), "best_epoch": int(best_row["epoch"]) if best_row else None,
               "checkpoint_path": checkpoint, "config_json": json.dumps(trial.config, sort_keys=True, default=str)}
        for metric in METRICS:
            row[f"best/{metric}"] = _finite(best_row.get(metric)) if best_row else None
            row[f"final/{metric}"] = None if last.get("diverged") else _finite(last.get(metric))
        for field in SCHEMA:
            if field.name.startswith("hp/"):
                row[field.name] = _hp_value(field, trial.config.get(field.name[3:]))
        row.update(lineage_columns(lineage.get(trial.trial_id)))
        rows.append(row)
    return rows


def write_leaderboard(rows: list[dict], path: str | Path) -> Path:
    """Rows sorted by best val/score (missing last) -> parquet with SCHEMA, written atomically."""
    rows = sorted(rows, key=lambda r: -(r["best/val/score"] if r["best/val/score"] is not None else -1.0))
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_leaderboard(path: str | Path) -> pa.Table:
    table = pq.read_table(path)
    if not table.schema.equals(SCHEMA):
        raise ValueError(f"{path}: leaderboard schema differs from this EchoTune version's; rebuild it")
    return table
