"""EchoTune search command line.

    python search/run.py --space gradnorm                       # the search on the embedded synthetic set
    python search/run.py --space all --num-samples 32 --max-epochs 20 --concurrency 2
    python search/run.py --name gradnorm --resume               # continue an interrupted search
    python search/run.py --data DATA/data.yaml --check-data     # validate a dataset, print the report
    python search/run.py --data DATA/data.yaml --resplit-by-video --ratios 0.7,0.15,0.15 --seed 0
    python search/run.py --data DATA/data.yaml --check-data --video-id-pattern '^(?P<video>.+)_f\\d+'
    python search/run.py --address auto --storage s3://BUCKET/echotune --gpus-per-trial 0.5   # on a Ray cluster

A search refuses leaky splits (a source video with frames in more than one split: scores would be optimistic)
before Ray starts; fix them with --resplit-by-video or --folds, or pass --allow-leaky-splits to go on knowingly
(search.json, the leaderboard and report.html then carry a "leaky splits" warning).

Exit codes: 0 success (data usable, maybe with warnings); 2 bad input (the data check or arguments failed,
leaky splits were not allowed, the results folder cannot be written, or no node of the Ray cluster can run a
trial).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from echotune.results.layout import is_object_store
from echotune.atomic import atomic_directory
from echotune.data.check import check_dataset
from echotune.data.config import compile_video_id_pattern
from echotune.data.leakage import LeakySplitsError, guard_leakage
from echotune.data.prepare import default_cache_dir, resolve_data_yaml
from echotune.data.problems import DataError
from echotune.data.check_report import format_report, verdict
from echotune.data.split import DEFAULT_RATIOS, grouped_kfold, resplit_by_video, write_split
from echotune.search.progress import DEFAULT_EVERY_S as DEFAULT_STATUS_EVERY_S
from echotune.metrics import OBJECTIVES
from echotune.search.search_config import DEFAULT_PBT_INTERVAL, SearchConfig
from echotune.spaces import PROFILES, list_spaces

EXIT_OK, EXIT_BAD_INPUT = 0, 2
STORAGE_ENV = "ECHOTUNE_STORAGE"  # a cluster's default --storage (its shared bucket), set by cluster.yaml


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0 (0 = off), got {text}")
    return value


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.7,0.15,0.15; got {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0 or values[1] <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative numbers train,val,test with train and "
                                         f"val > 0; got {text!r}")
    return values


def _regex(text: str) -> str:
    try:
        compile_video_id_pattern(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; got {text!r}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python search/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    search = parser.add_argument_group("search")
    search.add_argument("--space", default="gradnorm", help=f"search space: {', '.join(list_spaces())} "
                        "(default: gradnorm)")
    search.add_argument("--profile", default="quick", choices=PROFILES,
                        help="quick: laptop CPU scales and 160 px, the 8 parameters that mattered most (the rest at the "
                             "original recipe's values); quick-all: the same sizes, every parameter; full: the "
                             "original study's 640 px, bigger models, every parameter")
    search.add_argument("--name", help="experiment name: results go to STORAGE/NAME (default: the space name)")
    search.add_argument("--storage", default=os.environ.get(STORAGE_ENV, "results"),
                        help=f"results root: local dir, NFS path or s3://bucket/path (default: ${STORAGE_ENV} or results; "
                             f"cluster.yaml sets it on every node)")
    search.add_argument("--shared-storage", action="store_true",
                        help="the local --storage path is mounted at the same place on every cluster node (NFS); "
                             "needed to use a local path on a multi-node cluster (checked on every node)")
    # 8 trials + the final round's 4 runs (top 3 + baseline) at 10 epochs: the default run within 10 minutes on 2
    # CPU cores with the 256-image val/test splits of the synthetic set (10 x 12 took 702 s on 2026-11-28: README)
    search.add_argument("--num-samples", type=_positive_int, default=SearchConfig.num_samples,
                        help=f"trials to run (default {SearchConfig.num_samples}); with --scheduler pbt the "
                             "population size")
    search.add_argument("--max-epochs", type=_positive_int, default=10,
                        help="epochs per trial, over the three stages (default 10)")
    search.add_argument("--img-size", type=int, help="override the profile's image size (multiple of 32)")
    search.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    search.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="GPUs per trial, fractions allowed (0.5: two trials share a GPU); 0 trains on CPU")
    search.add_argument("--concurrency", type=_positive_int, default=2, help="trials at once (default 2)")
    search.add_argument("--address", help="existing Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: start "
                                           "Ray locally); see docs/cluster.md")
    search.add_argument("--resume", action="store_true", help="continue the interrupted search --name (its settings "
                        "and dataset are read from its search.json)")
    search.add_argument("--dashboard", action="store_true",
                        help="start Ray's dashboard with the local Ray (off by default; see --dashboard-host)")
    search.add_argument("--dashboard-host", default="127.0.0.1", metavar="HOST",
                        help="interface the dashboard listens on (default 127.0.0.1: this machine only; the "
                             "dashboard's job API runs any command, so expose it only on a network you trust)")
    search.add_argument("--objectives", default="score",
                        help=f"comma-separated objectives for TPE: {', '.join(OBJECTIVES)} (default: score)")
    search.add_argument("--scheduler", choices=("asha", "fifo", "pbt"), default=None,
                        help="asha: stop the weaker half at fixed epochs, every trial compared after the same "
                             "training (default with one objective); fifo: no early stopping (default with "
                             "several --objectives: ASHA prunes on one number, so it would decide the Pareto front); "
                             "pbt: population-based training, --num-samples members sampled from the space (the "
                             "baseline among them) train together; at each perturbation point the weakest quarter "
                             "continues from a top member's checkpoint with mutated per-stage learning rates, "
                             "augmentation strengths, label smoothing and mixup (no Optuna; one objective; all "
                             "members live at once, so --concurrency does not apply)")
    search.add_argument("--pbt-interval", type=_pbt_interval, metavar="N|stages",
                        help=f"--scheduler pbt: perturb every N epochs, or at the stage ends of the 30/50/20 split "
                             f"(stages) (default: {_pbt_interval_text(DEFAULT_PBT_INTERVAL)})")
    search.add_argument("--searcher", choices=("tpe", "random"), default="tpe")
    search.add_argument("--time-budget-s", type=float, help="stop launching trials after this many seconds")
    search.add_argument("--no-reuse-actors", dest="reuse_actors", action="store_false",
                        help="start a fresh worker process for every trial instead of reusing a finished trial's "
                             "(costs seconds per trial; on a cluster each trial is then placed anew, so trials "
                             "spread over nodes as they free up)")
    search.add_argument("--status-every", type=_seconds, default=DEFAULT_STATUS_EVERY_S, metavar="SECONDS",
                        help="print a status line every SECONDS while trials run (trials running / pending / finished "
                             "/ pruned / failed, best so far, trial-epochs and ETA), the first as the search starts; "
                             "redrawn in place on a terminal, plain lines otherwise "
                             f"(default {DEFAULT_STATUS_EVERY_S:g}; 0 = off: the per-epoch and per-trial lines stay)")
    search.add_argument("--ensemble-top-k", type=int, default=3, metavar="K",
                        help="at the end, fuse the top K trials into an ensemble tuned on val and measured on test "
                             "(default 3; 0 = no ensemble; more options: search/ensemble.py)")
    search.add_argument("--no-recipe-point", action="store_true",
                        help="do not start the search from the detector recipe (spaces/original.py DETECTOR_RECIPE) "
                             "as its second fixed trial after the baseline")
    search.add_argument("--final-top-k", type=int, default=SearchConfig.final_top_k, metavar="K",
                        help="after the search, train the top K distinct configurations and the baseline again for "
                             "--max-epochs with fresh seeds; the winner is the best mean val score over those runs, "
                             "measured against the baseline's run on test (final.json; default "
                             f"{SearchConfig.final_top_k}; 0 = no final round: the search's best trial wins)")
    search.add_argument("--final-seeds", type=_positive_int, default=SearchConfig.final_seeds, metavar="N",
                        help="seeds per final-round candidate: --seed+1 ... --seed+N, the same for every candidate "
                             f"(default {SearchConfig.final_seeds})")
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
    data.add_argument("--video-id-pattern", type=_regex, metavar="REGEX",
                      help="source-video id of a frame for this command (check, re-split, search), replacing "
                           "data.yaml's video_id_pattern: re.search on the file name, the group named video, else "
                           "group 1, else the whole match (default: data.yaml's key, else the names "
                           "<video>.mp4-<frame>.png and Roboflow's <video>_mp4-<frame>_png.rf.<hash>.jpg); a "
                           "re-split records it in the data.yaml it writes")
    data.add_argument("--allow-leaky-splits", action="store_true",
                      help="search even though a source video has frames in more than one split (refused by "
                           "default: scores are optimistic); the results are flagged as leaky")
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


def _split_folder(args, yaml_dir: Path) -> Path:
    if args.split_out is not None:
        return args.split_out
    if args.folds is not None:
        return yaml_dir / f"folds{args.folds}-fold{args.fold}-seed{args.seed}"
    return yaml_dir / f"resplit-seed{args.seed}"


def _write_split(args, check) -> Path:
    out = _split_folder(args, check.config.yaml_path.parent)
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
    counts = ", ".join(f"{name} {len(samples)} images / {len({s.video for s in samples})} videos"
                       for name, samples in splits.items())
    print(f"Wrote {written} ({description}): {counts}")
    return written


def check_writable(folder: Path) -> None:
    """Create `folder` (with missing parents) and a probe file in it, then remove all of that again: raises
    OSError (e.g. Permission denied) when results could not be written there. Nothing is left behind."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".echotune-write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    finally:
        for path in missing:
            with contextlib.suppress(OSError):
                path.rmdir()


