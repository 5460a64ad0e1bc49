"""The ensemble's result: comparison table (best single member vs ensemble, with the gain) and metrics.json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from echotune.atomic import atomic_write_text
from echotune.ensemble.fusion import FusionParams
from echotune.ensemble.members import Member

COLUMNS = (("map50", "mAP50"), ("map50_95", "mAP50-95"), ("precision", "P"), ("recall", "R"), ("f1", "F1"),
           ("view_acc", "view_acc"), ("score", "score"))


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


def gain(ensemble: dict, single: dict) -> dict:
    return {k: ensemble[k] - single[k] for k in ensemble}


def comparison_table(result: EnsembleResult) -> str:
    """split test        mAP50  mAP50-95  P  ...  /  best single (t1)  ...  /  ensemble (k=3) ...  /  gain  +0.010"""
    rows = [(f"best single ({result.single_best['trial_id']})", result.single_best["metrics"], "{:.3f}"),
            (f"ensemble (k={len(result.members)})", result.ensemble_metrics, "{:.3f}"),
            ("gain", result.gain, "{:+.3f}")]
    width = max(len(f"split {result.split}"), *(len(name) for name, _, _ in rows)) + 2
    lines = [f"split {result.split}".ljust(width) + "".join(f"{label:>10}" for _, label in COLUMNS)]
    for name, metrics, fmt in rows:
        lines.append(name.ljust(width) + "".join(f"{fmt.format(metrics[f'{result.split}/{key}']):>10}"
                                                 for key, _ in COLUMNS))
    return "\n".join(lines)


def write_metrics(result: EnsembleResult, path: Path, arguments: dict, tuning: dict) -> Path:
    """metrics.json: per-member, best-single and ensemble metrics on both splits, the gain, how it was built."""
    doc = {"split": result.split, "arguments": arguments, "tuning": tuning,
           "members": result.member_metrics,
           "best_single": result.single_best,
           "ensemble": {"weights": result.weights, "fusion": result.fusion.to_dict(),
                        "val_metrics": result.val_metrics, "metrics": result.ensemble_metrics},
           "gain": result.gain}
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
