"""Build an ensemble of a search's best trials: tuned on val, evaluated on test, compared with the best member.

    echotune ensemble results/gradnorm                       # top 3 by val/score, WBF, no TTA
    echotune ensemble results/all --top-k 3 --diverse --tta flip
    echotune ensemble results/gradnorm --fusion soft-nms --tta flip+scales --tune-trials 60
    echotune ensemble results/gradnorm --data DATA/data.yaml --split test --out results/gradnorm/ensemble-tta

The dataset is --data, else the one the search used (search.json's data_yaml), else the embedded synthetic
set. Member weights and fusion thresholds are tuned on --tune-on (val) only; the --split images are read only
after tuning. Writes manifest.yaml and metrics.json into --out (default EXPERIMENT_DIR/ensemble; use the folder
with `echotune predict`).
Leaky splits (a source video with frames in more than one split) are refused before anything is written; pass
--allow-leaky-splits to build anyway (metrics.json then carries "leaky_splits" with the counts).
Exit codes: 0 success; 2 bad input (arguments, experiment folder, leaderboard, checkpoints or dataset, leaky
splits not allowed; or the ensemble folder cannot be written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echotune.data.check import CheckedDataset, check_dataset
from echotune.data.prepare import resolve_data_yaml
from echotune.ensemble.build import build_ensemble
from echotune.ensemble.fusion import FUSIONS
from echotune.ensemble.tta import TTA_MODES
from echotune.results.layout import ENSEMBLE_DIR
from echotune.search.cli.command import (
    EXIT_OK,
    add_allow_leaky_splits,
    add_cache_dir,
    add_data,
    add_device,
    add_out,
    add_seed,
    add_top_k,
    add_video_id_pattern,
    cannot_write,
    fail,
    note,
    parameter_defaults,
)

DEFAULTS = parameter_defaults(build_ensemble)  # the options' defaults are build_ensemble's own


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "experiment", type=Path, metavar="EXPERIMENT_DIR", help="experiment folder of a search, e.g. results/gradnorm"
    )
    add_top_k(parser, default=DEFAULTS["top_k"], help="members: the best K trials")
    parser.add_argument(
        "--diverse",
        action="store_true",
        help="at most one member per architecture; skip configs identical apart from the seed",
    )
    parser.add_argument(
        "--tta", choices=TTA_MODES, default=DEFAULTS["tta"], help=f"test-time augmentation (default {DEFAULTS['tta']})"
    )
    parser.add_argument(
        "--fusion", choices=FUSIONS, default=DEFAULTS["fusion"], help=f"box fusion (default {DEFAULTS['fusion']})"
    )
    parser.add_argument(
        "--tune-on",
        default=DEFAULTS["tune_on"],
        help=f"split to tune weights/thresholds on (default {DEFAULTS['tune_on']}; never test)",
    )
    parser.add_argument(
        "--split", default=DEFAULTS["split"], help=f"split to evaluate on (default {DEFAULTS['split']})"
    )
    parser.add_argument(
        "--tune-trials",
        type=int,
        default=DEFAULTS["tune_trials"],
        help=f"Optuna trials for the tuning (default {DEFAULTS['tune_trials']})",
    )
    add_seed(parser, DEFAULTS["seed"], help="seed of the tuning sampler")
    add_device(parser, DEFAULTS["device"])
    add_out(parser, help=f"output folder for manifest.yaml and metrics.json (default EXPERIMENT_DIR/{ENSEMBLE_DIR})")
    add_data(parser, help="data.yaml (default: the search's dataset from search.json)")
    add_cache_dir(parser)
    add_video_id_pattern(parser, default_help="the one the search used, from search.json")
    add_allow_leaky_splits(parser, "build")


def resolve_data(
    experiment: Path, data: str | None, cache_dir: Path | None, video_id_pattern: str | None = None
) -> CheckedDataset:
    """--data, else search.json's data_yaml, else the synthetic set; checked, errors raised as DataError.
    `video_id_pattern`: given, else the search's own (search.json) when the dataset is the search's."""
    if data is None:
        from echotune.results.search_record import read_search_record

        record = read_search_record(experiment)
        data = record.get("data_yaml")
        if data is not None:
            note(f"Dataset (from {experiment / 'search.json'}): {data}")
            video_id_pattern = video_id_pattern or record.get("config", {}).get("video_id_pattern")
    check = check_dataset(resolve_data_yaml(data, cache_dir, log=note), video_id_pattern=video_id_pattern)
    check.raise_if_errors()
    return check


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for option in ("top_k", "tune_trials"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    out = args.out or args.experiment / ENSEMBLE_DIR
    try:
        if not args.experiment.is_dir():
            raise FileNotFoundError(
                f"{args.experiment}: no such experiment folder (expected results/<name> written by echotune search)"
            )
        data = resolve_data(args.experiment, args.data, args.cache_dir, args.video_id_pattern)
        build_ensemble(
            args.experiment,
            data,
            top_k=args.top_k,
            diverse=args.diverse,
            tta=args.tta,
            fusion=args.fusion,
            tune_on=args.tune_on,
            split=args.split,
            tune_trials=args.tune_trials,
            seed=args.seed,
            device=args.device,
            allow_leaky_splits=args.allow_leaky_splits,
            log=lambda m: print(m, flush=True),
            out_dir=out,
        )
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        return fail(exc)
    except OSError as exc:  # writing the manifest or metrics: e.g. a full disk or a read-only experiment folder
        return cannot_write(out, exc)
    return EXIT_OK
