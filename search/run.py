"""EchoTune search command line.

    python search/run.py --space gradnorm                       # the search on the embedded synthetic set
    python search/run.py --data DATA/data.yaml --check-data     # validate a dataset, print the report
    python search/run.py --data DATA/data.yaml --resplit-by-video --ratios 0.7,0.15,0.15 --seed 0

Exit codes: 0 success (data usable, maybe with warnings); 2 bad input (the data check or arguments failed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from echotune.data.check import check_dataset
from echotune.data.prepare import default_cache_dir, resolve_data_yaml
from echotune.data.problems import DataError
from echotune.data.report import format_report, verdict
from echotune.data.split import DEFAULT_RATIOS, grouped_kfold, resplit_by_video, write_split

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.7,0.15,0.15; got {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0 or values[1] <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative numbers train,val,test with train and "
                                         f"val > 0; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python search/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--space", default="gradnorm", help="search space name (default: gradnorm)")
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="path to a data.yaml (default: the embedded synthetic echo set, "
                                     "generated on first use)")
    data.add_argument("--cache-dir", type=Path, default=None,
                      help=f"where the synthetic set is cached (default: $ECHOTUNE_CACHE or {default_cache_dir()})")
    data.add_argument("--check-data", action="store_true", help="validate the dataset, print the report, exit")
    data.add_argument("--strict", action="store_true",
                      help="images without a view line (or without a label file) are errors, not warnings")
    data.add_argument("--max-problems", type=int, default=25, metavar="N",
                      help="problems listed per kind in the report (0 = all; counts are always complete)")
    split = parser.add_argument_group("leak-free re-split (writes a new data.yaml; no image is copied)")
    split.add_argument("--resplit-by-video", action="store_true",
                       help="pool all splits and re-split them so no source video is in two splits")
    split.add_argument("--ratios", type=_ratios, default=DEFAULT_RATIOS, metavar="TRAIN,VAL,TEST",
                       help="split ratios for --resplit-by-video (default: 0.7,0.15,0.15)")
    split.add_argument("--folds", type=int, metavar="K", help="grouped K-fold: write fold --fold of K "
                       "(a fixed test set by the test ratio is held out first)")
    split.add_argument("--fold", type=int, default=0, metavar="I", help="which fold is val (0-based)")
    split.add_argument("--split-out", type=Path, metavar="DIR",
                       help="output folder for the new data.yaml and lists (default: beside the data.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def _write_split(args, check) -> Path:
    yaml_dir = check.config.yaml_path.parent
    if args.folds is not None:
        splits = grouped_kfold(check, args.folds, args.fold, test_ratio=args.ratios[2], seed=args.seed)
        out = args.split_out or yaml_dir / f"folds{args.folds}-fold{args.fold}-seed{args.seed}"
        description = f"grouped {args.folds}-fold by source video, fold {args.fold} as val, seed {args.seed}"
    else:
        splits = resplit_by_video(check, args.ratios, seed=args.seed)
        out = args.split_out or yaml_dir / f"resplit-seed{args.seed}"
        description = f"re-split by source video, ratios {args.ratios}, seed {args.seed}"
    written = write_split(check, splits, out, description)
    counts = ", ".join(f"{name} {len(samples)} images / {len({s.video for s in samples})} videos"
                       for name, samples in splits.items())
    print(f"Wrote {written} ({description}): {counts}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_problems < 0:
        parser.error(f"--max-problems must be >= 0, got {args.max_problems}")
    if args.folds is not None and not args.resplit_by_video and not 0 <= args.fold < max(args.folds, 1):
        parser.error(f"--fold must be in 0..{args.folds - 1}, got {args.fold}")
    try:
        yaml_path = resolve_data_yaml(args.data, args.cache_dir, log=lambda m: print(m, file=sys.stderr))
        check = check_dataset(yaml_path, strict=args.strict)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.check_data or not check.ok:
        print(format_report(check, args.max_problems))
        return EXIT_OK if check.ok else EXIT_BAD_INPUT
    if args.resplit_by_video or args.folds is not None:
        try:
            _write_split(args, check)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return EXIT_OK
    print(verdict(check), f"Dataset: {yaml_path}")
    print(f"The search itself (--space {args.space}) is not built yet (issue #4: Ray Tune + Optuna + ASHA). "
          f"Built so far: the data layer (try --check-data) and single-configuration training: "
          f"python search/train.py --help")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
