"""Issue #8 items 6-7: every file EchoTune writes is written atomically; loading never runs pickled code; the Ray
dashboard listens where it is told; data.yaml paths cannot make us write anywhere.

Failures are injected at the OS boundary, never by mocking our own code: a child process under RLIMIT_FSIZE
(Python ignores SIGXFSZ, so a write past the limit raises OSError(EFBIG) in the middle of the file), a real
SIGKILL in the middle of a write, or os.fsync / os.replace raising ENOSPC (a full disk, as the kernel says it).
"""

from __future__ import annotations

import ast
import contextlib
import errno
import importlib.util
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from echotune.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from echotune.engine.checkpoint import save_checkpoint
from tests.data.export_fixture import make_export, write_image
from tests.search.test_cli import load, train_argv

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("echotune", "search", "trainables", "spaces", "models", "benchmarks")
NAMES, VIEWS = ["AR", "MR", "PR", "TR"], ["PSAX", "PLAX", "A4C"]


# ---------------------------------------------------------------------------------------------------------------
# 6b. Static guard: no non-atomic file write in the source tree outside echotune/atomic.py
# ---------------------------------------------------------------------------------------------------------------

# (file, enclosing function, kind of write) -> why a plain write is right there. Keep it small.
WRITE_ALLOWED = {
    (
        "search/cluster.py",
        "_marker_file",
        ".write_text",
    ): "throwaway storage probe: a random-named marker that every node reads and the driver deletes in a "
    "finally; it holds no data, and a torn marker only makes the check report the storage unshared",
    (
        "echotune/data/synthetic.py",
        "_write_split",
        "cv2.imwrite",
    ): "images go into the temporary folder of generate()'s atomic_directory: the dataset folder appears "
    "complete (renamed into place) or not at all",
    (
        "echotune/data/synthetic.py",
        "_write_split",
        ".write_text",
    ): "label files, inside the same atomic_directory as the images",
    (
        "benchmarks/vs_ultralytics.py",
        "run_ultralytics",
        "open",
    ): "the Ultralytics subprocess's log, streamed while it runs (a log, not a result: a torn one loses lines)",
    (
        "benchmarks/ultralytics_runner.py",
        "main",
        ".write_text",
    ): "runs in Ultralytics' own virtualenv, without EchoTune: it writes a .tmp sibling and os.replace()s it "
    "over the result, the same pattern as echotune.atomic",
}

_OPEN_MODE = re.compile(r"^[rwxabtU+]+(:\w*)?$")
_OS_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}
# call -> (position, keyword) of its destination; writing to an in-memory buffer (or to no destination at all,
# e.g. frame.to_csv() returning a string) is fine: the bytes then go through echotune.atomic.
_DESTINATION = {
    "torch.save": (1, "f"),
    ".savefig": (0, "fname"),
    ".write_table": (1, "where"),
    ".to_parquet": (0, "path"),
    ".to_csv": (0, "path_or_buf"),
    "np.save": (0, "file"),
    "np.savez": (0, "file"),
    "np.savez_compressed": (0, "file"),
    "np.savetxt": (0, "fname"),
}
_ALWAYS = {
    ".write_text",
    ".write_bytes",
    "cv2.imwrite",
    ".tofile",
    "shutil.copy",
    "shutil.copy2",
    "shutil.copyfile",
    "shutil.copytree",
    "shutil.move",
}
_IN_MEMORY = {"BytesIO", "StringIO"}
# json.dump / yaml.dump / pickle.dump need a stream: to a file, that stream came from an open() caught above.


