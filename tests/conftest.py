"""Shared test setup: one thread per library (2-core CI), fixed seeds, and a hand-made export builder."""
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


TINY_TRAIN = {"model_scale": "test", "img_size": 64, "batch_size": 8, "cpus": 1, "epochs": 3,
              "cache_images": True, "seed": 0}
