"""The results filesystem handed to Ray (search/atomic_storage.py): a copy killed half-way leaves the previous
file intact, where pyarrow's LocalFileSystem (Ray's default for a local folder) leaves it truncated.

The kill is real: a child process copies a large file with pyarrow.fs.copy_files (Ray's driver->storage sync)
and is SIGKILLed once the copy is under way.
"""
from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
from echotune.atomic import current_umask
from search.atomic_storage import AtomicLocalFileSystem, atomic_local_filesystem

OLD = b"previous complete version\n"
SIZE = 400 * 2**20  # big enough that the copy is still running when the parent kills it

COPY = """
import sys, pyarrow.fs as pafs
from echotune.atomic import current_umask
from search.atomic_storage import atomic_local_filesystem
target = atomic_local_filesystem() if sys.argv[3] == "atomic" else pafs.LocalFileSystem()
pafs.copy_files(sys.argv[1], sys.argv[2], source_filesystem=pafs.LocalFileSystem(), destination_filesystem=target,
                chunk_size=1 << 16)
"""


def _kill_copy_midway(tmp_path: Path, kind: str) -> Path:
    source = tmp_path / "source" / "result.json"
    source.parent.mkdir()
    with source.open("wb") as f:
        f.truncate(SIZE)  # sparse: quick to make, slow enough to copy
    target = tmp_path / kind / "result.json"
    target.parent.mkdir()
    target.write_bytes(OLD)
    child = subprocess.Popen([sys.executable, "-c", COPY, str(source), str(target), kind],
                             cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until bytes are being written (to the target or to a temp beside it)
            written = [p for p in target.parent.iterdir() if p.stat().st_size > 0 and p.read_bytes()[:5] != OLD[:5]]
            if written:
                break
            assert child.poll() is None, "the copy ended before it could be interrupted"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, "the copy finished before the kill: raise SIZE"
    return target


def test_a_copy_killed_midway_leaves_the_previous_file_intact(tmp_path):
    target = _kill_copy_midway(tmp_path, "atomic")
    assert target.read_bytes() == OLD
    leftovers = [p.name for p in target.parent.iterdir() if p != target]
    assert all(name.startswith(".result.json.") and name.endswith(".tmp") for name in leftovers), leftovers


def test_control_ray_default_local_filesystem_truncates_the_file(tmp_path):
    """Why the atomic filesystem exists: the same kill through LocalFileSystem destroys the previous file."""
    target = _kill_copy_midway(tmp_path, "local")
    assert target.read_bytes() != OLD and 0 <= target.stat().st_size < SIZE


def test_writes_copies_and_reads_behave_like_a_local_filesystem(tmp_path):
    fs = atomic_local_filesystem()
    path = tmp_path / "a" / "b.txt"
    fs.create_dir(str(path.parent), recursive=True)
    with fs.open_output_stream(str(path)) as out:
        out.write(b"hello")
        assert not path.exists()  # nothing visible until the writer closes
    assert path.read_bytes() == b"hello"
    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # like open(), not mkstemp's 0600
    fs.copy_file(str(path), str(tmp_path / "c.txt"))
    assert (tmp_path / "c.txt").read_bytes() == b"hello"
    with fs.open_input_stream(str(tmp_path / "c.txt")) as f:
        assert f.read() == b"hello"
    infos = fs.get_file_info(pafs.FileSelector(str(tmp_path), recursive=True))
    assert sorted(Path(i.path).name for i in infos) == ["a", "b.txt", "c.txt"]  # no temp files left
    fs.move(str(tmp_path / "c.txt"), str(tmp_path / "d.txt"))
    fs.delete_file(str(tmp_path / "d.txt"))
    fs.delete_dir_contents(str(tmp_path / "a"))
    assert list((tmp_path / "a").iterdir()) == []


def test_it_travels_to_workers_and_compares_equal():
    """Ray pickles the storage context (with its filesystem) to every trial worker."""
    fs = atomic_local_filesystem()
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.type_name == "py::echotune-atomic-local" and clone.equals(fs)
    assert AtomicLocalFileSystem() == AtomicLocalFileSystem()

