"""What every benchmark here shares: the machine and package facts, the exact command, the dataset, and writing
results/bench/<name>.{json,md} atomically (a reader never sees half a table).

    facts = run_facts("benchmarks/overhead.py", argv)      # date, machine, versions, command: the table header
    data = load_data(args.data, QUICK_SPEC if args.quick else None)
    write_outputs(out, "overhead-quick", result, markdown_text)

Ray-free on purpose (throughput.py imports it); the Ray side of the search benchmarks is in ray_bench.py.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from echotune.atomic import atomic_write_text
from echotune.data.check import CheckedDataset, check_dataset
from echotune.data.prepare import default_cache_dir, resolve_data_yaml
from echotune.data.synthetic import SyntheticSpec, ensure_synthetic
from echotune.engine.checkpoint import package_versions

# --quick runs on a small synthetic set (64 px, 16 / 8 / 8 images) so that Ray benchmarks finish in about a minute.
QUICK_SPEC = SyntheticSpec(train_videos=8, val_videos=4, test_videos=4, frames_per_video=2, img_size=64, seed=0)


def machine() -> str:
    """'<cores> cores, <CPU model>' from /proc/cpuinfo (platform's name where there is none)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run, e.g. `python benchmarks/overhead.py --quick`."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", script, *args])


def run_facts(script: str, argv: list[str] | None) -> dict:
    """Date, machine, package versions and command: the header of every table."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": package_versions(),
        "command": command(script, argv),
    }


def header(result: dict, details: str) -> list[str]:
    """Markdown lines above a table: when, where, what it ran with, and how to run it again."""
    v = result["versions"]
    versions = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "ray", "optuna") if k in v)
    return [
        f"Measured {result['date']} on {result['machine']}; {details}; {versions}.",
        "",
        f"Command: `{result['command']}`",
        "",
    ]


def load_data(data_yaml: str | None, quick_spec: SyntheticSpec | None = None) -> CheckedDataset:
    """The checked dataset: `data_yaml` when given, else the small quick set (`quick_spec`) or the embedded
    synthetic set, generated into the cache folder on first use. Raises on a dataset with errors."""
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if data_yaml is None and quick_spec is not None:
        path = ensure_synthetic(default_cache_dir(), quick_spec)
    else:
        path = resolve_data_yaml(data_yaml, log=log)
    data = check_dataset(path)
    data.raise_if_errors()
    return data


def apply_defaults(args, defaults: dict[str, tuple]) -> None:
    """Fill every option left at None from `defaults` ({name: (full, quick)}), by args.quick."""
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)


def write_outputs(out_dir: Path, name: str, result: dict, markdown: str) -> tuple[Path, Path]:
    """out_dir/<name>.json and out_dir/<name>.md, each written atomically."""
    json_path = atomic_write_text(Path(out_dir) / f"{name}.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    md_path = atomic_write_text(Path(out_dir) / f"{name}.md", markdown)
    return json_path, md_path