def _cannot_write(folder: Path, exc: OSError) -> int:
    where = f" ({exc.filename})" if exc.filename else ""  # a write into an open file names none
    print(f"error: cannot write {folder}: {exc.strerror or exc}{where}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_problems < 0:
        parser.error(f"--max-problems must be >= 0, got {args.max_problems}")
    if args.folds is not None and not args.resplit_by_video and not 0 <= args.fold < max(args.folds, 1):
        parser.error(f"--fold must be in 0..{args.folds - 1}, got {args.fold}")
    search_config = _search_config(parser, args)
    if args.resume and not (args.check_data or args.resplit_by_video or args.folds is not None):
        try:
            search_config = _resume_from_record(search_config, args)
        except ValueError as exc:  # a damaged search.json
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        yaml_path = resolve_data_yaml(args.data, args.cache_dir, log=lambda m: print(m, file=sys.stderr))
        check = check_dataset(yaml_path, strict=args.strict, video_id_pattern=search_config.video_id_pattern)
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
        except OSError as exc:  # e.g. a full disk or a read-only --split-out
            return _cannot_write(_split_folder(args, check.config.yaml_path.parent), exc)
        return EXIT_OK
    print(verdict(check), f"Dataset: {yaml_path}", flush=True)
    try:  # before Ray starts and before anything is written
        guard_leakage(check, search_config.allow_leaky_splits, log=lambda m: print(m, file=sys.stderr, flush=True))
    except LeakySplitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    experiment = Path(search_config.experiment_dir)
    if not is_object_store(search_config.storage):
        if args.resume and not experiment.is_dir():
            print(f"error: --resume: no experiment at {experiment}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not args.resume and experiment.exists():
            print(f"error: {experiment} already exists; continue it with --resume or choose another --name",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        try:  # before Ray starts: a search that cannot save its results must not run for hours first
            check_writable(experiment)
        except OSError as exc:
            print(f"error: cannot write the results folder {experiment}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from echotune.search.cluster import ClusterError  # these import Ray: keep --check-data and --help fast
    from echotune.search.orchestrate import run_search

    pbt = search_config.scheduler == "pbt"  # a population, all live (PBT time-slices it), no searcher
    print(f"Search '{search_config.name}': space {search_config.space} ({search_config.profile}), "
          f"{search_config.num_samples} {'members' if pbt else 'trials'} x {search_config.max_epochs} epochs, "
          f"{'all live (as many at a time as resources allow)' if pbt else f'{search_config.concurrency} at a time'}, "
          f"{search_config.cpus_per_trial:g} CPU + {search_config.gpus_per_trial:g} GPU each, scheduler "
          f"{search_config.scheduler}"
          f"{f' (perturbing {_pbt_interval_text(search_config.pbt_interval)})' if pbt else ''}, searcher "
          f"{'none: the population is sampled from the space' if pbt else search_config.searcher}; results in "
          f"{experiment}", flush=True)
    try:
        run_search(search_config, check, resume=args.resume, address=args.address,
                   ensemble_top_k=args.ensemble_top_k, dashboard_host=args.dashboard_host if args.dashboard else None,
                   status_every=args.status_every)
    except (ClusterError, ConnectionError) as exc:  # the cluster refused before any trial started
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the disk filled up: the files written so far stay (the search can --resume)
        return _cannot_write(experiment, exc)
    return EXIT_OK


def _resume_from_record(cfg: SearchConfig, args: argparse.Namespace) -> SearchConfig:
    """--resume: the search's settings and dataset as search.json recorded them (a plain `--name X --resume`
    continues exactly the search that was started, whatever else the command line says)."""
    from echotune.results.search_record import read_search_record, resumed_config

    record = read_search_record(cfg.local_dir) if not is_object_store(cfg.storage) or cfg.local_dir.is_dir() else {}
    if not record:
        return cfg
    if args.data is None and record.get("data_yaml"):
        args.data = record["data_yaml"]
    elif args.data is not None and Path(args.data).resolve() != Path(record.get("data_yaml", args.data)):
        print(f"note: resuming on --data {args.data}; the search started on {record['data_yaml']}", file=sys.stderr)
    resumed = resumed_config(cfg, record)
    print(f"Resuming '{resumed.name}' as recorded in {cfg.local_dir / 'search.json'}: space {resumed.space} "
          f"({resumed.profile}), {resumed.num_samples} trials x {resumed.max_epochs} epochs, dataset {args.data}",
          file=sys.stderr)
    return resumed


def _pbt_interval(text: str) -> int:
    """--pbt-interval: a positive number of epochs, or `stages` (returned as 0: at the stage ends)."""
    return 0 if text == "stages" else _positive_int(text)


def _pbt_interval_text(interval: int | None) -> str:
    return "stages" if interval is None else f"every {interval} epochs"


def _check_pbt(parser: argparse.ArgumentParser, args: argparse.Namespace, interval: int | None) -> None:
    """Refuse a PBT search that could not perturb: no mutable key in the space, no perturbation epoch."""
    from echotune.search.pbt import mutation_ranges, pbt_stage_split, perturbation_epochs

    probe = SearchConfig(space=args.space, profile=args.profile, max_epochs=args.max_epochs, pbt_interval=interval)
    try:
        mutation_ranges(probe)
    except ValueError as exc:
        parser.error(str(exc))
    if not perturbation_epochs(args.max_epochs, interval, pbt_stage_split(probe)):
        parser.error(f"--pbt-interval {interval} with --max-epochs {args.max_epochs}: no perturbation before the last "
                     f"epoch")


def _search_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SearchConfig:
    if args.space not in list_spaces():
        parser.error(f"unknown --space {args.space!r}; valid: {', '.join(list_spaces())}")
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        parser.error(f"unknown --objectives {unknown or args.objectives!r}; valid: {', '.join(OBJECTIVES)}")
    if len(objectives) > 1 and args.scheduler == "asha":
        parser.error(f"--scheduler asha with several --objectives ({', '.join(objectives)}): ASHA stops trials on one "
                     f"number, so its pruning, not the objectives, would decide the Pareto front; use --scheduler "
                     f"fifo (the default with several objectives)")
    scheduler = args.scheduler or ("fifo" if len(objectives) > 1 else "asha")
    if scheduler == "pbt" and len(objectives) > 1:
        parser.error(f"--scheduler pbt with several --objectives ({', '.join(objectives)}): PBT ranks members on one "
                     f"number (val/score), so it, not the objectives, would decide which models survive; use "
                     f"--scheduler fifo for a Pareto front")
    if args.pbt_interval is not None and scheduler != "pbt":
        parser.error(f"--pbt-interval is for --scheduler pbt (this search's scheduler: {scheduler})")
    pbt_interval = DEFAULT_PBT_INTERVAL if args.pbt_interval is None else args.pbt_interval or None
    if scheduler == "pbt":
        _check_pbt(parser, args, pbt_interval)
    if args.cpus_per_trial <= 0:
        parser.error(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.gpus_per_trial < 0:
        parser.error(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    if args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial):
        parser.error(f"--gpus-per-trial above 1 must be a whole number, got {args.gpus_per_trial}")
    if args.img_size is not None and (args.img_size < 64 or args.img_size % 32):
        parser.error(f"--img-size must be a multiple of 32 and >= 64, got {args.img_size}")
    if args.ensemble_top_k < 0:
        parser.error(f"--ensemble-top-k must be >= 0 (0 = no ensemble), got {args.ensemble_top_k}")
    if args.final_top_k < 0:
        parser.error(f"--final-top-k must be >= 0 (0 = no final round), got {args.final_top_k}")
    if args.time_budget_s is not None and args.time_budget_s <= 0:
        parser.error(f"--time-budget-s must be > 0, got {args.time_budget_s}")
    if args.max_epochs < 3:
        parser.error(f"--max-epochs must be >= 3 (one per training stage), got {args.max_epochs}")
    if args.dashboard and args.address:
        parser.error("--dashboard starts the dashboard of a local Ray; a cluster has its own (docs/cluster.md: "
                     "`ray dashboard cluster.yaml`)")
    if args.shared_storage and is_object_store(args.storage):
        parser.error(f"--shared-storage is for a local path mounted on every node; {args.storage} is an object store")
    return SearchConfig(space=args.space, profile=args.profile, name=args.name or args.space, storage=args.storage,
                        shared_storage=args.shared_storage,
                        num_samples=args.num_samples, max_epochs=args.max_epochs, img_size=args.img_size,
                        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                        concurrency=args.concurrency, seed=args.seed, objectives=objectives,
                        scheduler=scheduler, searcher=args.searcher, time_budget_s=args.time_budget_s,
                        reuse_actors=args.reuse_actors,
                        allow_leaky_splits=args.allow_leaky_splits, video_id_pattern=args.video_id_pattern,
                        final_top_k=args.final_top_k, final_seeds=args.final_seeds, pbt_interval=pbt_interval,
                        recipe_point=not args.no_recipe_point)


if __name__ == "__main__":
    raise SystemExit(main())
