"""Train one configuration (no search): the three-stage schedule with progress output and honest metrics.

    python search/train.py --arch shared --balance gradnorm --epochs 3,5,2
    python search/train.py --arch dual --balance fixed --set classifier=mobilenetv3_small_050
    python search/train.py --preset baseline --data /path/to/data.yaml      # the original study's setup
    python search/train.py --config results/gradnorm/best_config.yaml      # a search's winner, trained again

Writes OUT/run.json, OUT/last.pt, OUT/best.pt and OUT/metrics.json; every epoch's metrics to OUT/results.csv and
as TensorBoard scalars in OUT/tensorboard/ (view: tensorboard --logdir OUT/tensorboard); prints validation metrics
every epoch, and at the end the best checkpoint's metrics on val and test (when the dataset has one) with 95 % bootstrap
intervals over source videos, P/R/F1 at the confidence chosen on val, and per-class AP, P and R.

Refuses leaky splits (a source video with frames in more than one split: the scores would be optimistic) before
anything is written; fix them with `python search/run.py --data DATA --resplit-by-video`, or pass
--allow-leaky-splits to train anyway (metrics.json then carries "leaky_splits" with the counts).
"""
from __future__ import annotations

import argparse
import ast
import json
import shlex
import sys
import time
from pathlib import Path

from echotune.results.layout import METRICS_FILE
from echotune.atomic import atomic_write_text
from echotune.data.check import CheckedDataset, check_dataset
from echotune.data.leakage import LeakySplitsError, guard_leakage
from echotune.data.prepare import resolve_data_yaml
from echotune.data.problems import DataError
from echotune.data.check_report import format_report
from echotune.engine import NonFiniteLossError, TrainConfig, fit
from echotune.engine.checkpoint import check_compatible, load_checkpoint
from echotune.engine.evaluate_checkpoint import N_RESAMPLES, evaluate_held_out, held_out_table
from echotune.engine.run_log import RunLog
from echotune.search.best_config import ConfigFileError, read_config_file

# The original study's published configuration: YOLOv5s scale, 640 px, GradNorm alpha 1.5, stage lrs
# 0.01 / 0.001 / 0.0001 over 30 / 50 / 20 epochs, batch 8, augmentation off (no mixup either).
BASELINE = {"arch": "shared", "model_scale": "s", "img_size": 640, "balance": "gradnorm", "gn_alpha": 1.5,
            "lr_stage1": 1e-2, "lr_stage2": 1e-3, "lr_stage3": 1e-4, "epochs": 100, "stage_split": (0.3, 0.5, 0.2),
            "batch_size": 8, "aug_policy": "none", "aug_strength_stage1": 0.0, "aug_strength_stage2": 0.0,
            "aug_strength_stage3": 0.0, "mixup_alpha": 0.0, "view_level": "P3", "loss_box": "ciou",
            "loss_obj": "bce", "loss_cls": "bce", "loss_view": "ce"}
PRESETS = {"baseline": BASELINE}


def _epochs(text: str) -> dict:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a total like 10 or per-stage epochs like 3,5,2; got {text!r}")
    if len(parts) == 1 and parts[0] >= 1:
        return {"epochs": parts[0]}
    if len(parts) == 3 and all(p >= 0 for p in parts) and sum(parts) >= 1:
        return {"epochs": sum(parts), "stage_split": tuple(p / sum(parts) for p in parts)}
    raise argparse.ArgumentTypeError(f"expected a positive total or three non-negative per-stage counts; got {text!r}")


