"""The code style is checked, not hoped for: `ruff format --check` and `ruff check` with pyproject.toml's
configuration pass on every Python file of the project (fix locally with `ruff format . && ruff check --fix .`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["echotune", "models", "spaces", "trainables", "search", "benchmarks", "tests"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    return subprocess.run([exe, *args, *FOLDERS], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command", [("format", "--check"), ("check", "--no-fix", "--output-format", "concise")], ids=["format", "lint"]
)
def test_ruff_passes(command):
    result = ruff(*command)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
