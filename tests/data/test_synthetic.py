from __future__ import annotations

import re
import threading
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from echotune.data import synthetic as sy

SMALL = sy.SyntheticSpec(train_videos=8, val_videos=8, test_videos=8, frames_per_video=2, img_size=96, seed=3)
STEM = re.compile(r"^(synth-(train|val|test)-v\d{4}\.mp4)-(\d+)$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return sy.generate(tmp_path_factory.mktemp("synth") / "a", SMALL)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def records(data_yaml: Path):
    """[(split, stem, image path, text)] for every image of every split."""
    out = []
    for split in sy.SPLITS:
        for image in sorted((data_yaml.parent / split / "images").glob("*.png")):
            label = data_yaml.parent / split / "labels" / f"{image.stem}.txt"
            out.append((split, image.stem, image, label.read_text()))
    return out


def parse_strict(text: str) -> tuple[list[tuple[int, list[float]]], list[int]]:
    """Check the exact on-disk label layout and return (boxes, one-hot view)."""
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    if len(lines) > 1:
        assert lines[-2] == "" and all(lines[:-2]), f"expected box lines, ONE blank line, view line: {text!r}"
    boxes = []
    for line in lines[:-2]:
        tokens = line.split()
        assert len(tokens) == 5 and all(re.fullmatch(r"\d\.\d{6}", t) for t in tokens[1:]), line
        cls, values = int(tokens[0]), [float(t) for t in tokens[1:]]
        assert 0 <= cls < len(sy.CLASS_NAMES) and all(0 <= v <= 1 for v in values) and values[2] > 0 and values[3] > 0
        boxes.append((cls, values))
    view = [int(t) for t in lines[-1].split()]
    assert len(view) == 3 and sorted(view) == [0, 0, 1], lines[-1]
    return boxes, view


def test_deterministic_and_seed_dependent(tmp_path, dataset):
    again = sy.generate(tmp_path / "b", SMALL)
    assert all_files(again.parent) == all_files(dataset.parent)
    other = sy.generate(tmp_path / "c", sy.SyntheticSpec(**{**SMALL.__dict__, "seed": 4}))
    assert all_files(other.parent) != all_files(dataset.parent)


def test_data_yaml(dataset):
    doc = yaml.safe_load(dataset.read_text())
    assert doc["train"] == "train/images" and doc["val"] == "val/images" and doc["test"] == "test/images"
    assert doc["nc"] == 4 and doc["names"] == list(sy.CLASS_NAMES) and doc["view_names"] == list(sy.VIEW_NAMES)
    assert doc.get("path", ".") == "."


def test_on_disk_format_and_videos(dataset):
    recs = records(dataset)
    assert len(recs) == 3 * 8 * 2
    split_of, view_of = {}, {}
    for split, stem, image, text in recs:
        match = STEM.match(stem)
        assert match and match.group(2) == split, stem
        assert (image.parent.parent / "labels" / f"{stem}.txt").is_file()
        img = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        assert img.shape == (SMALL.img_size, SMALL.img_size, 3) and img.dtype == np.uint8
        _, view = parse_strict(text)
        video = match.group(1)
        assert split_of.setdefault(video, split) == split  # a video never spans two splits
        assert view_of.setdefault(video, view) == view  # nor changes view
    for split in sy.SPLITS:  # no stray labels without images
        assert len(list((dataset.parent / split / "labels").glob("*.txt"))) == 16


def test_classes_views_and_empty_frames(dataset):
    seen = defaultdict(lambda: (set(), set()))
    empty = 0
    for split, _, _, text in records(dataset):
        boxes, view = parse_strict(text)
        view_name = sy.VIEW_NAMES[view.index(1)]
        classes = {sy.CLASS_NAMES[c] for c, _ in boxes}
        assert classes <= set(sy.VIEW_JETS[view_name]), (view_name, classes)
        assert len(boxes) <= 2
        seen[split][0].add(view_name)
        seen[split][1].update(classes)
        empty += not boxes
    for split in sy.SPLITS:
        assert seen[split] == (set(sy.VIEW_NAMES), set(sy.CLASS_NAMES)), split
    assert empty > 0


def test_boxes_sit_on_coloured_jets(dataset):
    """Inside every box the jet's colour dominates grey B-mode tissue, and the box is tight around it."""
    S, n_boxes = SMALL.img_size, 0
    for _, _, image, text in records(dataset):
        boxes, _ = parse_strict(text)
        img = cv2.imread(str(image))
        sat = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1].astype(float)
        outside = img.max(axis=2) > 20  # lit pixels (fan + overlays) not in any box
        for _, (cx, cy, w, h) in boxes:
            x0, x1 = round((cx - w / 2) * S), round((cx + w / 2) * S)
            y0, y1 = round((cy - h / 2) * S), round((cy + h / 2) * S)
            outside[y0:y1, x0:x1] = False
        for _, (cx, cy, w, h) in boxes:
            n_boxes += 1
            x0, x1 = round((cx - w / 2) * S), round((cx + w / 2) * S)
            y0, y1 = round((cy - h / 2) * S), round((cy + h / 2) * S)
            box = sat[y0:y1, x0:x1]
            assert (box > 100).mean() > 0.3 and box.mean() > sat[outside].mean() + 60
            # tight: the jet touches all four sides of its box
            assert box[0].max() > 60 and box[-1].max() > 60 and box[:, 0].max() > 60 and box[:, -1].max() > 60
    assert n_boxes > 30


