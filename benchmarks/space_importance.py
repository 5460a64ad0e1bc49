"""Which hyperparameters matter: fANOVA importance over a random-search study of the whole quick space.

    python benchmarks/space_importance.py                          # run the study (64 trials), then analyse it
    python benchmarks/space_importance.py --experiment results/importance64    # analyse an existing study
    python benchmarks/space_importance.py --num-samples 96 --max-epochs 12 --img-size 160 --data DATA/data.yaml

The study: `search/run.py --profile quick-all --searcher random --scheduler fifo`: every parameter of the quick
space (the quick profile's sizes and scales, nothing fixed), drawn uniformly at random so that every region is
covered as fANOVA assumes, and every trial trains its full budget (pruned trials would carry no final value).
The target is each trial's best val/score over its epochs (val/best_score, the number the search selects on).

Importance: Optuna's FanovaImportanceEvaluator (random forest + functional ANOVA, Hutter et al. 2014) over the
parameters every trial has (conditional ones, e.g. aug_strength_* under aug_policy=medical, drop out; their
switch, aug_policy, stays). Its uncertainty: the evaluation is repeated on bootstrap resamples of the trials
(with the forest's seed varied too), and each parameter's share of variance is reported as the mean with the
5-95 % range; the rank of a parameter is as stable as that range is narrow.

Writes results/bench/space_importance.{json,md}; the quick profile's `searched` list (spaces/profiles.py) was
chosen from this table (README, "The quick space").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_common import header, run_facts, write_outputs  # noqa: E402
from echotune.metrics import SCORE_METRIC, SELECTION_METRIC  # noqa: E402
from echotune.results.documents import read_json_lines  # noqa: E402
from echotune.results.layout import RESULT_FILE, SEARCH_RECORD_FILE, trial_folder_name  # noqa: E402
from echotune.trainables.trial import DIVERGED_KEY  # noqa: E402

NAME = "space_importance"


def run_study(args) -> Path:
    """The random-search study through the real command line (Ray, Optuna SQLite); returns its folder."""
    experiment = Path(args.storage, args.name).resolve()
    command = [
        sys.executable,
        str(REPO / "search" / "run.py"),
        "--space",
        args.space,
        "--profile",
        "quick-all",
        "--searcher",
        "random",
        "--scheduler",
        "fifo",
        "--num-samples",
        str(args.num_samples),
        "--max-epochs",
        str(args.max_epochs),
        "--concurrency",
        str(args.concurrency),
        "--seed",
        str(args.seed),
        "--ensemble-top-k",
        "0",
        "--final-top-k",
        "0",
        "--name",
        args.name,
        "--storage",
        str(args.storage),
    ]
    if args.img_size:
        command += ["--img-size", str(args.img_size)]
    if args.data:
        command += ["--data", args.data]
    if experiment.exists():
        command.append("--resume")
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return experiment


def best_scores(experiment: Path) -> dict[str, float]:
    """Ray trial id -> its best val/score over the epochs it trained (from every trial's result.json)."""
    scores: dict[str, float] = {}
    for result_file in experiment.glob(f"{trial_folder_name('*')}/{RESULT_FILE}"):
        values = []
        for result in read_json_lines(result_file):  # a line cut by a crash is skipped
            if not result.get(DIVERGED_KEY) and SCORE_METRIC in result:
                values.append(result.get(SELECTION_METRIC, result[SCORE_METRIC]))
                trial_id = result["trial_id"]
        if values:
            scores[trial_id] = max(values)
    return scores


def target_study(experiment: Path, name: str) -> optuna.Study:
    """An in-memory copy of the search's study whose values are the trials' best val/score (what Optuna was told
    may differ by version: the last epoch's score in older searches)."""
    source = optuna.load_study(study_name=name, storage=f"sqlite:///{experiment / 'optuna.db'}")
    scores = best_scores(experiment)
    study = optuna.create_study(direction="maximize")
    for trial in source.get_trials(deepcopy=False):
        trial_id = trial.user_attrs.get("ray_trial_id")
        if trial_id in scores and trial.params:
            study.add_trial(
                optuna.trial.create_trial(
                    params=trial.params, distributions=trial.distributions, value=scores[trial_id]
                )
            )
    return study


def importance_table(study: optuna.Study, repeats: int, seed: int) -> tuple[list[dict], int]:
    """fANOVA on the full study and on `repeats` bootstrap resamples of its trials: rows sorted by the full
    study's importance, each {param, importance, mean, low, high, rank_mean}; and the number of trials."""
    trials = study.get_trials(deepcopy=False)
    full = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), normalize=True
    )
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {p: [] for p in full}
    ranks: dict[str, list[int]] = {p: [] for p in full}
    for r in range(repeats):
        resample = optuna.create_study(direction="maximize")
        resample.add_trials([trials[i] for i in rng.integers(0, len(trials), len(trials))])
        try:
            values = optuna.importance.get_param_importances(
                resample,
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed + 1 + r),
                normalize=True,
                params=list(full),
            )
        except (ValueError, RuntimeError):  # a resample in which some parameter never varies
            continue
        order = sorted(values, key=values.get, reverse=True)
        for param in full:
            draws[param].append(values.get(param, 0.0))
            ranks[param].append(order.index(param) + 1 if param in order else len(full))
    rows = [
        {
            "param": p,
            "importance": float(full[p]),
            "mean": float(np.mean(draws[p])) if draws[p] else None,
            "low": float(np.percentile(draws[p], 5)) if draws[p] else None,
            "high": float(np.percentile(draws[p], 95)) if draws[p] else None,
            "rank_mean": float(np.mean(ranks[p])) if ranks[p] else None,
        }
        for p in full
    ]
    return rows, len(trials)


