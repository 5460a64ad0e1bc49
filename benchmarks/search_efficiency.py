"""Search efficiency: ASHA+TPE against TPE alone, random search and the baseline recipe, on the same compute.

    python benchmarks/search_efficiency.py            # 3 seeds x 3 searches + 3 baseline runs (~25 min, 2 cores)
    python benchmarks/search_efficiency.py --quick    # 1 seed, tiny set and budget (about a minute)

Every method gets the same budget of trial-epochs (a search stops once its trials together reported that many
epochs: search.budget.TrialEpochBudget) and the same seeds:

  asha+tpe   ours: Optuna TPE picks configurations, ASHA stops the weaker half at fixed epochs
  tpe        TPE with a FIFO scheduler (every trial runs all its epochs)
  random     random sampling, FIFO
  baseline   the space's baseline configuration trained once for the whole budget (budget epochs in one run,
             no Ray): what the same compute buys when spent on the original recipe

Each search is a real Ray search (fresh local Ray, the project's Tuner) in OUT/search_efficiency/<method>-seed<k>/.
Afterwards Ray's result files give the best-so-far curve: best val/score against cumulative trial-epochs, the
epochs of all trials taken in the order their results reached the driver. The best trial's best checkpoint is
then scored on the test split. Headline: the trial-epochs ASHA+TPE needed to reach random search's final best
(same seed), divided by the budget (goal <= 0.2); the same for TPE alone.
Writes OUT/search_efficiency.{json,md,png} (--quick: search_efficiency-quick.*).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

from bench_common import QUICK_SPEC, apply_defaults, finite, header, load_data, run_facts, write_outputs
from echotune.data.check import DataCheck
from echotune.engine import NonFiniteLossError, TrainConfig, fit
from echotune.engine.evaluate_checkpoint import evaluate_checkpoint
from spaces import get_space, to_train_config

SEARCHES = {"asha+tpe": ("asha", "tpe"), "tpe": ("fifo", "tpe"), "random": ("fifo", "random")}  # scheduler, searcher
METHODS = (*SEARCHES, "baseline")
TEST_METRICS = ("map50", "map50_95", "view_acc", "view_f1", "score")

# (full, quick) defaults. Full: sized for ~25 min on 2 idle cores (see the README's table for the measured time).
DEFAULTS = {"seeds": ([0, 1, 2], [0]), "budget": (48, 6), "max_epochs": (6, 3), "img_size": (128, 64),
            "model_scale": (None, "test")}


# ---------------------------------------------------------------- curves (pure functions, tested directly)

def best_so_far(scores: list[float | None]) -> list[float | None]:
    """Running maximum; None (a diverged epoch) never improves it; None until the first real score."""
    best, curve = None, []
    for score in scores:
        if score is not None and (best is None or score > best):
            best = score
        curve.append(best)
    return curve


def epochs_to_reach(curve: list[float | None], target: float) -> int | None:
    """Trial-epochs (1-based position in the curve) at which the best-so-far first reaches `target`; None: never."""
    for position, best in enumerate(curve, start=1):
        if best is not None and best >= target - 1e-12:
            return position
    return None


def band(curves: list[list[float | None]], length: int) -> dict[str, list[float | None]]:
    """Mean, min and max over curves at each position 1..length (a curve shorter than `length` stops there)."""
    grid = np.full((len(curves), length), np.nan)
    for i, curve in enumerate(curves):
        values = [np.nan if v is None else v for v in curve[:length]]
        grid[i, :len(values)] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (past every curve's end) give NaN
        stats = {"mean": np.nanmean(grid, 0), "min": np.nanmin(grid, 0), "max": np.nanmax(grid, 0)}
    return {k: [finite(v) for v in values] for k, values in stats.items()}


# ---------------------------------------------------------------- one search, one baseline run

def _score_text(score: float | None) -> str:
    return "n/a (every epoch diverged)" if score is None else f"{score:.4f}"


def search_config(method: str, seed: int, args, storage: Path):
    """The BenchSearchConfig of one search. Ray and the search are imported where used, not at the top: the
    baseline runs' spawned processes import this script and need neither (seconds of imports each)."""
    from ray_bench import BenchSearchConfig

    scheduler, searcher = SEARCHES[method]
    # num_samples only bounds the count: every trial reports at least one epoch before it can be stopped, so
    # budget + concurrency trials always reach the budget; the stopper ends the search.
    return BenchSearchConfig(space=args.space, profile=args.profile, name=f"{method}-seed{seed}", storage=str(storage),
                             num_samples=args.budget + args.concurrency, max_epochs=args.max_epochs,
                             img_size=args.img_size, concurrency=args.concurrency, seed=seed, scheduler=scheduler,
                             searcher=searcher, model_scale=args.model_scale)


