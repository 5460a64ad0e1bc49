"""Run a hyperparameter search: Ray Tune trials, Optuna's TPE, ASHA (or population-based training), then a final
round, the leaderboard, an ensemble of the best trials, plots and a report.

    echotune search                                             # the quick gradnorm search on the synthetic set
    echotune search --space all --num-samples 32 --epochs 20 --concurrency 2
    echotune search --name gradnorm --resume                    # continue an interrupted search
    echotune search --resume results/gradnorm                   # the same, by its folder
    echotune search --data DATA/data.yaml --video-id-pattern '^(?P<video>.+)_f\\d+'
    echotune search --address auto --storage s3://BUCKET/echotune --gpus 0.5   # on a Ray cluster

Defaults are SearchConfig's (search/search_config.py): 8 trials x 10 epochs of the quick gradnorm space, 2 at a
time. Results go to STORAGE/NAME (default results/<space>). The data check runs first and a search never starts
on bad data; it also refuses leaky splits (a source video with frames in more than one split: scores would be
optimistic) before Ray starts: fix them with `echotune resplit`, or pass --allow-leaky-splits to go on knowingly
(search.json, the leaderboard and report.html then carry a "leaky splits" warning).

Exit codes: 0 success; 2 bad input (the data check or arguments failed, leaky splits were not allowed, the results
folder cannot be written, or no node of the Ray cluster can run a trial).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

from echotune.data.check_report import verdict
from echotune.data.leakage import LeakySplitsError, guard_leakage
from echotune.metrics import OBJECTIVES
from echotune.results.layout import is_object_store
from echotune.search.cli import check as data_check
from echotune.search.cli.command import (
    EXIT_OK,
    add_allow_leaky_splits,
    add_epochs,
    add_img_size,
    add_name,
    add_resume,
    add_seed,
    add_top_k,
    cannot_write,
    fail,
    field_defaults,
    note,
    positive_int,
    seconds,
)
from echotune.search.cli.ensemble import DEFAULTS as ENSEMBLE_DEFAULTS
from echotune.search.progress import DEFAULT_EVERY_S as DEFAULT_STATUS_EVERY_S
from echotune.search.search_config import DEFAULT_PBT_INTERVAL, SCHEDULERS, SEARCHERS, STORAGE_ENV, SearchConfig
from echotune.spaces import PROFILES, list_spaces


def objectives(text: str) -> list[str]:
    """--objectives map50,view_acc -> ["map50", "view_acc"] (SearchConfig says which names are valid)."""
    return [o.strip() for o in text.split(",") if o.strip()]


def pbt_interval(text: str) -> int | None:
    """--pbt-interval: a positive number of epochs, or `stages` (None: at the stage ends)."""
    return None if text == "stages" else positive_int(text)


def pbt_interval_text(interval: int | None) -> str:
    return "stages" if interval is None else f"every {interval} epochs"


def add_search_arguments(parser) -> None:
    """What to search and how (a parser or an argument group); every default is SearchConfig's."""
    default = field_defaults(SearchConfig)  # read now: storage's default comes from $ECHOTUNE_STORAGE
    parser.add_argument(
        "--space",
        default=default["space"],
        help=f"search space: {', '.join(list_spaces())} (default: {default['space']})",
    )
    parser.add_argument(
        "--profile",
        default=default["profile"],
        choices=PROFILES,
        help="quick: laptop CPU scales and 160 px, the 8 parameters that mattered most (the rest at "
        "the original recipe's values); quick-all: the same sizes, every parameter; full: the "
        f"original study's 640 px, bigger models, every parameter (default: {default['profile']})",
    )
    add_name(parser, help="experiment name: results go to STORAGE/NAME (default: the space name)")
    parser.add_argument(
        "--storage",
        default=default["storage"],
        help=f"results root: local dir, NFS path or s3://bucket/path (default: ${STORAGE_ENV} or "
        f"results; cluster.yaml sets it on every node; now: {default['storage']})",
    )
    parser.add_argument(
        "--shared-storage",
        action="store_true",
        help="the local --storage path is mounted at the same place on every cluster node (NFS); "
        "needed to use a local path on a multi-node cluster (checked on every node)",
    )
    parser.add_argument(
        "--num-samples",
        type=positive_int,
        default=default["num_samples"],
        metavar="N",
        help=f"trials to run (default {default['num_samples']}); with --scheduler pbt the population size",
    )
    add_epochs(
        parser,
        "--max-epochs",
        dest="max_epochs",
        type=positive_int,
        default=default["max_epochs"],
        help=f"epochs per trial, over the three stages (default {default['max_epochs']})",
    )
    add_img_size(parser, help="override the profile's image size (a multiple of 32; default: the profile's)")
    parser.add_argument(
        "--cpus",
        "--cpus-per-trial",
        dest="cpus_per_trial",
        type=float,
        default=default["cpus_per_trial"],
        metavar="N",
        help=f"CPUs per trial (default {default['cpus_per_trial']:g})",
    )
    parser.add_argument(
        "--gpus",
        "--gpus-per-trial",
        dest="gpus_per_trial",
        type=float,
        default=default["gpus_per_trial"],
        metavar="N",
        help="GPUs per trial, fractions allowed (0.5: two trials share a GPU); 0 trains on CPU "
        f"(default {default['gpus_per_trial']:g})",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=default["concurrency"],
        metavar="N",
        help=f"trials at once (default {default['concurrency']})",
    )
    parser.add_argument(
        "--address",
        help="existing Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: "
        "start Ray locally); see docs/cluster.md",
    )
    add_resume(
        parser,
        named="the search --name (in --storage)",
        given="the experiment folder STORAGE/NAME",
        metavar="EXPERIMENT_DIR",
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="start Ray's dashboard with the local Ray (off by default; see --dashboard-host)",
    )
    parser.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        metavar="HOST",
        help="interface the dashboard listens on (default 127.0.0.1: this machine only; the "
        "dashboard's job API runs any command, so expose it only on a network you trust)",
    )
    parser.add_argument(
        "--objectives",
        type=objectives,
        default=default["objectives"],
        metavar="NAMES",
        help=f"comma-separated objectives for TPE: {', '.join(OBJECTIVES)} "
        f"(default: {','.join(default['objectives'])})",
    )
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=default["scheduler"],
        help="asha: stop the weaker half at fixed epochs, every trial compared after the same "
        "training (default with one objective); fifo: no early stopping (default with "
        "several --objectives: ASHA prunes on one number, so it would decide the Pareto "
        "front); pbt: population-based training, --num-samples members sampled from the space "
        "(the baseline among them) train together; at each perturbation point the weakest "
        "quarter continues from a top member's checkpoint with mutated per-stage learning "
        "rates, augmentation strengths, label smoothing and mixup (no Optuna; one objective; "
        "all members live at once, so --concurrency does not apply)",
    )
    # No default here: given or not matters (it is for --scheduler pbt only); SearchConfig's applies when absent.
    parser.add_argument(
        "--pbt-interval",
        type=pbt_interval,
        default=argparse.SUPPRESS,
        metavar="N|stages",
        help="--scheduler pbt: perturb every N epochs, or at the stage ends of the 30/50/20 split "
        f"(stages) (default: {pbt_interval_text(DEFAULT_PBT_INTERVAL)})",
    )
    parser.add_argument(
        "--searcher", choices=SEARCHERS, default=default["searcher"], help=f"(default: {default['searcher']})"
    )
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=default["time_budget_s"],
        metavar="SECONDS",
        help="stop launching trials after this many seconds",
    )
    parser.add_argument(
        "--no-reuse-actors",
        dest="reuse_actors",
        action="store_false",
        help="start a fresh worker process for every trial instead of reusing a finished trial's "
        "(costs seconds per trial; on a cluster each trial is then placed anew, so trials "
        "spread over nodes as they free up)",
    )
    parser.add_argument(
        "--status-every",
        type=seconds,
        default=DEFAULT_STATUS_EVERY_S,
        metavar="SECONDS",
        help="print a status line every SECONDS while trials run (trials running / pending / "
        "finished / pruned / failed, best so far, trial-epochs and ETA), the first as the search "
        "starts; redrawn in place on a terminal, plain lines otherwise "
        f"(default {DEFAULT_STATUS_EVERY_S:g}; 0 = off: the per-epoch and per-trial lines stay)",
    )
    add_top_k(
        parser,
        "--ensemble-top-k",
        default=ENSEMBLE_DEFAULTS["top_k"],
        help="at the end, fuse the top K trials into an ensemble tuned on val and measured on test "
        "(0 = no ensemble; more options: echotune ensemble)",
    )
    parser.add_argument(
        "--no-recipe-point",
        dest="recipe_point",
        action="store_false",
        help="do not start the search from the detector recipe (spaces/original.py "
        "DETECTOR_RECIPE) as its second fixed trial after the baseline",
    )
    parser.add_argument(
        "--final-top-k",
        type=int,
        default=default["final_top_k"],
        metavar="K",
        help="after the search, train the top K distinct configurations and the baseline again for "
        "--epochs with fresh seeds; the winner is the best mean val score over those runs, "
        "measured against the baseline's run on test (final.json; default "
        f"{default['final_top_k']}; 0 = no final round: the search's best trial wins)",
    )
    parser.add_argument(
        "--final-seeds",
        type=positive_int,
        default=default["final_seeds"],
        metavar="N",
        help="seeds per final-round candidate: --seed+1 ... --seed+N, the same for every candidate "
        f"(default {default['final_seeds']})",
    )


