"""The final round after the search: the top-k configurations and the baseline train again at full budget with
fresh seeds, the winner is chosen on their val scores, and then measured against the baseline on test.

    final = run_final_round(cfg, data, progress=SearchStatus)      # after the search's tuner.fit(), Ray running
    final["winner"], final["final_fit"]                             # final.json's content; None: round off

Why. The search names the trial with the best of ~16 noisy val scores, and that maximum is flattered by the noise
it was selected on (val 0.289 -> test 0.129 in one default run); ASHA may also have stopped it after fewer epochs
than the baseline. In the spirit of SMAC's intensification the candidates - the top `final_top_k` distinct
configurations by the leaderboard's best/val/score, plus the baseline point's configuration - are re-evaluated
like with like: each trains the full `max_epochs` with the same fresh seeds (cfg.seed+1 ... cfg.seed+N, never the
seed its search score was selected on). The **winner is the candidate with the highest mean best/val/score over
its final-round runs** (each run's best epoch: the checkpoint it hands back); ties go to the baseline (the search
has to beat it), then to the better search rank. A run that diverges, errors or stops short rules its candidate
out.

The final fit the user acts on: the winner's run and the baseline's run at the first final seed, both trained the
same epochs. Test is read once, after the choice: echotune.reporting.held_out evaluates both checkpoints on val and
test (P/R/F1 at each model's val-chosen confidence, 95 % bootstrap intervals over source videos, the difference
paired over the same resampled videos) and writes held_out.json. With several seeds only the first seed's pair is
measured on test: the mean over seeds chooses the winner, while the test claim is about the one model the user
gets (a checkpoint), not about an average of models nobody deploys.

Ray: a second Tuner in <experiment>/final/ (FIFO; the search's trainable, resources, concurrency, atomic storage
and failure handling), fed the fixed list of run configs by search.fixed_configs.FixedConfigs: one trial per
(candidate, seed). Files: final/ (Ray's experiment), final.json (plan, per-run scores, winner, final fit,
trial-epochs) and held_out.json (the final fit's full tables, shown by the leaderboard and report.html).

Resume (run.py --resume): final.json is written with "complete": false and the plan (candidates, seeds) before
the first run starts. A complete final.json is reused as it is (nothing trains or is evaluated again); an
incomplete one keeps its plan, and final/ is restored with Tuner.restore(resume_unfinished=True): finished runs
are kept, interrupted ones continue from their last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from echotune.atomic import atomic_write_text
from echotune.data.check import CheckedDataset
from echotune.metrics import SCORE_METRIC
from echotune.reporting.held_out import write_held_out
from echotune.results.documents import read_json_document
from echotune.results.layout import (
    BEST_CONFIG_FILE,
    BEST_SCORE_COLUMN,
    FAILED_STATUSES,
    FINAL_FILE,
    FINAL_PREFIX,
    HELD_OUT_FILE,
    INTERRUPTED,
    LIVE_STATUSES,
    is_object_store,
)
from echotune.search.best_config import reproduce_command, train_config_of, write_best_config
from echotune.search.experiment import load_experiment
from echotune.search.fixed_configs import FixedConfigs
from echotune.search.search_config import SearchConfig
from echotune.search.trial_table import trial_rows
from echotune.search.tuner import (
    build_trainable,
    define_trial,
    restore_tuner,
    run_config,
    storage_filesystem,
    trial_dirname,
)
from echotune.spaces import get_space
from echotune.spaces.trials import ReplayTrial

FINAL_DIR = "final"  # the final round's Ray experiment, inside the search's experiment folder
Log = Callable[[str], None]


@dataclass
class Candidate:
    """One configuration of the final round and what it did in the search. `config`: the search trial's config as
    Ray held it (JSON types); `runs`: one dict per final-round run (seed, trial_id, status, scores, checkpoint)."""

    config: dict
    is_baseline: bool
    search_trial_id: str | None  # None: the baseline, when the search has no row for it
    search_rank: int | None  # 1 = the search's best by best/val/score; None: not scored
    search_val_score: float | None
    search_epochs_trained: int | None
    search_epochs_planned: int | None
    runs: list[dict] = field(default_factory=list)

    def scores(self) -> list[float]:
        return [r["best_val_score"] for r in self.runs if r.get("best_val_score") is not None]

    def to_dict(self) -> dict:
        scores = self.scores()
        return {
            **dataclasses.asdict(self),
            "val_mean": statistics.fmean(scores) if scores else None,
            "val_sd": statistics.stdev(scores) if len(scores) > 1 else None,
        }

    @classmethod
    def from_dict(cls, values: dict) -> Candidate:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def identity(config: dict) -> str:
    """A configuration without its seed, as comparable text (distinct candidates; a run -> its candidate)."""
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True, default=str)


def as_json(value):
    """JSON types only (tuples -> lists), as Ray's files and the leaderboard's config_json hold a config."""
    return json.loads(json.dumps(value, default=str))


def baseline_trial_config(cfg: SearchConfig) -> dict:
    """The config Ray gives the baseline trial: the space's baseline point, the constants its define-by-run function
    returns for it, and the search's per-trial constants (what search.tuner.define_trial builds)."""
    point = get_space(cfg.space).baseline(cfg.profile)
    return as_json({**point, **define_trial(ReplayTrial(point), cfg.space, cfg.profile, cfg.trial_constants())})


