"""The separate virtualenv that Ultralytics runs in for benchmarks/vs_ultralytics.py.

Ultralytics is never installed into the project's environment: it pulls in `opencv-python`, which overwrites
the `opencv-python-headless` build EchoTune needs (and it is AGPL: EchoTune runs it, never imports it). The
benchmark builds this environment on first use and reuses it afterwards:

    <cache>/ultralytics-venv-<version>/        cache: $ECHOTUNE_CACHE, else ~/.cache/echotune
        bin/python                             runs benchmarks/ultralytics_runner.py
        yolo-config/settings.json              Ultralytics' settings (YOLO_CONFIG_DIR): sync off, no hub
        echotune-venv.json                     what was installed, when, and how long it took

Creation is atomic: everything is built under a temporary sibling name (`.ultralytics-venv-<version>.<random>`)
and renamed into place only when the install and an import check succeeded, so a crash or Ctrl-C never leaves
a half-made environment that a later run would trust. (A venv's `bin/python` is a symlink to the base
interpreter and finds its site-packages from `pyvenv.cfg` beside it, so it survives the rename; the console
scripts in bin/ keep the temporary name in their #! lines, which is why pip always runs as `python -m pip`.)

`--ultralytics-python PATH` skips all of this and uses an existing interpreter with Ultralytics installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from echotune.atomic import atomic_write_text
from echotune.data.prepare import default_cache_dir

# The release issue #16 measured; PyPI has it. torch/torchvision as in the project's environment (pip finds
# them on local disk here; the machine's pip constraint caps them at these versions).
ULTRALYTICS_VERSION = "8.4.190"
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
CONFIG_FOLDER = "yolo-config"
MARKER = "echotune-venv.json"


def venv_path(version: str = ULTRALYTICS_VERSION, cache_dir: Path | None = None) -> Path:
    """`<cache>/ultralytics-venv-<version>`: one environment per Ultralytics version."""
    return Path(cache_dir or default_cache_dir()) / f"ultralytics-venv-{version}"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def offline_environment(config_dir: Path | None) -> dict[str, str]:
    """Environment variables that keep Ultralytics off the network (read in ultralytics/utils/__init__.py of
    8.4.x): YOLO_OFFLINE=true makes its `is_online()` answer False without trying a socket (so no hub, no
    asset downloads, no update checks, no pip auto-installs); YOLO_CONFIG_DIR points its settings.json (where
    sync=False stops the telemetry events) at a folder of ours rather than ~/.config/Ultralytics; and
    YOLO_AUTOINSTALL=false refuses `pip install` of a missing requirement at run time."""
    env = {"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false", "YOLO_VERBOSE": "true"}
    if config_dir is not None:
        env["YOLO_CONFIG_DIR"] = str(config_dir)
    return env


def offline_settings() -> dict:
    """The settings.json entries that matter offline (Ultralytics 8.4's schema): no analytics sync (its Events), no
    Platform API key (its training callbacks upload only with one), and none of the logging integrations that
    would talk to a service (clearml, comet, dvc, mlflow, raytune default to on, active if their package is
    installed). Keys a version lacks are skipped."""
    return {
        "sync": False,
        "api_key": "",
        "clearml": False,
        "comet": False,
        "dvc": False,
        "mlflow": False,
        "raytune": False,
        "tensorboard": False,
        "wandb": False,
    }


# Ultralytics validates its settings.json against its own full schema and resets a file it finds incomplete to
# the defaults (sync on), so the file is never written by hand: Ultralytics creates it, SETTINGS.update edits it
# (what `yolo settings sync=False` does). The runner asserts the same values again before it trains.
SETTINGS_SCRIPT = (
    "import json, sys; from ultralytics.utils import SETTINGS; "
    "SETTINGS.update({k: v for k, v in json.loads(sys.argv[1]).items() if k in SETTINGS})"
)


def _run(command: list[str], log, what: str, env: dict | None = None) -> None:
    """Run one install step with its output streamed to stderr (pip prints progress); raise naming the step."""
    log(f"  $ {' '.join(command[:6])}{' ...' if len(command) > 6 else ''}")
    done = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"creating the Ultralytics environment failed at: {what} (exit {done.returncode})")


def write_settings(python: Path, config_dir: Path, log=lambda m: print(m, file=sys.stderr)) -> None:
    """Have `python`'s Ultralytics create its settings under `config_dir` and switch sync, hub and the logging
    integrations off there."""
    config_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **offline_environment(config_dir)}
    _run([str(python), "-c", SETTINGS_SCRIPT, json.dumps(offline_settings())], log, "yolo settings sync=False", env)


def installed_versions(python: Path, config_dir: Path) -> dict[str, str]:
    """{"ultralytics": ..., "torch": ...} as `python` imports them offline; raises with its output if it cannot.
    The versions come as the last line (Ultralytics prints notices such as a new settings file before it)."""
    code = (
        "import json, ultralytics, torch; print(json.dumps({'ultralytics': ultralytics.__version__, "
        "'torch': torch.__version__}))"
    )
    done = subprocess.run(
        [str(python), "-c", code], env={**os.environ, **offline_environment(config_dir)}, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{python} cannot import ultralytics and torch:\n{done.stdout}{done.stderr}")
    return json.loads(lines[-1])


def create_venv(target: Path, version: str = ULTRALYTICS_VERSION, log=lambda m: print(m, file=sys.stderr)) -> Path:
    """Build the environment at `target` atomically (temporary sibling, renamed when complete); its python.

    Steps: `python -m venv`, `pip install ultralytics==<version> torch torchvision` (pinned), our offline
    settings.json, an import check under the offline environment (`import ultralytics` with YOLO_OFFLINE set).
    A second process that finished first wins the rename; this one then removes its own copy and uses that."""
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        log(
            f"Creating the Ultralytics {version} environment in {target} (first use only; several GB: a CUDA "
            f"torch build) ..."
        )
        _run([sys.executable, "-m", "venv", str(tmp)], log, "python -m venv")
        python = str(venv_python(tmp))
        _run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--no-input",
                "--progress-bar",
                "off",
                f"ultralytics=={version}",
                *TORCH_PINS,
            ],
            log,
            f"pip install ultralytics=={version} {' '.join(TORCH_PINS)}",
        )
        write_settings(Path(python), tmp / CONFIG_FOLDER, log)
        log("  checking the install (import ultralytics, offline) ...")
        found = installed_versions(Path(python), tmp / CONFIG_FOLDER)
        if found.get("ultralytics") != version:
            raise RuntimeError(f"the new environment has Ultralytics {found.get('ultralytics')}, not {version}")
        seconds = time.perf_counter() - start
        atomic_write_text(
            tmp / MARKER,
            json.dumps(
                {
                    "ultralytics": version,
                    "torch": found["torch"],
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "creation_s": round(seconds, 1),
                },
                indent=2,
            )
            + "\n",
        )
        try:
            os.rename(tmp, target)  # atomic; fails if another process created `target` meanwhile
        except OSError:
            if not (target / MARKER).is_file():
                raise
            log(f"  another process created {target} meanwhile; using that one")
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"Ultralytics environment ready in {seconds:.0f} s: {target}")
        return venv_python(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_venv(
    version: str = ULTRALYTICS_VERSION, cache_dir: Path | None = None, log=lambda m: print(m, file=sys.stderr)
) -> Path:
    """The python of the cached environment, created on first use. A complete environment holds MARKER (it is
    written last, just before the rename); a folder without it is not ours to trust, and is refused."""
    target = venv_path(version, cache_dir)
    if (target / MARKER).is_file() and venv_python(target).exists():
        return venv_python(target)
    if target.exists():
        raise RuntimeError(
            f"{target} exists but is not a complete EchoTune-made Ultralytics environment (no "
            f"{MARKER}); remove it to have it rebuilt, or pass --ultralytics-python"
        )
    return create_venv(target, version, log)


def config_dir_for(python: Path) -> Path:
    """Where Ultralytics keeps its settings (YOLO_CONFIG_DIR) for this interpreter: the cached environment's own
    yolo-config/, or, for a user's interpreter (--ultralytics-python), <cache>/ultralytics-config, so that the
    user's ~/.config/Ultralytics (which may have sync on) is never read. The runner switches sync off there."""
    venv = Path(python).parent.parent
    if (venv / MARKER).is_file():
        return venv / CONFIG_FOLDER
    return default_cache_dir() / "ultralytics-config"


def creation_seconds(python: Path) -> float | None:
    """How long creating this environment took (from its marker), None for a user's interpreter."""
    marker = Path(python).parent.parent / MARKER
    try:
        return float(json.loads(marker.read_text())["creation_s"])
    except (OSError, ValueError, KeyError):
        return None
