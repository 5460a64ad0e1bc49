"""Source-video ids (built-in naming schemes and data.yaml's video_id_pattern) and the leakage guard."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from echotune.data.check import check_dataset, video_id
from echotune.data.check_report import format_report
from echotune.data.leakage import LeakySplitsError, flag_text, guard_leakage, leakage_summary
from echotune.data.problems import DataError
from echotune.data.split import grouped_kfold, resplit_by_video, write_split
from tests.data.export_fixture import leaky_export, make_export

LABEL = "{cls} 0.5 0.5 0.2 0.2\n\n{view}\n"
VIEWS = ("1 0 0", "0 1 0", "0 0 1")


def export_with_names(tmp: Path, name_of, n_videos: int = 12, frames: int = 3, extra_yaml: str = "") -> Path:
    """Every video has frames in train and in valid or test (so it leaks); `name_of(video, frame)` is the stem."""
    by_split = {"train": {}, "valid": {}, "test": {}}
    for v in range(n_videos):
        for f in range(frames):
            split = "train" if f == 0 else ("valid", "test")[(v + f) % 2]
            by_split[split][name_of(v, f)] = LABEL.format(cls=v % 4, view=VIEWS[v % 3])
    path = make_export(tmp, frames=by_split)
    if extra_yaml:
        path.write_text(path.read_text() + extra_yaml)
    return path


def videos_of(samples) -> set[str]:
    return {s.video for s in samples}


def assert_video_disjoint(splits: dict) -> None:
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not videos_of(splits[a]) & videos_of(splits[b]), (a, b)


# ---------------------------------------------------------------- video ids
@pytest.mark.parametrize(
    "name, expected",
    [
        ("ZmNkwqloa8KTwp8=-unnamed_1_1.mp4-15.png", "ZmNkwqloa8KTwp8=-unnamed_1_1"),
        ("ZmNkXyz-unnamed_1_1_mp4-15_png.rf.3f2a9c1b.jpg", "ZmNkXyz-unnamed_1_1"),  # Roboflow
        ("clip.AVI-3.png", "clip"),
        ("clip_MOV-0003_jpg.rf.0123456789abcdef0123456789abcdef.jpg", "clip"),
        ("study_dcm-7_png.rf.ab12.png", "study"),
        ("a.b.mp4-3_png.rf.123abc.jpg", "a.b"),
        ("frame_0001.png", None),
        ("clip_mp4-3.png", None),  # `_mp4-` is Roboflow's only with its `.rf.<hash>` suffix
        ("clip_txt-3_png.rf.ab12.jpg", None),  # not a video extension
    ],
)
def test_builtin_schemes(name, expected):
    assert video_id(Path(name)) == expected


@pytest.mark.parametrize(
    "pattern, name, expected",
    [
        (r"^(?P<video>.+)_f\d+", "p3_clip2_f07.png", "p3_clip2"),  # the named group
        (r"^(\w+?)-(\d+)", "echo-12.png", "echo"),  # else group 1
        (r"^[a-z]+\d", "abc7_x.png", "abc7"),  # else the whole match
        (r"^(?P<video>.+)_f\d+", "p3_clip2.mp4-1.png", None),  # the pattern replaces the built-in schemes
        (r"(?P<video>x*)q", "abq.png", None),  # an empty id is no id
    ],
)
def test_custom_pattern(pattern, name, expected):
    assert video_id(Path(name), re.compile(pattern)) == expected


def test_roboflow_export_leaks_and_resplits_leak_free(tmp_path):
    check = check_dataset(export_with_names(tmp_path, lambda v, f: f"Zm{v:02d}-unnamed_1_{v}_mp4-{f}_png.rf.{v}{f}ab"))
    assert check.ok, check.errors
    assert all(s.video_derived for split in check.samples.values() for s in split)
    assert len(check.leakage) == 12 and "Zm03-unnamed_1_3" in check.leakage
    splits = resplit_by_video(check, (0.5, 0.25, 0.25), seed=0)
    assert_video_disjoint(splits)
    again = check_dataset(write_split(check, splits, tmp_path / "out", "test"))
    assert again.leakage == {} and [p.kind for p in again.warnings] == []


def test_video_id_pattern_in_data_yaml_gives_ids_and_survives_a_resplit(tmp_path):
    data_yaml = export_with_names(
        tmp_path, lambda v, f: f"patient{v}_f{f:02d}", extra_yaml="video_id_pattern: '^(?P<video>.+)_f\\d+'\n"
    )
    check = check_dataset(data_yaml)
    assert check.ok, check.errors
    assert {s.video for s in check.samples["train"]} == {f"patient{v}" for v in range(12)}
    assert len(check.leakage) == 12
    folds = grouped_kfold(check, 3, 1, test_ratio=0.25, seed=0)
    assert_video_disjoint(folds)
    written = write_split(check, resplit_by_video(check, (0.5, 0.25, 0.25)), tmp_path / "out", "test")
    assert yaml.safe_load(written.read_text())["video_id_pattern"] == r"^(?P<video>.+)_f\d+"
    again = check_dataset(written)  # the written data.yaml derives the same ids
    assert again.ok and again.leakage == {}
    assert {s.video for split in again.samples.values() for s in split} == {f"patient{v}" for v in range(12)}


def test_pattern_argument_overrides_the_yaml_key(tmp_path):
    data_yaml = export_with_names(
        tmp_path, lambda v, f: f"patient{v}_f{f:02d}", extra_yaml="video_id_pattern: 'nomatch'\n"
    )
    assert not check_dataset(data_yaml).ok
    check = check_dataset(data_yaml, video_id_pattern=r"^(patient\d+)_")
    assert check.ok and len(check.leakage) == 12


def test_invalid_pattern_is_a_data_yaml_error_with_line_and_value(tmp_path):
    data_yaml = make_export(tmp_path)
    data_yaml.write_text(data_yaml.read_text() + "video_id_pattern: '(?P<video>.+'\n")
    with pytest.raises(DataError) as info:
        check_dataset(data_yaml)
    (problem,) = info.value.problems
    line = data_yaml.read_text().splitlines().index("video_id_pattern: '(?P<video>.+'") + 1
    assert (problem.path, problem.line, problem.value) == (data_yaml, line, "(?P<video>.+")
    assert str(problem) == (
        f"{data_yaml}:{line}: key 'video_id_pattern': not a valid regular expression: "
        f"missing ), unterminated subpattern at position 0 (value: '(?P<video>.+')"
    )
    with pytest.raises(DataError, match="--video-id-pattern: not a valid regular expression"):
        check_dataset(make_export(tmp_path / "b"), video_id_pattern="[")


def test_pattern_without_a_match_is_an_error_naming_line_value_and_examples(tmp_path):
    data_yaml = make_export(tmp_path)  # vidA.mp4-1.png ...: no `_f<digits>`
    data_yaml.write_text(data_yaml.read_text() + "video_id_pattern: '_f\\d+'\n")
    check = check_dataset(data_yaml)
    errors = [p for p in check.errors if p.kind == "video-id"]
    assert [p.message.split("of split ")[1][:7] for p in errors] == ["'train'", "'val' (", "'test' "]
    line = len(data_yaml.read_text().splitlines())
    assert (errors[0].path, errors[0].line, errors[0].value) == (data_yaml, line, r"_f\d+")
    assert (
        "key 'video_id_pattern': the pattern finds no source video in 3 of 3 images of split 'train' "
        "(e.g. vidA.mp4-1.png, vidA.mp4-2.png, vidB.mp4-7.png)"
    ) in errors[0].message


def test_names_without_id_are_reported_and_a_split_by_video_is_refused(tmp_path):
    data_yaml = export_with_names(tmp_path, lambda v, f: f"frame_{v:02d}{f}" if v < 2 else f"vid{v}.mp4-{f}")
    check = check_dataset(data_yaml)
    assert check.ok
    assert {k: len(v) for k, v in check.without_video_id().items()} == {"train": 2, "val": 2, "test": 2}
    assert not any(s.video_derived for s in check.samples["train"] if s.image.name.startswith("frame_"))
    report = format_report(check)
    assert (
        "  train: 2 of 12 images have no source-video id (e.g. frame_000.png, frame_010.png): leakage could not "
        "be checked for them" in report
    )
    assert "Fix: add `video_id_pattern: '<regex>'` to data.yaml" in report
    assert [p.kind for p in check.warnings].count("video-id") == 3
    for split_by_video in (lambda: resplit_by_video(check), lambda: grouped_kfold(check, 3, 0)):
        with pytest.raises(DataError) as info:
            split_by_video()
        assert str(info.value).startswith(
            f"{data_yaml}: cannot split by source video: 6 of 36 images have no source-video id in their name (e.g. "
            f"frame_000.png, frame_010.png, frame_002.png, ...)"
        )
        fix = "Add `video_id_pattern: '<regex>'` to data.yaml (or pass --video-id-pattern '<regex>')"
        assert fix in str(info.value)


def test_no_id_at_all_says_leakage_cannot_be_checked(tmp_path):
    check = check_dataset(export_with_names(tmp_path, lambda v, f: f"img{v}{f}", n_videos=3))
    assert check.leakage == {}
    assert "Leakage: cannot check: no file name gives a source-video id" in format_report(check)
    notes = []
    assert guard_leakage(check, allow=False, log=notes.append) is None  # nothing known to leak
    assert notes == [
        "note: 9 image(s) have no source-video id in their name (train 3, val 3, test 3): leakage "
        "could not be checked for them; add `video_id_pattern: '<regex>'` to data.yaml"
    ]


# ---------------------------------------------------------------- the guard
def three_way_leak(tmp: Path) -> Path:
    """v0: train+val, v1: train+test, v2: val+test, v3 and v4: all three, v5: train only."""
    where = {
        0: ("train", "valid"),
        1: ("train", "test"),
        2: ("valid", "test"),
        3: ("train", "valid", "test"),
        4: ("train", "valid", "test"),
        5: ("train",),
    }
    frames = {"train": {}, "valid": {}, "test": {}}
    for v, splits in where.items():
        for f, split in enumerate(splits):
            frames[split][f"v{v}.mp4-{f}"] = LABEL.format(cls=v % 4, view=VIEWS[v % 3])
    frames["train"]["v0.mp4-9"] = LABEL.format(cls=0, view=VIEWS[0])  # v0: train 2, val 1
    return make_export(tmp, frames=frames)


def test_summary_counts_every_pair_and_the_frames(tmp_path):
    summary = leakage_summary(check_dataset(three_way_leak(tmp_path)))
    assert (summary.videos, summary.leaky_videos, summary.frames) == (6, 5, 2 + 1 + 2 + 2 + 3 + 3)
    assert summary.pairs == {"train+val": 1, "train+test": 1, "val+test": 1, "train+val+test": 2}
    assert summary.pair_text() == "train+val 1, train+test 1, val+test 1, all three 2"
    assert summary.examples["v0"] == {"train": 2, "val": 1} and len(summary.examples) == 5


def test_guard_refuses_with_counts_examples_and_the_fix(tmp_path):
    check = check_dataset(three_way_leak(tmp_path))
    with pytest.raises(LeakySplitsError) as info:
        guard_leakage(check, allow=False, log=None)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)  # CLIs exit 2 on these
    yaml_path = check.config.yaml_path
    assert str(info.value).splitlines() == [
        f"{yaml_path}: leaky splits: 5 of 6 source videos have frames in more than one split (13 frames): "
        f"train+val 1, train+test 1, val+test 1, all three 2. Scores on these splits are optimistic (the model is "
        f"evaluated on frames of videos it trained on).",
        "  v0: train 2, val 1",
        "  v1: train 1, test 1",
        "  v2: val 1, test 1",
        "  v3: train 1, val 1, test 1",
        "  v4: train 1, val 1, test 1",
        f"Fix: echotune resplit --data {yaml_path} (or --folds K --fold I for grouped K-fold) "
        f"writes leak-free splits and a new data.yaml; use that one.",
        "Or pass --allow-leaky-splits to go on knowingly: the results are flagged as leaky.",
    ]


def test_guard_allowed_warns_and_returns_the_flag(tmp_path):
    logged = []
    flag = guard_leakage(check_dataset(three_way_leak(tmp_path)), allow=True, log=logged.append)
    assert flag["videos"] == 5 and flag["frames"] == 13 and flag["videos_checked"] == 6
    assert flag["pairs"] == {"train+val": 1, "train+test": 1, "val+test": 1, "train+val+test": 2}
    assert flag["examples"]["v0"] == {"train": 2, "val": 1}
    assert len(logged) == 1 and logged[0].startswith("WARNING: leaky splits: 5 of 6 source videos")
    assert "--allow-leaky-splits" in logged[0] and "flagged" in logged[0]
    assert flag_text(flag) == (
        "WARNING: leaky splits: 5 source videos in more than one split (train+val 1, "
        "train+test 1, val+test 1, all three 2): evaluation is optimistic"
    )


def test_guard_passes_clean_splits_silently(tmp_path):
    logged = []
    assert guard_leakage(check_dataset(make_export(tmp_path)), allow=False, log=logged.append) is None
    assert logged == []


def test_check_counts_leakage_as_one_warning(tmp_path):
    check = check_dataset(leaky_export(tmp_path))
    assert check.ok and [p.kind for p in check.warnings] == ["leakage"]
    assert check.warnings[0].message.startswith(
        "leaky splits: 1 of 4 source videos have frames in more than one split (3 frames)"
    )


def test_synthetic_set_has_derived_ids_and_no_leakage(tiny_synthetic):
    assert all(s.video_derived for split in tiny_synthetic.samples.values() for s in split)
    assert tiny_synthetic.leakage == {} and tiny_synthetic.warnings == []
    assert guard_leakage(tiny_synthetic, allow=False, log=None) is None