def _dotted(node: ast.AST) -> str:
    """'torch.save' for a module-level function, '.write_text' for a method of anything else, 'open'."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id in (
            "torch",
            "np",
            "numpy",
            "cv2",
            "shutil",
            "os",
            "io",
            "pq",
            "builtins",
        ):
            return f"{node.value.id.replace('numpy', 'np')}.{node.attr}"
        return f".{node.attr}"
    return ""


def _argument(call: ast.Call, position: int, keyword: str) -> ast.AST | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _write_kind(call: ast.Call, memory: set[str]) -> str | None:
    """The kind of non-atomic file write `call` is (its dotted name), or None."""
    name = _dotted(call.func)
    generic = "." + name.split(".")[-1] if "." in name else name
    if name in ("open", "io.open", "builtins.open", ".open"):
        if name != ".open":  # builtin open(path, mode)
            mode = _argument(call, 1, "mode")
        else:  # Path.open(mode), gzip.open(path, mode), tarfile.open(name, mode): keyword, else a mode-like string
            mode = next((k.value for k in call.keywords if k.arg == "mode"), None) or next(
                (
                    a
                    for a in call.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str) and _OPEN_MODE.match(a.value)
                ),
                None,
            )
        if mode is None:
            return None
        if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
            return name  # a computed mode: cannot tell, so it must be listed with a reason
        return name if set(mode.value) & set("wax+") else None
    if name == "os.open":
        flags = {n.attr for n in ast.walk(call) if isinstance(n, ast.Attribute)}
        return name if flags & _OS_WRITE_FLAGS else None
    for key in (name, generic):
        if key in _ALWAYS:
            return key
        if key in _DESTINATION:
            target = _argument(call, *_DESTINATION[key])
            if target is None or (isinstance(target, ast.Constant) and target.value is None):
                return None
            if isinstance(target, ast.Name) and target.id in memory:
                return None
            if isinstance(target, ast.Call) and _dotted(target.func).split(".")[-1] in _IN_MEMORY:
                return None
            return key
    return None


def scan_writes(source: str) -> list[tuple[int, str, str]]:
    """(line, enclosing function, kind) of each non-atomic file write in a module's source."""
    tree = ast.parse(source)
    memory = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and _dotted(node.value.func).split(".")[-1] in _IN_MEMORY
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call) and (kind := _write_kind(child, memory)):
                found.append((child.lineno, function, kind))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def _source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_write_scanner_finds_what_it_must():
    source = """
import io, shutil, cv2, torch, numpy as np, pyarrow.parquet as pq
def bad(p, fig, table, frame, image, mode):
    open(p, "w"); open(p, mode="ab"); p.open("x"); p.write_text("t"); p.write_bytes(b"b")
    torch.save({}, p); fig.savefig(p); pq.write_table(table, p); frame.to_parquet(p); frame.to_csv(p)
    cv2.imwrite(p, image); np.save(p, image); shutil.copy(p, p); open(p, mode)
def good(p, fig, table, frame):
    buffer = io.BytesIO()
    open(p); open(p, "rb"); p.open(); p.read_text(); torch.save({}, buffer); fig.savefig(buffer, format="png")
    pq.write_table(table, buffer); frame.to_csv(index=False); frame.to_parquet(); torch.save({}, io.BytesIO())
"""
    found = scan_writes(source)
    assert {f for _, f, _ in found} == {"bad"}
    assert len(found) == 14, found


def test_every_file_write_in_the_source_tree_is_atomic():
    unlisted, used = [], set()
    for path in _source_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "echotune/atomic.py":
            continue
        for line, function, kind in scan_writes(path.read_text(encoding="utf-8")):
            if (rel, function, kind) in WRITE_ALLOWED:
                used.add((rel, function, kind))
            else:
                unlisted.append(f"{rel}:{line}: {kind} in {function}()")
    assert not unlisted, (
        "non-atomic file writes (use echotune.atomic.atomic_write_bytes/_text, or render into "
        "io.BytesIO first; or list the line in WRITE_ALLOWED with a reason):\n  " + "\n  ".join(unlisted)
    )
    assert not set(WRITE_ALLOWED) - used, f"stale WRITE_ALLOWED entries: {sorted(set(WRITE_ALLOWED) - used)}"


def test_every_torch_load_in_the_source_tree_passes_weights_only_true():
    calls, unsafe = 0, []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _dotted(node.func) == "torch.load":
                calls += 1
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls >= 2  # engine checkpoints and dual's classifier weights: the scan sees them
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


# ---------------------------------------------------------------------------------------------------------------
# 6c. Every real writer, failing mid-write (RLIMIT_FSIZE in a child process): the old file stays byte for byte
# ---------------------------------------------------------------------------------------------------------------

WRITERS = (
    "checkpoint",
    "leaderboard",
    "manifest",
    "search_record",
    "html_page",
    "figure",
    "split",
    "ensemble_metrics",
    "predictions",
    "best_config",
)


