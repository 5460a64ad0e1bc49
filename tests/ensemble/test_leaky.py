"""build_ensemble on leaky splits: refused before anything is written, or (allowed) built and flagged."""

from __future__ import annotations

import json
import shutil

import pytest

from echotune.data.check import check_dataset
from echotune.data.leakage import LeakySplitsError
from echotune.ensemble import build_ensemble


@pytest.fixture
def leaky(experiment, tmp_path):
    """A copy of the experiment and of its dataset in which one val video also has a frame in train."""
    data_root = tmp_path / "data"
    shutil.copytree(experiment.data.config.yaml_path.parent, data_root)
    image = sorted((data_root / "val" / "images").glob("*.png"))[0]  # synth-val-v0000.mp4-0.png
    video = image.name.split(".mp4-")[0]
    shutil.copy(image, data_root / "train" / "images" / f"{video}.mp4-99.png")
    shutil.copy(
        data_root / "val" / "labels" / f"{image.stem}.txt", data_root / "train" / "labels" / f"{video}.mp4-99.txt"
    )
    folder = tmp_path / "exp"
    shutil.copytree(experiment.path, folder)
    shutil.rmtree(folder / "ensemble", ignore_errors=True)
    data = check_dataset(data_root / experiment.data.config.yaml_path.name)
    assert data.ok and list(data.leakage) == [video]
    return folder, data, video


def test_leaky_splits_are_refused_before_anything_is_written(leaky):
    folder, data, video = leaky
    with pytest.raises(
        LeakySplitsError,
        match=rf"train\+val 1, train\+test 0, val\+test 0, all three 0(.|\n)*"
        rf"  {video}: train 1, val 2",
    ):
        build_ensemble(folder, data, top_k=2, tune_trials=2, device="cpu", log=lambda _: None)
    assert not (folder / "ensemble").exists()


def test_allowed_leaky_splits_warn_and_flag_metrics_json(leaky):
    folder, data, video = leaky
    logged = []
    result = build_ensemble(
        folder, data, top_k=2, tune_trials=2, device="cpu", log=logged.append, allow_leaky_splits=True
    )
    assert logged[0].startswith("WARNING: leaky splits: 1 of ")
    flag = json.loads(result.metrics_path.read_text())["leaky_splits"]
    assert (
        flag["videos"] == 1 and flag["pairs"]["train+val"] == 1 and flag["examples"] == {video: {"train": 1, "val": 2}}
    )
