"""Re-split a dataset by source video, so that no video has frames in two splits: writes .txt image lists and a new
data.yaml (no image is copied).

    echotune resplit --data DATA/data.yaml                                # 0.7 / 0.15 / 0.15, seed 0
    echotune resplit --data DATA/data.yaml --ratios 0.8,0.1,0.1 --seed 1 --out DATA/split
    echotune resplit --data DATA/data.yaml --folds 5 --fold 0             # grouped 5-fold, fixed test set

All splits are pooled and whole source videos dealt out, stratified by class and view as far as whole videos
allow; deterministic for a seed. Every image needs a source-video id (from its name or --video-id-pattern, which
is written into the new data.yaml, so later commands derive the same ids). The data is checked first; a dataset
with errors is refused with its report.
Exit codes: 0 written; 2 bad input (arguments, dataset, images without a video id) or the folder cannot be written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echotune.atomic import atomic_directory
from echotune.data.check import CheckedDataset
from echotune.data.split import DEFAULT_RATIOS, grouped_kfold, resplit_by_video, write_split
from echotune.search.cli import check as data_check
from echotune.search.cli.command import EXIT_OK, add_out, add_seed, cannot_write, fail


def ratios(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.7,0.15,0.15; got {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0 or values[1] <= 0:
        raise argparse.ArgumentTypeError(
            f"expected three non-negative numbers train,val,test with train and val > 0; got {text!r}"
        )
    return values


def add_split_arguments(parser) -> None:
    """How to split and where to (a parser or an argument group); --split-out: run.py's name for --out."""
    parser.add_argument(
        "--ratios",
        type=ratios,
        default=DEFAULT_RATIOS,
        metavar="TRAIN,VAL,TEST",
        help=f"split ratios (default: {','.join(f'{r:g}' for r in DEFAULT_RATIOS)})",
    )
    parser.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="grouped K-fold: write fold --fold of K (a fixed test set by the test ratio is held out first)",
    )
    parser.add_argument("--fold", type=int, default=0, metavar="I", help="which fold is val (0-based)")
    add_out(
        parser,
        "--split-out",
        help="output folder for the new data.yaml and lists (default: beside the "
        "data.yaml, resplit-seed<S> or folds<K>-fold<I>-seed<S>)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data_check.add_arguments(parser)
    add_split_arguments(parser)
    add_seed(parser, 0, help="seed of the split")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    data_check.validate_arguments(parser, args)
    if args.folds is not None and not 0 <= args.fold < max(args.folds, 1):
        parser.error(f"--fold must be in 0..{args.folds - 1}, got {args.fold}")
    check = data_check.load_usable_dataset(args, args.video_id_pattern)
    if isinstance(check, int):
        return check
    try:
        write_resplit(args, check)
    except ValueError as exc:  # e.g. images without a source-video id
        return fail(exc)
    except OSError as exc:  # e.g. a full disk or a read-only --out
        return cannot_write(split_folder(args, check.config.yaml_path.parent), exc)
    return EXIT_OK


def split_folder(args: argparse.Namespace, yaml_dir: Path) -> Path:
    if args.out is not None:
        return args.out
    if args.folds is not None:
        return yaml_dir / f"folds{args.folds}-fold{args.fold}-seed{args.seed}"
    return yaml_dir / f"resplit-seed{args.seed}"


def write_resplit(args: argparse.Namespace, check: CheckedDataset) -> Path:
    """Split as args say and write the lists and data.yaml; returns the data.yaml written."""
    out = split_folder(args, check.config.yaml_path.parent)
    if args.folds is not None:
        splits = grouped_kfold(check, args.folds, args.fold, test_ratio=args.ratios[2], seed=args.seed)
        description = f"grouped {args.folds}-fold by source video, fold {args.fold} as val, seed {args.seed}"
    else:
        splits = resplit_by_video(check, args.ratios, seed=args.seed)
        description = f"re-split by source video, ratios {args.ratios}, seed {args.seed}"
    if out.exists():  # lists and yaml replaced one by one, each atomically
        written = write_split(check, splits, out, description)
    else:  # a new folder appears complete or not at all (the temporary sibling has the same relative paths)
        with atomic_directory(out) as tmp:
            write_split(check, splits, tmp, description)
        written = out.resolve() / "data.yaml"
    counts = ", ".join(
        f"{name} {len(samples)} images / {len({s.video for s in samples})} videos" for name, samples in splits.items()
    )
    print(f"Wrote {written} ({description}): {counts}")
    return written