def select_candidates(rows: list[dict], top_k: int, baseline_config: dict) -> list[Candidate]:
    """The top_k distinct configurations by best/val/score among the search's scored trials (diverged and errored
    ones excluded; ASHA-stopped ones count, at their best rung), then the baseline's configuration unless it is
    already one of them. `rows`: leaderboard rows (search.trial_table); `baseline_config`: the baseline's config,
    used when no row is the baseline."""
    scored = sorted(
        (
            r
            for r in rows
            if r.get(BEST_SCORE_COLUMN) is not None and r.get("status") not in FAILED_STATUSES and r.get("config_json")
        ),
        key=lambda r: -r[BEST_SCORE_COLUMN],
    )

    def candidate(row: dict | None, rank: int | None, config: dict, is_baseline: bool) -> Candidate:
        row = row or {}
        return Candidate(
            config,
            is_baseline,
            row.get("trial_id"),
            rank,
            row.get(BEST_SCORE_COLUMN),
            row.get("epochs_trained"),
            row.get("epochs_planned"),
        )

    candidates: dict[str, Candidate] = {}
    for rank, row in enumerate(scored, 1):
        config = json.loads(row["config_json"])
        if len(candidates) < top_k and identity(config) not in candidates:
            candidates[identity(config)] = candidate(row, rank, config, bool(row.get("is_baseline")))
    baseline_row = next((r for r in rows if r.get("is_baseline") and r.get("config_json")), None)
    config = json.loads(baseline_row["config_json"]) if baseline_row else as_json(baseline_config)
    if identity(config) in candidates:
        candidates[identity(config)].is_baseline = True
    else:
        rank = next((i for i, r in enumerate(scored, 1) if r is baseline_row), None)
        candidates[identity(config)] = candidate(baseline_row, rank, config, True)
    return list(candidates.values())


def final_seeds(cfg: SearchConfig) -> list[int]:
    """cfg.seed+1 ... cfg.seed+final_seeds: fresh for every candidate (the search trained them all with cfg.seed)."""
    return [cfg.seed + i for i in range(1, cfg.final_seeds + 1)]


def run_configs(candidates: list[Candidate], seeds: list[int], epochs: int) -> list[dict]:
    """One trial config per (candidate, seed), candidates in order, every one at the full `epochs`."""
    return [{**c.config, "seed": seed, "epochs": epochs} for c in candidates for seed in seeds]


def final_round_config(cfg: SearchConfig) -> SearchConfig:
    """The search's settings for the final round's own Ray experiment, <experiment>/final/."""
    return dataclasses.replace(cfg, storage=cfg.experiment_dir, name=FINAL_DIR)


def build_final_tuner(cfg: SearchConfig, data: CheckedDataset, configs: list[dict], callbacks: list | None = None):
    """A Tuner over exactly `configs` (FIFO: every run trains all its epochs), with the search's trainable,
    resources, concurrency and run config (atomic storage, retries), stored in <experiment>/final/."""
    tune_config = tune.TuneConfig(
        search_alg=FixedConfigs(configs),
        scheduler=FIFOScheduler(),
        num_samples=len(configs),
        max_concurrent_trials=cfg.concurrency,
        reuse_actors=cfg.reuse_actors,
        trial_dirname_creator=trial_dirname,
    )
    return tune.Tuner(
        build_trainable(cfg, data), tune_config=tune_config, run_config=run_config(final_round_config(cfg), callbacks)
    )


