"""A local results filesystem for Ray Tune on which every file appears complete or not at all.

Why: Ray Tune's driver writes trial results (result.json, progress.csv) and the experiment state into a staging
folder under /tmp/ray and copies that folder to the results storage about every second; workers upload
checkpoints to it the same way. The copy opens each target with truncation and then writes it, so a driver
killed mid-copy (a crash, the OOM killer, a preempted VM) leaves *empty* files behind, even for trials that
finished long before: measured here, a SIGKILLed search lost the whole per-epoch history of a finished trial
(tests/reliability/test_faults.py). Handed to Ray as `RunConfig(storage_filesystem=...)`, this filesystem
writes every file to a temporary sibling and renames it over the target when the writer closes it, so the
previous version stays intact until the new one is complete.

Only writes change; reads, listings, moves and deletes go straight to pyarrow's LocalFileSystem. Object stores
(s3://, gs://) need none of this: an object upload is atomic.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pyarrow as pa
import pyarrow.fs as pafs

from echotune.atomic import current_umask, fsync_folder


class _RenameOnClose:
    """A write-only binary file object: writes go to a temp file beside `path`; close() fsyncs it and renames
    it over `path`. pyarrow wraps it as a stream (pa.PythonFile)."""

    def __init__(self, path: str):
        self.path = path
        folder = os.path.dirname(path) or "."
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        self._file = os.fdopen(fd, "wb")
        self.closed = False

    def write(self, data) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self.tmp, 0o666 & ~current_umask())  # what open() would give, not mkstemp's 0o600
            os.replace(self.tmp, self.path)
            fsync_folder(os.path.dirname(self.path) or ".")  # the rename itself survives a power loss
        except BaseException:
            self._file.close()
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
            raise


class AtomicLocalFileSystem(pafs.FileSystemHandler):
    """pyarrow FileSystemHandler: LocalFileSystem with atomic (temp file + rename) writes and copies."""

    def __init__(self):
        self._local = pafs.LocalFileSystem()

    def __eq__(self, other) -> bool:
        return isinstance(other, AtomicLocalFileSystem)

    def __ne__(self, other) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    def get_type_name(self) -> str:
        return "echotune-atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths):
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the filesystem root")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        writer = _RenameOnClose(dest)
        try:
            with open(src, "rb") as source:
                shutil.copyfileobj(source, writer._file)
        except BaseException:
            writer._file.close()
            os.unlink(writer.tmp)
            raise
        writer.close()

    def open_input_stream(self, path: str):
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata=None):
        return pa.PythonFile(_RenameOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata=None):
        return self._local.open_append_stream(path)  # appending cannot be atomic; Ray does not append to storage


def atomic_local_filesystem() -> pafs.PyFileSystem:
    """The filesystem to hand Ray for a local (or NFS-mounted) results folder."""
    return pafs.PyFileSystem(AtomicLocalFileSystem())
