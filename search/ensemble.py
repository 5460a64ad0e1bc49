"""Build an ensemble of a search's best trials: tuned on val, evaluated on test, compared with the best member.

    python search/ensemble.py results/gradnorm                       # top 3 by val/score, WBF, no TTA
    python search/ensemble.py results/all --top-k 3 --diverse --tta flip
    python search/ensemble.py results/gradnorm --fusion soft-nms --tta flip+scales --tune-trials 60
    python search/ensemble.py results/gradnorm --data DATA/data.yaml --split test

The dataset is --data, else the one the search used (search.json's data_yaml), else the embedded synthetic
set. Member weights and fusion thresholds are tuned on --tune-on (val) only; the --split images are read only
after tuning. Writes results/<name>/ensemble/manifest.yaml and metrics.json (use the manifest with
search/predict.py --ensemble).
Leaky splits (a source video with frames in more than one split) are refused before anything is written; pass
--allow-leaky-splits to build anyway (metrics.json then carries "leaky_splits" with the counts).
Exit codes: 0 success; 2 bad input (arguments, experiment folder, leaderboard, checkpoints or dataset, leaky
splits not allowed; or the ensemble folder cannot be written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from echotune.data.check import CheckedDataset, check_dataset
from echotune.data.prepare import default_cache_dir, resolve_data_yaml
from echotune.ensemble.build import ENSEMBLE_DIR, build_ensemble
from echotune.ensemble.fusion import FUSIONS
from echotune.ensemble.tta import TTA_MODES
from echotune.ensemble.tuning import DEFAULT_TRIALS

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python search/ensemble.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("experiment", type=Path, help="experiment folder of a search, e.g. results/gradnorm")
    parser.add_argument("--top-k", type=int, default=3, help="members: the best K trials (default 3)")
    parser.add_argument("--diverse", action="store_true",
                        help="at most one member per architecture; skip configs identical apart from the seed")
    parser.add_argument("--tta", choices=TTA_MODES, default="none", help="test-time augmentation (default none)")
    parser.add_argument("--fusion", choices=FUSIONS, default="wbf", help="box fusion (default wbf)")
    parser.add_argument("--tune-on", default="val", help="split to tune weights/thresholds on (default val; "
                        "never test)")
    parser.add_argument("--split", default="test", help="split to evaluate on (default test)")
    parser.add_argument("--tune-trials", type=int, default=DEFAULT_TRIALS,
                        help=f"Optuna trials for the tuning (default {DEFAULT_TRIALS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tuning sampler (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--data", help="data.yaml (default: the search's dataset from search.json)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"where the synthetic set is cached (default: $ECHOTUNE_CACHE or {default_cache_dir()})")
    parser.add_argument("--video-id-pattern", metavar="REGEX",
                        help="source-video id of a frame (re.search on the file name), replacing data.yaml's "
                             "video_id_pattern (default: the one the search used, from search.json)")
    parser.add_argument("--allow-leaky-splits", action="store_true",
                        help="build even though a source video has frames in more than one split (refused by "
                             "default: the numbers would be optimistic); metrics.json is flagged")
    return parser


def resolve_data(experiment: Path, data: str | None, cache_dir: Path | None,
                 video_id_pattern: str | None = None) -> CheckedDataset:
    """--data, else search.json's data_yaml, else the synthetic set; checked, errors raised as DataError.
    `video_id_pattern`: given, else the search's own (search.json) when the dataset is the search's."""
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if data is None:
        from echotune.results.search_record import read_search_record

        record = read_search_record(experiment)
        data = record.get("data_yaml")
        if data is not None:
            log(f"Dataset (from {experiment / 'search.json'}): {data}")
            video_id_pattern = video_id_pattern or record.get("config", {}).get("video_id_pattern")
    check = check_dataset(resolve_data_yaml(data, cache_dir, log=log), video_id_pattern=video_id_pattern)
    check.raise_if_errors()
    return check


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("top_k", "tune_trials"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    try:
        if not args.experiment.is_dir():
            raise FileNotFoundError(f"{args.experiment}: no such experiment folder (expected results/<name> "
                                    "written by search/run.py)")
        data = resolve_data(args.experiment, args.data, args.cache_dir, args.video_id_pattern)
        build_ensemble(args.experiment, data, top_k=args.top_k, diverse=args.diverse, tta=args.tta,
                       fusion=args.fusion, tune_on=args.tune_on, split=args.split, tune_trials=args.tune_trials,
                       seed=args.seed, device=args.device, allow_leaky_splits=args.allow_leaky_splits,
                       log=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # writing the manifest or metrics: e.g. a full disk or a read-only experiment folder
        where = f" ({exc.filename})" if exc.filename else ""  # a write into an open file names none
        print(f"error: cannot write {args.experiment / ENSEMBLE_DIR}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