def run_record(row: dict) -> dict:
    """A final-round run as final.json keeps it, from its leaderboard row."""
    config = json.loads(row["config_json"])
    return {
        "seed": config.get("seed"),
        "trial_id": row["trial_id"],
        "status": row["status"],
        "epochs_trained": row["epochs_trained"],
        "epochs_planned": row["epochs_planned"],
        "best_epoch": row["best_epoch"],
        "best_val_score": row[BEST_SCORE_COLUMN],
        "final_val_score": row[FINAL_PREFIX + SCORE_METRIC],
        "checkpoint": row["checkpoint_path"],
        "wall_time_s": row["wall_time_s"],
    }


def attach_runs(candidates: list[Candidate], rows: list[dict]) -> None:
    """Give each candidate its runs (by configuration and seed) from the final round's leaderboard rows."""
    by_identity = {identity(c.config): c for c in candidates}
    for c in candidates:
        c.runs = []
    for row in sorted(rows, key=lambda r: json.loads(r["config_json"]).get("seed", 0)):
        owner = by_identity.get(identity(json.loads(row["config_json"])))
        if owner is not None:
            owner.runs.append(run_record(row))


def complete(run: dict, epochs: int) -> bool:
    """A run that trained every epoch and was scored (not diverged, errored or stopped)."""
    return run["status"] == "TERMINATED" and run["epochs_trained"] == epochs and run["best_val_score"] is not None


def choose_winner(candidates: list[Candidate], seeds: list[int], epochs: int) -> Candidate | None:
    """The candidate with the highest mean best/val/score over its final-round runs; only candidates whose every
    seed ran all `epochs` compete. Ties: the baseline, then the better search rank. None when none competes."""
    eligible = [
        c
        for c in candidates
        if sorted(r["seed"] for r in c.runs) == sorted(seeds) and all(complete(r, epochs) for r in c.runs)
    ]
    if not eligible:
        return None
    return max(eligible, key=lambda c: (statistics.fmean(c.scores()), c.is_baseline, -(c.search_rank or math.inf)))


def read_final(experiment_dir: str | Path) -> dict | None:
    """final.json of an experiment folder (None when there is none)."""
    return read_json_document(Path(experiment_dir) / FINAL_FILE)


def write_final(experiment_dir: str | Path, doc: dict) -> Path:
    return atomic_write_text(Path(experiment_dir) / FINAL_FILE, json.dumps(doc, indent=2) + "\n")


def _score(held: dict, model: str, split: str) -> dict:
    return held[model]["ci95"][split]["score"]


def measure_final_fit(
    experiment: Path,
    data: CheckedDataset,
    winner: Candidate,
    baseline: Candidate | None,
    seed: int,
    cfg: SearchConfig,
    log: Log,
) -> dict | None:
    """The winner's and the baseline's runs at `seed` on val and test (held_out.json); their scores, intervals and
    paired difference as final.json keeps them (None: the winner's run kept no checkpoint)."""

    def run_at(candidate: Candidate | None) -> dict | None:
        run = next((r for r in candidate.runs if r["seed"] == seed), None) if candidate is not None else None
        return run if run is not None and complete(run, cfg.max_epochs) and run["checkpoint"] else None

    runs = {"best": run_at(winner), "baseline": run_at(baseline)}
    rows = {
        name: {"trial_id": run["trial_id"], "checkpoint_path": run["checkpoint"], "epochs_planned": cfg.max_epochs}
        for name, run in runs.items()
        if run is not None
    }
    held = write_held_out(experiment, data, rows.get("best"), rows.get("baseline"), seed=cfg.seed, log=log)
    if held is None:  # the winner's run kept no checkpoint
        return None
    split = held["split"]

    def model(name: str, candidate: Candidate) -> dict:
        return {
            "search_trial_id": candidate.search_trial_id,
            "trial_id": runs[name]["trial_id"],
            "checkpoint": held[name]["checkpoint"],
            "checkpoint_epoch": held[name]["epoch"],
            "val": _score(held, name, "val"),
            split: _score(held, name, split),
        }

    baseline_is_winner = baseline is winner
    difference = held.get("best_minus_baseline")
    return {
        "seed": seed,
        "epochs": cfg.max_epochs,
        "split": split,
        "held_out_file": HELD_OUT_FILE,
        "metric": "score",
        "baseline_is_winner": baseline_is_winner,
        "winner": model("best", winner),
        "baseline": model("baseline", baseline) if "baseline" in held else None,
        "difference": {s: difference[s]["score"] for s in ("val", split)} if difference else None,
    }


