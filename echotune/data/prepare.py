"""Find the dataset a command should use: a user's data.yaml, or the embedded synthetic set (generated once, cached)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ECHOTUNE_CACHE"


def default_cache_dir() -> Path:
    """`$ECHOTUNE_CACHE`, else `~/.cache/echotune` (on a cluster, point it at shared storage)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "echotune").expanduser()


def resolve_data_yaml(data: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None, log=print) -> Path:
    """`data` as given, or the synthetic set's data.yaml under the cache folder (generated on first use)."""
    if data is not None:
        return Path(data).expanduser().resolve()
    from echotune.data.config import DATA_YAML
    from echotune.data.synthetic import SyntheticSpec, ensure_synthetic, synthetic_dir

    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    spec = SyntheticSpec()
    target = synthetic_dir(cache_root, spec)
    if not (target / DATA_YAML).exists():
        log(f"Generating the synthetic echo set (seed {spec.seed}) into {target} ...")
    return ensure_synthetic(cache_root, spec)
