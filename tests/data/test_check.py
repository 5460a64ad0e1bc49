from __future__ import annotations

import pytest

from echotune.data.check import check_dataset, video_id
from echotune.data.check_report import format_report
from echotune.data.problems import DataError
from tests.data.export_fixture import default_frames, leaky_export, make_export, write_image


def test_video_id_from_export_names(tmp_path):
    assert video_id(tmp_path / "ZmNkwqloa8KTwp8=-unnamed_1_1.mp4-15.png") == "ZmNkwqloa8KTwp8=-unnamed_1_1"
    assert video_id(tmp_path / "a.b.mp4-3_png.rf.123abc.jpg") == "a.b"
    assert video_id(tmp_path / "frame_0001.png") is None


def test_real_export_reads_and_reports_leakage(tmp_path):
    check = check_dataset(leaky_export(tmp_path))
    assert check.ok, check.errors
    assert check.view_names == ("PSAX", "PLAX", "A4C")
    assert any("using the export's order PSAX, PLAX, A4C" in n for n in check.notes)
    train, val, test = (check.stats[s] for s in ("train", "val", "test"))
    assert (train.images, val.images, test.images) == (3, 2, 1)
    assert train.boxes_per_class == {1: 1, 0: 1, 3: 1} and train.images_without_boxes == 1
    assert dict(train.views) == {1: 1, 0: 1, 2: 1}
    assert check.leakage == {"vidA": {"train": 2, "val": 1}}
    report = format_report(check)
    assert "Leakage: 1 of 4 source videos appear in more than one split (3 frames)" in report
    assert "vidA: train 2, val 1" in report
    assert "USABLE: 0 errors, 1 warning(s) (leaky splits: a search, train.py and ensemble.py refuse them" in report
    assert [p.kind for p in check.warnings] == ["leakage"] and "1 of 4 source videos" in check.warnings[0].message
    # box sizes in pixels of the 64x48 images: the AR box is 0.2 x 0.1 of the image
    assert "train:" in report and "px" in report


def test_every_error_kind_is_collected_in_one_run(tmp_path):
    frames = default_frames()
    frames["train"]["vidE.mp4-1"] = "7 0.5 0.5 0.2 0.2\n\n0 1 0\n"  # class id >= nc
    frames["train"]["vidE.mp4-2"] = "0 0.5 0.5 0.2\n\n0 1 0\n"  # wrong token count (truncated line)
    frames["train"]["vidE.mp4-3"] = "0 0.5 1.5 0.2 0.2\n\n0 1 0\n"  # out of range
    frames["train"]["vidE.mp4-4"] = "0 0.5 0.5 0.2 0.2\n\n0 1 1\n"  # not one-hot
    frames["test"] = {}  # empty split
    yaml_path = make_export(tmp_path, frames=frames)
    root = yaml_path.parent
    (root / "train/images/vidF.mp4-1.png").write_bytes(b"not a png at all")  # corrupt image
    write_image(root / "valid/images/vidC.mp4-1.jpg")  # same stem as vidC.mp4-1.png: one label for two
    check = check_dataset(yaml_path)
    kinds = sorted(p.kind for p in check.errors)
    assert kinds == ["class-id", "duplicate-stem", "empty-split", "image", "range", "token-count", "view-line"]
    by_kind = {p.kind: p for p in check.errors}
    assert by_kind["class-id"].path.name == "vidE.mp4-1.txt" and by_kind["class-id"].line == 1
    assert by_kind["image"].path.name == "vidF.mp4-1.png" and "corrupt" in by_kind["image"].message
    assert "split 'test' has no images" in by_kind["empty-split"].message
    assert "share one label file" in by_kind["duplicate-stem"].message
    assert not check.ok
    report = format_report(check)
    assert "NOT USABLE: 7 error(s)" in report
    with pytest.raises(DataError, match="7 error"):
        check.raise_if_errors()


def test_missing_view_warns_and_strict_makes_it_an_error(tmp_path):
    frames = default_frames()
    frames["train"]["vidG.mp4-1"] = "0 0.5 0.5 0.2 0.2\n"  # boxes but no view line
    frames["train"]["vidG.mp4-2"] = None  # no label file at all
    yaml_path = make_export(tmp_path, frames=frames)
    lenient = check_dataset(yaml_path)
    assert lenient.ok
    assert sorted(p.kind for p in lenient.warnings if p.kind.startswith("no-")) == ["no-label-file", "no-view"]
    assert lenient.stats["train"].images_without_view == 2
    assert "the image counts for detection only" in str(next(p for p in lenient.warnings if p.kind == "no-view"))
    strict = check_dataset(yaml_path, strict=True)
    assert sorted(p.kind for p in strict.errors) == ["no-label-file", "no-view"]


def test_view_names_absent_with_other_length_is_an_error(tmp_path):
    frames = {"train": {"v.mp4-1": "0 0 1 0\n"}, "valid": {"w.mp4-1": "1 0 0 0\n"}, "test": {"x.mp4-1": "0 0 0 1\n"}}
    check = check_dataset(make_export(tmp_path, frames=frames))
    assert any("view_names is absent and the view lines have 4 entries" in p.message for p in check.errors)


def test_view_names_from_yaml_are_used(tmp_path):
    frames = {"train": {"v.mp4-1": "0 0 1 0\n"}, "valid": {"w.mp4-1": "1 0 0 0\n"}, "test": {"x.mp4-1": "0 0 0 1\n"}}
    yaml_path = make_export(tmp_path, frames=frames)
    yaml_path.write_text(yaml_path.read_text() + "view_names: [A, B, C, D]\n")
    check = check_dataset(yaml_path)
    assert check.ok and check.view_names == ("A", "B", "C", "D")
    assert [s.labels.view for s in check.samples["train"]] == [2]