def candidates_table(doc: dict) -> str:
    """The candidates with their search and final-round val scores, the winner marked."""
    winner = (doc.get("winner") or {}).get("index")
    lines = [
        f"{'':2}{'candidate':<22}{'search val':>11}{'epochs':>8}   {'final-round val mean ± sd':<26}{'runs':>5}"
        f"{'epochs':>8}"
    ]
    for i, c in enumerate(doc["candidates"]):
        search = f"{c['search_val_score']:.3f}" if c["search_val_score"] is not None else "-"
        epochs = (
            f"{c['search_epochs_trained']}/{c['search_epochs_planned']}"
            if c["search_epochs_trained"] is not None
            else "-"
        )
        mean = (
            "-"
            if c["val_mean"] is None
            else (f"{c['val_mean']:.3f}" + (f" ± {c['val_sd']:.3f}" if c["val_sd"] is not None else ""))
        )
        failed = [r["status"] for r in c["runs"] if not complete(r, doc["epochs"])]
        trained = "/".join(str(r["epochs_trained"]) for r in c["runs"]) or "-"
        label = f"{c['search_trial_id'] or '(not run)'}{' (baseline)' if c['is_baseline'] else ''}"
        lines.append(
            f"{'*' if i == winner else ' ':2}{label:<22}{search:>11}{epochs:>8}   {mean:<26}"
            f"{len(c['runs']):>5}{trained:>8}" + (f"  ({', '.join(failed)}: out)" if failed else "")
        )
    return "\n".join(lines)


def headline(doc: dict) -> str:
    """`Final fit (E epochs, seed S): winner T test score X [lo, hi] vs baseline Y [lo, hi]; difference ...`"""
    fit = doc.get("final_fit")
    if not fit:
        return "Final fit: no candidate completed every final-round run; nothing to compare on held-out data"
    split, winner = fit["split"], fit["winner"]
    estimate = lambda e, spec=".3f": f"{e['value']:{spec}} [{e['low']:{spec}}, {e['high']:{spec}}]"  # noqa: E731
    head = (
        f"Final fit ({fit['epochs']} epochs, seed {fit['seed']}): winner {winner['search_trial_id']} {split} "
        f"score {estimate(winner[split])}"
    )
    if fit["baseline_is_winner"]:
        return f"{head}; the winner is the baseline itself, so the difference is 0 by construction"
    if fit["baseline"] is None:
        return f"{head}; the baseline's final-round run did not finish, so there is no comparison"
    return (
        f"{head} vs baseline {estimate(fit['baseline'][split])}; difference "
        f"{estimate(fit['difference'][split], '+.3f')} (paired 95 % CI over source videos)"
    )


def write_winner_config(experiment: Path, doc: dict, data_yaml: str | Path) -> Path:
    """best_config.yaml from the final round: the winner's first-seed run, runnable with train.py --config."""
    winner = doc["candidates"][doc["winner"]["index"]]
    fit = doc.get("final_fit")
    seed = fit["seed"] if fit else doc["seeds"][0]
    run = next(r for r in winner["runs"] if r["seed"] == seed)
    checkpoint = fit["winner"]["checkpoint"] if fit else run["checkpoint"]  # the file (held_out.json's) if measured
    path = experiment / BEST_CONFIG_FILE
    config = train_config_of({**winner["config"], "seed": seed, "epochs": doc["epochs"]})
    meta = {
        "trial_id": winner["search_trial_id"],
        "selected_by": "final round: highest mean val/score over "
        f"{len(doc['seeds'])} fresh seed(s) at {doc['epochs']} epochs",
        "is_baseline": winner["is_baseline"],
        "search_val_score": winner["search_val_score"],
        "final_round_val_mean": winner["val_mean"],
        "final_round_val_sd": winner["val_sd"],
        "final_round_seeds": doc["seeds"],
        "final_round_trial_id": run["trial_id"],
        SCORE_METRIC: run["best_val_score"],
        "checkpoint": checkpoint,
        "reproduce": reproduce_command(path, data_yaml),
    }
    return write_best_config(path, config, meta)


def unfinished_search(cfg: SearchConfig, search_rows: list[dict]) -> str | None:
    """Why the search has not finished (interrupted: Ctrl-C, or trials never started), else None. A search cut
    short by its time budget has finished: what it ran is all it will run."""
    waiting = [r["trial_id"] for r in search_rows if r["status"] in (*LIVE_STATUSES, INTERRUPTED)]
    if waiting:
        return f"{len(waiting)} trial(s) unfinished"
    if cfg.time_budget_s is None and len(search_rows) < cfg.num_samples:
        return f"{len(search_rows)} of {cfg.num_samples} trials started"
    return None


