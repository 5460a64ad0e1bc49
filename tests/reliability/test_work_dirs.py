"""Trial work folders of killed workers are removed (trainables/trial.py remove_orphaned_work_dirs); the fault
test in test_faults.py checks the same after a real SIGKILLed worker."""

from __future__ import annotations

import os
import subprocess
import sys

from echotune.trainables.trial import WORK_PREFIX, make_work_dir, remove_orphaned_work_dirs


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_the_folders_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / f"{WORK_PREFIX}{_dead_pid()}-abc"
    (dead / "run").mkdir(parents=True)
    (dead / "run" / "last.pt").write_bytes(b"x" * 1000)
    alive_parent = tmp_path / f"{WORK_PREFIX}{os.getppid()}-def"  # another live process (pytest's parent)
    mine = tmp_path / f"{WORK_PREFIX}{os.getpid()}-ghi"
    unnamed = tmp_path / f"{WORK_PREFIX}k2j4h5"  # the old form, without a pid: its owner is unknown
    other = tmp_path / "something-else-1"
    for folder in (alive_parent, mine, unnamed, other):
        folder.mkdir()
    assert remove_orphaned_work_dirs(tmp_path) == [dead]
    assert not dead.exists() and all(p.exists() for p in (alive_parent, mine, unnamed, other))
    assert remove_orphaned_work_dirs(tmp_path) == []


def test_work_dirs_name_their_process(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    work = make_work_dir()
    assert work.parent == tmp_path and work.name.startswith(f"{WORK_PREFIX}{os.getpid()}-")
    assert remove_orphaned_work_dirs(tmp_path) == [] and work.is_dir()
