"""Choose ensemble members from a leaderboard and load their best checkpoints.

Rows come from `echotune.results.leaderboard.read_leaderboard(...).to_pylist()`. Usable: a best val/score, a checkpoint
folder, and a status other than DIVERGED/ERROR. Ranked by best/val/score (ties: trial id). `diverse` keeps at
most one trial per architecture and skips a config identical to a chosen one apart from seed and runtime keys
(seeds differ, the model does not: little to gain from averaging).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from echotune.data.check import CheckedDataset
from echotune.engine.config import TrainConfig
from echotune.engine.evaluate_checkpoint import load_model
from echotune.ensemble.inference import LoadedMember
from echotune.results.layout import BEST_SCORE_COLUMN, CHECKPOINT_FILE, FAILED_STATUSES

NOT_MODEL_KEYS = ("seed", "cpus", "device", "workers", "cache_images", "amp")  # ignored when comparing configs
_CONFIG_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class Member:
    trial_id: str
    arch: str | None
    val_score: float  # the leaderboard's best/val/score
    checkpoint: Path  # the Ray checkpoint folder (holding last.pt) or a checkpoint file
    config: dict  # the trial's config (TrainConfig keys only)


def _model_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NOT_MODEL_KEYS}


def _skip_reasons(rows: list[dict]) -> str:
    unusable = sum(r.get("status") in FAILED_STATUSES for r in rows)
    no_ckpt = sum(not r.get("checkpoint_path") for r in rows)
    no_score = sum(r.get(BEST_SCORE_COLUMN) is None for r in rows)
    return (
        f"{len(rows)} trial(s): {unusable} diverged/errored, {no_ckpt} without a checkpoint, "
        f"{no_score} without a val/score"
    )


def select_members(
    rows: list[dict], top_k: int = 3, diverse: bool = False, source: str = "leaderboard"
) -> list[Member]:
    """The top_k usable trials by best/val/score (see the module docstring); ValueError when none is usable."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    usable = [
        r
        for r in rows
        if r.get("status") not in FAILED_STATUSES and r.get("checkpoint_path") and r.get(BEST_SCORE_COLUMN) is not None
    ]
    if not usable:
        raise ValueError(f"{source}: no usable trial to ensemble ({_skip_reasons(rows)})")
    usable.sort(key=lambda r: (-r[BEST_SCORE_COLUMN], r["trial_id"]))
    chosen: list[Member] = []
    for row in usable:
        config = {k: v for k, v in json.loads(row.get("config_json") or "{}").items() if k in _CONFIG_KEYS}
        arch = row.get("arch") or config.get("arch")
        if arch is not None:
            config["arch"] = arch
        if diverse and any(m.arch == arch or _model_config(m.config) == _model_config(config) for m in chosen):
            continue
        chosen.append(
            Member(row["trial_id"], arch, float(row[BEST_SCORE_COLUMN]), Path(row["checkpoint_path"]), config)
        )
        if len(chosen) == top_k:
            break
    return chosen


def checkpoint_file(path: str | Path, trial_id: str | None = None) -> Path:
    """An engine checkpoint file, or the `last.pt` inside a Ray checkpoint folder; FileNotFoundError naming
    the trial and the path when it is missing."""
    path = Path(path)
    who = f"trial {trial_id}: " if trial_id else ""
    if not path.exists():
        raise FileNotFoundError(f"{who}checkpoint {path} does not exist (moved or deleted?)")
    if path.is_file():
        return path
    file = path / CHECKPOINT_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{who}checkpoint folder {path} holds no {CHECKPOINT_FILE}")
    return file


def load_member(member: Member, data: CheckedDataset, device: str = "auto") -> LoadedMember:
    """(EMA model in eval mode, TrainConfig) of the member's checkpoint; errors name the trial and the file,
    e.g. when the checkpoint's architecture or size differs from the trial's config or the dataset's classes."""
    file = checkpoint_file(member.checkpoint, member.trial_id)
    expect = {**member.config, "nc": data.config.nc, "n_views": len(data.view_names)}
    try:
        model, cfg, _ = load_model(file, device, expect)
    except ValueError as exc:
        raise ValueError(f"trial {member.trial_id}: {exc}") from exc
    return model, cfg
