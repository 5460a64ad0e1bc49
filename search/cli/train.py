"""Train one configuration (no search): the three-stage schedule with progress output and honest metrics.

    echotune train --arch shared --balance gradnorm --epochs 3,5,2
    echotune train --arch dual --balance fixed --set classifier=mobilenetv3_small_050
    echotune train --preset baseline --data /path/to/data.yaml      # the original study's setup
    echotune train --config results/gradnorm/best_config.yaml      # a search's winner, trained again
    echotune train --name run1 --epochs 12 && echotune train --name run1 --epochs 20 --resume   # go on to 20

Writes OUT/run.json, OUT/last.pt, OUT/best.pt and OUT/metrics.json; every epoch's metrics to OUT/results.csv and
as TensorBoard scalars in OUT/tensorboard/ (view: tensorboard --logdir OUT/tensorboard); prints validation metrics
every epoch, and at the end the best checkpoint's metrics on val and test (when the dataset has one) with 95 % bootstrap
intervals over source videos, P/R/F1 at the confidence chosen on val, and per-class AP, P and R. Defaults are
TrainConfig's (echotune/engine/config.py).

Refuses leaky splits (a source video with frames in more than one split: the scores would be optimistic) before
anything is written; fix them with `echotune resplit --data DATA`, or pass --allow-leaky-splits to train anyway
(metrics.json then carries "leaky_splits" with the counts).
Exit codes: 0 success; 1 the training diverged; 2 bad input (arguments, config file, dataset, leaky splits not
allowed, a checkpoint that does not fit).
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import time
from pathlib import Path

from echotune.atomic import atomic_write_text
from echotune.data.check import CheckedDataset
from echotune.data.check_report import format_report
from echotune.data.leakage import LeakySplitsError, guard_leakage
from echotune.data.problems import DataError
from echotune.engine import NonFiniteLossError, TrainConfig, fit
from echotune.engine.checkpoint import check_compatible, load_checkpoint
from echotune.engine.evaluate_checkpoint import N_RESAMPLES, evaluate_held_out, held_out_table
from echotune.engine.run_log import RunLog
from echotune.results.layout import CHECKPOINT_FILE, METRICS_FILE
from echotune.search.best_config import ConfigFileError, read_config_file
from echotune.search.cli.check import load_dataset
from echotune.search.cli.command import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    RESUME_NAMED,
    add_allow_leaky_splits,
    add_batch_size,
    add_cache_dir,
    add_data,
    add_device,
    add_epochs,
    add_img_size,
    add_name,
    add_out,
    add_resume,
    add_seed,
    add_strict,
    add_video_id_pattern,
    fail,
    field_defaults,
    note,
)
from echotune.spaces.original import original_config

RESULTS_ROOT = Path("results")  # --name NAME trains into results/NAME
# The original study's configuration (spaces/original.py: its values and the EchoTune defaults it left open) at
# its own scale and size, YOLOv5s at 640 px (the full profile's), for its 100 epochs (30 / 50 / 20 per stage).
ORIGINAL_EPOCHS = 100
BASELINE = {**original_config("full"), "epochs": ORIGINAL_EPOCHS}
PRESETS = {"baseline": BASELINE}


def stage_epochs(text: str) -> dict:
    """--epochs: a total (split 30/50/20) or three per-stage counts -> TrainConfig's epochs (and stage_split)."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a total like 10 or per-stage epochs like 3,5,2; got {text!r}"
        ) from None
    if len(parts) == 1 and parts[0] >= 1:
        return {"epochs": parts[0]}
    if len(parts) == 3 and all(p >= 0 for p in parts) and sum(parts) >= 1:
        return {"epochs": sum(parts), "stage_split": tuple(p / sum(parts) for p in parts)}
    raise argparse.ArgumentTypeError(f"expected a positive total or three non-negative per-stage counts; got {text!r}")


