"""Leak-free splits: whole source videos go to one split, stratified by class and view as far as groups allow.

`resplit_by_video` pools every split and re-divides it by ratios; `grouped_kfold` keeps the same held-out test
set (by the test ratio) and divides the rest into K grouped folds. Both are deterministic for a seed and write
Ultralytics-style .txt image lists plus a new data.yaml; no image is copied.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from echotune.atomic import atomic_write_text
from echotune.data.check import SCHEME_NAMES, CheckedDataset, Sample
from echotune.data.config import DATA_YAML, VIDEO_ID_KEY, VIDEO_ID_OPTION
from echotune.data.problems import DataError

DEFAULT_RATIOS = (0.7, 0.15, 0.15)


def _group_features(groups: dict[str, list[Sample]], nc: int, n_views: int) -> np.ndarray:
    """(G, 1 + nc + n_views): images, boxes per class, frames per view of each video group."""
    feats = np.zeros((len(groups), 1 + nc + n_views), np.float64)
    for g, samples in enumerate(groups.values()):
        feats[g, 0] = len(samples)
        for s in samples:
            np.add.at(feats[g], 1 + s.labels.classes, 1)
            if s.labels.view >= 0:
                feats[g, 1 + nc + s.labels.view] += 1
    return feats


def _assign_groups(feats: np.ndarray, ratios: tuple[float, ...], seed: int) -> np.ndarray:
    """Greedy stratification: largest groups first, each to the bin that most needs what it carries.

    Returns (G,) bin ids. Need of bin b for feature j: (ratio_b * total_j - current_bj) / total_j.
    """
    ratios_arr = np.asarray(ratios, np.float64) / sum(ratios)
    totals = np.maximum(feats.sum(0), 1.0)
    order = np.random.default_rng(seed).permutation(len(feats))  # seeded tie-break among equal sizes
    order = order[np.argsort(-feats[order, 0], kind="stable")]
    current = np.zeros((len(ratios_arr), feats.shape[1]))
    assignment = np.empty(len(feats), np.int64)
    for g in order:
        need = ((ratios_arr[:, None] * totals - current) / totals * (feats[g] > 0)).sum(1)
        need += 1e-9 * ratios_arr  # with no information, prefer the larger bin
        assignment[g] = int(np.argmax(need))
        current[assignment[g]] += feats[g]
    return assignment


def _pooled_groups(check: CheckedDataset) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for split in check.samples.values():
        for sample in split:
            groups[sample.video].append(sample)
    return dict(sorted(groups.items()))


def _validate_ratios(ratios: tuple[float, ...]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or ratios[0] <= 0 or ratios[1] <= 0:
        raise ValueError(
            f"ratios must be three non-negative numbers train,val,test with train and val > 0; got {ratios}"
        )
    return tuple(float(r) for r in ratios)


def require_video_ids(check: CheckedDataset) -> None:
    """A split by source video needs every image's video: DataError (count, examples, the fix) when a name gives
    none (each such image would be a one-frame "video" of its own, free to land beside its siblings)."""
    missing = [s for samples in check.without_video_id().values() for s in samples]
    if not missing:
        return
    total = sum(len(samples) for samples in check.samples.values())
    examples = ", ".join(s.image.name for s in missing[:3]) + (", ..." if len(missing) > 3 else "")
    raise DataError(
        f"{check.config.yaml_path}: cannot split by source video: {len(missing)} of {total} images have "
        f"no source-video id in their name (e.g. {examples}); the known schemes are {SCHEME_NAMES}. "
        f"Add `{VIDEO_ID_KEY}: '<regex>'` to data.yaml (or pass {VIDEO_ID_OPTION} '<regex>'): "
        f"re.search on the file name, the group named video (else group 1, else the whole match) is "
        f"the id, e.g. `{VIDEO_ID_KEY}: '^(?P<video>.+)_frame\\d+'`"
    )


def resplit_by_video(
    check: CheckedDataset, ratios: tuple[float, ...] = DEFAULT_RATIOS, seed: int = 0
) -> dict[str, list[Sample]]:
    """Pool all splits and divide them into train/val/test by source video."""
    ratios = _validate_ratios(ratios)
    require_video_ids(check)
    groups = _pooled_groups(check)
    n_bins = 3 if ratios[2] > 0 else 2
    if len(groups) < n_bins:
        raise ValueError(f"only {len(groups)} source videos: cannot form {n_bins} video-disjoint splits")
    feats = _group_features(groups, check.config.nc, len(check.view_names))
    bins = _assign_groups(feats, ratios[:n_bins], seed)
    names = ("train", "val", "test")[:n_bins]
    return {
        name: [s for g, samples in enumerate(groups.values()) if bins[g] == b for s in samples]
        for b, name in enumerate(names)
    }


def grouped_kfold(
    check: CheckedDataset, folds: int, fold: int, test_ratio: float = DEFAULT_RATIOS[2], seed: int = 0
) -> dict[str, list[Sample]]:
    """Fold `fold` of K as val, the other folds as train; a fixed video-disjoint test set is held out first."""
    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"--fold must be in 0..{folds - 1}, got {fold}")
    require_video_ids(check)
    groups = _pooled_groups(check)
    nc, n_views = check.config.nc, len(check.view_names)
    feats = _group_features(groups, nc, n_views)
    keys = list(groups)
    if test_ratio > 0:
        is_test = _assign_groups(feats, (1 - test_ratio, test_ratio), seed) == 1
    else:
        is_test = np.zeros(len(keys), bool)
    rest = np.flatnonzero(~is_test)
    if len(rest) < folds:
        raise ValueError(f"only {len(rest)} source videos outside test: cannot form {folds} folds")
    fold_of = _assign_groups(feats[rest], (1.0,) * folds, seed)
    out = {"train": [], "val": []}
    for g, f in zip(rest, fold_of):
        out["val" if f == fold else "train"] += groups[keys[g]]
    if is_test.any():
        out["test"] = [s for g in np.flatnonzero(is_test) for s in groups[keys[g]]]
    return out


def write_split(
    check: CheckedDataset, splits: dict[str, list[Sample]], out_dir: str | os.PathLike, description: str
) -> Path:
    """Write `<split>.txt` image lists (paths relative to out_dir) and a data.yaml; returns the yaml path.

    Lists are written before the yaml, each atomically, so a crash never leaves a yaml pointing at half a list.
    """
    out_dir = Path(out_dir).resolve()
    for split, samples in splits.items():
        lines = sorted(os.path.relpath(s.image, out_dir) for s in samples)
        atomic_write_text(out_dir / f"{split}.txt", "".join(f"{line}\n" for line in lines))
    data = {
        "path": ".",
        **{split: f"{split}.txt" for split in splits},
        "nc": check.config.nc,
        "names": list(check.config.names),
        "view_names": list(check.view_names),
    }
    if check.config.video_id_pattern is not None:  # later commands derive the same video ids
        data[VIDEO_ID_KEY] = check.config.video_id_pattern.pattern
    header = (
        f"# Written by EchoTune from {check.config.yaml_path}\n# {description}\n"
        f"# Image paths in the .txt lists are relative to this folder.\n"
    )
    return atomic_write_text(out_dir / DATA_YAML, header + yaml.safe_dump(data, sort_keys=False))
