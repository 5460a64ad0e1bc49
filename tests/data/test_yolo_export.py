from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from echotune.data.check import check_dataset
from echotune.data.config import label_path_for
from echotune.data.labels import ImageLabels, parse_label_file
from echotune.data.yolo_export import export_yolo, link_image, yolo_lines
from tests.data.export_fixture import make_export


@pytest.fixture
def exported(tmp_path):
    """The hand-made export (polygon and YOLO lines, view lines, a box-less frame) and its Ultralytics layout."""
    data = check_dataset(make_export(tmp_path / "src"))
    assert data.ok, data.errors
    return data, export_yolo(data, tmp_path / "yolo")


def label_text(export, split: str, stem: str) -> str:
    return (export.root / split / "labels" / f"{stem}.txt").read_text()


def test_polygon_becomes_its_enclosing_box(exported):
    _, export = exported
    # `1 0.1 0.2 0.3 0.2 0.35 0.4 0.1 0.4`: x 0.1..0.35, y 0.2..0.4 -> centre (0.225, 0.3), size 0.25 x 0.2
    assert label_text(export, "train", "vidA.mp4-1") == "1 0.225000 0.300000 0.250000 0.200000\n"


def test_yolo_boxes_pass_through_and_view_lines_are_dropped(exported):
    _, export = exported
    assert label_text(export, "train", "vidA.mp4-2") == (
        "0 0.500000 0.500000 0.200000 0.100000\n3 0.250000 0.250000 0.100000 0.100000\n"
    )
    assert label_text(export, "train", "vidB.mp4-7") == ""  # only a view line: a background frame
    for label in export.root.glob("*/labels/*.txt"):
        assert all(len(line.split()) == 5 for line in label.read_text().splitlines()), label


def test_exported_labels_parse_back_to_the_same_boxes(exported):
    data, export = exported
    for split, samples in data.samples.items():
        for sample, image in zip(samples, export.images[split]):
            parsed, problems = parse_label_file(label_path_for(image), data.config.nc, len(data.view_names))
            assert not [p for p in problems if p.is_error]
            np.testing.assert_allclose(parsed.boxes, sample.labels.boxes, atol=1e-6)
            np.testing.assert_array_equal(parsed.classes, sample.labels.classes)


def test_split_lists_hold_the_same_images_in_the_same_order(exported):
    data, export = exported
    assert set(export.lists) == {"train", "val", "test"}
    for split, samples in data.samples.items():
        listed = [Path(line) for line in export.lists[split].read_text().splitlines()]
        assert [p.name for p in listed] == [s.image.name for s in samples]
        assert listed == export.images[split]
        for path, sample in zip(listed, samples):
            assert path.resolve() == sample.image.resolve()  # the link shows the original image
            # Ultralytics' rule: the last /images/ becomes /labels/, the suffix .txt
            assert label_path_for(path).is_file()


def test_data_yaml_names_the_classes_and_split_lists(exported):
    data, export = exported
    doc = yaml.safe_load(export.data_yaml.read_text())
    assert doc["names"] == dict(enumerate(data.config.names)) and doc["nc"] == 4
    assert Path(doc["path"]) == export.root
    assert {s: export.root / doc[s] for s in ("train", "val", "test")} == export.lists
    assert "view_names" not in doc


def test_images_are_symlinked_by_default(exported):
    _, export = exported
    assert export.links == {"symlink": 6}
    assert all(p.is_symlink() for images in export.images.values() for p in images)


def test_link_falls_back_to_hard_link_then_copy(tmp_path, monkeypatch):
    source = tmp_path / "a.png"
    source.write_bytes(b"png bytes")

    def refuse(*args, **kwargs):
        raise OSError("not allowed here")

    monkeypatch.setattr(os, "symlink", refuse)
    assert link_image(source, tmp_path / "out" / "hard.png") == "hardlink"
    assert os.path.samefile(source, tmp_path / "out" / "hard.png")
    monkeypatch.setattr(os, "link", refuse)
    assert link_image(source, tmp_path / "out" / "copy.png") == "copy"
    copied = tmp_path / "out" / "copy.png"
    assert copied.read_bytes() == b"png bytes" and not copied.is_symlink() and not os.path.samefile(source, copied)


def test_refuses_a_folder_that_is_not_empty(tmp_path):
    data = check_dataset(make_export(tmp_path / "src"))
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo" / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export_yolo(data, tmp_path / "yolo")


def test_yolo_lines_of_no_boxes_is_empty():
    assert yolo_lines(ImageLabels.empty()) == []