def scoring_split(data: DataCheck) -> str:
    return "test" if data.samples.get("test") else "val"


def scored(metrics: dict, split: str) -> dict:
    return {m: finite(metrics.get(f"{split}/{m}")) for m in TEST_METRICS}


def run_one_search(method: str, seed: int, args, data: DataCheck, storage: Path) -> dict:
    from ray_bench import read_results, run_search
    from search.analysis.experiment import load_experiment
    from search.budget import TrialEpochBudget

    cfg = search_config(method, seed, args, storage)
    budget = TrialEpochBudget(args.budget)
    run = run_search(cfg, data, stop=budget)
    results = read_results(run.experiment_dir)
    arrival = run.events.arrival_times()
    # Order every epoch of every trial by when the driver received it (Ray's own `timestamp` has 1 s resolution).
    results.sort(key=lambda r: (arrival.get((r["trial_id"], int(r["training_iteration"])), float(r["timestamp"])),
                                r["trial_id"]))
    scores = [None if r.get("diverged") else finite(r.get("val/score")) for r in results]
    curve = best_so_far(scores)
    experiment = load_experiment(run.experiment_dir)
    ranked = sorted((r for r in experiment.rows if r["best/val/score"] is not None), key=lambda r: -r["best/val/score"])
    best = ranked[0] if ranked else None
    split = scoring_split(data)
    test = None
    if best is not None and best["checkpoint_path"]:
        test = scored(evaluate_checkpoint(Path(best["checkpoint_path"]) / "last.pt", data, split, device="cpu"), split)
    row = {"method": method, "seed": seed, "budget": args.budget, "trial_epochs_used": len(results),
           "stopper_count": budget.used, "trials": len(experiment.rows),
           # stopped before their last epoch: by ASHA, or (any scheduler) still running when the budget ran out
           "trials_stopped_early": sum(r["status"] == "STOPPED_EARLY" for r in experiment.rows),
           "wall_s": run.ray_start_s + run.fit_s + run.shutdown_s, "search_s": run.fit_s,
           "best_val_score": curve[-1] if curve else None, "best_trial": best["trial_id"] if best else None,
           "best_is_baseline": bool(best["is_baseline"]) if best else None, "test_split": split, "test": test,
           "best_so_far": curve, "experiment_dir": str(run.experiment_dir)}
    print(f"{method:>9} seed {seed}: best val/score {_score_text(row['best_val_score'])} after {row['trial_epochs_used']} "
          f"trial-epochs ({row['trials']} trials, {row['trials_stopped_early']} stopped early), "
          f"{row['wall_s']:.0f} s", flush=True)
    return row


def run_searches(args, data: DataCheck, storage: Path) -> list[dict]:
    """Every (seed, method) search; --quick shares one local Ray between them (each full-mode search starts its
    own, as `search/run.py` does: its wall time then includes ray.init)."""
    import ray

    from search.orchestrate import start_ray

    if args.quick:
        start_ray(None)
    try:
        return [run_one_search(method, seed, args, data, storage)
                for seed in args.seeds for method in SEARCHES if method in args.methods]
    finally:
        if args.quick:
            ray.shutdown()


def baseline_config(args, seed: int) -> dict:
    """Exactly what a search trial of the baseline point gets (its sampled values, the space's constants and
    the search's trial constants), except that it trains for the whole budget."""
    from search.tuner import define_trial

    cfg = search_config("random", seed, args, Path(tempfile.gettempdir()))
    point = get_space(args.space).baseline(args.profile)
    config = {**point, **define_trial(optuna.trial.FixedTrial(point), args.space, args.profile, cfg.trial_constants())}
    return {**to_train_config(config), "epochs": args.budget}


def run_baseline(job: tuple[dict, DataCheck, int]) -> dict:
    """One long baseline run in this (worker) process; module level so a process pool can pickle it."""
    config, data, seed = job
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="echotune-baseline-") as out:
        try:
            result = fit(TrainConfig.from_dict(config), data, out_dir=out, log=lambda _: None)
        except NonFiniteLossError as exc:
            return {"method": "baseline", "seed": seed, "epochs": config["epochs"], "error": str(exc),
                    "per_epoch_val_score": [], "best_so_far": [], "best_val_score": None, "test": None,
                    "wall_s": time.perf_counter() - start}
        split = scoring_split(data)
        test = scored(evaluate_checkpoint(result.best_checkpoint, data, split, device="cpu"), split)
    per_epoch = [finite(m["val/score"]) for m in result.history]
    return {"method": "baseline", "seed": seed, "epochs": config["epochs"], "per_epoch_val_score": per_epoch,
            "best_so_far": best_so_far(per_epoch), "best_val_score": finite(result.best["val/score"]),
            "best_epoch": int(result.best["epoch"]), "test_split": split, "test": test,
            "wall_s": time.perf_counter() - start}


