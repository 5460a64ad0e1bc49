"""The ensemble's result: comparison table (best single member vs ensemble, with the gain and 95 % intervals)
and metrics.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from echotune.atomic import atomic_write_text
from echotune.ensemble.fusion import FusionParams
from echotune.ensemble.members import Member
from echotune.metrics import METRIC_LABELS, Estimate


@dataclass
class EnsembleResult:
    members: list[Member]
    weights: list[float]
    fusion: FusionParams
    split: str
    single_best: dict  # {"trial_id": ..., "metrics": {"<split>/map50": ..}} - the member with the best val/score
    ensemble_metrics: dict  # {"<split>/map50": ..}
    val_metrics: dict  # the ensemble on the tuning split, {"val/map50": ..}
    gain: dict  # ensemble - best single, same keys as ensemble_metrics
    member_metrics: list[dict]  # per member: {"trial_id", "<tune split>": {..}, "<split>": {..}}
    manifest_path: Path
    metrics_path: Path
    ci: dict[str, dict[str, Estimate]]  # "best_single" / "ensemble" / "gain" (paired) -> metric name -> Estimate


def gain(ensemble: dict, single: dict) -> dict:
    """ensemble - single for every metric (not the operating confidences, whose difference means nothing)."""
    return {k: ensemble[k] - single[k] for k in ensemble if not k.endswith("/conf")}


def comparison_table(result: EnsembleResult) -> str:
    """One row per metric: best single member, ensemble and the gain, each with its 95 % interval.

    split test (95 % CI: bootstrap over source videos; gain: paired)
    metric     best single (t1)       ensemble (k=3)         gain
    mAP50      0.301 [0.240, 0.366]   0.312 [0.250, 0.371]   +0.011 [-0.020, +0.043]
    """
    columns = [
        (f"best single ({result.single_best['trial_id']})", result.ci["best_single"]),
        (f"ensemble (k={len(result.members)})", result.ci["ensemble"]),
        ("gain", result.ci["gain"]),
    ]
    rows = [("metric", *(name for name, _ in columns))]
    rows += [
        (label, *(format(ci[key], "+.3f" if name == "gain" else ".3f") for name, ci in columns))
        for key, label in METRIC_LABELS
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"split {result.split} (95 % CI: bootstrap over source videos; gain: paired, same videos for both)"]
    return "\n".join(lines + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows])


def write_metrics(
    result: EnsembleResult, path: Path, arguments: dict, tuning: dict, leaky_splits: dict | None = None
) -> Path:
    """metrics.json: per-member, best-single and ensemble metrics on both splits, the gain, how it was built."""
    doc = {
        "split": result.split,
        "leaky_splits": leaky_splits,
        "arguments": arguments,
        "tuning": tuning,
        "members": result.member_metrics,
        "best_single": result.single_best,
        "ensemble": {
            "weights": result.weights,
            "fusion": result.fusion.to_dict(),
            "val_metrics": result.val_metrics,
            "metrics": result.ensemble_metrics,
        },
        "gain": result.gain,
        "ci95": {name: {k: e.to_dict() for k, e in ci.items()} for name, ci in result.ci.items()},
    }
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
