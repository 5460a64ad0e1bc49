"""Shared test setup: one thread per library (2-core CI), fixed seeds, a small synthetic set, and the quick tier.

Quick tier, for the inner development loop: `python -m pytest -m "not slow and not ray"` (about 2 minutes on 2
cores; README). Besides the tests marked `slow` or `ray` by hand, every test that needs a session fixture which
trains a real experiment (HEAVY_FIXTURES) is marked `slow` here, so one quick test cannot pull a 30 s build into
the tier. The full suite prints, at its end, how long the quick tier's tests took within it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
cv2.setNumThreads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic echo set (64 px; 8/4/4 videos x 2 frames), checked once per session."""
    from echotune.data.check import check_dataset
    from echotune.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(train_videos=8, val_videos=4, test_videos=4, frames_per_video=2, img_size=64, seed=1)
    data = check_dataset(generate(tmp_path_factory.mktemp("synth") / "data", spec))
    assert data.ok, data.errors
    return data


TINY_TRAIN = {
    "model_scale": "test",
    "img_size": 64,
    "batch_size": 8,
    "cpus": 1,
    "epochs": 3,
    "cache_images": True,
    "seed": 0,
}


# Session fixtures that train models (tests/ensemble/conftest.py's experiment: a small search's trials, ~30 s on
# 2 cores; tests/reliability's failed_writes: a checkpoint of a real fit): their tests belong to the full suite.
HEAVY_FIXTURES = ("experiment", "failed_writes")
QUICK_TIER = "not slow and not ray"
_quick_seconds: dict[str, float] = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in HEAVY_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _in_quick_tier(item) -> bool:
    return item.get_closest_marker("slow") is None and item.get_closest_marker("ray") is None


def pytest_runtest_makereport(item, call):
    if _in_quick_tier(item):
        _quick_seconds[item.nodeid] = _quick_seconds.get(item.nodeid, 0.0) + call.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _quick_seconds:
        terminalreporter.write_line(
            f'quick tier (-m "{QUICK_TIER}"): {len(_quick_seconds)} of these tests, '
            f"{sum(_quick_seconds.values()):.0f} s of their setup, call and teardown"
        )