def test_render_frame_standalone():
    img, labels = sy.render_frame(np.random.default_rng(1), "A4C", 128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert all(sy.CLASS_NAMES[c] in sy.VIEW_JETS["A4C"] and len(box) == 4 for c, box in labels)
    with pytest.raises(ValueError, match="view"):
        sy.render_frame(np.random.default_rng(1), "XYZ", 128)


def test_ensure_synthetic_reuses_and_survives_a_race(tmp_path):
    spec = sy.SyntheticSpec(4, 4, 4, 1, 64, 0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(sy.ensure_synthetic(tmp_path, spec))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = tmp_path / f"synthetic-{spec.key()}" / "data.yaml"
    assert results == [first, first] and first.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]  # no temp folders left behind
    stamps = {p: p.stat().st_mtime_ns for p in first.parent.rglob("*")}
    assert sy.ensure_synthetic(tmp_path, spec) == first
    assert {p: p.stat().st_mtime_ns for p in first.parent.rglob("*")} == stamps
    assert spec.key() == sy.SyntheticSpec(4, 4, 4, 1, 64, 0).key() != sy.SyntheticSpec(4, 4, 4, 1, 64, 1).key()


def test_generate_refuses_existing_folder(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        sy.generate(tmp_path / "out", sy.SyntheticSpec(1, 1, 1, 1, 64, 0))


def test_contact_sheet(dataset, tmp_path):
    out = sy.contact_sheet(dataset, tmp_path / "sheet.png", n=6, split="val")
    sheet = cv2.imread(str(out))
    assert sheet.shape == (2 * 256, 3 * 256, 3) and sheet.std() > 10


@pytest.mark.parametrize(
    "field, value",
    [
        ("img_size", 32),
        ("train_videos", 0),
        ("frames_per_video", -1),
        ("seed", -1),
        ("val_videos", 2.5),
        ("test_videos", True),
    ],
)
def test_invalid_spec(field, value):
    with pytest.raises(ValueError, match=rf"{field}.*{re.escape(repr(value))}"):
        sy.SyntheticSpec(**{field: value})


def test_cli(tmp_path, capsys):
    args = [
        "--out",
        str(tmp_path / "d"),
        "--train-videos",
        "3",
        "--val-videos",
        "3",
        "--test-videos",
        "3",
        "--frames-per-video",
        "1",
        "--img-size",
        "64",
        "--seed",
        "5",
    ]
    assert sy.main(args + ["--contact-sheet", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "d" / "data.yaml").is_file() and (tmp_path / "s.png").stat().st_size > 0
    assert sy.main(args) == 1 and "already exists" in capsys.readouterr().err
    assert sy.main(args + ["--force"]) == 0
    assert sy.main(args[:2] + ["--img-size", "10"]) == 2 and "img_size" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert sy.main(["--out", str(tmp_path / "other"), "--force"]) == 1 and (tmp_path / "other" / "keep.txt").exists()
    with pytest.raises(SystemExit) as exc:
        sy.main(["--help"])
    assert exc.value.code == 0 and "--contact-sheet" in capsys.readouterr().out
