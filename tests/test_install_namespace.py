"""EchoTune installs under one import name: the repository's models/, spaces/, trainables/ and search/ folders are
`echotune.models`, `echotune.spaces`, `echotune.trainables` and `echotune.search` once installed
(pyproject.toml [tool.setuptools.package-dir]), so a user's own `models/` package keeps its name.

Before: in a folder with its own `models/` package, loading an EchoTune checkpoint failed with
`ImportError: cannot import name 'create_model' from 'models'` (EchoTune's code imported its top-level `models`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLAIMED_BEFORE = ("models", "spaces", "trainables", "search")
MAPPED = {
    "echotune": "echotune",
    "models": "echotune/models",
    "spaces": "echotune/spaces",
    "trainables": "echotune/trainables",
    "search": "echotune/search",
}

# Runs in a folder holding the user's own `models` package (found first: sys.path[0] is that folder).
USER_SESSION = """
import importlib.util, sys
from pathlib import Path
import models  # the user's own package
assert models.OWNER == "user", models.__file__

# nothing else of EchoTune's repository layout is importable by its bare name
claimed = [n for n in ("spaces", "trainables", "search") if importlib.util.find_spec(n) is not None]
assert not claimed, f"top-level names claimed: {claimed}"

from echotune.engine import TrainConfig
from echotune.engine.build import create_network
from echotune.engine.checkpoint import save_checkpoint
from echotune.engine.evaluate_checkpoint import load_model
from echotune.ensemble import EnsemblePredictor  # noqa: F401  (the import that used to fail)

cfg = TrainConfig.from_dict({"model_scale": "test", "img_size": 64})
net = create_network(cfg, 4, 3)
path = save_checkpoint(Path("user.pt"), {"epoch": 1, "config": {**cfg.to_dict(), "nc": 4, "n_views": 3},
                                          "ema": {"module": net.state_dict()}})
model, loaded, _ = load_model(path, device="cpu")
assert type(model).__module__.startswith("echotune.models."), type(model).__module__
assert sys.modules["models"] is models  # EchoTune never replaced or used the user's package
print("OK", type(model).__module__)
"""


def test_a_users_own_models_package_keeps_its_name(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text('OWNER = "user"\n')
    result = subprocess.run(
        [sys.executable, "-c", USER_SESSION], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK echotune.models.")


def test_installed_echotune_claims_no_other_top_level_name(tmp_path):
    """From a folder without them, the bare names are not importable (the editable install's finder maps only
    `echotune`)."""
    code = f"import importlib.util; print([n for n in {CLAIMED_BEFORE!r} if importlib.util.find_spec(n) is not None])"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_wheel_holds_every_source_under_echotune_only(tmp_path):
    """A regular (non-editable) install gets exactly the repository's sources, all under echotune/: every
    package folder is listed in pyproject.toml, and no top-level models/, search/ ... is written."""
    source = tmp_path / "source"  # a copy: setuptools writes build/ and *.egg-info/ beside the sources
    for name in [*MAPPED, "pyproject.toml", "README.md"]:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(
            ROOT / name,
            source / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}),
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        timeout=600,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("echotune-*.whl"))
    names = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    tops = {n.split("/")[0] for n in names}
    assert tops == {"echotune"}, tops
    expected = {
        f"{MAPPED[p.relative_to(ROOT).parts[0]]}/{p.relative_to(ROOT / p.relative_to(ROOT).parts[0]).as_posix()}"
        for folder in MAPPED
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert names == expected, {
        "missing from the wheel": sorted(expected - names)[:10],
        "unexpected": sorted(names - expected)[:10],
    }
