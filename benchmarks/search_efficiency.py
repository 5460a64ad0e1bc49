"""Does the search pay? Five search arms and the baseline recipe on the same compute, every pick scored on test.

    python benchmarks/search_efficiency.py            # 3 seeds x (5 searches + baseline + final round), ~75 min
    python benchmarks/search_efficiency.py --quick    # 1 seed, tiny set and budget (a few minutes)
    python benchmarks/search_efficiency.py --data path/to/data.yaml --seeds 0 1 2   # your data

Every arm gets the same budget of trial-epochs B (a search stops once its trials together reported that many
epochs: search.budget.TrialEpochBudget), the same E epochs per trial and the same seeds:

  asha+tpe     the default search: Optuna TPE proposes, EpochASHA stops the weaker trials at equal epochs
  asha+random  random proposals, EpochASHA
  tpe          TPE, every trial runs its E epochs (FIFO)
  random       random proposals, FIFO
  pbt          population-based training: B / E members of E epochs, perturbed at the stage ends
  baseline     the space's baseline recipe trained ONCE for B epochs (no Ray): the same compute spent on the
               original recipe, what a user gets without a search

Each search is a real Ray search (the project's Tuner, one local Ray for all) in
STORAGE/search_efficiency/<arm>-seed<k>/. An arm's **pick** is its leaderboard's best trial (best val/score),
whose best checkpoint is evaluated on val and test (search.final_round's evaluation: the P/R/F1 confidence
chosen on val) with bootstrap resamples of the test set's source videos.

Reported (test split; 95 % intervals over seeds and videos together: each resample draws the seeds with
replacement and the same video resample for every model, so the interval holds both training noise and
test-set noise):

  (a) each arm's pick / the baseline recipe trained once for B epochs (ratio of the means over seeds)
  (b) the final fit: after the asha+tpe search, the product's final round (search/final_round.py: its top
      --final-top-k configurations and the baseline retrained for E epochs with a fresh seed, the winner named on
      val) and the winner's test score / the baseline's at the same E epochs, with the difference
  (c) the trial-epochs each arm needed to reach random search's final best val/score (same seed) / B

Budget (full defaults): E = 12 epochs per trial at the quick profile's 160 px, as in the default run
(`search/run.py --space gradnorm`), so a trial is judged after the training a user's trials get; B = 48
trial-epochs, four full trials, about what the default run's ten ASHA trials spend. Why not more: the
benchmark runs 18 searches; B = 48 keeps it near 75 minutes on 2 cores.
Writes OUT/search_efficiency.{json,md,png} (--quick: search_efficiency-quick.*).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from bench_common import QUICK_SPEC, apply_defaults, header, load_data, run_facts, write_outputs

from echotune.data.check import CheckedDataset
from echotune.engine import NonFiniteLossError, TrainConfig, fit
from echotune.metrics import Estimate, bootstrap_draws, percentile_interval
from echotune.results.leaderboard import finite_or_none
from echotune.spaces import get_profile, get_space, to_train_config

ARMS = {
    "asha+tpe": ("asha", "tpe"),
    "asha+random": ("asha", "random"),
    "tpe": ("fifo", "tpe"),
    "random": ("fifo", "random"),
    "pbt": ("pbt", "random"),
}  # arm -> (scheduler, searcher)
METHODS = (*ARMS, "baseline")
FINAL_ARM = "asha+tpe"  # the default search: its final round gives (b)
TEST_METRICS = ("map50", "map50_95", "view_acc", "view_kappa", "score")
N_RESAMPLES = 1000  # video resamples (and seed resamples with them) per interval
VIDEO_SEED = 0  # the same video draws for every model: their test scores are paired

# (full, quick) defaults. Full: E = the default run's 12 epochs at the profile's size (None: 160 px), see above.
DEFAULTS = {
    "seeds": ([0, 1, 2], [0]),
    "budget": (48, 6),
    "max_epochs": (12, 3),
    "img_size": (None, 64),
    "model_scale": (None, "test"),
    "final_top_k": (3, 1),
}


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


def epoch_scores(events: list[dict]) -> list[float | None]:
    """val/score of every trial-epoch in the order the driver received them (ray_bench.EventLog.results; a
    (trial, iteration) counted once, at its first arrival, as TrialEpochBudget counts it); None: diverged.
    Not Ray's per-trial result.json: a PBT member paused and restored in a new actor loses lines there."""
    seen, scores = set(), []
    for event in events:
        key = (event["trial_id"], event["iteration"])
        if key not in seen:
            seen.add(key)
            scores.append(None if event.get("diverged") else finite_or_none(event["score"]))
    return scores


