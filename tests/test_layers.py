"""The import contract: every module imports only from its own layer or the layers below it.

    layer 6  benchmarks/                      measured comparisons (scripts)
    layer 5  echotune.api, echotune/__init__  the notebook API: `import echotune; echotune.run_search(...)`
    layer 4  echotune.search  (search/)       Ray machinery + the entry points (search/cli/)
    layer 3  echotune.trainables              Ray Tune adapters: config dict -> engine fit -> tune.report
    layer 2  echotune.spaces                  Optuna search spaces
    layer 1  echotune.* (the core)            data, engine, losses, metrics, ensemble, results, reporting
    layer 0  echotune.models  (models/)       architectures

The core and the models never import Ray either (`fit(cfg, report=callback)` runs without it). Every import in
a module counts, also those inside functions: a deferred import is still a dependency. The checker reads the
sources (nothing is imported), so a wrong-way import fails here even on a path no other test runs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> the package it installs as (pyproject.toml [tool.setuptools.package-dir])
FOLDERS = {
    "echotune": "echotune",
    "models": "echotune.models",
    "spaces": "echotune.spaces",
    "trainables": "echotune.trainables",
    "search": "echotune.search",
    "benchmarks": "benchmarks",
}
LAYERS = {
    "echotune.models": 0,
    "echotune": 1,
    "echotune.spaces": 2,
    "echotune.trainables": 3,
    "echotune.search": 4,
    "echotune.api": 5,
    "benchmarks": 6,
}
NAMES = {0: "models", 1: "core", 2: "spaces", 3: "trainables", 4: "search", 5: "api", 6: "benchmarks"}
RAY_FREE = {0, 1, 2}  # the models, the core and the spaces never import Ray
TOP_LEVEL_NAMES = ("models", "spaces", "trainables", "search")  # installed under echotune. only


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    reason: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.reason}"


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name (the longest matching prefix), None for third-party modules."""
    if module == "echotune":  # the package facade: lazy attributes into echotune.api
        return LAYERS["echotune.api"]
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import statement, relative ones resolved against `module`."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from echotune import spaces` imports the module echotune.spaces
            found += [
                (
                    node.lineno,
                    f"{target}.{alias.name}"
                    if layer_of(f"{target}.{alias.name}") is not None and f"{target}.{alias.name}" in _KNOWN_MODULES
                    else target,
                )
                for alias in node.names
            ]
    return found


def check_source(source: str, module: str, is_package: bool = False) -> list[Violation]:
    """Every import in `source` (as module `module`) that points up a layer, imports Ray below the Ray
    machinery, or uses a top-level name EchoTune does not install."""
    own = layer_of(module)
    out = []
    for line, target in imported_modules(ast.parse(source), module, is_package):
        top = target.split(".")[0]
        if top in TOP_LEVEL_NAMES:
            out.append(Violation(module, line, target, f"no top-level `{top}` is installed: use echotune.{top}"))
            continue
        if top == "ray" and own in RAY_FREE:
            out.append(Violation(module, line, target, f"the {NAMES[own]} layer is Ray-free"))
            continue
        layer = layer_of(target)
        if layer is not None and own is not None and layer > own:
            out.append(
                Violation(
                    module, line, target, f"{NAMES[own]} (layer {own}) must not import {NAMES[layer]} (layer {layer})"
                )
            )
    return out


def project_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


_KNOWN_MODULES = {module_name(p) for p in project_files()}


def test_every_project_file_is_in_a_layer():
    assert project_files(), "no sources found"
    for path in project_files():
        assert layer_of(module_name(path)) is not None, path


def test_imports_point_down_only():
    violations = []
    for path in project_files():
        violations += check_source(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not violations, "imports against the layers:\n" + "\n".join(map(str, violations))


# The four wrong-way imports the layering redesign removed (issue 17), as they were written then (before the
# namespaced install they read `from search.trial_table ...`; both spellings must fail).
WRONG_WAY = [
    ("echotune.ensemble.build", "from echotune.search.trial_table import read_leaderboard"),
    ("echotune.ensemble.build", "from search.trial_table import read_leaderboard"),
    ("echotune.ensemble.members", "def f():\n    from echotune.trainables.trial import CHECKPOINT_FILE\n"),
    ("echotune.ensemble.members", "from trainables.common import CHECKPOINT_FILE"),
    ("echotune.trainables.trial", "from echotune.search.cluster import require_dataset_on_node"),
    ("echotune.models.dual", "def f():\n    from echotune.engine.checkpoint import load_error_reason\n"),
    ("echotune.models.dual", "from ..engine.checkpoint import load_error_reason"),
]


@pytest.mark.parametrize(("module", "source"), WRONG_WAY)
def test_the_checker_catches_the_old_wrong_way_imports(module, source):
    assert check_source(source, module), f"{module}: {source!r} passed the checker"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("echotune.engine.fit", "import ray"),
        ("echotune.spaces.common", "from ray import tune"),
        ("echotune.data.check", "from echotune import spaces"),
        ("echotune.spaces.common", "from echotune.trainables import common"),
        ("echotune.engine.build", "from echotune.api import run_search"),
    ],
)
def test_the_checker_catches_other_upward_imports(module, source):
    assert check_source(source, module)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("echotune.engine.build", "from echotune.models import create_model"),
        ("echotune.search.tuner", "from echotune.trainables import train_trial\nimport ray"),
        ("echotune.models.dual", "from .weights import load_error_reason"),
        ("echotune.api", "from echotune.search.orchestrate import run_search"),
    ],
)
def test_the_checker_allows_downward_imports(module, source):
    assert check_source(source, module) == []
