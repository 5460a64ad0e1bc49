"""Which perturbation schedule suits `--scheduler pbt`: at the stage ends, or every N epochs?

    python benchmarks/pbt_interval.py                     # 4 members x 12 epochs at 96 px, seed 0 (~6 min, 2 cores)
    python benchmarks/pbt_interval.py --seeds 0 1         # two seeds (~12 min)
    python benchmarks/pbt_interval.py --quick             # tiny set, 64 px, 4 x 4 epochs (about 2 min)

For each seed, two real PBT searches (the project's Tuner, search/pbt.py) on the same population (the baseline
and the space's samples for that seed) and the default synthetic set:

  stages     perturb where stage 1 and stage 2 end (30/50/20 split: after epochs 4 and 10 of 12)
  every-N    perturb every N epochs (--interval, default 2: after 2, 4, 6, 8, 10)

Each search's pick is its member with the best val/score (the leaderboard's rank: a member's epochs since its
last clone, search/trial_table.py); that checkpoint is evaluated once on val and test with 95 % bootstrap CIs
over source videos (evaluate_held_out), and the two picks of a seed are compared on test, paired over the same
videos. Writes OUT/pbt_interval.{json,md} (--quick: pbt_interval-quick.*; default OUT benchmarks/results), the
searches into STORAGE/pbt_interval/ (default results/bench, git-ignored).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_common import QUICK_SPEC, apply_defaults, header, load_data, run_facts, write_outputs

from echotune.data.check import CheckedDataset
from echotune.results.leaderboard import finite_or_none

SCHEDULES = ("stages", "every-n")
# (full, quick) defaults: full sized for ~6 min per seed on 2 busy cores.
DEFAULTS = {"seeds": ([0], [0]), "members": (4, 4), "max_epochs": (12, 4), "img_size": (96, 64), "interval": (2, 2)}


def search_config(schedule: str, seed: int, args, storage: Path):
    from ray_bench import BenchSearchConfig

    return BenchSearchConfig(
        space=args.space,
        profile=args.profile,
        name=f"{schedule}-seed{seed}",
        storage=str(storage),
        num_samples=args.members,
        max_epochs=args.max_epochs,
        img_size=args.img_size,
        seed=seed,
        scheduler="pbt",
        pbt_interval=None if schedule == "stages" else args.interval,
        model_scale=args.model_scale,
    )


def run_one(schedule: str, seed: int, args, data: CheckedDataset, storage: Path) -> dict:
    """One PBT search, its pick evaluated on val and test (the evaluation object is kept for the paired test)."""
    from ray_bench import run_search

    from echotune.engine.evaluate_checkpoint import evaluate_held_out
    from echotune.ensemble.members import checkpoint_file
    from echotune.reporting.lineage import read_policy
    from echotune.results.layout import PBT_GLOBAL_FILE
    from echotune.search.experiment import load_experiment
    from echotune.search.pbt import pbt_stage_split, perturbation_epochs

    cfg = search_config(schedule, seed, args, storage)
    run = run_search(cfg, data)
    experiment = load_experiment(run.experiment_dir)
    ranked = sorted((r for r in experiment.rows if r["best/val/score"] is not None), key=lambda r: -r["best/val/score"])
    pick = ranked[0] if ranked else None
    held = None
    if pick is not None and pick["checkpoint_path"]:
        held = evaluate_held_out(checkpoint_file(Path(pick["checkpoint_path"])), data, device="cpu", seed=seed)
    test_ci = held.ci.get("test", {}).get("score") if held else None
    row = {
        "schedule": schedule,
        "seed": seed,
        "perturbation_epochs": perturbation_epochs(cfg.max_epochs, cfg.pbt_interval, pbt_stage_split(cfg)),
        "exploits": len(read_policy(run.experiment_dir / PBT_GLOBAL_FILE)),
        "members": len(experiment.rows),
        "finished": sum(r["status"] == "TERMINATED" for r in experiment.rows),
        "best_val_score": pick["best/val/score"] if pick else None,
        "pick": pick["trial_id"] if pick else None,
        "pick_is_baseline": bool(pick["is_baseline"]) if pick else None,
        "pick_lineage": pick.get("pbt_lineage") if pick else None,
        "pick_epoch": held.epoch if held else None,
        "val_score": finite_or_none(held.metrics["val"]["val/score"]) if held else None,
        "test_score": test_ci.to_dict() if test_ci else None,
        "wall_s": run.ray_start_s + run.fit_s + run.shutdown_s,
        "experiment_dir": str(run.experiment_dir),
    }
    print(
        f"{schedule:>8} seed {seed}: perturbing after {row['perturbation_epochs']}, {row['exploits']} exploits; "
        f"pick {row['pick']} val/score {row['best_val_score']}, test score {test_ci}; {row['wall_s']:.0f} s",
        flush=True,
    )
    return {**row, "_held": held}


def paired(a, b, seed: int) -> dict | None:
    """Test score of stages minus every-n, paired over the same source videos (None without both picks)."""
    from echotune.engine.evaluate_checkpoint import paired_difference

    if a is None or b is None or "test" not in a.evaluations or "test" not in b.evaluations:
        return None
    return paired_difference(a, b, "test", seed=seed)["score"].to_dict()


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = header(
        result,
        f"space {s['space']} (profile {s['profile']}), PBT with {s['members']} members x "
        f"{s['max_epochs']} epochs at {s['img_size']} px, every-n = every {s['interval']} epochs, "
        f"seeds {' '.join(map(str, s['seeds']))}; data {s['data']}",
    )
    lines += [
        "| schedule | seed | perturbed after epochs | exploits | best val/score (pick) | pick | "
        "pick's test score [95 % CI] | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        test = r["test_score"]
        test_text = f"{test['value']:.3f} [{test['low']:.3f}, {test['high']:.3f}]" if test else "n/a"
        best = f"{r['best_val_score']:.3f}" if r["best_val_score"] is not None else "n/a"
        pick = f"{r['pick']}{' (baseline)' if r['pick_is_baseline'] else ''}"
        lines.append(
            f"| {r['schedule']} | {r['seed']} | {', '.join(map(str, r['perturbation_epochs']))} | "
            f"{r['exploits']} | {best} | {pick} | {test_text} | {r['wall_s']:.0f} |"
        )
    lines += ["", "Paired difference on test (stages minus every-n; same videos, 95 % CI):", ""]
    for seed, diff in result["paired"].items():
        lines.append(
            f"- seed {seed}: " + (f"{diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" if diff else "n/a")
        )
    lines += ["", "Means over seeds:", ""]
    for schedule, m in result["summary"].items():
        lines.append(
            f"- {schedule}: best val/score {_number(m['best_val_score_mean'])}, pick's test score "
            f"{_number(m['test_score_mean'])} ({m['seeds']} seed(s))"
        )
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for schedule in SCHEDULES:
        rows = [r for r in runs if r["schedule"] == schedule]
        val = [r["best_val_score"] for r in rows if r["best_val_score"] is not None]
        test = [r["test_score"]["value"] for r in rows if r["test_score"]]
        summary[schedule] = {
            "seeds": len(rows),
            "best_val_score_mean": finite_or_none(np.mean(val)) if val else None,
            "test_score_mean": finite_or_none(np.mean(test)) if test else None,
        }
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny data, 64 px, 4 epochs")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0)")
    parser.add_argument("--members", type=int, help="population size (default 4)")
    parser.add_argument("--max-epochs", type=int, help="epochs per member (default 12; quick 4)")
    parser.add_argument("--img-size", type=int, help="input size in px (default 96; quick 64)")
    parser.add_argument("--interval", type=int, help="every-n: perturb every N epochs (default 2)")
    parser.add_argument(
        "--model-scale",
        choices=("test", "n", "s", "m", "l"),
        help="pin the detector scale for every member (default: the space's choice)",
    )
    parser.add_argument("--space", default="gradnorm")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic set; quick: a small one)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where the tables go")
    parser.add_argument(
        "--storage",
        type=Path,
        default=Path("results/bench"),
        help="where the searches' experiment folders go (git-ignored; default results/bench)",
    )
    args = parser.parse_args(argv)
    apply_defaults(args, DEFAULTS)
    return args


def main(argv: list[str] | None = None) -> int:
    import ray

    from echotune.search.orchestrate import start_ray

    args = parse_args(argv)
    start = time.perf_counter()
    name = "pbt_interval-quick" if args.quick else "pbt_interval"
    data = load_data(args.data, QUICK_SPEC if args.quick else None)
    facts = run_facts("benchmarks/pbt_interval.py", argv)
    storage = (args.storage / name).resolve()
    start_ray(None)  # one local Ray for every search (its start-up is not what is compared)
    try:
        runs = [run_one(schedule, seed, args, data, storage) for seed in args.seeds for schedule in SCHEDULES]
    finally:
        ray.shutdown()
    held = {(r["schedule"], r["seed"]): r.pop("_held") for r in runs}
    result = {
        **facts,
        "benchmark": "pbt_interval",
        "settings": {
            "space": args.space,
            "profile": args.profile,
            "members": args.members,
            "max_epochs": args.max_epochs,
            "img_size": args.img_size,
            "interval": args.interval,
            "seeds": args.seeds,
            "model_scale": args.model_scale,
            "data": str(data.config.yaml_path),
        },
        "runs": runs,
        "summary": summarise(runs),
        "paired": {str(seed): paired(held[("stages", seed)], held[("every-n", seed)], seed) for seed in args.seeds},
    }
    result["wall_s"] = time.perf_counter() - start
    write_outputs(args.out, name, result, markdown(result))
    print("\n" + markdown(result) + f"\nTotal wall time {result['wall_s']:.0f} s; {args.out / name}.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