def _plan(cfg: SearchConfig, search_rows: list[dict], log: Log) -> dict | None:
    if (reason := unfinished_search(cfg, search_rows)) is not None:  # e.g. Ctrl-C: the user wants it to stop
        log(
            f"\nFinal round not started: the search did not finish ({reason}); resume it (run.py --name {cfg.name} "
            f"--resume) and the final round runs after it"
        )
        return None
    candidates = select_candidates(search_rows, cfg.final_top_k, baseline_trial_config(cfg))
    if not any(c.search_val_score is not None for c in candidates):
        log("Final round skipped: no search trial was scored")
        return None
    return {
        "complete": False,
        "top_k": cfg.final_top_k,
        "seeds": final_seeds(cfg),
        "epochs": cfg.max_epochs,
        "selection": "highest mean best/val/score over the final-round runs (every candidate at the full epochs "
        "with the same fresh seeds); ties: the baseline, then the search rank",
        "test_pair": "the winner's and the baseline's runs at the first seed",
        "candidates": [c.to_dict() for c in candidates],
        "trial_epochs": {"search": sum(int(r.get("epochs_trained") or 0) for r in search_rows)},
    }


def run_final_round(
    cfg: SearchConfig, data: CheckedDataset, progress: Callable[[int], tune.Callback] | None = None, log: Log = print
) -> dict | None:
    """Run (or resume, or reuse) the final round of the search `cfg` and return final.json's content; None when
    it is off (final_top_k 0), the results live in an object store, or no trial was scored. Ray must be running.
    `progress(total_runs)`: a Tune callback printing progress (search.progress.SearchStatus; a resumed round gets
    it in place of the one it saved)."""
    if cfg.final_top_k <= 0:
        return None
    if is_object_store(cfg.storage):
        log("Final round skipped: the trial files are in an object store; it reads them from a filesystem")
        return None
    if cfg.scheduler == "pbt":  # a PBT member is a schedule of configs; this round retrains fixed ones
        log(
            "Final round skipped: PBT members change their config mid-run, and the final round retrains fixed "
            "configurations from scratch"
        )
        return None
    experiment = Path(cfg.experiment_dir)
    doc = read_final(experiment)
    if doc is not None and doc.get("complete"):
        log(f"\nFinal round: reusing {experiment / FINAL_FILE} (complete)\n{candidates_table(doc)}")
        return doc
    doc = doc or _plan(cfg, load_experiment(experiment).rows, log)
    if doc is None:
        return None
    write_final(experiment, doc)  # the plan, before any run: a resume keeps these candidates
    candidates = [Candidate.from_dict(c) for c in doc["candidates"]]
    seeds, epochs = doc["seeds"], doc["epochs"]
    configs = run_configs(candidates, seeds, epochs)
    final_cfg = final_round_config(cfg)
    restoring = tune.Tuner.can_restore(final_cfg.experiment_dir, storage_filesystem=storage_filesystem(final_cfg))
    log(
        f"\nFinal round{' (resumed)' if restoring else ''}: {len(candidates)} candidates (top {doc['top_k']} of the "
        f"search + the baseline) x {len(seeds)} seed(s) {', '.join(map(str, seeds))} = {len(configs)} runs of "
        f"{epochs} epochs, {cfg.concurrency} at a time, in {final_cfg.experiment_dir}"
    )
    status = progress(len(configs)) if progress else None
    tuner = (
        restore_tuner(final_cfg, data, status)
        if restoring
        else build_final_tuner(cfg, data, configs, [status] if status else None)
    )
    tuner.fit()
    attach_runs(candidates, trial_rows(final_cfg.experiment_dir))
    winner = choose_winner(candidates, seeds, epochs)
    baseline = next((c for c in candidates if c.is_baseline), None)
    doc["candidates"] = [c.to_dict() for c in candidates]
    doc["winner"] = (
        None
        if winner is None
        else {
            "index": candidates.index(winner),
            "search_trial_id": winner.search_trial_id,
            "is_baseline": winner.is_baseline,
            "val_mean": statistics.fmean(winner.scores()),
            "was_the_search_best": winner.search_rank == 1,
        }
    )
    doc["trial_epochs"]["final_round"] = sum(int(r["epochs_trained"] or 0) for c in candidates for r in c.runs)
    doc["trial_epochs"]["total"] = doc["trial_epochs"]["search"] + doc["trial_epochs"]["final_round"]
    log(f"\nFinal round (winner *: highest mean val/score over its runs):\n{candidates_table(doc)}")
    doc["final_fit"] = (
        measure_final_fit(experiment, data, winner, baseline, seeds[0], cfg, log) if winner is not None else None
    )
    doc["complete"] = True
    write_final(experiment, doc)
    return doc
