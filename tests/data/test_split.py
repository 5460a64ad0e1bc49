from __future__ import annotations

from collections import Counter

import pytest

from echotune.data.check import check_dataset
from echotune.data.split import grouped_kfold, resplit_by_video, write_split
from tests.data.export_fixture import make_export

CLASSES_OF_VIEW = {0: (0, 2, 3), 1: (0, 1), 2: (1, 3)}


def leaky_export(tmp_path, n_videos=24, frames_per_video=3):
    """Every video has frames in two splits (the leak real exports have)."""
    frames = {"train": {}, "valid": {}, "test": {}}
    for v in range(n_videos):
        view = v % 3
        cls = CLASSES_OF_VIEW[view][(v // 3) % len(CLASSES_OF_VIEW[view])]
        onehot = " ".join("1" if i == view else "0" for i in range(3))
        for f in range(frames_per_video):
            split = ("train", "valid", "test")[(v + f) % 3] if f else "train"
            frames[split][f"video{v:02d}.mp4-{f}"] = f"{cls} 0.5 0.5 0.2 0.2\n\n{onehot}\n"
    return make_export(tmp_path, frames=frames)


def videos(samples):
    return {s.video for s in samples}


def test_resplit_removes_leakage_keeps_every_image_and_is_deterministic(tmp_path):
    check = check_dataset(leaky_export(tmp_path))
    assert len(check.leakage) == 24
    splits = resplit_by_video(check, (0.6, 0.2, 0.2), seed=3)
    assert set(splits) == {"train", "val", "test"}
    assert not (
        videos(splits["train"]) & videos(splits["val"])
        or videos(splits["train"]) & videos(splits["test"])
        or videos(splits["val"]) & videos(splits["test"])
    )
    all_images = sorted(s.image for split in check.samples.values() for s in split)
    assert sorted(s.image for split in splits.values() for s in split) == all_images
    sizes = {k: len(videos(v)) for k, v in splits.items()}
    for name, target in {"train": 14.4, "val": 4.8, "test": 4.8}.items():
        assert abs(sizes[name] - target) <= 1, sizes  # whole videos: within one video of the ratio
    again = resplit_by_video(check, (0.6, 0.2, 0.2), seed=3)
    assert {k: [s.image for s in v] for k, v in again.items()} == {k: [s.image for s in v] for k, v in splits.items()}
    other = resplit_by_video(check, (0.6, 0.2, 0.2), seed=4)
    assert {k: videos(v) for k, v in other.items()} != {k: videos(v) for k, v in splits.items()}


def test_resplit_stratifies_classes_and_views(tmp_path):
    check = check_dataset(leaky_export(tmp_path, n_videos=36))
    splits = resplit_by_video(check, (0.5, 0.25, 0.25), seed=0)
    for samples in splits.values():
        classes = Counter(c for s in samples for c in s.labels.classes.tolist())
        views = Counter(s.labels.view for s in samples)
        assert set(classes) == {0, 1, 2, 3} and set(views) == {0, 1, 2}


def test_written_split_round_trips_through_the_check(tmp_path):
    check = check_dataset(leaky_export(tmp_path))
    splits = resplit_by_video(check, (0.6, 0.2, 0.2), seed=0)
    written = write_split(check, splits, tmp_path / "out", "test split")
    again = check_dataset(written)
    assert again.ok and again.leakage == {}
    assert again.view_names == ("PSAX", "PLAX", "A4C")
    assert {k: sorted(s.image for s in v) for k, v in again.samples.items()} == {
        k: sorted(s.image for s in v) for k, v in splits.items()
    }
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temp files left behind


def test_grouped_kfold_folds_partition_and_share_one_test_set(tmp_path):
    check = check_dataset(leaky_export(tmp_path, n_videos=30))
    folds = [grouped_kfold(check, 4, i, test_ratio=0.2, seed=1) for i in range(4)]
    tests = {frozenset(videos(f["test"])) for f in folds}
    assert len(tests) == 1 and len(next(iter(tests))) == 6
    vals = [videos(f["val"]) for f in folds]
    assert set().union(*vals) == videos(folds[0]["train"]) | vals[0]
    assert sum(len(v) for v in vals) == 24  # each non-test video is val in exactly one fold
    for f in folds:
        assert not videos(f["train"]) & videos(f["val"]) and not videos(f["train"]) & videos(f["test"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"folds": 1, "fold": 0}, "--folds must be >= 2"),
        ({"folds": 3, "fold": 3}, "--fold must be in 0..2"),
    ],
)
def test_kfold_bad_arguments(tmp_path, kwargs, message):
    check = check_dataset(leaky_export(tmp_path, n_videos=6))
    with pytest.raises(ValueError, match=message):
        grouped_kfold(check, **kwargs)


def test_too_few_videos(tmp_path):
    check = check_dataset(leaky_export(tmp_path, n_videos=2))
    with pytest.raises(ValueError, match="only 2 source videos"):
        resplit_by_video(check, (0.6, 0.2, 0.2))