def parse_assignment(text: str) -> tuple[str, object]:
    """`KEY=VALUE` -> (key, value): the value as a Python literal where it is one (0.5, True, (0.3, 0.5, 0.2)),
    else the bare string. The `--set` option's type (train.py, benchmarks/vs_ultralytics.py)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare string such as resnet18


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python search/train.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic echo set)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="start from a YAML file of TrainConfig fields: a search's best_config.yaml (the fields "
                             "under its config: key; seed and epochs included, so it trains the winning run again) "
                             "or a bare mapping; the other flags override it")
    parser.add_argument("--arch", choices=("shared", "dual"), help="architecture (default: shared)")
    parser.add_argument("--balance", choices=("fixed", "gradnorm", "uncertainty"),
                        help="task-loss balancing (default: gradnorm for shared, fixed for dual)")
    parser.add_argument("--scale", dest="model_scale", choices=("test", "n", "s", "m", "l"), help="detector scale")
    parser.add_argument("--epochs", type=_epochs, help="total epochs (split 30/50/20) or per stage, e.g. 3,5,2")
    parser.add_argument("--img-size", type=int, help="square input size, a multiple of 32 (default 160)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cpus", type=int, help="torch/OpenCV threads (default 1)")
    parser.add_argument("--device", help="auto (default), cpu or cuda[:N]")
    parser.add_argument("--set", dest="overrides", type=parse_assignment, action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainConfig field, e.g. --set loss_box=giou --set gn_alpha=0.5 (repeatable)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/train-<arch>-<time>)")
    parser.add_argument("--resume", type=Path, metavar="CHECKPOINT", help="continue from a last.pt")
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                        help="write OUT/results.csv only, no TensorBoard events")
    parser.add_argument("--strict", action="store_true", help="images without a view line are errors")
    parser.add_argument("--allow-leaky-splits", action="store_true",
                        help="train even though a source video has frames in more than one split (refused by "
                             "default); metrics.json is flagged")
    parser.add_argument("--video-id-pattern", metavar="REGEX",
                        help="source-video id of a frame (re.search on the file name), replacing data.yaml's "
                             "video_id_pattern")
    return parser


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
        where += (f"; TensorBoard: tensorboard --logdir {shlex.quote(str(run_log.tensorboard_dir))} "
                  "(pip install tensorboard)")
    print(where, flush=True)
    return run_log


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigFileError as exc:  # before anything is written
        print(f"error: --config {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if args.config is not None:
            print(f"error: --config {args.config} (with the other flags applied): {exc}", file=sys.stderr)
            return 2
        parser.error(str(exc))
    try:
        data = check_dataset(resolve_data_yaml(args.data, log=lambda m: print(m, file=sys.stderr)), args.strict,
                             video_id_pattern=args.video_id_pattern)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not data.ok:
        print(format_report(data), file=sys.stderr)
        return 2
    try:  # before --out is created
        leaky_splits = guard_leakage(data, args.allow_leaky_splits, log=lambda m: print(m, file=sys.stderr))
    except LeakySplitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    history = []
    if args.resume is not None:
        try:  # before --out is created
            history = check_resume(args.resume, cfg, data)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: --resume: {exc}", file=sys.stderr)
            return 2
    out = args.out or Path("results") / f"train-{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"Training {cfg.arch} (scale {cfg.model_scale}, {cfg.img_size} px, balance {cfg.balance}) for "
          f"{cfg.epochs} epochs on {data.config.yaml_path}; writing {out}", flush=True)
    start = time.perf_counter()
    run_log = open_run_log(out, history, args.tensorboard)
    try:
        result = fit(cfg, data, report=run_log, resume_from=args.resume, out_dir=out,
                     log=lambda m: print(m, flush=True))
    except NonFiniteLossError as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 1
    finally:
        run_log.close()
    if result.best_checkpoint is None:  # resumed from a last.pt without its best.pt beside it, and no new best
        print(f"note: the best epoch ({result.best['epoch']}) was before the resume and its best.pt is not beside "
              f"{args.resume}; the test split is measured on the last checkpoint instead", flush=True)
        result.best_checkpoint = result.last_checkpoint
    wall_s = time.perf_counter() - start
    print(f"\nBest epoch {result.best['epoch']} (val/score {result.best['val/score']:.4f}); checkpoint "
          f"{result.best_checkpoint}; wall {wall_s:.0f} s. Evaluating it on val and test with "
          f"{N_RESAMPLES} bootstrap resamples of source videos ...", flush=True)
    held = evaluate_held_out(result.best_checkpoint, data, seed=cfg.seed)
    summary = {"best_val": result.best, "wall_s": wall_s, "best_checkpoint": str(result.best_checkpoint),
               **({"test": held.metrics["test"]} if "test" in held.metrics else {}), "held_out": held.to_dict()}
    summary["leaky_splits"] = leaky_splits  # null: no source video in two splits (as far as names tell)
    atomic_write_text(out / METRICS_FILE, json.dumps(summary, indent=2))
    print(held_out_table(held, data.config.names))
    print(f"Wrote {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
