"""One real tiny search per session (Ray + Optuna on 2 CPUs), shared by the search and leaderboard tests.

The probe space has one searched parameter and two sabotaged trials: trial 1 gets a learning rate that
overflows float32 (DIVERGED) and trial 2 an unknown box loss (the trainable raises: Ray ERROR).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from echotune.search.search_config import SearchConfig
from echotune.spaces import register_space

PROBE = "probe_for_tests"
POISONED_TRIAL, ERRORING_TRIAL = 1, 2


def _probe_constants() -> dict:
    return {
        "arch": "shared",
        "balance": "gradnorm",
        "model_scale": "test",
        "optimizer": "adamw",
        "lr_stage1": 3e-3,
        "lr_stage2": 1e-3,
        "lr_stage3": 3e-4,
        "stage_split": (0.3, 0.5, 0.2),
        "img_size": 64,
    }


def _probe_config(profile) -> dict:
    return {**_probe_constants(), "gn_alpha": 1.5}


def _probe(trial, profile) -> dict:
    """Test space: gn_alpha float [0, 3]; trial 1 diverges, trial 2 raises in the trainable."""
    trial.suggest_float("gn_alpha", 0.0, 3.0)
    constants = _probe_constants()
    number = getattr(trial, "number", None)  # the baseline replay has no number
    if number == POISONED_TRIAL:
        constants.update(optimizer="sgd", lr_stage1=1e38, warmup_epochs=0.0, grad_clip=0.0)
    if number == ERRORING_TRIAL:
        constants.update(loss_box="no_such_loss")
    return constants


@pytest.fixture(scope="session")
def probe_space():
    """Registered for the session (the parametrised space tests list spaces at collection, before this runs)."""
    from echotune.spaces.registry import _SPACES

    register_space(PROBE, baseline_config=_probe_config)(_probe)
    try:
        yield PROBE
    finally:
        _SPACES.pop(PROBE, None)


def probe_search(root, name, **overrides) -> SearchConfig:
    # quick-all: the probe's one parameter is searched (the quick profile would fix everything outside its list)
    values = dict(
        space=PROBE,
        profile="quick-all",
        name=name,
        storage=str(root / "results"),
        num_samples=4,
        max_epochs=4,
        img_size=64,
        concurrency=2,
        seed=0,
        final_top_k=0,
    )  # final round: tests/search/test_final_round.py
    values.update(overrides)
    return SearchConfig(**values)


@pytest.fixture(scope="session")
def e2e_search(tiny_synthetic, tmp_path_factory, probe_space):
    """(SearchConfig, run_search's summary, experiment folder) of a finished 5-trial search: the baseline,
    a diverging trial, an erroring trial (no retries: max_failures 0) and two normal ones; then, as run.py
    does, the ensemble of the top 2."""
    from echotune.search.orchestrate import run_search

    cfg = probe_search(tmp_path_factory.mktemp("e2e"), "e2e", num_samples=5, max_failures=0)
    summary = run_search(cfg, tiny_synthetic, resume=False, ensemble_top_k=2)
    return cfg, summary, Path(cfg.experiment_dir)