def run_baselines(args, data: DataCheck) -> list[dict]:
    """The seeds' baseline runs side by side, `concurrency` processes of 1 CPU each (as the searches' trials)."""
    jobs = [(baseline_config(args, seed), data, seed) for seed in args.seeds]
    workers = min(args.concurrency, len(jobs))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(run_baseline, jobs))
    for row in rows:
        print(f" baseline seed {row['seed']}: best val/score {_score_text(row['best_val_score'])} over {row['epochs']} epochs, "
              f"{row['wall_s']:.0f} s", flush=True)
    return rows


# ---------------------------------------------------------------- summary, table, plot

def headline(runs: list[dict], budget: int, method: str) -> dict:
    """Per seed: trial-epochs `method` needed to reach random search's final best (same seed) / budget."""
    by = {(r["method"], r["seed"]): r for r in runs}
    per_seed = {}
    for (m, seed), random_run in sorted(by.items()):
        if m != "random" or (method, seed) not in by or random_run["best_val_score"] is None:
            continue
        reached = epochs_to_reach(by[(method, seed)]["best_so_far"], random_run["best_val_score"])
        per_seed[str(seed)] = {"target": random_run["best_val_score"], "trial_epochs": reached,
                               "fraction_of_budget": None if reached is None else reached / budget}
    # "not reached" counts as 1 (the whole budget) in the mean, which is then a lower bound ("> mean").
    fractions = [1.0 if s["fraction_of_budget"] is None else s["fraction_of_budget"] for s in per_seed.values()]
    return {"per_seed": per_seed, "mean": finite(np.mean(fractions)) if fractions else None,
            "mean_is_lower_bound": any(s["fraction_of_budget"] is None for s in per_seed.values())}


def summarise(runs: list[dict], baselines: list[dict]) -> dict:
    summary = {}
    for method in METHODS:
        rows = baselines if method == "baseline" else [r for r in runs if r["method"] == method]
        if not rows:
            continue
        best = [r["best_val_score"] for r in rows if r["best_val_score"] is not None]
        test = [r["test"]["score"] for r in rows if r.get("test") and r["test"]["score"] is not None]
        used = [r.get("trial_epochs_used", r.get("epochs")) for r in rows]
        summary[method] = {"seeds": len(rows), "best_val_score_mean": finite(np.mean(best)) if best else None,
                           "best_val_score_min": min(best, default=None), "best_val_score_max": max(best, default=None),
                           "test_score_mean": finite(np.mean(test)) if test else None,
                           "trial_epochs_used_mean": finite(np.mean(used)),
                           "trials_mean": finite(np.mean([r.get("trials", 1) for r in rows])),
                           "wall_s_mean": finite(np.mean([r["wall_s"] for r in rows]))}
    return summary


