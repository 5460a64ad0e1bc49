"""The data check: validate a whole dataset, collect every problem, and return the parsed samples with stats.

The same check runs before every search (so trials never see bad data) and behind `run.py --check-data`.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from echotune.data.config import (
    EXPORT_VIEW_NAMES,
    VIDEO_ID_KEY,
    DataConfig,
    label_path_for,
    list_split_images,
    load_data_config,
)
from echotune.data.labels import (
    ImageLabels,
    is_view_candidate,
    last_content_line,
    missing_view_problem,
    parse_label_file,
)
from echotune.data.problems import ERROR, WARNING, DataError, Problem

VIDEO_EXTENSIONS = ("mp4", "avi", "mov", "mkv", "wmv", "mpg", "mpeg", "dcm")
_EXT = "|".join(VIDEO_EXTENSIONS)
# The naming schemes of frame exports; frames of one source video share the `video` part.
VIDEO_ID_SCHEMES = (
    # `<video>.mp4-<frame>.png` (the Regurgitation-YOLODataset export)
    re.compile(rf"^(?P<video>.+)\.(?:{_EXT})-(?P<frame>[^.]+)", re.IGNORECASE),
    # Roboflow: `<video>_mp4-<frame>_png.rf.<hash>.jpg` (its export turns the dots of the original name into `_`)
    re.compile(rf"^(?P<video>.+)_(?:{_EXT})-(?P<frame>[^.]+?)_[a-z]+\.rf\.[0-9a-z]+\.[a-z]+$", re.IGNORECASE),
)
SCHEME_NAMES = "`<video>.mp4-<frame>.png` or Roboflow's `<video>_mp4-<frame>_png.rf.<hash>.jpg`"


def video_id(image: Path, pattern: re.Pattern | None = None) -> str | None:
    """Source-video id of a frame file, None when its name gives none.

    `pattern` (data.yaml's `video_id_pattern`) replaces the built-in schemes: `re.search` on the file name, then
    the group named `video` if the pattern has one, else group 1, else the whole match. Without it:
    `ZmNk...-unnamed_1_1.mp4-15.png` and Roboflow's `ZmNk...-unnamed_1_1_mp4-15_png.rf.3f2a9c1b.jpg` both give
    `ZmNk...-unnamed_1_1` (video extensions: mp4, avi, mov, mkv, wmv, mpg, mpeg, dcm, any case).
    """
    name = image.name
    if pattern is not None:
        match = pattern.search(name)
        if match is None:
            return None
        if "video" in pattern.groupindex:
            found = match.group("video")
        else:
            found = match.group(1) if pattern.groups else match.group(0)
        return found or None
    for scheme in VIDEO_ID_SCHEMES:
        match = scheme.match(name)
        if match:
            return match.group("video")
    return None


@dataclass(frozen=True)
class Sample:
    image: Path
    labels: ImageLabels
    video: str  # source video id; the image's own stem when the name gives none (see video_derived)
    image_hw: tuple[int, int]  # original height, width in pixels
    video_derived: bool = True  # False: no source video could be derived from the name (leakage unchecked)


@dataclass
class SplitStats:
    images: int = 0
    videos: int = 0
    images_without_boxes: int = 0
    images_without_view: int = 0
    boxes_per_class: Counter = field(default_factory=Counter)  # class id -> count
    views: Counter = field(default_factory=Counter)  # view id -> count (NO_VIEW excluded)
    box_wh: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # normalised w, h
    box_wh_pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))


@dataclass
class CheckedDataset:
    """Result of `check_dataset`: usable iff there are no errors."""

    config: DataConfig
    view_names: tuple[str, ...]
    samples: dict[str, list[Sample]]
    stats: dict[str, SplitStats]
    problems: list[Problem]
    leakage: dict[str, dict[str, int]]  # video -> {split: frames}, only videos found in more than one split
    notes: list[str]
    strict: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.names

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    def without_video_id(self) -> dict[str, list[Sample]]:
        """split -> its samples whose source video could not be derived from the file name."""
        return {split: [s for s in samples if not s.video_derived] for split, samples in self.samples.items()}

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self) -> None:
        if not self.ok:
            raise DataError(f"{self.config.yaml_path}: dataset has {len(self.errors)} error(s)", self.errors)


def check_dataset(
    yaml_path: str | os.PathLike, strict: bool = False, workers: int | None = None, video_id_pattern: str | None = None
) -> CheckedDataset:
    """Validate everything about a dataset. Raises DataError only if data.yaml itself is unusable.

    `video_id_pattern` replaces data.yaml's `video_id_pattern` key (a command line's --video-id-pattern)."""
    config = load_data_config(yaml_path, video_id_pattern)
    problems: list[Problem] = []
    notes: list[str] = []
    images_by_split: dict[str, list[Path]] = {}
    for split, sources in config.split_sources.items():
        images: list[Path] = []
        for source in sources:
            found, listing_problems = list_split_images(source)
            images += found
            problems += listing_problems
        if not images:
            problems.append(
                Problem(
                    ERROR,
                    "empty-split",
                    sources[0] if sources else config.yaml_path,
                    f"split '{split}' has no images",
                    value=str(sources[0]) if sources else None,
                )
            )
        problems += _duplicate_stems(split, images)
        images_by_split[split] = images

    view_names = _decide_view_names(config, images_by_split, problems, notes)
    workers = workers or min(8, os.cpu_count() or 1)
    samples: dict[str, list[Sample]] = {}
    for split, images in images_by_split.items():
        with ThreadPoolExecutor(max_workers=workers) as pool:  # cv2 decoding releases the GIL
            results = list(
                pool.map(
                    lambda im: _check_image(im, config.nc, len(view_names), strict, config.video_id_pattern), images
                )
            )
        samples[split] = [sample for sample, _ in results if sample is not None]
        for _, found in results:
            problems += found

    stats = {split: _split_stats(split_samples) for split, split_samples in samples.items()}
    leakage = _leakage(samples)
    problems += _same_file_in_splits(samples)
    problems += _video_id_problems(config, samples)
    if leakage:
        problems.append(_leakage_problem(config, samples, leakage))
    return CheckedDataset(config, view_names, samples, stats, problems, leakage, notes, strict)


def _check_image(
    image: Path, nc: int, n_views: int, strict: bool, pattern: re.Pattern | None = None
) -> tuple[Sample | None, list[Problem]]:
    problems: list[Problem] = []
    pixels = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if pixels is None:
        return None, [Problem(ERROR, "image", image, "unreadable or corrupt image (OpenCV could not decode it)")]
    if image.suffix.lower() in (".jpg", ".jpeg") and not _jpeg_complete(image):
        problems.append(Problem(ERROR, "image", image, "truncated JPEG (no end-of-image marker)"))
    label_file = label_path_for(image)
    if label_file.is_file():
        labels, found = parse_label_file(label_file, nc, n_views)
        problems += found
        if labels.view < 0 and not any(p.kind == "view-line" for p in found):
            problems.append(missing_view_problem(label_file, strict))
    else:
        labels = ImageLabels.empty()
        problems.append(
            Problem(
                ERROR if strict else WARNING,
                "no-label-file",
                image,
                f"no label file at {label_file}: no boxes and no view",
            )
        )
    video = video_id(image, pattern)
    return Sample(image, labels, video or image.stem, tuple(pixels.shape[:2]), video is not None), problems


def _jpeg_complete(image: Path) -> bool:
    with open(image, "rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read() == b"\xff\xd9"


def _decide_view_names(
    config: DataConfig, images_by_split: dict[str, list[Path]], problems: list[Problem], notes: list[str]
) -> tuple[str, ...]:
    if config.view_names is not None:
        return config.view_names
    lengths = Counter()
    for images in images_by_split.values():
        for image in images:
            tokens = last_content_line(label_path_for(image))
            if tokens is not None and is_view_candidate(tokens):
                lengths[len(tokens)] += 1
    if not lengths or lengths.most_common(1)[0][0] == len(EXPORT_VIEW_NAMES):
        why = "view lines have 3 entries" if lengths else "no view lines were found"
        notes.append(
            f"view_names absent from data.yaml and {why}: using the export's order {', '.join(EXPORT_VIEW_NAMES)}"
        )
        return EXPORT_VIEW_NAMES
    length = lengths.most_common(1)[0][0]
    problems.append(
        Problem(
            ERROR,
            "data-yaml",
            config.yaml_path,
            f"view_names is absent and the view lines have {length} entries; add "
            f"`view_names: [...]` with {length} names in the order of the one-hot view line",
            value=str(length),
        )
    )
    return tuple(f"view{i}" for i in range(length))


def _duplicate_stems(split: str, images: list[Path]) -> list[Problem]:
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for image in images:
        by_stem[str(label_path_for(image))].append(image)
    return [
        Problem(
            ERROR,
            "duplicate-stem",
            paths[0],
            f"split '{split}': {len(paths)} images share one label file {label} ({', '.join(p.name for p in paths)})",
            value=paths[0].stem,
        )
        for label, paths in by_stem.items()
        if len(paths) > 1
    ]


def _same_file_in_splits(samples: dict[str, list[Sample]]) -> list[Problem]:
    where: dict[str, dict[str, Path]] = defaultdict(dict)  # stem -> {split: image}
    for split, split_samples in samples.items():
        for sample in split_samples:
            where[sample.image.stem].setdefault(split, sample.image)
    return [
        Problem(
            WARNING,
            "same-frame",
            next(iter(found.values())),
            f"the same frame name is in splits {', '.join(found)}",
            value=stem,
        )
        for stem, found in where.items()
        if len(found) > 1
    ]


def _leakage(samples: dict[str, list[Sample]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for split, split_samples in samples.items():
        for sample in split_samples:
            if sample.video_derived:
                counts[sample.video][split] += 1
    return {video: dict(c) for video, c in sorted(counts.items()) if len(c) > 1}


def _examples(samples: list[Sample], n: int = 3) -> str:
    return ", ".join(s.image.name for s in samples[:n]) + (", ..." if len(samples) > n else "")


def _video_id_problems(config: DataConfig, samples: dict[str, list[Sample]]) -> list[Problem]:
    """Images whose name gives no source video: with a `video_id_pattern` an error (the pattern misses them),
    without one a warning per split (their leakage cannot be checked)."""
    problems = []
    for split, split_samples in samples.items():
        missing = [s for s in split_samples if not s.video_derived]
        if not missing:
            continue
        count = f"{len(missing)} of {len(split_samples)} images of split '{split}'"
        if config.video_id_pattern is not None:
            where = (
                f"key '{VIDEO_ID_KEY}'"
                if config.video_id_pattern_origin == VIDEO_ID_KEY
                else config.video_id_pattern_origin
            )
            problems.append(
                Problem(
                    ERROR,
                    "video-id",
                    config.yaml_path,
                    f"{where}: the pattern finds no source video in {count} "
                    f"(e.g. {_examples(missing)}); fix it so every file name yields its video",
                    config.video_id_pattern_line,
                    config.video_id_pattern.pattern,
                )
            )
        else:
            problems.append(
                Problem(
                    WARNING,
                    "video-id",
                    missing[0].image.parent,
                    f"no source-video id in the names of {count} (e.g. {_examples(missing)}): "
                    f"leakage cannot be checked for them; the known schemes are {SCHEME_NAMES}, "
                    f"for others add `{VIDEO_ID_KEY}: '<regex>'` to data.yaml",
                )
            )
    return problems


def _leakage_problem(
    config: DataConfig, samples: dict[str, list[Sample]], leakage: dict[str, dict[str, int]]
) -> Problem:
    videos = len({s.video for split in samples.values() for s in split if s.video_derived})
    frames = sum(sum(c.values()) for c in leakage.values())
    return Problem(
        WARNING,
        "leakage",
        config.yaml_path,
        f"leaky splits: {len(leakage)} of {videos} source videos have frames in more than one split "
        f"({frames} frames); a search, train.py and ensemble.py refuse these splits unless given "
        f"--allow-leaky-splits; fix with --resplit-by-video",
    )


def _split_stats(samples: list[Sample]) -> SplitStats:
    stats = SplitStats(images=len(samples), videos=len({s.video for s in samples}))
    wh, wh_px = [], []
    for sample in samples:
        boxes = sample.labels.boxes
        stats.images_without_boxes += len(boxes) == 0
        stats.images_without_view += sample.labels.view < 0
        stats.boxes_per_class.update(sample.labels.classes.tolist())
        if sample.labels.view >= 0:
            stats.views[sample.labels.view] += 1
        size = boxes[:, 2:] - boxes[:, :2]
        wh.append(size)
        wh_px.append(size * np.array(sample.image_hw[::-1], np.float32))
    if wh:
        stats.box_wh = np.concatenate(wh)
        stats.box_wh_pixels = np.concatenate(wh_px)
    return stats
