"""The benchmark scripts import their sibling modules (bench_common, ray_bench) by plain name, as they do when
run as `python benchmarks/<script>.py`; tests import them the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture
def run_benchmark(tmp_path):
    """Run `python benchmarks/<script> ARGS` from the repository root (a fresh process, as a user would) with
    a private cache folder; returns the completed process, failing the test with its output on a non-zero exit."""

    def run(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        env = {**os.environ, "ECHOTUNE_CACHE": str(tmp_path / "cache")}
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / script), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (
            f"{script} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
        return done

    return run