def add_data_arguments(parser) -> None:
    """The dataset and its check (a parser or an argument group)."""
    data_check.add_arguments(parser)
    add_allow_leaky_splits(parser, "search")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_search_arguments(parser.add_argument_group("search"))
    add_data_arguments(parser.add_argument_group("data"))
    add_seed(parser, field_defaults(SearchConfig)["seed"])


def search_config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig the options ask for (each option's dest is a SearchConfig field); its validation errors,
    and the options' own, end in parser.error (exit code 2) before anything runs."""
    given = vars(args)
    if isinstance(args.resume, str):  # --resume STORAGE/NAME
        storage, name = _split_experiment_dir(args.resume)
        if args.name is not None and args.name != name:
            parser.error(f"--resume {args.resume} is the experiment {name!r}, but --name says {args.name!r}")
        given = {**given, "storage": storage, "name": name}
    if args.dashboard and args.address:
        parser.error(
            "--dashboard starts the dashboard of a local Ray; a cluster has its own (docs/cluster.md: "
            "`ray dashboard cluster.yaml`)"
        )
    if args.top_k < 0:
        parser.error(f"--top-k must be >= 0 (0 = no ensemble), got {args.top_k}")
    fields = field_defaults(SearchConfig).keys()
    try:
        cfg = SearchConfig(**{key: value for key, value in given.items() if key in fields})
    except ValueError as exc:
        parser.error(str(exc))
    if "pbt_interval" in given and cfg.scheduler != "pbt":
        parser.error(f"--pbt-interval is for --scheduler pbt (this search's scheduler: {cfg.scheduler})")
    return cfg


def _split_experiment_dir(path: str) -> tuple[str, str]:
    """An experiment folder -> (storage, name): results/gradnorm -> (results, gradnorm); s3://b/x/n -> (s3://b/x, n)."""
    if is_object_store(path):
        storage, _, name = path.rstrip("/").rpartition("/")
        return storage, name
    folder = Path(path).expanduser()
    return str(folder.parent), folder.name


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    data_check.validate_arguments(parser, args)
    search_config = search_config_from_args(parser, args)
    if args.resume:  # alone (RESUME_NAMED) or a folder: both continue search_config's experiment
        try:
            search_config = _resume_from_record(search_config, args)
        except ValueError as exc:  # a damaged search.json
            return fail(exc)
    check = data_check.load_usable_dataset(args, search_config.video_id_pattern)
    if isinstance(check, int):
        return check
    print(verdict(check), f"Dataset: {check.config.yaml_path}", flush=True)
    try:  # before Ray starts and before anything is written
        guard_leakage(check, search_config.allow_leaky_splits, log=note)
    except LeakySplitsError as exc:
        return fail(exc)
    experiment = Path(search_config.experiment_dir)
    if not is_object_store(search_config.storage):
        if args.resume and not experiment.is_dir():
            return fail(f"--resume: no experiment at {experiment}")
        if not args.resume and experiment.exists():
            return fail(f"{experiment} already exists; continue it with --resume or choose another --name")
        try:  # before Ray starts: a search that cannot save its results must not run for hours first
            check_writable(experiment)
        except OSError as exc:
            return fail(f"cannot write the results folder {experiment}: {exc.strerror or exc}")
    from echotune.search.cluster import ClusterError  # these import Ray: keep the data check and --help fast
    from echotune.search.legacy_names import LegacyExperimentError
    from echotune.search.orchestrate import run_search

    print(describe(search_config, experiment), flush=True)
    try:
        run_search(
            search_config,
            check,
            resume=bool(args.resume),
            address=args.address,
            ensemble_top_k=args.top_k,
            dashboard_host=args.dashboard_host if args.dashboard else None,
            status_every=args.status_every,
        )
    except (ClusterError, ConnectionError, LegacyExperimentError) as exc:  # refused before any trial started
        return fail(exc)
    except OSError as exc:  # e.g. the disk filled up: the files written so far stay (the search can --resume)
        return cannot_write(experiment, exc)
    return EXIT_OK


def describe(cfg: SearchConfig, experiment: Path) -> str:
    """The line that says what is about to run."""
    pbt = cfg.scheduler == "pbt"  # a population, all live (PBT time-slices it), no searcher
    return (
        f"Search '{cfg.name}': space {cfg.space} ({cfg.profile}), {cfg.num_samples} "
        f"{'members' if pbt else 'trials'} x {cfg.max_epochs} epochs, "
        f"{'all live (as many at a time as resources allow)' if pbt else f'{cfg.concurrency} at a time'}, "
        f"{cfg.cpus_per_trial:g} CPU + {cfg.gpus_per_trial:g} GPU each, scheduler {cfg.scheduler}"
        f"{f' (perturbing {pbt_interval_text(cfg.pbt_interval)})' if pbt else ''}, searcher "
        f"{'none: the population is sampled from the space' if pbt else cfg.searcher}; results in {experiment}"
    )


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
        note(f"note: resuming on --data {args.data}; the search started on {record['data_yaml']}")
    resumed = resumed_config(cfg, record)
    note(
        f"Resuming '{resumed.name}' as recorded in {cfg.local_dir / 'search.json'}: space {resumed.space} "
        f"({resumed.profile}), {resumed.num_samples} trials x {resumed.max_epochs} epochs, dataset {args.data}"
    )
    return resumed