def parse_assignment(text: str) -> tuple[str, object]:
    """`KEY=VALUE` -> (key, value): the value as a Python literal where it is one (0.5, True, (0.3, 0.5, 0.2)),
    else the bare string. The `--set` option's type (train, benchmarks/vs_ultralytics.py)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare string such as resnet18


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No defaults here (None: not given): --preset, then --config, then the given flags, then TrainConfig's own.
    default = field_defaults(TrainConfig)
    add_data(parser)
    add_cache_dir(parser)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="start from a YAML file of TrainConfig fields: a search's best_config.yaml (the fields "
        "under its config: key; seed and epochs included, so it trains the winning run again) "
        "or a bare mapping; the other flags override it",
    )
    parser.add_argument("--arch", choices=("shared", "dual"), help=f"architecture (default: {default['arch']})")
    parser.add_argument(
        "--balance",
        choices=("fixed", "gradnorm", "uncertainty"),
        help=f"task-loss balancing (default: {default['balance']} for shared, fixed for dual)",
    )
    parser.add_argument(
        "--scale",
        dest="model_scale",
        choices=("test", "n", "s", "m", "l"),
        help=f"detector scale (default: {default['model_scale']})",
    )
    add_epochs(
        parser,
        type=stage_epochs,
        default=None,
        help=f"total epochs (split 30/50/20) or per stage, e.g. 3,5,2 (default {default['epochs']})",
    )
    add_img_size(parser, help=f"square input size, a multiple of 32 (default {default['img_size']})")
    add_batch_size(parser, help=f"images per batch (default {default['batch_size']})")
    add_seed(parser, None, help=f"random seed (default {default['seed']})")
    parser.add_argument("--cpus", type=int, help=f"torch/OpenCV threads (default {default['cpus']})")
    add_device(parser, default=None)
    parser.add_argument(
        "--set",
        dest="overrides",
        type=parse_assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig field, e.g. --set loss_box=giou --set gn_alpha=0.5 (repeatable)",
    )
    add_name(parser, help=f"run name: train into {RESULTS_ROOT}/NAME (or give --out)")
    add_out(parser, help=f"output folder (default: {RESULTS_ROOT}/NAME, else {RESULTS_ROOT}/train-<arch>-<time>)")
    add_resume(
        parser,
        named="the run in --out (or --name): its last.pt",
        given="that checkpoint (a last.pt, or a run folder holding one)",
        metavar="CHECKPOINT",
    )
    parser.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="write OUT/results.csv only, no TensorBoard events",
    )
    add_strict(parser)
    add_allow_leaky_splits(parser, "train")
    add_video_id_pattern(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """--preset, then --config's fields, then the other flags (each overrides the one before). Raises
    ConfigFileError for an unusable --config file, ValueError for an invalid configuration."""
    values = dict(PRESETS.get(args.preset, {}))
    if args.config is not None:
        values.update(read_config_file(args.config))
    for key in ("arch", "balance", "model_scale", "img_size", "batch_size", "seed", "cpus", "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values.update(args.epochs or {})
    values.update(dict(args.overrides))
    if values.get("arch") == "dual" and "balance" not in values:
        values["balance"] = "fixed"
    return TrainConfig.from_dict(values)


def output_folder(args: argparse.Namespace, cfg: TrainConfig) -> Path:
    return args.out or (
        RESULTS_ROOT / args.name if args.name else RESULTS_ROOT / f"train-{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    )


def resume_checkpoint(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path | None:
    """The checkpoint --resume continues: --out's (or --name's) last.pt when given alone; a file as given; a run
    folder's last.pt."""
    if args.resume is None:
        return None
    if args.resume is RESUME_NAMED:
        if args.out is None and args.name is None:
            parser.error("--resume alone continues the run in --out or --name: give one, or --resume CHECKPOINT")
        return (args.out or RESULTS_ROOT / args.name) / CHECKPOINT_FILE
    given = Path(args.resume)
    return given / CHECKPOINT_FILE if given.is_dir() else given


