"""Checkpoints: a plain dict saved with torch.save (atomically), always loaded with weights_only=True.

weights_only=True refuses pickled code objects, so a tampered checkpoint cannot run anything on load. Holds:
model, EMA, optimizer, balancer (GradNorm weights + their optimizer), AMP scaler, epoch, stage, RNG states,
hard-mining losses, the full config and the package versions that produced it.
"""

from __future__ import annotations

import io
import os
import platform
import random
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from echotune.atomic import atomic_write_bytes
from echotune.engine.config import MUTABLE_KEYS, RUNTIME_KEYS
from echotune.models.weights import load_error_reason

FORMAT_VERSION = 1
_VERSIONED = (
    "torch",
    "torchvision",
    "timm",
    "albumentations",
    "opencv-python-headless",
    "numpy",
    "ray",
    "optuna",
    "pycocotools",
    "echotune",
)


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python's and each package's installed version ("not installed" when absent): the training stack, plus
    `extra` packages (an exporter adds its own)."""
    versions = {"python": platform.python_version()}
    for name in (*_VERSIONED, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def rng_state() -> dict:
    """Python, NumPy (legacy global) and torch RNG states in weights_only-loadable types."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """torch.save `state` (plus format version, versions, RNG) to `path` via temp file + rename."""
    payload = {"format_version": FORMAT_VERSION, "versions": package_versions(), "rng": rng_state(), **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load with weights_only=True; errors name the file and say why."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise ValueError(
            f"{path}: not a loadable EchoTune checkpoint (loaded with weights_only=True, which "
            f"refuses pickled code): {load_error_reason(path, exc)}"
        ) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not an EchoTune checkpoint of format {FORMAT_VERSION}")
    return state


# the model's shape, and the kinds of saved state (the balancer's and optimizer's load only into their own kind)
SHAPE_KEYS = (
    "arch",
    "model_scale",
    "img_size",
    "view_level",
    "classifier",
    "nc",
    "n_views",
    "balance",
    "optimizer",
    "head",
)
# shape keys added after checkpoints were first written, with the value every older checkpoint implies
SHAPE_DEFAULTS = {"head": "anchor"}


def check_compatible(state: dict, config: dict, path: str | os.PathLike, strict: bool = False) -> None:
    """Refuse a checkpoint whose model cannot load into `config`'s: the shape keys (SHAPE_KEYS) are checked
    whenever the config names them. That is all loading a model for evaluation, or `train.py --resume` (which may
    train on for more epochs), needs.

    strict: the search's resume, where a trial continues under its own config: then only the per-stage schedule
    (MUTABLE_KEYS: they take effect from the next epoch, e.g. a PBT member continuing from another member's
    checkpoint with mutated values) and the runtime keys (RUNTIME_KEYS) may differ; any other key is checked when
    both sides hold it (a checkpoint of an older version may lack a key added since)."""
    saved = {**SHAPE_DEFAULTS, **state.get("config", {})}
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs config {config.get(k)!r}"
        for k in SHAPE_KEYS
        if k in config and saved.get(k) != config.get(k)
    ]
    if strict:
        free = set(SHAPE_KEYS) | set(MUTABLE_KEYS) | set(RUNTIME_KEYS)
        diffs += [
            f"{k}: checkpoint {saved[k]!r} vs config {config[k]!r}"
            for k in sorted(set(config) & set(saved) - free)
            if _plain(saved[k]) != _plain(config[k])
        ]
    if diffs:
        rule = f"; a resume may change only {', '.join(MUTABLE_KEYS)} and the runtime keys" if strict else ""
        raise ValueError(f"{path}: checkpoint does not match the config ({'; '.join(diffs)}){rule}")


def _plain(value):
    """Tuples as lists (a stage split read back from JSON is a list), so equal values compare equal."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