def markdown(result: dict) -> str:
    lines = header(
        result,
        f"{result['n_trials']} completed trials of a random search over the whole quick space "
        f"({result['settings']}); target: best val/score per trial; {result['repeats']} "
        f"bootstrap resamples of the trials",
    )
    lines += [
        "| rank | parameter | importance (full study) | bootstrap mean [5 %, 95 %] | mean rank |",
        "|---:|---|---:|---|---:|",
    ]
    for i, row in enumerate(result["rows"], 1):
        boot = f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]" if row["mean"] is not None else "n/a"
        rank = f"{row['rank_mean']:.1f}" if row["rank_mean"] is not None else "n/a"
        lines.append(f"| {i} | {row['param']} | {row['importance']:.3f} | {boot} | {rank} |")
    s = result["scores"]
    lines += [
        "",
        f"Best val/score over trials: min {s['min']:.3f}, median {s['median']:.3f}, max {s['max']:.3f}.",
        "Conditional parameters (present in only some trials) are not in fANOVA's table.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/space_importance.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", type=Path, help="analyse this finished study instead of running one")
    parser.add_argument("--study-name", help="its Optuna study name (default: the folder name)")
    parser.add_argument("--space", default="gradnorm")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic set)")
    parser.add_argument("--storage", default="results")
    parser.add_argument("--name", default="importance64")
    parser.add_argument("--repeats", type=int, default=50, help="bootstrap resamples of the trials (default 50)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    experiment = args.experiment.resolve() if args.experiment else run_study(args)
    study = target_study(experiment, args.study_name or experiment.name)
    if len(study.trials) < 8:
        print(f"error: {experiment} has {len(study.trials)} finished trials; fANOVA needs more", file=sys.stderr)
        return 2
    rows, n = importance_table(study, args.repeats, args.seed)
    values = np.array([t.value for t in study.trials])
    record = (
        json.loads((experiment / SEARCH_RECORD_FILE).read_text()) if (experiment / SEARCH_RECORD_FILE).is_file() else {}
    )
    settings = record.get("config", {})
    result = {
        **run_facts("benchmarks/space_importance.py", argv),
        "experiment": str(experiment),
        "n_trials": n,
        "repeats": args.repeats,
        "rows": rows,
        "settings": ", ".join(
            f"{k} {settings[k]}"
            for k in ("space", "profile", "max_epochs", "img_size", "searcher", "scheduler")
            if k in settings
        ),
        "scores": {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())},
    }
    json_path, md_path = write_outputs(args.out, NAME, result, markdown(result))
    print(markdown(result))
    print(f"Wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