class _FixedPredictor:
    """Stands in for EnsemblePredictor as predict_images' input: k identical boxes per image."""

    def __init__(self, k: int):
        self.k = k

    def predict(self, image, conf):
        h, w = image.shape[:2]
        return {
            "image_wh": (w, h),
            "boxes": np.tile(np.float32([[1, 2, 10, 12]]), (self.k, 1)),
            "scores": np.full(self.k, 0.9, np.float32),
            "labels": np.zeros(self.k, np.int64),
            "classes": ["AR"] * self.k,
            "view": "PSAX",
            "view_probs": {"PSAX": 0.7, "PLAX": 0.2, "A4C": 0.1},
        }


def _writer_functions(root: Path) -> dict:
    """name -> write(folder, new) returning the file that writer writes first; the new content is the larger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from echotune.data.check import check_dataset
    from echotune.data.split import write_split
    from echotune.ensemble.export import predict_images
    from echotune.ensemble.fusion import FusionParams
    from echotune.ensemble.manifest import Manifest, ManifestMember, save_manifest
    from echotune.ensemble.result import EnsembleResult, write_metrics
    from echotune.reporting.figure_style import save_figure
    from echotune.reporting.html_page import Section, write_html
    from echotune.results.leaderboard import SCHEMA, write_leaderboard
    from echotune.results.search_record import write_search_record
    from echotune.search.search_config import SearchConfig

    check = check_dataset(make_export(root / "export"))
    pooled = [s for samples in check.samples.values() for s in samples]
    frames = [write_image(root / "frames" / f"f{i}.png", seed=i) for i in range(2)]

    def checkpoint(folder, new):
        return save_checkpoint(
            folder / "last.pt", {"epoch": 2 if new else 1, "model": {"w": torch.arange(50_000 if new else 10.0)}}
        )

    def leaderboard(folder, new):
        n = 200 if new else 1
        rows = [
            {
                **{f.name: None for f in SCHEMA},
                "trial_id": f"t{i}",
                "status": "TERMINATED",
                "best/val/score": i / n,
                "config_json": json.dumps({"gn_alpha": i / 7}),
            }
            for i in range(n)
        ]
        return write_leaderboard(rows, folder / "leaderboard.parquet")

    def manifest(folder, new):
        n = 40 if new else 1
        members = [ManifestMember(f"t{i}", folder.parent / f"trial_t{i}" / "last.pt", "shared", 0.5) for i in range(n)]
        return save_manifest(
            Manifest(members, [1.0] * n, "none", FusionParams(), NAMES, VIEWS), folder / "manifest.yaml"
        )

    def search_record(folder, new):
        cfg = SearchConfig(name=folder.name, storage=str(folder.parent))
        cluster = {"nodes": [{"node_id": f"n{i}", "ip": "10.0.0.1"} for i in range(300)]} if new else None
        return write_search_record(cfg, root / "export" / "data.yaml", cluster=cluster)

    def html_page(folder, new):
        n = 300 if new else 1
        table = pd.DataFrame({"trial": [f"t{i}" for i in range(n)], "score": np.linspace(0, 1, n)})
        return write_html(folder / "report.html", "Leaderboard", "exp", [Section("Trials", "text", [("all", table)])])

    def figure(folder, new):
        fig, ax = plt.subplots(figsize=(6, 4) if new else (1, 1))
        if new:
            ax.scatter(*np.random.default_rng(0).random((2, 500)))
        try:
            return save_figure(fig, folder / "plot.png")
        finally:
            plt.close(fig)

    def split(folder, new):  # train.txt is written first: make it the largest
        splits = (
            {"train": pooled, "val": pooled[:1], "test": pooled[:1]}
            if new
            else {"train": pooled[:1], "val": pooled[1:2], "test": pooled[2:3]}
        )
        write_split(check, splits, folder, "new" if new else "old")
        return folder / "train.txt"

    def ensemble_metrics(folder, new):
        n = 100 if new else 1
        metrics = {f"test/{k}": 0.5 for k in ("map50", "map50_95", "precision", "recall", "f1", "view_acc", "score")}
        result = EnsembleResult(
            [],
            [1.0] * n,
            FusionParams(),
            "test",
            {"trial_id": "t0", "metrics": metrics},
            metrics,
            {},
            {k: 0.0 for k in metrics},
            [{"trial_id": f"t{i}", "test": metrics} for i in range(n)],
            folder / "manifest.yaml",
            folder / "metrics.json",
            {},
        )
        return write_metrics(result, folder / "metrics.json", {"top_k": n}, {})

    def predictions(folder, new):
        predict_images(_FixedPredictor(60 if new else 0), frames, folder, 0.25, log=lambda _: None)
        return folder / "f0.json"

    def best_config(folder, new):  # search/orchestrate.py summarise() writes it with atomic_write_text
        doc = {"trial_id": "t1", "val/score": 0.5, "config": {f"key{i}": i for i in range(300 if new else 2)}}
        return atomic_write_text(folder / "best_config.yaml", yaml.safe_dump(doc, sort_keys=False))

    return {
        "checkpoint": checkpoint,
        "leaderboard": leaderboard,
        "manifest": manifest,
        "search_record": search_record,
        "html_page": html_page,
        "figure": figure,
        "split": split,
        "ensemble_metrics": ensemble_metrics,
        "predictions": predictions,
        "best_config": best_config,
    }


def fail_every_writer(root: str) -> None:
    """Child process. Per writer: write the old file into root/<name> and copy it to root/expected/<name>; write
    the new one into root/scratch/<name> to learn its size; then write the new one into root/<name> with
    RLIMIT_FSIZE at half that size. What happened goes to root/results.json. Also generate() a synthetic set
    under a limit that stops its first image. Limits are per process, so nothing else on the machine notices."""
    import resource

    from echotune.data.synthetic import SyntheticSpec, generate

    root = Path(root)
    writers = _writer_functions(root)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def under_limit(limit: int, write) -> dict:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            write()
            return {"error": None, "errno": None}
        except OSError as exc:
            return {"error": str(exc), "errno": exc.errno}
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    results = {}
    for name in WRITERS:
        write = writers[name]
        folder, scratch = root / name, root / "scratch" / name
        target = write(folder, new=False)
        shutil.copytree(folder, root / "expected" / name)
        size = write(scratch, new=True).stat().st_size
        results[name] = {
            "target": target.name,
            "new_size": size,
            "limit": size // 2,
            # called right here, inside this iteration
            **under_limit(size // 2, lambda write=write, folder=folder: write(folder, new=True)),
        }
    spec = SyntheticSpec(train_videos=1, val_videos=1, test_videos=1, frames_per_video=1, img_size=64, seed=1)
    results["synthetic"] = under_limit(2000, lambda: generate(root / "synthetic" / "data", spec))
    (root / "results.json").write_text(json.dumps(results, indent=1))


@pytest.fixture(scope="module")
def failed_writes(tmp_path_factory):
    root = tmp_path_factory.mktemp("writers")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom tests.reliability.test_atomic_security import fail_every_writer\n"
            "fail_every_writer(sys.argv[1])",
            str(root),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    return root, json.loads((root / "results.json").read_text())


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", WRITERS)
def test_a_write_failing_midway_leaves_the_old_file_and_no_temp_file(failed_writes, name):
    root, results = failed_writes
    outcome = results[name]
    assert outcome["errno"] == errno.EFBIG, outcome  # the new write really failed, half way into the file
    folder = root / name
    assert _files(folder) == _files(root / "expected" / name)  # every file byte for byte; nothing new (no .tmp)
    assert not list(folder.rglob(".*.tmp"))
    # and the failed write would have changed the file: the test is not comparing a file with itself
    assert (root / "scratch" / name / outcome["target"]).read_bytes() != (folder / outcome["target"]).read_bytes()


def test_a_synthetic_set_failing_midway_leaves_no_folder(failed_writes):
    root, results = failed_writes
    assert "could not write" in results["synthetic"]["error"]  # cv2.imwrite said no (EFBIG underneath)
    assert list((root / "synthetic").iterdir()) == []  # neither the dataset nor atomic_directory's temp folder


_BIG_WRITE = (
    "import sys\nfrom echotune.atomic import atomic_write_bytes\n"
    "atomic_write_bytes(sys.argv[1], b'n' * (200 * 1024 * 1024))\n"
)


def test_sigkill_in_the_middle_of_a_200_mb_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "big.bin"
    caught = False
    for _ in range(3):  # the kill must land while the temp file is still growing; retry if the write won
        target.write_bytes(b"old content\n")
        child = subprocess.Popen(
            [sys.executable, "-c", _BIG_WRITE, str(target)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        try:
            deadline = time.monotonic() + 60
            while not caught and child.poll() is None and time.monotonic() < deadline:
                for temp in tmp_path.glob(".big.bin.*.tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        if 0 < temp.stat().st_size < 200 * 1024 * 1024:
                            child.send_signal(signal.SIGKILL)
                            caught = True
                time.sleep(0.0005)
        finally:
            child.kill()
            child.wait()
        if caught:
            break
        for temp in tmp_path.glob(".big.bin.*.tmp"):
            temp.unlink()
    assert caught, "never caught the writer mid-write in 3 tries"
    assert target.read_bytes() == b"old content\n"
    # No cleanup runs on SIGKILL: the partial temp file stays beside the target. Nothing ever reads a
    # `.big.bin.<random>.tmp`; it is safe to delete. It is the only other thing in the folder.
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p != target)
    assert leftovers and all(re.fullmatch(r"\.big\.bin\..+\.tmp", n) for n in leftovers), leftovers


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("boundary", ["fsync", "replace"])
@pytest.mark.parametrize("writer", ["best_config", "checkpoint"])
def test_a_full_disk_at_fsync_or_rename_leaves_the_old_file(tmp_path, monkeypatch, boundary, writer):
    def write(new: bool) -> Path:
        if writer == "checkpoint":
            return save_checkpoint(tmp_path / "last.pt", {"epoch": int(new), "w": torch.zeros(1000 if new else 1)})
        return atomic_write_text(tmp_path / "best_config.yaml", "trial_id: t2\n" * 100 if new else "trial_id: t1\n")

    target = write(False)
    old = target.read_bytes()
    monkeypatch.setattr(os, boundary, _enospc)
    with pytest.raises(OSError) as info:
        write(True)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == old and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_and_folders_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = atomic_write_bytes(tmp_path / "f.bin", b"x")
        with atomic_directory(tmp_path / "folder"):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~umask


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        is_parent = stat.S_ISDIR(info.st_mode) and info.st_ino == tmp_path.stat().st_ino
        events.append("fsync folder" if is_parent else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert events == ["fsync file", "replace", "fsync folder"]


def test_a_folder_that_refuses_fsync_is_not_an_error(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):  # as some network and FUSE filesystems answer for a folder
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert atomic_write_bytes(tmp_path / "f.bin", b"x").read_bytes() == b"x"


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.json").symlink_to(victim)
    atomic_write_text(tmp_path / "out" / "a.json", "{}")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out" / "a.json").is_symlink() and (tmp_path / "out" / "a.json").read_text() == "{}"


# ---------------------------------------------------------------------------------------------------------------
# 7a. Every checkpoint loading route refuses a pickle payload without running it, and names the file
# ---------------------------------------------------------------------------------------------------------------


class _Touch:
    """Unpickling this runs `touch MARKER`: a tampered checkpoint would run something worse the same way."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture(params=["torch_save", "plain_pickle"])
