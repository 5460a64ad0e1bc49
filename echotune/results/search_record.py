"""`search.json`: what a search was asked to do (its SearchConfig, dataset, versions), beside its results.

The leaderboard, the ensemble builder and `--resume` read it back, so an experiment folder is self-describing:
which space and profile (hence which trial is the original study's baseline), which objectives, which dataset.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from echotune.results.layout import SEARCH_RECORD_FILE as RECORD_FILE
from echotune.atomic import atomic_write_text
from echotune.engine.checkpoint import package_versions
from echotune.results.documents import read_json_document



def write_search_record(cfg, data_yaml: str | Path, resumed: bool = False, cluster: dict | None = None,
                        leaky_splits: dict | None = None) -> Path:
    """Write (or, on resume, update) `local_dir/search.json` atomically; returns its path. `cluster`: the Ray
    cluster's nodes as the driver found them (search.cluster.ClusterFacts.to_record), for runs on a cluster.
    `leaky_splits`: the flag of a search allowed to run on leaky splits (echotune.data.leakage.guard_leakage's
    record: videos in more than one split, per pair, examples); null when the splits are leak-free."""
    path = Path(cfg.local_dir) / RECORD_FILE
    record = read_search_record(path.parent) if resumed and path.is_file() else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    record.update({"config": dataclasses.asdict(cfg), "data_yaml": str(Path(data_yaml).resolve()),
                   "experiment_dir": cfg.experiment_dir, "versions": package_versions(),
                   "leaky_splits": leaky_splits})
    if cluster is not None:
        record["cluster"] = cluster
    record.setdefault("started", now)
    record.setdefault("commands", []).append({"time": now, "argv": sys.argv})
    return atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def read_search_record(experiment_dir: str | Path) -> dict:
    """The record as a dict ({} when the folder has none, e.g. a search from an older version)."""
    path = Path(experiment_dir) / RECORD_FILE
    record = read_json_document(path)
    if record is None:
        return {}
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError(f"{path}: expected an object with a 'config' object")
    return record


# What a resume takes from the command line rather than from the record: where the experiment is now.
RESUME_OWN_FIELDS = ("name", "storage", "shared_storage")


def resumed_config(cfg, record: dict):
    """`cfg` (a SearchConfig from the command line) with the recorded search's settings: a resumed search keeps
    the space, profile, objectives, budget and resources it started with (Ray restores its own copy of them
    anyway), so the summary at its end ranks and labels trials the same way."""
    recorded = record.get("config", {})
    known = {f.name for f in dataclasses.fields(cfg)} - set(RESUME_OWN_FIELDS)
    return dataclasses.replace(cfg, **{k: v for k, v in recorded.items() if k in known})
