"""Export a checked EchoTune dataset in the plain Ultralytics YOLO detection layout (no view labels).

    from echotune.data.check import check_dataset
    from echotune.data.yolo_export import export_yolo
    export = export_yolo(check_dataset("data.yaml"), "out/yolo")   # out/yolo/data.yaml for `yolo train data=...`

What a detector-only tool such as Ultralytics reads, written from what EchoTune's check parsed (so both see the
same boxes, the same images and the same splits):

    OUT/data.yaml                   path: OUT; train/val/test: the split lists; names: {id: name}
    OUT/<split>.txt                 one image path per line (OUT/<split>/images/<name>), in EchoTune's order
    OUT/<split>/images/<name>       a link to the original image (symlink; hard link or copy where not allowed)
    OUT/<split>/labels/<stem>.txt   `cls cx cy w h` lines, normalised, 6 decimals; empty for a frame without jets

Label lines come from the parsed labels (echotune.data.labels): a 4-corner polygon becomes its enclosing box, a
YOLO box passes through (clipped to the image as the check clipped it), and the one-hot view line is dropped
(Ultralytics would read it as a malformed box). The source video of a frame stays in its file name.
Ray-free, torch-free: usable on its own to train any YOLO tool on an EchoTune dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from echotune.atomic import atomic_write_bytes, atomic_write_text
from echotune.data.check import CheckedDataset, Sample
from echotune.data.config import DATA_YAML, SPLITS
from echotune.data.labels import ImageLabels

LINK_KINDS = ("symlink", "hardlink", "copy")


@dataclass
class YoloExport:
    """Where an export went: `data_yaml`, per split the list file and the exported image paths (same order as
    the CheckedDataset's samples), and how each image got there (link kind -> count)."""

    root: Path
    data_yaml: Path
    lists: dict[str, Path] = field(default_factory=dict)
    images: dict[str, list[Path]] = field(default_factory=dict)
    links: dict[str, int] = field(default_factory=dict)


def yolo_lines(labels: ImageLabels) -> list[str]:
    """`cls cx cy w h` per box (normalised, 6 decimals) from labels with (N, 4) normalised xyxy boxes; no view."""
    boxes = np.asarray(labels.boxes, np.float64).reshape(-1, 4)
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    return [
        f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for c, (cx, cy), (w, h) in zip(labels.classes, centres, sizes)
    ]


def link_image(source: Path, target: Path, prefer: str = "symlink") -> str:
    """Make `target` show `source`: a symlink (absolute), else a hard link, else a copy, starting at `prefer`.
    Returns the kind used. Filesystems without symlinks (some network mounts, Windows without the privilege)
    fall through to the next kind."""
    if prefer not in LINK_KINDS:
        raise ValueError(f"prefer must be one of {LINK_KINDS}, got {prefer!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    for kind in LINK_KINDS[LINK_KINDS.index(prefer) :]:
        try:
            if kind == "symlink":
                os.symlink(Path(source).resolve(), target)
            elif kind == "hardlink":
                os.link(source, target)
            else:
                atomic_write_bytes(target, Path(source).read_bytes())
            return kind
        except OSError:
            if kind == "copy":
                raise
    raise AssertionError("unreachable")


def _export_split(split: str, samples: list[Sample], root: Path, prefer: str, links: dict[str, int]) -> list[Path]:
    images = []
    for sample in samples:
        image = root / split / "images" / sample.image.name
        kind = link_image(sample.image, image, prefer)
        links[kind] = links.get(kind, 0) + 1
        lines = yolo_lines(sample.labels)
        label = root / split / "labels" / Path(sample.image.name).with_suffix(".txt")
        atomic_write_text(label, "".join(line + "\n" for line in lines))
        images.append(image)
    return images


def export_yolo(data: CheckedDataset, out_dir: str | os.PathLike, prefer: str = "symlink") -> YoloExport:
    """Write the Ultralytics layout of `data` (a checked dataset without errors) into `out_dir`, which must be
    empty or absent (an export never mixes with an older one). Every split the check found is exported,
    with its images in the check's order."""
    data.raise_if_errors()
    root = Path(out_dir).resolve()
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; export into a new folder")
    root.mkdir(parents=True, exist_ok=True)
    export = YoloExport(root, root / DATA_YAML)
    for split in SPLITS:
        samples = data.samples.get(split) or []
        if not samples:
            continue
        export.images[split] = _export_split(split, samples, root, prefer, export.links)
        export.lists[split] = atomic_write_text(root / f"{split}.txt", "".join(f"{p}\n" for p in export.images[split]))
    document = {
        "path": str(root),
        **{s: f"{s}.txt" for s in export.lists},
        "names": dict(enumerate(data.config.names)),
        "nc": data.config.nc,
    }
    atomic_write_text(export.data_yaml, yaml.safe_dump(document, sort_keys=False))
    return export
