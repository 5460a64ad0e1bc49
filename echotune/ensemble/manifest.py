"""`manifest.yaml`: everything needed to rebuild an ensemble's predictions (and nothing that needs the search).

    version: 1
    members:            # in rank order; checkpoints inside the experiment: relative to this file's folder
      - {trial_id: a1b2c3, arch: shared, checkpoint: ../trial_a1b2c3/checkpoint_000004/last.pt, val_score: 0.61}
    weights: [1.0, 0.7]  # one per member
    tta: flip            # none | flip | scales | flip+scales
    fusion: {method: wbf, iou_thr: 0.6, skip_box_thr: 0.01, sigma: 0.5, max_det: 300}
    names: [AR, MR, PR, TR]
    view_names: [PSAX, PLAX, A4C]
    tuned_on: val
    data_yaml: /abs/data.yaml
    created: '2026-01-01T12:00:00'
    versions: {python: 3.11.9, torch: 2.14.1, ensemble-boxes: 1.0.9, ...}

`load_manifest` validates all of it; errors name the file and the offending key and value.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from echotune.atomic import atomic_write_text
from echotune.data.config import read_yaml
from echotune.ensemble.fusion import FusionParams
from echotune.ensemble.tta import TTA_MODES

MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.yaml"
_REQUIRED = ("version", "members", "weights", "tta", "fusion", "names", "view_names")
_OPTIONAL = ("tuned_on", "conf", "data_yaml", "created", "versions", "experiment")
_MEMBER_KEYS = ("trial_id", "arch", "checkpoint", "val_score")
_FUSION_RANGES = {"iou_thr": (0.0, 1.0), "skip_box_thr": (0.0, 1.0), "sigma": (0.001, 10.0), "max_det": (1, 100_000)}


@dataclass
class ManifestMember:
    trial_id: str
    checkpoint: Path  # absolute once loaded
    arch: str | None = None
    val_score: float | None = None


@dataclass
class Manifest:
    members: list[ManifestMember]
    weights: list[float]
    tta: str
    fusion: FusionParams
    names: list[str]
    view_names: list[str]
    extra: dict = field(default_factory=dict)  # tuned_on, conf (P/R/F1 confidence chosen there), data_yaml, ...


def _stored_path(checkpoint: Path, manifest_dir: Path) -> str:
    """Relative to the manifest's folder when inside the experiment folder holding it (so the experiment moves
    as a whole), else absolute."""
    checkpoint, manifest_dir = Path(checkpoint).resolve(), manifest_dir.resolve()
    inside = manifest_dir.parent in checkpoint.parents
    return os.path.relpath(checkpoint, manifest_dir) if inside else str(checkpoint)


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write atomically (checkpoint paths as `_stored_path`)."""
    path = Path(path)
    members = [
        {
            "trial_id": m.trial_id,
            "arch": m.arch,
            "checkpoint": _stored_path(m.checkpoint, path.parent),
            "val_score": m.val_score,
        }
        for m in manifest.members
    ]
    doc = {
        "version": MANIFEST_VERSION,
        "members": members,
        "weights": [float(w) for w in manifest.weights],
        "tta": manifest.tta,
        "fusion": manifest.fusion.to_dict(),
        "names": list(manifest.names),
        "view_names": list(manifest.view_names),
        **manifest.extra,
    }
    return atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))


def _fail(path: Path, key: str, value, why: str) -> ValueError:
    return ValueError(f"{path}: {key}: {why} (got {value!r})")


def _string_list(path: Path, doc: dict, key: str) -> list[str]:
    value = doc[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(path, key, value, "expected a non-empty list of names")
    return value


def _member(path: Path, i: int, entry) -> ManifestMember:
    key = f"members[{i}]"
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("trial_id"), str)
        or not isinstance(entry.get("checkpoint"), str)
    ):
        raise _fail(path, key, entry, "expected a mapping with string trial_id and checkpoint")
    unknown = sorted(set(entry) - set(_MEMBER_KEYS))
    if unknown:
        raise _fail(path, f"{key}.{unknown[0]}", entry[unknown[0]], f"unknown key; valid: {', '.join(_MEMBER_KEYS)}")
    checkpoint = (path.parent / entry["checkpoint"]).resolve()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{path}: {key}.checkpoint: {entry['checkpoint']!r} -> {checkpoint} does not exist")
    return ManifestMember(entry["trial_id"], checkpoint, entry.get("arch"), entry.get("val_score"))


def _fusion(path: Path, value) -> FusionParams:
    if not isinstance(value, dict):
        raise _fail(path, "fusion", value, "expected a mapping (method, iou_thr, skip_box_thr, sigma, max_det)")
    valid = tuple(FusionParams.__dataclass_fields__)
    for key, item in value.items():
        if key not in valid:
            raise _fail(path, f"fusion.{key}", item, f"unknown key; valid: {', '.join(valid)}")
        if key in _FUSION_RANGES:
            lo, hi = _FUSION_RANGES[key]
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not lo <= item <= hi:
                raise _fail(path, f"fusion.{key}", item, f"expected a number in [{lo}, {hi}]")
    try:
        return FusionParams(**value)
    except ValueError as exc:
        raise _fail(path, "fusion.method", value.get("method"), str(exc)) from exc


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest (a file, or an ensemble folder holding manifest.yaml)."""
    path = Path(path)
    path = path / MANIFEST_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"ensemble manifest {path} does not exist (build one with echotune ensemble)")
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping with keys {', '.join(_REQUIRED)} (got {doc!r:.60})")
    missing = [k for k in _REQUIRED if k not in doc]
    unknown = sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise ValueError(
            f"{path}: {'missing key(s) ' + str(missing) if missing else ''}"
            f"{'; ' if missing and unknown else ''}{'unknown key(s) ' + str(unknown) if unknown else ''}; "
            f"valid keys: {', '.join(_REQUIRED + _OPTIONAL)}"
        )
    if doc["version"] != MANIFEST_VERSION:
        raise _fail(path, "version", doc["version"], f"this EchoTune reads manifest version {MANIFEST_VERSION}")
    if not isinstance(doc["members"], list) or not doc["members"]:
        raise _fail(path, "members", doc["members"], "expected a non-empty list")
    members = [_member(path, i, entry) for i, entry in enumerate(doc["members"])]
    weights = doc["weights"]
    if (
        not isinstance(weights, list)
        or len(weights) != len(members)
        or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0 for w in weights
        )
    ):
        raise _fail(path, "weights", weights, f"expected {len(members)} positive numbers, one per member")
    if doc["tta"] not in TTA_MODES:
        raise _fail(path, "tta", doc["tta"], f"choose one of: {', '.join(TTA_MODES)}")
    conf = doc.get("conf", 0.0)
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0:
        raise _fail(path, "conf", conf, "expected the operating confidence chosen on val, a number in [0, 1]")
    return Manifest(
        members,
        [float(w) for w in weights],
        doc["tta"],
        _fusion(path, doc["fusion"]),
        _string_list(path, doc, "names"),
        _string_list(path, doc, "view_names"),
        {k: doc[k] for k in _OPTIONAL if k in doc},
    )
