"""A real, tiny experiment folder for the ensemble tests: three trained members, a leaderboard, search.json.

The dataset is a copy of the session's tiny synthetic set with every jet relabelled as class 0 (so a model
trained for seconds already finds some: mAP > 0, the metric comparisons are not all zeros) and with non-square
val (64 x 72) and test (80 x 64) images made by padding, so the letterbox pads and `to_original` matters.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import TINY_TRAIN

# Short but learning: no augmentation, a quick EMA, AdamW; ~3-5 s per shared member on one CPU thread.
MEMBER_TRAIN = {
    **TINY_TRAIN,
    "epochs": 8,
    "batch_size": 4,
    "ema_decay": 0.8,
    "optimizer": "adamw",
    "lr_stage1": 1e-2,
    "lr_stage2": 5e-3,
    "lr_stage3": 2e-3,
    "warmup_epochs": 0.0,
    "aug_strength_stage1": 0.0,
    "aug_strength_stage2": 0.0,
    "aug_strength_stage3": 0.0,
    "mixup_alpha": 0.0,
    "hard_mining_frac": 0.0,
    "balance": "fixed",
}
MEMBERS = {
    "t_shared0": {**MEMBER_TRAIN, "seed": 0},
    "t_shared1": {**MEMBER_TRAIN, "seed": 1},
    "t_dual": {**MEMBER_TRAIN, "arch": "dual", "classifier": "resnet10t", "epochs": 3},
}
PAD = {"val": (0, 8), "test": (16, 0)}  # (rows at the bottom, columns at the right)


@dataclass
class Experiment:
    path: Path  # results/<name>
    data: object  # CheckedDataset of the modified set
    checkpoints: dict  # trial id -> Ray-style checkpoint folder holding last.pt
    scores: dict  # trial id -> best val/score


def _relabel_and_pad(label: Path, image: Path, pad: tuple[int, int]) -> None:
    pixels = cv2.imread(str(image), cv2.IMREAD_COLOR)
    h, w = pixels.shape[:2]
    bottom, right = pad
    if bottom or right:
        cv2.imwrite(str(image), cv2.copyMakeBorder(pixels, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=0))
    sx, sy = w / (w + right), h / (h + bottom)
    lines = []
    for line in label.read_text().splitlines():
        tokens = line.split()
        if len(tokens) == 5:  # class xc yc w h (normalised): class 0, rescaled into the padded frame
            xc, yc, bw, bh = map(float, tokens[1:])
            line = f"0 {xc * sx:.6f} {yc * sy:.6f} {bw * sx:.6f} {bh * sy:.6f}"
        lines.append(line)
    label.write_text("\n".join(lines) + "\n")


def make_dataset(source_yaml: Path, root: Path):
    from echotune.data.check import check_dataset

    shutil.copytree(source_yaml.parent, root)
    for split in ("train", "val", "test"):
        for image in sorted((root / split / "images").glob("*.png")):
            label = root / split / "labels" / f"{image.stem}.txt"
            _relabel_and_pad(label, image, PAD.get(split, (0, 0)))
    data = check_dataset(root / source_yaml.name)
    assert data.ok, data.errors
    return data


def leaderboard_row(trial_id: str, config: dict, score, checkpoint, status: str = "TERMINATED") -> dict:
    from echotune.results.leaderboard import SCHEMA

    row = {field.name: None for field in SCHEMA}
    row.update(
        {
            "trial_id": trial_id,
            "experiment": "exp",
            "space": "test",
            "arch": config.get("arch", "shared"),
            "is_baseline": False,
            "status": status,
            "stopped_early": False,
            "epochs_trained": config["epochs"],
            "epochs_planned": config["epochs"],
            "best/val/score": score,
            "checkpoint_path": None if checkpoint is None else str(checkpoint),
            "config_json": json.dumps(config, sort_keys=True),
        }
    )
    return row


@pytest.fixture(scope="session")
def experiment(tiny_synthetic, tmp_path_factory) -> Experiment:
    from echotune.engine import fit
    from echotune.results.leaderboard import write_leaderboard

    root = tmp_path_factory.mktemp("ensemble")
    data = make_dataset(Path(tiny_synthetic.config.yaml_path), root / "data")
    path = root / "results" / "exp"
    checkpoints, scores, rows = {}, {}, []
    for trial_id, config in MEMBERS.items():
        result = fit(config, data, out_dir=root / "runs" / trial_id, log=lambda _: None)
        folder = path / f"trial_{trial_id}" / "checkpoint_000001"
        folder.mkdir(parents=True)
        shutil.copy(result.best_checkpoint, folder / "last.pt")  # Ray's best checkpoint: that epoch's last.pt
        checkpoints[trial_id], scores[trial_id] = folder, result.best["val/score"]
        rows.append(
            leaderboard_row(trial_id, {**config, "arch": config.get("arch", "shared")}, scores[trial_id], folder)
        )
    # Rows the builder must skip even though they rank first: diverged, errored, no checkpoint.
    rows += [
        leaderboard_row("t_diverged", MEMBER_TRAIN, 0.99, checkpoints["t_shared0"], "DIVERGED"),
        leaderboard_row("t_error", MEMBER_TRAIN, 0.98, checkpoints["t_shared0"], "ERROR"),
        leaderboard_row("t_nockpt", MEMBER_TRAIN, 0.97, None),
    ]
    write_leaderboard(rows, path / "leaderboard.parquet")
    (path / "search.json").write_text(
        json.dumps({"config": {"space": "test", "profile": "quick"}, "data_yaml": str(data.config.yaml_path)})
    )
    return Experiment(path, data, checkpoints, scores)


def ranked(experiment: Experiment) -> list[str]:
    return sorted(experiment.scores, key=lambda t: (-experiment.scores[t], t))


def write_image(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    """A random uint8 image of `shape` (H, W) grey or (H, W, 3) BGR, written with OpenCV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))
    return path