def band(curves: list[list[float | None]], length: int) -> dict[str, list[float | None]]:
    """Mean, min and max over curves at each position 1..length (a curve shorter than `length` stops there)."""
    grid = np.full((len(curves), length), np.nan)
    for i, curve in enumerate(curves):
        values = [np.nan if v is None else v for v in curve[:length]]
        grid[i, : len(values)] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (past every curve's end) give NaN
        stats = {"mean": np.nanmean(grid, 0), "min": np.nanmin(grid, 0), "max": np.nanmax(grid, 0)}
    return {k: [finite_or_none(v) for v in values] for k, values in stats.items()}


# ---------------------------------------------------------------- intervals over seeds and videos


def seeds_and_videos(
    values: list[float],
    draws: list[np.ndarray],
    ref_values: list[float] | None = None,
    ref_draws: list[np.ndarray] | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Mean over seeds of a test score with a two-level bootstrap interval; with a reference, also the ratio and
    the difference of the means (model / reference, model - reference), paired.

    `values[s]`: the score of seed s on the whole test set; `draws[s]` (R,): its video resamples, resample r
    drawing the same videos for every seed and model (bootstrap_draws with one seed). Resample r also draws
    the seeds with replacement (`seed` seeds the generator), the same ones for model and reference, so each
    interval covers the spread between training seeds and that of the test videos. One seed: videos only.
    """
    values, draws = np.asarray(values, float), np.stack(draws)  # (S,), (S, R)
    n_seeds, n_resamples = draws.shape
    picks = np.random.default_rng(seed).integers(0, n_seeds, size=(n_resamples, n_seeds))  # (R, S) seed draws
    columns = np.arange(n_resamples)[:, None]

    def resampled_mean(grid: np.ndarray) -> np.ndarray:  # (S, R) -> (R,): resample r's seeds at its videos
        return grid[picks, columns].mean(axis=1)

    mean = resampled_mean(draws)
    out = {"mean": Estimate(float(values.mean()), *percentile_interval(mean, level))}
    if ref_values is not None:
        ref_values, ref = np.asarray(ref_values, float), resampled_mean(np.stack(ref_draws))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ref > 0, mean / ref, np.nan)
        ref_mean = float(ref_values.mean())
        out["reference"] = Estimate(ref_mean, *percentile_interval(ref, level))
        out["difference"] = Estimate(float(values.mean() - ref_mean), *percentile_interval(mean - ref, level))
        # A resample whose reference mean is 0 has no ratio; the interval is over the others (NaN if none).
        finite_ratio = ratio[np.isfinite(ratio)]
        low, high = percentile_interval(finite_ratio, level) if finite_ratio.size else (float("nan"),) * 2
        out["ratio"] = Estimate(float(values.mean() / ref_mean) if ref_mean > 0 else float("nan"), low, high)
    return out


def estimate_dict(estimate: Estimate | None) -> dict | None:
    return None if estimate is None else {k: finite_or_none(v) for k, v in estimate.to_dict().items()}


# ---------------------------------------------------------------- one search, one baseline run


def _score_text(score: float | None) -> str:
    return "n/a (every epoch diverged)" if score is None else f"{score:.4f}"


def search_config(method: str, seed: int, args, storage: Path):
    """The BenchSearchConfig of one search. Ray and the search are imported where used, not at the top: the
    baseline runs' spawned processes import this script and need neither (seconds of imports each)."""
    from ray_bench import BenchSearchConfig

    scheduler, searcher = ARMS[method]
    # ASHA/FIFO: num_samples only bounds the count: every trial reports at least one epoch before it can be
    # stopped, so budget + concurrency trials always reach the budget; the stopper ends the search.
    # PBT: a fixed population of budget / max_epochs members of max_epochs epochs (parse_args checks it divides).
    num_samples = args.budget // args.max_epochs if scheduler == "pbt" else args.budget + args.concurrency
    return BenchSearchConfig(
        space=args.space,
        profile=args.profile,
        name=f"{method}-seed{seed}",
        storage=str(storage),
        num_samples=num_samples,
        max_epochs=args.max_epochs,
        img_size=args.img_size,
        concurrency=args.concurrency,
        seed=seed,
        scheduler=scheduler,
        searcher=searcher,
        model_scale=args.model_scale,
        final_top_k=args.final_top_k,
        final_seeds=1,
    )


def has_test(data: CheckedDataset) -> bool:
    return bool(data.samples.get("test"))


def evaluate(checkpoint: Path, data: CheckedDataset) -> dict:
    """A checkpoint on val and test (confidence chosen on val), its test metrics with their 95 % intervals over
    videos, and the test score's video resamples (for the intervals over seeds and videos)."""
    from echotune.engine.evaluate_checkpoint import evaluate_held_out

    split = "test" if has_test(data) else "val"
    held = evaluate_held_out(checkpoint, data, device="cpu", n_resamples=N_RESAMPLES, seed=VIDEO_SEED)
    draws = bootstrap_draws(held.evaluations[split], held.conf, N_RESAMPLES, VIDEO_SEED, held.score_weights)
    return {
        "split": split,
        "checkpoint": str(checkpoint),
        "checkpoint_epoch": held.epoch,
        "val_score": finite_or_none(held.metrics["val"]["val/score"]),
        "test": {m: estimate_dict(held.ci[split][m]) for m in TEST_METRICS},
        "_draws": draws["score"],
    }


def run_one_search(method: str, seed: int, args, data: CheckedDataset, storage: Path) -> dict:
    from ray_bench import run_search

    from echotune.ensemble.members import checkpoint_file
    from echotune.search.budget import TrialEpochBudget
    from echotune.search.experiment import load_experiment

    cfg = search_config(method, seed, args, storage)
    budget = None if cfg.scheduler == "pbt" else TrialEpochBudget(args.budget)
    run = run_search(cfg, data, stop=budget)
    scores = epoch_scores(run.events.results)
    curve = best_so_far(scores)
    experiment = load_experiment(run.experiment_dir)
    ranked = sorted((r for r in experiment.rows if r["best/val/score"] is not None), key=lambda r: -r["best/val/score"])
    pick = ranked[0] if ranked else None
    row = {
        "method": method,
        "seed": seed,
        "budget": args.budget,
        "trial_epochs_used": len(scores),
        "stopper_count": budget.used if budget else len(scores),
        "trials": len(experiment.rows),
        # stopped before their last epoch: by ASHA, or (any scheduler) still running when the budget ran out
        "trials_stopped_early": sum(r["status"] == "STOPPED_EARLY" for r in experiment.rows),
        "wall_s": run.fit_s,
        "best_val_score": pick["best/val/score"] if pick else None,
        "best_trial": pick["trial_id"] if pick else None,
        "best_is_baseline": bool(pick["is_baseline"]) if pick else None,
        "best_so_far": curve,
        "experiment_dir": str(run.experiment_dir),
        "pick": None,
    }
    if pick is not None and pick["checkpoint_path"]:
        row["pick"] = evaluate(checkpoint_file(Path(pick["checkpoint_path"]), pick["trial_id"]), data)
    test = row["pick"]["test"]["score"] if row["pick"] else None
    print(
        f"{method:>11} seed {seed}: pick {row['best_trial']}{' (baseline)' if row['best_is_baseline'] else ''} "
        f"val/score {_score_text(row['best_val_score'])}, test score "
        f"{'n/a' if test is None else format(Estimate(**test))}; {row['trial_epochs_used']} trial-epochs, "
        f"{row['trials']} trials ({row['trials_stopped_early']} stopped early), {row['wall_s']:.0f} s",
        flush=True,
    )
    return row


def run_final_fit(search_row: dict, args, data: CheckedDataset, storage: Path) -> dict | None:
    """(b): the product's final round after a search (its top configurations and the baseline retrained for E
    epochs with a fresh seed), then the winner's and the baseline's final checkpoints evaluated like the picks."""
    from echotune.search.experiment import load_experiment
    from echotune.search.final_round import run_final_round

    cfg = search_config(search_row["method"], search_row["seed"], args, storage)
    # The budget ended the search; it started fewer trials than num_samples (which only bounded the count).
    cfg = dataclasses.replace(cfg, num_samples=len(load_experiment(cfg.experiment_dir).rows))
    start = time.perf_counter()
    doc = run_final_round(cfg, data, log=lambda message: print(message, flush=True))
    fit_doc = (doc or {}).get("final_fit")
    if not fit_doc or not (fit_doc["baseline_is_winner"] or fit_doc.get("baseline")):
        print(f"final round seed {search_row['seed']}: no winner/baseline pair to compare", flush=True)
        return None
    winner = evaluate(Path(fit_doc["winner"]["checkpoint"]), data)
    baseline = winner if fit_doc["baseline_is_winner"] else evaluate(Path(fit_doc["baseline"]["checkpoint"]), data)
    row = {
        "seed": search_row["seed"],
        "epochs": doc["epochs"],
        "final_seed": fit_doc["seed"],
        "candidates": len(doc["candidates"]),
        "winner_trial": fit_doc["winner"]["search_trial_id"],
        "winner_is_baseline": fit_doc["baseline_is_winner"],
        "winner_was_the_search_best": doc["winner"]["was_the_search_best"],
        "trial_epochs": doc["trial_epochs"],
        "winner": winner,
        "baseline": baseline,
        "wall_s": time.perf_counter() - start,
    }
    print(
        f"final round seed {row['seed']}: winner {row['winner_trial']}"
        f"{' (the baseline)' if row['winner_is_baseline'] else ''} test score "
        f"{Estimate(**winner['test']['score'])} vs baseline {Estimate(**baseline['test']['score'])}, "
        f"{row['wall_s']:.0f} s",
        flush=True,
    )
    return row


def run_searches(
    args,
    data: CheckedDataset,
    storage: Path,
    after_seed: Callable[[list[dict], list[dict]], None] = lambda runs, finals: None,
) -> tuple[list[dict], list[dict]]:
    """Every (seed, arm) search, and the final round after each FINAL_ARM search, on one local Ray;
    `after_seed(runs, finals)` after each seed's arms (the partial tables)."""
    import ray

    from echotune.search.orchestrate import start_ray

    start_ray(None)  # one local Ray for every search (its start-up is not what is compared)
    runs, finals = [], []
    try:
        for seed in args.seeds:
            for method in ARMS:
                if method not in args.methods:
                    continue
                runs.append(run_one_search(method, seed, args, data, storage))
                if method == FINAL_ARM and args.final_top_k > 0:
                    final = run_final_fit(runs[-1], args, data, storage)
                    if final is not None:
                        finals.append(final)
            after_seed(runs, finals)
    finally:
        ray.shutdown()
    return runs, finals


def baseline_config(args, seed: int) -> dict:
    """Exactly what a search trial of the baseline point gets (its sampled values, the space's constants and
    the search's trial constants), except that it trains for the whole budget."""
    from echotune.search.tuner import define_trial

    cfg = search_config("random", seed, args, Path(tempfile.gettempdir()))
    point = get_space(args.space).baseline(args.profile)
    config = {**point, **define_trial(optuna.trial.FixedTrial(point), args.space, args.profile, cfg.trial_constants())}
    return {**to_train_config(config), "epochs": args.budget}


def run_baseline(job: tuple[dict, CheckedDataset, int, str]) -> dict:
    """One long baseline run in this (worker) process; module level so a process pool can pickle it."""
    config, data, seed, out = job
    start = time.perf_counter()
    try:
        result = fit(TrainConfig.from_dict(config), data, out_dir=out, log=lambda _: None)
    except NonFiniteLossError as exc:
        return {
            "method": "baseline",
            "seed": seed,
            "epochs": config["epochs"],
            "error": str(exc),
            "per_epoch_val_score": [],
            "best_so_far": [],
            "best_val_score": None,
            "checkpoint": None,
            "wall_s": time.perf_counter() - start,
        }
    per_epoch = [finite_or_none(m["val/score"]) for m in result.history]
    return {
        "method": "baseline",
        "seed": seed,
        "epochs": config["epochs"],
        "per_epoch_val_score": per_epoch,
        "best_so_far": best_so_far(per_epoch),
        "best_val_score": finite_or_none(result.best["val/score"]),
        "best_epoch": int(result.best["epoch"]),
        "checkpoint": str(result.best_checkpoint),
        "wall_s": time.perf_counter() - start,
    }


def run_baselines(args, data: CheckedDataset, storage: Path) -> list[dict]:
    """The seeds' baseline runs side by side, `concurrency` processes of 1 CPU each (as the searches' trials),
    into STORAGE/baseline-seed<k>/; then each best checkpoint evaluated like the picks."""
    jobs = [(baseline_config(args, seed), data, seed, str(storage / f"baseline-seed{seed}")) for seed in args.seeds]
    workers = min(args.concurrency, len(jobs))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(run_baseline, jobs))
    for row in rows:
        row["pick"] = evaluate(Path(row["checkpoint"]), data) if row["checkpoint"] else None
        test = row["pick"]["test"]["score"] if row["pick"] else None
        print(
            f"   baseline seed {row['seed']}: val/score {_score_text(row['best_val_score'])} over {row['epochs']} "
            f"epochs, test score {'n/a' if test is None else format(Estimate(**test))}; {row['wall_s']:.0f} s",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------- summary, table, plot


def headline(runs: list[dict], budget: int, method: str) -> dict:
    """(c) Per seed: trial-epochs `method` needed to reach random search's final best (same seed) / budget."""
    by = {(r["method"], r["seed"]): r for r in runs}
    per_seed = {}
    for (m, seed), random_run in sorted(by.items()):
        if m != "random" or (method, seed) not in by or random_run["best_val_score"] is None:
            continue
        reached = epochs_to_reach(by[(method, seed)]["best_so_far"], random_run["best_val_score"])
        per_seed[str(seed)] = {
            "target": random_run["best_val_score"],
            "trial_epochs": reached,
            "fraction_of_budget": None if reached is None else reached / budget,
        }
    # "not reached" counts as 1 (the whole budget) in the mean, which is then a lower bound ("> mean").
    fractions = [1.0 if s["fraction_of_budget"] is None else s["fraction_of_budget"] for s in per_seed.values()]
    return {
        "per_seed": per_seed,
        "mean": finite_or_none(np.mean(fractions)) if fractions else None,
        "mean_is_lower_bound": any(s["fraction_of_budget"] is None for s in per_seed.values()),
    }


def _paired_seeds(rows: list[dict], reference: dict[int, dict]) -> list[tuple[dict, dict]]:
    """(model, reference) evaluations of the seeds where both exist."""
    return [(r["pick"], reference[r["seed"]]) for r in rows if r.get("pick") and r["seed"] in reference]


def compare(pairs: list[tuple[dict, dict]]) -> dict | None:
    """Mean test score over seeds of model and reference, their ratio and difference, intervals over seeds and
    videos (seeds_and_videos)."""
    if not pairs:
        return None
    model, ref = zip(*pairs)
    estimates = seeds_and_videos(
        [m["test"]["score"]["value"] for m in model],
        [m["_draws"] for m in model],
        [r["test"]["score"]["value"] for r in ref],
        [r["_draws"] for r in ref],
    )
    return {"seeds": len(pairs), **{k: estimate_dict(e) for k, e in estimates.items()}}


def summarise(runs: list[dict], baselines: list[dict], finals: list[dict]) -> dict:
    """Per arm: val and test means, (a) against the baseline of B epochs; (b) from the final rounds."""
    reference = {r["seed"]: r["pick"] for r in baselines if r.get("pick")}
    summary = {}
    for method in METHODS:
        rows = baselines if method == "baseline" else [r for r in runs if r["method"] == method]
        if not rows:
            continue
        best = [r["best_val_score"] for r in rows if r["best_val_score"] is not None]
        picks = [r["pick"] for r in rows if r.get("pick")]
        test = (
            seeds_and_videos([p["test"]["score"]["value"] for p in picks], [p["_draws"] for p in picks])["mean"]
            if picks
            else None
        )
        used = [r.get("trial_epochs_used", r.get("epochs")) for r in rows]
        summary[method] = {
            "seeds": len(rows),
            "best_val_score_mean": finite_or_none(np.mean(best)) if best else None,
            "best_val_score_min": min(best, default=None),
            "best_val_score_max": max(best, default=None),
            "test_score": estimate_dict(test),
            "test_map50_mean": finite_or_none(np.mean([p["test"]["map50"]["value"] for p in picks])) if picks else None,
            "test_view_acc_mean": finite_or_none(np.mean([p["test"]["view_acc"]["value"] for p in picks]))
            if picks
            else None,
            "vs_baseline": None if method == "baseline" else compare(_paired_seeds(rows, reference)),
            "picked_baseline": sum(bool(r.get("best_is_baseline")) for r in rows),
            "trial_epochs_used_mean": finite_or_none(np.mean(used)),
            "trials_mean": finite_or_none(np.mean([r.get("trials", 1) for r in rows])),
            "wall_s_mean": finite_or_none(np.mean([r["wall_s"] for r in rows])),
        }
    final = compare([(f["winner"], f["baseline"]) for f in finals]) if finals else None
    return {"arms": summary, "final_fit": final}


def _estimate_text(e: dict | None, spec: str = ".3f") -> str:
    if not e or e["value"] is None:
        return "n/a"
    low = "n/a" if e["low"] is None else format(e["low"], spec)
    high = "n/a" if e["high"] is None else format(e["high"], spec)
    return f"{e['value']:{spec}} [{low}, {high}]"


def _ratio_text(h: dict | None) -> str:
    if not h or h["mean"] is None:
        return "n/a"
    seeds = ", ".join(
        "not reached" if s["fraction_of_budget"] is None else f"{s['fraction_of_budget']:.2f}"
        for s in h["per_seed"].values()
    )
    return f"{'> ' if h['mean_is_lower_bound'] else ''}{h['mean']:.2f} ({seeds})"


def _verdict(met: bool | None) -> str:
    return "not measurable" if met is None else "met" if met else "**missed**"


def goals(result: dict) -> list[str]:
    """The issue's goals against what this run measured (None-safe: a quick run may lack an arm)."""
    arms, lines = result["summary"]["arms"], []
    ratios = {m: a["vs_baseline"]["ratio"] for m, a in arms.items() if a.get("vs_baseline")}
    if ratios:
        best = max(ratios, key=lambda m: -np.inf if ratios[m]["value"] is None else ratios[m]["value"])
        value = ratios[best]["value"]
        lines.append(
            f"- (a) best arm's pick / baseline trained once for {result['settings']['budget']} epochs: "
            f"{best} {_estimate_text(ratios[best], '.2f')} (goal >= 1.1: "
            f"{_verdict(None if value is None else value >= 1.1)}; the best of {len(ratios)} arms, chosen on "
            f"test, so optimistic)"
        )
    final = result["summary"]["final_fit"]
    if final:
        ratio, diff = final["ratio"], final["difference"]
        excludes_zero = diff["low"] is not None and diff["low"] > 0
        lines.append(
            f"- (b) final fit / baseline at {result['settings']['max_epochs']} epochs: "
            f"{_estimate_text(ratio, '.2f')}, difference {_estimate_text(diff, '+.3f')} (goal ratio >= 1.2 "
            f"and the difference's interval above 0: "
            f"{_verdict(None if ratio['value'] is None else ratio['value'] >= 1.2 and excludes_zero)})"
        )
    h = result["headline"].get(FINAL_ARM)
    if h and h["mean"] is not None:
        lines.append(
            f"- (c) {FINAL_ARM} trial-epochs to reach random search's final best / budget: {_ratio_text(h)} "
            f"(goal <= 0.2: {_verdict(not h['mean_is_lower_bound'] and h['mean'] <= 0.2)}; not reached "
            f"counts as 1)"
        )
    return lines


def markdown(result: dict) -> str:
    s = result["settings"]
    size = f"{s['img_size']} px" if s["img_size"] else f"{get_profile(s['profile']).img_size} px (the profile's)"
    lines = header(
        result,
        f"space {s['space']} (profile {s['profile']}), {size}, "
        f"E = {s['max_epochs']} epochs per trial, budget B = {s['budget']} trial-epochs per "
        f"search, concurrency {s['concurrency']} x 1 CPU, seeds {' '.join(map(str, s['seeds']))}"
        f"{', detector scale ' + s['model_scale'] if s['model_scale'] else ''}; data {s['data']}",
    )
    split = "test" if result["has_test"] else "val (no test split)"
    if result.get("partial"):
        lines += [
            f"**Partial**: seeds {' '.join(map(str, s['seeds']))} of {' '.join(map(str, s['seeds_planned']))} "
            "done (the tables are rewritten after each seed).",
            "",
        ]
    lines += [
        f"Scores on {split}; intervals: 95 %, over seeds and source videos together.",
        "",
        f"| arm | best val/score mean [min, max] | pick's test score | (a) pick / baseline of {s['budget']} "
        "epochs | pick's test mAP50 / view acc | picked the baseline | trial-epochs | trials | wall s | "
        "(c) to reach random's best / budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, m in result["summary"]["arms"].items():
        best = (
            f"{m['best_val_score_mean']:.3f} [{m['best_val_score_min']:.3f}, {m['best_val_score_max']:.3f}]"
            if m["best_val_score_mean"] is not None
            else "n/a"
        )
        ratio = (
            "1 (reference)" if method == "baseline" else _estimate_text((m["vs_baseline"] or {}).get("ratio"), ".2f")
        )
        detail = (
            "n/a" if m["test_map50_mean"] is None else f"{m['test_map50_mean']:.3f} / {m['test_view_acc_mean']:.3f}"
        )
        reach = _ratio_text(result["headline"].get(method)) if method in result["headline"] else "-"
        used = f"{m['trial_epochs_used_mean']:.1f}" + (" (one run)" if method == "baseline" else "")
        picked = "-" if method == "baseline" else f"{m['picked_baseline']} of {m['seeds']}"
        lines.append(
            f"| {method} | {best} | {_estimate_text(m['test_score'])} | {ratio} | {detail} | {picked} | "
            f"{used} | {m['trials_mean']:.1f} | {m['wall_s_mean']:.0f} | {reach} |"
        )
    if result["finals"]:
        lines += [
            "",
            f"(b) Final fit after the {FINAL_ARM} search: its top {s['final_top_k']} configurations and the "
            f"baseline retrained for {s['max_epochs']} epochs with a fresh seed, the winner named on val:",
            "",
            "| seed | winner | winner's test score | baseline's test score | difference | trial-epochs "
            "(search + final round) |",
            "|---|---|---|---|---|---|",
        ]
        for f in result["finals"]:
            winner = f"{f['winner_trial']}{' (the baseline)' if f['winner_is_baseline'] else ''}"
            diff = f["winner"]["test"]["score"]["value"] - f["baseline"]["test"]["score"]["value"]
            lines.append(
                f"| {f['seed']} | {winner} | {_estimate_text(f['winner']['test']['score'])} | "
                f"{_estimate_text(f['baseline']['test']['score'])} | {diff:+.3f} | "
                f"{f['trial_epochs']['search']} + {f['trial_epochs']['final_round']} |"
            )
        final = result["summary"]["final_fit"]
        lines += [
            "",
            f"Mean over seeds: winner {_estimate_text(final['mean'])} vs baseline "
            f"{_estimate_text(final['reference'])}; ratio {_estimate_text(final['ratio'], '.2f')}, "
            f"difference {_estimate_text(final['difference'], '+.3f')}.",
        ]
    if goal_lines := goals(result):
        lines += ["", "Goals:", "", *goal_lines]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    from echotune.reporting.figure_style import label_axes, legend_outside, new_figure, palette_color, save_figure

    s = result["settings"]
    fig, (ax,) = new_figure(
        f"Best val/score so far, {s['space']}, budget {s['budget']} trial-epochs, {len(s['seeds'])} seed(s)"
    )
    handles, labels = [], []
    for i, method in enumerate(METHODS):
        rows = result["baselines"] if method == "baseline" else [r for r in result["runs"] if r["method"] == method]
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
        (line,) = ax.plot(x, mean, color=palette_color(i), linewidth=1.6, **style)
        ax.fill_between(
            x, lo, hi, color=palette_color(i), alpha=0.15, linewidth=0, step=None if method == "baseline" else "post"
        )
        handles.append(line)
        labels.append("baseline (one run, val/score per epoch)" if method == "baseline" else f"{method} (best so far)")
    ax.axvline(s["budget"], color="0.4", linewidth=0.8, linestyle=":")
    label_axes(ax, "cumulative trial-epochs", "val/score", "mean over seeds, band: min to max")
    legend_outside(fig, handles, labels, below=True)
    return save_figure(fig, path)


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny data and budget, 64 px, test scale")
    parser.add_argument("--seeds", type=int, nargs="+", help="search and training seeds (default 0 1 2; quick 0)")
    parser.add_argument(
        "--budget", type=int, help="trial-epochs B per arm, a multiple of --max-epochs for PBT (default 48; quick 6)"
    )
    parser.add_argument("--max-epochs", type=int, help="epochs E per trial over the three stages (default 12; quick 3)")
    parser.add_argument(
        "--img-size",
        type=int,
        help="input size in px, a multiple of 32 (default: the profile's, 160 for quick; quick mode 64)",
    )
    parser.add_argument(
        "--model-scale",
        choices=("test", "n", "s", "m", "l"),
        help="pin the detector scale for every trial (default: the space's; quick: test)",
    )
    parser.add_argument("--space", default="gradnorm", help="search space (default gradnorm)")
    parser.add_argument("--profile", default="quick", help="space profile (default quick)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time, 1 CPU each (default 2)")
    parser.add_argument(
        "--final-top-k",
        type=int,
        help="(b): configurations of the asha+tpe search retrained in the final round, 0 for none (default 3; quick 1)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="which arms to run (default all; (a) needs baseline, (c) random)",
    )
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic set; quick: a small one)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"), help="where the tables go")
    parser.add_argument("--storage", type=Path, help="where the searches and baseline runs go (default: OUT)")
    args = parser.parse_args(argv)
    apply_defaults(args, DEFAULTS)
    if args.budget < 1 or args.max_epochs < 1 or args.concurrency < 1 or args.final_top_k < 0:
        parser.error("--budget, --max-epochs and --concurrency must be >= 1, --final-top-k >= 0")
    if "pbt" in args.methods and (args.budget % args.max_epochs or args.budget // args.max_epochs < 2):
        parser.error(
            f"pbt runs budget / max-epochs members of max-epochs epochs: --budget {args.budget} must be a "
            f"multiple of --max-epochs {args.max_epochs} with at least 2 members"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    name = "search_efficiency-quick" if args.quick else "search_efficiency"
    data = load_data(args.data, QUICK_SPEC if args.quick else None)
    facts = run_facts("benchmarks/search_efficiency.py", argv)
    storage = ((args.storage or args.out) / name).resolve()
    # The baselines first (two at a time), then the searches seed by seed, with the tables rewritten after each
    # seed: a run cut short still leaves the seeds it finished, marked partial.
    baselines = run_baselines(args, data, storage) if "baseline" in args.methods else []

    def write(runs: list[dict], finals: list[dict]) -> dict:
        done = sorted({r["seed"] for r in runs})
        result = {
            **facts,
            "benchmark": "search_efficiency",
            "settings": {
                "space": args.space,
                "profile": args.profile,
                "img_size": args.img_size,
                "max_epochs": args.max_epochs,
                "budget": args.budget,
                "concurrency": args.concurrency,
                "seeds": done,
                "seeds_planned": args.seeds,
                "methods": args.methods,
                "model_scale": args.model_scale,
                "final_top_k": args.final_top_k,
                "data": str(data.config.yaml_path),
            },
            "partial": done != sorted(args.seeds),
            "has_test": has_test(data),
            "runs": runs,
            "baselines": [b for b in baselines if b["seed"] in done],
            "finals": finals,
        }
        result["summary"] = summarise(runs, result["baselines"], finals)
        result["headline"] = {
            m: headline(runs, args.budget, m)
            for m in ARMS
            if m != "random" and m in args.methods and "random" in args.methods
        }
        result["wall_s"] = time.perf_counter() - start
        write_outputs(args.out, name, strip_draws(result), markdown(result))
        plot(result, args.out / f"{name}.png")
        return result

    runs, finals = run_searches(args, data, storage, after_seed=write)
    result = write(runs, finals)
    print("\n" + markdown(result) + f"\nTotal wall time {result['wall_s']:.0f} s; {args.out / name}.{{json,md,png}}")
    return 0


def strip_draws(result: dict) -> dict:
    """A copy of `result` without the video resamples (they stay out of the JSON)."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k != "_draws"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(result)


if __name__ == "__main__":
    raise SystemExit(main())