def evil(request, tmp_path) -> tuple[Path, Path]:
    """(an EchoTune-shaped checkpoint whose weights are a pickle payload, the marker its payload would create)."""
    marker = tmp_path / "PWNED"
    state = {
        "format_version": 1,
        "config": {"arch": "shared", "nc": 4, "n_views": 3},
        "ema": {"module": _Touch(marker)},
        "state_dict": {"w": _Touch(marker)},
    }
    path = tmp_path / "evil ckpt.pt"
    if request.param == "torch_save":
        torch.save(state, path, pickle_protocol=2)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    return path, marker


def _refused(message: str, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the pickled payload ran"
    assert str(path) in message or str(path.resolve()) in message, message
    assert "weights_only=True" in message, message


def test_the_payload_is_live_when_loaded_unsafely(evil):
    path, marker = evil  # so the refusals below refuse real code, not a broken file
    with contextlib.suppress(Exception):  # a plain pickle runs, then fails torch's magic-number check
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_model_refuses(evil):
    from echotune.engine.evaluate_checkpoint import load_model

    path, marker = evil
    with pytest.raises(ValueError) as info:
        load_model(path, "cpu")
    _refused(str(info.value), path, marker)


def test_ensemble_member_loader_refuses(evil, tiny_synthetic):
    from echotune.ensemble.members import Member, load_member

    path, marker = evil
    with pytest.raises(ValueError, match="^trial t1: ") as info:
        load_member(Member("t1", "shared", 0.5, path, {}), tiny_synthetic, "cpu")
    _refused(str(info.value), path, marker)


def test_predictor_from_checkpoint_and_from_manifest_refuse(evil, tmp_path):
    from echotune.ensemble.fusion import FusionParams
    from echotune.ensemble.manifest import Manifest, ManifestMember, save_manifest
    from echotune.ensemble.predictor import EnsemblePredictor

    path, marker = evil
    with pytest.raises(ValueError) as info:
        EnsemblePredictor.from_checkpoint(path, "cpu")
    _refused(str(info.value), path, marker)
    manifest = save_manifest(
        Manifest([ManifestMember("t1", path, "shared", 0.5)], [1.0], "none", FusionParams(), NAMES, VIEWS),
        tmp_path / "ensemble" / "manifest.yaml",
    )
    with pytest.raises(ValueError, match=r"members\[0\] \(trial t1\)") as info:
        EnsemblePredictor.from_manifest(manifest, "cpu")
    _refused(str(info.value), path, marker)


def test_predict_cli_refuses_with_exit_2(evil, tmp_path, capsys):
    path, marker = evil
    image = write_image(tmp_path / "frames" / "a.png")
    out = tmp_path / "preds"
    assert (
        load("predict").main(["--checkpoint", str(path), "--source", str(image), "--out", str(out), "--device", "cpu"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    _refused(err, path, marker)
    assert not out.exists()


def test_train_cli_resume_refuses_with_exit_2(evil, tiny_synthetic, tmp_path, capsys):
    path, marker = evil
    out = tmp_path / "run"
    assert (
        load("train").main(train_argv(tiny_synthetic.config.yaml_path, out, "--epochs", "1,1,1", "--resume", path)) == 2
    )
    _refused(capsys.readouterr().err, path, marker)
    assert not out.exists()


def test_dual_classifier_weights_refuse(evil):
    from echotune.models import create_model

    path, marker = evil
    with pytest.raises(ValueError) as info:
        create_model("dual", scale="test", img_size=64, classifier="resnet10t", classifier_weights=path)
    _refused(str(info.value), path, marker)


# ---------------------------------------------------------------------------------------------------------------
# 7b. The Ray dashboard listens only where start_ray is told to, and not at all by default
# ---------------------------------------------------------------------------------------------------------------


def _outside_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _connects(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


@pytest.mark.ray
def test_start_ray_dashboard_on_localhost_only_and_none_by_default():
    if importlib.util.find_spec("aiohttp") is None:
        pytest.skip("the Ray dashboard needs ray[default] (aiohttp): pip install -e '.[test]'")
    import ray

    from echotune.search.orchestrate import start_ray

    try:
        assert start_ray(None, cpus=1) is None
        assert not ray._private.worker.global_worker.node.address_info.get("webui_url")
    finally:
        ray.shutdown()
    try:
        url = start_ray(None, cpus=1, dashboard_host="127.0.0.1")  # what run.py --dashboard prints
        assert url == ray._private.worker.global_worker.node.address_info["webui_url"]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        assert host == "127.0.0.1", url
        deadline = time.monotonic() + 60
        while not _connects("127.0.0.1", int(port)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _connects("127.0.0.1", int(port)), f"nothing listens at {url}"
        outside = _outside_address()
        if outside is not None:  # the same port on the machine's network address: closed
            assert not _connects(outside, int(port)), f"the dashboard answers on {outside}:{port}"
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# 7d. Paths in data.yaml, and odd image names, cannot make us write anywhere
# ---------------------------------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root -> (mtime_ns, size); a folder's mtime changes when an entry is added or
    removed in it, so even a temporary file written and deleted again shows."""
    return {
        p.relative_to(root).as_posix(): (s.st_mtime_ns, s.st_size if not stat.S_ISDIR(s.st_mode) else -1)
        for p in root.rglob("*")
        for s in [p.lstat()]
    }


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


@pytest.fixture(params=["relative_root", "absolute_root"])
def outside_yaml(request, tmp_path, monkeypatch) -> Path:
    """A data.yaml whose root (`path: ../elsewhere/ds` or absolute), val split (absolute folder) and test split
    (a .txt list in a third folder, absolute entries) all lie outside the yaml's own folder."""
    monkeypatch.setenv("ECHOTUNE_CACHE", str(tmp_path / "cache"))
    dataset = make_export(tmp_path / "elsewhere", name="ds").parent
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "test.txt").write_text("".join(f"{p}\n" for p in sorted((dataset / "test" / "images").iterdir())))
    yaml_path = tmp_path / "config" / "data.yaml"
    yaml_path.parent.mkdir()
    root = "../elsewhere/ds" if request.param == "relative_root" else str(dataset)
    yaml_path.write_text(
        yaml.safe_dump(
            {
                "path": root,
                "train": "train/images",
                "val": str(dataset / "valid" / "images"),
                "test": str(lists / "test.txt"),
                "nc": 4,
                "names": NAMES,
            }
        )
    )
    return yaml_path


def test_reading_a_dataset_from_outside_paths_writes_nothing(outside_yaml, tmp_path, capsys):
    from echotune.data.check import check_dataset
    from echotune.data.dataset import EchoDataset, make_loader

    before = _snapshot(tmp_path)
    data = check_dataset(outside_yaml)
    assert data.ok and {k: len(v) for k, v in data.samples.items()} == {"train": 3, "val": 2, "test": 1}
    for split in ("train", "val"):
        dataset = EchoDataset(data.samples[split], 64)
        assert dataset[0]["image"].shape == (3, 64, 64)
        assert next(iter(make_loader(dataset, 2)))["images"].shape == (2, 3, 64, 64)
    assert load("run").main(["--data", str(outside_yaml), "--check-data"]) == 0
    assert "USABLE" in capsys.readouterr().out
    assert _changed(before, _snapshot(tmp_path)) == set()


def test_a_resplit_of_outside_paths_writes_only_into_split_out(outside_yaml, tmp_path, capsys):
    (tmp_path / "work").mkdir()
    before = _snapshot(tmp_path)
    assert (
        load("run").main(
            [
                "--data",
                str(outside_yaml),
                "--resplit-by-video",
                "--ratios",
                "0.5,0.25,0.25",
                "--split-out",
                str(tmp_path / "work" / "split"),
            ]
        )
        == 0
    )
    changed = _changed(before, _snapshot(tmp_path))
    assert "work/split/data.yaml" in changed
    assert changed - {"work"} == {p for p in changed if p.startswith("work/split")}, changed  # work: its new entry


def _tiny_checkpoint(path: Path) -> Path:
    """An untrained but valid EchoTune checkpoint of the smallest shared model (64 px)."""
    from echotune.engine.build import create_network
    from echotune.engine.config import TrainConfig

    cfg = TrainConfig.from_dict({"model_scale": "test", "img_size": 64})
    model = create_network(cfg, len(NAMES), len(VIEWS))
    return save_checkpoint(
        path,
        {
            "config": {**cfg.to_dict(), "nc": len(NAMES), "n_views": len(VIEWS)},
            "ema": {"module": model.state_dict(), "updates": 0},
            "names": NAMES,
            "view_names": VIEWS,
        },
    )


def test_predict_writes_odd_image_names_inside_out_only(tmp_path, capsys):
    source, work = tmp_path / "frames", tmp_path / "work"
    stems = {
        "..evil": "..evil.png",
        "a b c": "a b c.png",
        "..": "...png",
        "-rf": "-rf.png",
        "ünï cødé": "ünï cødé.png",
        "..evil_2": "sub dir/..evil.png",
    }
    for i, name in enumerate(stems.values()):
        write_image(source / name, seed=i)
    checkpoint = _tiny_checkpoint(tmp_path / "ckpt" / "best.pt")
    work.mkdir()
    before = _snapshot(tmp_path)
    assert (
        load("predict").main(
            ["--checkpoint", str(checkpoint), "--source", str(source), "--out", str(work / "out"), "--device", "cpu"]
        )
        == 0
    )
    assert f"Predicted {len(stems)} image(s)" in capsys.readouterr().out
    changed = _changed(before, _snapshot(tmp_path))
    assert changed - {"work"} == {p for p in changed if p.startswith("work/out")}, changed
    written = sorted(p.name for p in (work / "out").iterdir())
    assert written == sorted([f"{s}.{ext}" for s in stems for ext in ("json", "jpg")] + ["predictions.csv"])
    assert all(p.resolve().parent == (work / "out").resolve() for p in (work / "out").iterdir())
