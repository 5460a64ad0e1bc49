"""Read Ray state saved before EchoTune's packages moved under `echotune.` (issue 17).

Ray pickles some objects of a search by module path into its experiment files: the trial folder namer
(`search.tuner.trial_dirname`), the crash-safe storage filesystem (`search.atomic_storage`). Since the move those
are `echotune.search.tuner`, ... and the bare names are no longer installed, so an older experiment's leaderboard
failed with `No module named 'search'`. `legacy_module_names()` lets the old names resolve to the new modules
while such files are read, and only then: afterwards nothing claims `search`, `trainables`, `spaces` or `models`,
and a user's own package of such a name wins even inside the block. Continuing such a search (`--resume`) is
refused with LegacyExperimentError: Ray requires the trainable it started with (`trainables.train_any`), which
this version replaced by `train_trial`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator

LEGACY_PACKAGES = ("search", "trainables", "spaces", "models")


class LegacyExperimentError(ValueError):
    """An experiment saved by a version before the move that this version cannot continue (only read)."""


class _Alias(importlib.abc.Loader):
    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module  # the new module object itself: one module under two names, never a second copy

    def exec_module(self, module) -> None:
        pass


class _LegacyFinder(importlib.abc.MetaPathFinder):
    """Consulted first (a submodule of an aliased package would otherwise load a second copy from its folder),
    but it leaves a top-level name alone when something on sys.path provides it: a user's own package."""

    def find_spec(self, fullname: str, path=None, target=None):
        root = fullname.split(".")[0]
        if root not in LEGACY_PACKAGES:
            return None
        if fullname == root and importlib.machinery.PathFinder.find_spec(root) is not None:
            return None
        if fullname != root and not getattr(sys.modules.get(root), "__name__", "").startswith("echotune."):
            return None  # the user's own package: its submodules are its own
        try:
            module = importlib.import_module(f"echotune.{fullname}")
        except ImportError:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(module), is_package=hasattr(module, "__path__"))


@contextlib.contextmanager
def legacy_module_names() -> Iterator[None]:
    """Within the block, `search.tuner` & co. import as `echotune.search.tuner` & co. (see the module doc)."""
    before = set(sys.modules)
    finder = _LegacyFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if name.split(".")[0] in LEGACY_PACKAGES and sys.modules[name].__name__.startswith("echotune."):
                del sys.modules[name]
