"""`leaderboard.parquet`: one row per trial with an explicit schema, written and read without Ray.

The rows come from Ray's own files (search/trial_table.py reads them); this module owns the columns: the
trial's identity and status, its best and final validation metrics, one typed column per TrainConfig field
(`hp/<field>`, null where a space does not use it) and the full config as JSON.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from echotune.atomic import atomic_write_bytes
from echotune.engine.config import TrainConfig
from echotune.metrics import VAL_METRICS as METRICS
from echotune.results.layout import BEST_PREFIX, BEST_SCORE_COLUMN, FINAL_PREFIX, HP_PREFIX

_HP_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


def _hp_fields() -> list[pa.Field]:
    fields = []
    for f in dataclasses.fields(TrainConfig):
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(str(f.type), str)
        fields.append(pa.field(HP_PREFIX + f.name, _HP_TYPES[kind]))
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
    *[pa.field(BEST_PREFIX + m, pa.float64()) for m in METRICS],
    *[pa.field(FINAL_PREFIX + m, pa.float64()) for m in METRICS],
    pa.field("checkpoint_path", pa.string()),
    pa.field("config_json", pa.string()),
    # population-based training (search/pbt.py; null in other searches): the member's clones, "e2←<donor id>; ..."
    # ('' never cloned into), and the per-stage schedule it ended with, JSON (echotune.reporting.lineage)
    pa.field("pbt_lineage", pa.string()),
    pa.field("pbt_final_config", pa.string()),
    *_hp_fields(),
])


def finite_or_none(value) -> float | None:
    """A JSON- and parquet-safe number: None for NaN, inf, None or a non-number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def hp_value(field: pa.Field, value):
    if value is None:
        return None
    if pa.types.is_string(field.type):
        return value if isinstance(value, str) else json.dumps(value)
    if pa.types.is_boolean(field.type):
        return bool(value)
    return int(value) if pa.types.is_integer(field.type) else float(value)


def write_leaderboard(rows: list[dict], path: str | Path) -> Path:
    """Rows sorted by best val/score (missing last) -> parquet with SCHEMA, written atomically."""
    rows = sorted(rows, key=lambda r: -(r[BEST_SCORE_COLUMN] if r[BEST_SCORE_COLUMN] is not None else -1.0))
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_leaderboard(path: str | Path) -> pa.Table:
    table = pq.read_table(path)
    if not table.schema.equals(SCHEMA):
        raise ValueError(f"{path}: leaderboard schema differs from this EchoTune version's; rebuild it")
    return table
