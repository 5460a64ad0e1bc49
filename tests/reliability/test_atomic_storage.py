"""The results filesystem handed to Ray (search/atomic_storage.py): a copy killed half-way leaves the previous
file intact, where pyarrow's LocalFileSystem (Ray's default for a local folder) leaves it truncated.

The kill is real and lands mid-copy by construction, not by timing: a child process copies a file with
pyarrow.fs.copy_files (Ray's driver->storage sync) into the filesystem under test. Only the copy's source is
instrumented: it serves the first chunk, and when asked for the second (so the first has been handed to the
target) it tells the parent through a pipe and blocks; the parent then SIGKILLs it.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs

from echotune.atomic import current_umask
from echotune.search.atomic_storage import AtomicLocalFileSystem, atomic_local_filesystem

OLD = b"previous complete version\n"
CHUNK = 1 << 16
NEW = bytes(range(256)) * (4 * CHUNK // 256)  # four chunks, none of them zeros or OLD

COPY = """
import os, sys, pyarrow as pa, pyarrow.fs as pafs
from echotune.search.atomic_storage import atomic_local_filesystem

source, target, kind, ready_fd = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class StallAfterFirstChunk:
    # A read-only file object: the first read is served; the next one (the first chunk is written by then)
    # signals the parent and blocks on stdin, which the parent never writes (EOF: the parent is gone).
    def __init__(self, path):
        self._file, self.closed, self._reads = open(path, "rb"), False, 0

    def read(self, nbytes=-1):
        self._reads += 1
        if self._reads == 2:
            os.write(ready_fd, b"1")
            sys.stdin.buffer.read(1)
            os._exit(3)
        return self._file.read(nbytes)

    def readable(self): return True
    def writable(self): return False
    def seekable(self): return False
    def tell(self): return self._file.tell()
    def close(self): self.closed = True; self._file.close()


class SourceFS(pafs.FileSystemHandler):  # pyarrow's LocalFileSystem, reads through StallAfterFirstChunk
    local = pafs.LocalFileSystem()
    def __eq__(self, other): return self is other
    def __ne__(self, other): return self is not other
    def get_type_name(self): return "stall-after-first-chunk"
    def normalize_path(self, path): return self.local.normalize_path(path)
    def get_file_info(self, paths): return self.local.get_file_info(paths)
    def get_file_info_selector(self, selector): return self.local.get_file_info(selector)
    def open_input_stream(self, path): return pa.PythonFile(StallAfterFirstChunk(path), mode="r")
    def open_input_file(self, path): return pa.PythonFile(StallAfterFirstChunk(path), mode="r")
    def _read_only(self, *args, **kwargs): raise OSError("read-only source")
    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = move = _read_only
    copy_file = open_output_stream = open_append_stream = _read_only


destination = atomic_local_filesystem() if kind == "atomic" else pafs.LocalFileSystem()
pafs.copy_files(source, target, source_filesystem=pafs.PyFileSystem(SourceFS()),
                destination_filesystem=destination, chunk_size=CHUNK)
""".replace("CHUNK", str(CHUNK))


def _kill_copy_midway(tmp_path: Path, kind: str) -> Path:
    source = tmp_path / "source" / "result.json"
    source.parent.mkdir()
    source.write_bytes(NEW)
    target = tmp_path / kind / "result.json"
    target.parent.mkdir()
    target.write_bytes(OLD)
    ready_read, ready_write = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", COPY, str(source), str(target), kind, str(ready_write)],
            cwd=Path(__file__).resolve().parents[2],
            pass_fds=(ready_write,),
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(ready_write)  # the child holds the only write end: EOF below means it ended without signalling
    try:
        readable, _, _ = select.select([ready_read], [], [], 120)
        signalled = bool(readable) and os.read(ready_read, 1) == b"1"
        assert signalled, f"the copy never reached its second chunk:\n{child.communicate(timeout=30)[1][-3000:]}"
        child.send_signal(signal.SIGKILL)  # the copy is blocked inside its second read: mid-copy, every time
        child.wait(timeout=30)
    finally:
        os.close(ready_read)
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        child.stdin.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, child.returncode
    return target


def test_a_copy_killed_midway_leaves_the_previous_file_intact(tmp_path):
    target = _kill_copy_midway(tmp_path, "atomic")
    assert target.read_bytes() == OLD
    leftovers = [p for p in target.parent.iterdir() if p != target]
    assert leftovers, "the copy was not under way in the target folder"
    for p in leftovers:  # the interrupted copy's temp file: (part of) the new version, beside the intact old one
        assert p.name.startswith(".result.json.") and p.name.endswith(".tmp"), p.name
        assert NEW.startswith(p.read_bytes())


def test_control_ray_default_local_filesystem_truncates_the_file(tmp_path):
    """Why the atomic filesystem exists: the same kill through LocalFileSystem destroys the previous file."""
    target = _kill_copy_midway(tmp_path, "local")
    partial = target.read_bytes()
    assert partial != OLD and len(partial) < len(NEW) and NEW.startswith(partial)  # truncated, half-written
    assert list(target.parent.iterdir()) == [target]


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