def check_resume(path: Path, cfg: TrainConfig, data: CheckedDataset) -> list[dict]:
    """Refuse a damaged checkpoint, or one that does not fit this config and dataset, naming the file and the
    differences (fit loads it again, onto the training device). Returns its per-epoch history (the run log
    starts from it)."""
    state = load_checkpoint(path)
    check_compatible(state, {**cfg.to_dict(), "nc": data.config.nc, "n_views": len(data.view_names)}, path)
    return list(state["history"])


def open_run_log(out: Path, history: list[dict], tensorboard: bool) -> RunLog:
    """OUT/results.csv and OUT/tensorboard/, announced with the command that shows them."""
    run_log = RunLog(out, history=history, tensorboard=tensorboard)
    where = f"Per-epoch metrics: {run_log.csv_path}"
    if run_log.tensorboard_dir is not None:
        where += (
            f"; TensorBoard: tensorboard --logdir {shlex.quote(str(run_log.tensorboard_dir))} (pip install tensorboard)"
        )
    print(where, flush=True)
    return run_log


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.out is not None and args.name is not None:
        parser.error("--out and --name both name the output folder: give one")
    try:
        cfg = config_from_args(args)
    except ConfigFileError as exc:  # before anything is written
        return fail(f"--config {exc}")
    except ValueError as exc:
        if args.config is not None:
            return fail(f"--config {args.config} (with the other flags applied): {exc}")
        parser.error(str(exc))
    resume = resume_checkpoint(args, parser)
    try:
        data = load_dataset(args.data, args.cache_dir, args.strict, args.video_id_pattern)
    except DataError as exc:
        return fail(exc)
    if not data.ok:
        note(format_report(data))
        return EXIT_BAD_INPUT
    try:  # before the output folder is created
        leaky_splits = guard_leakage(data, args.allow_leaky_splits, log=note)
    except LeakySplitsError as exc:
        return fail(exc)
    history = []
    if resume is not None:
        try:  # before the output folder is created
            history = check_resume(resume, cfg, data)
        except (ValueError, FileNotFoundError) as exc:
            return fail(f"--resume: {exc}")
    out = output_folder(args, cfg)
    print(
        f"Training {cfg.arch} (scale {cfg.model_scale}, {cfg.img_size} px, balance {cfg.balance}) for "
        f"{cfg.epochs} epochs on {data.config.yaml_path}; writing {out}",
        flush=True,
    )
    start = time.perf_counter()
    run_log = open_run_log(out, history, args.tensorboard)
    try:
        result = fit(cfg, data, report=run_log, resume_from=resume, out_dir=out, log=lambda m: print(m, flush=True))
    except NonFiniteLossError as exc:
        fail(f"training diverged: {exc}")
        return EXIT_FAILED
    finally:
        run_log.close()
    if result.best_checkpoint is None:  # resumed from a last.pt without its best.pt beside it, and no new best
        print(
            f"note: the best epoch ({result.best['epoch']}) was before the resume and its best.pt is not beside "
            f"{resume}; the test split is measured on the last checkpoint instead",
            flush=True,
        )
        result.best_checkpoint = result.last_checkpoint
    wall_s = time.perf_counter() - start
    print(
        f"\nBest epoch {result.best['epoch']} (val/score {result.best['val/score']:.4f}); checkpoint "
        f"{result.best_checkpoint}; wall {wall_s:.0f} s. Evaluating it on val and test with "
        f"{N_RESAMPLES} bootstrap resamples of source videos ...",
        flush=True,
    )
    held = evaluate_held_out(result.best_checkpoint, data, seed=cfg.seed)
    summary = {
        "best_val": result.best,
        "wall_s": wall_s,
        "best_checkpoint": str(result.best_checkpoint),
        **({"test": held.metrics["test"]} if "test" in held.metrics else {}),
        "held_out": held.to_dict(),
    }
    summary["leaky_splits"] = leaky_splits  # null: no source video in two splits (as far as names tell)
    atomic_write_text(out / METRICS_FILE, json.dumps(summary, indent=2))
    print(held_out_table(held, data.config.names))
    print(f"Wrote {out / METRICS_FILE}")
    return EXIT_OK
