"""Ray state saved before EchoTune's packages moved under `echotune.` (issue 17) still reads: the old module names
resolve to the new modules inside `legacy_module_names()` only (search/legacy_names.py).

Each check runs in a fresh interpreter in a folder of its own: inside the test session the repository root is on
sys.path (pytest puts it there), where the bare folder names would import. Checked by hand on a real experiment
written by the previous version (e6180ed): `echotune leaderboard` reads it, `--resume` exits 2 with
LegacyExperimentError's message instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

OLD_PICKLE = """
import importlib.util, pickle, sys
from echotune.search import atomic_storage
from echotune.search.legacy_names import legacy_module_names

data = pickle.dumps(atomic_storage.atomic_local_filesystem, protocol=0)  # protocol 0 spells the module as text
data = data.replace(b"echotune.search.atomic_storage", b"search.atomic_storage")  # as an older version wrote it
try:
    pickle.loads(data)
    raise SystemExit("an old name resolved outside the block")
except ModuleNotFoundError:
    pass
with legacy_module_names():
    assert pickle.loads(data) is atomic_storage.atomic_local_filesystem  # the same object: no second copy
    assert sys.modules["search.atomic_storage"] is atomic_storage
assert not [name for name in sys.modules if name.split(".")[0] == "search"], "left behind"
assert importlib.util.find_spec("search") is None, "claimed afterwards"
print("OK")
"""

USER_PACKAGE = """
import sys
from echotune.search.legacy_names import legacy_module_names

with legacy_module_names():
    import search
    assert search.OWNER == "user", search.__file__
assert sys.modules["search"] is search  # kept: it is the user's
print("OK")
"""


def run(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_old_names_resolve_to_the_new_modules_inside_the_block_only(tmp_path):
    result = run(OLD_PICKLE, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr[-2000:]


def test_a_users_own_package_of_an_old_name_wins_inside_the_block(tmp_path):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "__init__.py").write_text('OWNER = "user"\n')
    result = run(USER_PACKAGE, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr[-2000:]