def _ratio_text(h: dict | None) -> str:
    if not h or h["mean"] is None:
        return "n/a"
    seeds = ", ".join("not reached" if s["fraction_of_budget"] is None else f"{s['fraction_of_budget']:.2f}"
                      for s in h["per_seed"].values())
    return f"{'> ' if h['mean_is_lower_bound'] else ''}{h['mean']:.2f} ({seeds})"


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = header(result, f"space {s['space']} (profile {s['profile']}), {s['img_size']} px, "
                           f"{s['max_epochs']} epochs per trial, budget {s['budget']} trial-epochs per search, "
                           f"concurrency {s['concurrency']} x 1 CPU, seeds {' '.join(map(str, s['seeds']))}"
                           f"{', detector scale ' + s['model_scale'] if s['model_scale'] else ''}; data {s['data']}")
    lines += ["| method | best val/score mean [min, max] | test score (best trial) | trial-epochs used | trials | "
              "wall s | trial-epochs to reach random's best / budget |", "|---|---|---|---|---|---|---|"]
    for method, m in result["summary"].items():
        best = (f"{m['best_val_score_mean']:.3f} [{m['best_val_score_min']:.3f}, {m['best_val_score_max']:.3f}]"
                if m["best_val_score_mean"] is not None else "n/a")
        test = f"{m['test_score_mean']:.3f}" if m["test_score_mean"] is not None else "n/a"
        ratio = _ratio_text(result["headline"].get(method)) if method in ("asha+tpe", "tpe") else "-"
        used = f"{m['trial_epochs_used_mean']:.1f}" + (" (one run)" if method == "baseline" else "")
        lines.append(f"| {method} | {best} | {test} | {used} | {m['trials_mean']:.1f} | {m['wall_s_mean']:.0f} | "
                     f"{ratio} |")
    h = result["headline"].get("asha+tpe")
    if h and h["mean"] is not None:
        lines += ["", f"ASHA+TPE reached random search's final best after {_ratio_text(h)} of the budget "
                      f"(mean over seeds, per seed in brackets; goal <= 0.2; not reached counts as 1)."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    from search.analysis.figure_style import _color, _figure, _label, _legend_outside, save_figure

    s = result["settings"]
    fig, (ax,) = _figure(f"Best val/score so far, {s['space']}, budget {s['budget']} trial-epochs, "
                         f"{len(s['seeds'])} seed(s)")
    handles, labels = [], []
    for i, method in enumerate(METHODS):
        rows = (result["baselines"] if method == "baseline" else
                [r for r in result["runs"] if r["method"] == method])
        key = "per_epoch_val_score" if method == "baseline" else "best_so_far"
        curves = [r[key] for r in rows if r[key]]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        stats = band(curves, length)
        x = np.arange(1, length + 1)
        mean = np.array([np.nan if v is None else v for v in stats["mean"]])
        lo = np.array([np.nan if v is None else v for v in stats["min"]])
        hi = np.array([np.nan if v is None else v for v in stats["max"]])
        style = {"linestyle": "--"} if method == "baseline" else {"drawstyle": "steps-post"}
        (line,) = ax.plot(x, mean, color=_color(i), linewidth=1.6, **style)
        ax.fill_between(x, lo, hi, color=_color(i), alpha=0.15, linewidth=0,
                        step=None if method == "baseline" else "post")
        handles.append(line)
        labels.append("baseline (one run, val/score per epoch)" if method == "baseline" else f"{method} (best so far)")
    ax.axvline(s["budget"], color="0.4", linewidth=0.8, linestyle=":")
    _label(ax, "cumulative trial-epochs", "val/score", "mean over seeds, band: min to max")
    _legend_outside(fig, handles, labels, below=True)
    return save_figure(fig, path)


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny data and budget, 64 px, test scale")
    parser.add_argument("--seeds", type=int, nargs="+", help="search and training seeds (default 0 1 2; quick 0)")
    parser.add_argument("--budget", type=int, help="trial-epochs per search (default 48; quick 6)")
    parser.add_argument("--max-epochs", type=int, help="epochs per trial over the three stages (default 6; quick 3)")
    parser.add_argument("--img-size", type=int, help="input size in px, a multiple of 32 (default 128; quick 64)")
    parser.add_argument("--model-scale", choices=("test", "n", "s", "m", "l"),
                        help="pin the detector scale for every trial (default: the space's; quick: test)")
    parser.add_argument("--space", default="gradnorm", help="search space (default gradnorm)")
    parser.add_argument("--profile", default="quick", help="space profile (default quick)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time, 1 CPU each (default 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="which methods to run (default all; the headline needs asha+tpe and random)")
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic set; quick: a small one)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    apply_defaults(args, DEFAULTS)
    if args.budget < 1 or args.max_epochs < 1 or args.concurrency < 1:
        parser.error("--budget, --max-epochs and --concurrency must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    name = "search_efficiency-quick" if args.quick else "search_efficiency"
    data = load_data(args.data, QUICK_SPEC if args.quick else None)
    facts = run_facts("benchmarks/search_efficiency.py", argv)
    storage = (args.out / name).resolve()
    runs = run_searches(args, data, storage)
    baselines = run_baselines(args, data) if "baseline" in args.methods else []
    result = {**facts, "benchmark": "search_efficiency",
              "settings": {"space": args.space, "profile": args.profile, "img_size": args.img_size,
                           "max_epochs": args.max_epochs, "budget": args.budget, "concurrency": args.concurrency,
                           "seeds": args.seeds, "methods": args.methods, "model_scale": args.model_scale,
                           "data": str(data.config.yaml_path)},
              "runs": runs, "baselines": baselines, "summary": summarise(runs, baselines),
              "headline": {m: headline(runs, args.budget, m) for m in ("asha+tpe", "tpe")
                           if m in args.methods and "random" in args.methods}}
    result["wall_s"] = time.perf_counter() - start
    write_outputs(args.out, name, result, markdown(result))
    plot(result, args.out / f"{name}.png")
    print("\n" + markdown(result) + f"\nTotal wall time {result['wall_s']:.0f} s; {args.out / name}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
