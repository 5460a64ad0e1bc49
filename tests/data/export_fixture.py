"""Build small datasets in the real export's on-disk format (Regurgitation-YOLODataset style) for tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

EXPORT_YAML = """names:
- AR
- MR
- PR
- TR
nc: 4
train: ../{name}/train/images
val: ../{name}/valid/images
test: ../{name}/test/images
"""


def write_image(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def write_frame(root: Path, split_dir: str, stem: str, label: str | None, h: int = 48, w: int = 64) -> Path:
    """An image `<root>/<split_dir>/images/<stem>.png` and, unless label is None, its label text."""
    image = write_image(root / split_dir / "images" / f"{stem}.png", h, w, seed=len(stem))
    if label is not None:
        label_path = root / split_dir / "labels" / f"{stem}.txt"
        label_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.write_text(label)
    return image


def make_export(
    tmp: Path, name: str = "Regurgitation-YOLODataset-1new", frames: dict[str, dict[str, str | None]] | None = None
) -> Path:
    """A dataset like the real export; `frames` maps split folder -> {stem: label text}. Returns data.yaml."""
    root = tmp / name
    frames = frames or default_frames()
    for split_dir, by_stem in frames.items():
        (root / split_dir / "images").mkdir(parents=True, exist_ok=True)
        for stem, label in by_stem.items():
            write_frame(root, split_dir, stem, label)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(EXPORT_YAML.format(name=name))
    return yaml_path


def default_frames() -> dict[str, dict[str, str | None]]:
    """Polygon and YOLO lines, blank separators, one box-less frame; leak-free (each video in one split)."""
    return {
        "train": {
            "vidA.mp4-1": "1 0.1 0.2 0.3 0.2 0.35 0.4 0.1 0.4\n\n0 1 0\n",  # MR polygon, PLAX
            "vidA.mp4-2": "0 0.5 0.5 0.2 0.1\n3 0.25 0.25 0.1 0.1\n\n1 0 0\n",  # AR + TR YOLO, PSAX
            "vidB.mp4-7": "\n0 0 1\n",  # no box, A4C
        },
        "valid": {
            "vidH.mp4-9": "2 0.5 0.5 0.2 0.2\n\n1 0 0\n",
            "vidC.mp4-1": "1 0.6 0.6 0.2 0.2\n\n0 0 1\n",
        },
        "test": {
            "vidD.mp4-3": "3 0.4 0.4 0.3 0.3\n\n0 0 1\n",
        },
    }


def leaky_frames() -> dict[str, dict[str, str | None]]:
    """`default_frames` with video `vidA` leaking train -> valid (its frame 9 in valid), as real exports leak."""
    frames = default_frames()
    frames["valid"] = {"vidA.mp4-9": frames["valid"].pop("vidH.mp4-9"), **frames["valid"]}
    return frames


def leaky_export(tmp: Path, name: str = "Regurgitation-YOLODataset-1new") -> Path:
    """The default export with `vidA` in train (2 frames) and valid (1 frame). Returns data.yaml."""
    return make_export(tmp, name, leaky_frames())
