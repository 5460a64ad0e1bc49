"""The Ray side of the search benchmarks: run one real search the way search/run.py does, with a driver-side
event log, and read back every result Ray wrote.

    cfg = BenchSearchConfig(space="gradnorm", name="random-seed0", storage="results/bench/x", model_scale="test")
    run = run_search(cfg, data, stop=TrialEpochBudget(48))   # -> SearchRun(fit_s, ray_start_s, events, ...)
    results = read_results(cfg.experiment_dir)               # one dict per reported epoch, every trial

The event log records, on the driver's clock (time.time(), the clock the trainable's `trial_started_at` uses):
when a trial first appears (created by the searcher), when its actor started (`on_trial_start`), when each result
arrived (in arrival order), and when the trial ended.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import tune

from echotune.data.check import CheckedDataset
from echotune.metrics import SCORE_METRIC
from echotune.results.documents import read_json_lines
from echotune.results.layout import RESULT_FILE
from echotune.results.search_record import write_search_record
from echotune.search.orchestrate import close_orphaned_optuna_trials, start_ray
from echotune.search.search_config import SearchConfig
from echotune.search.tuner import build_tuner
from echotune.trainables.trial import DIVERGED_KEY


@dataclass
class BenchSearchConfig(SearchConfig):
    """A SearchConfig that can pin the detector scale for every trial (--quick: the tiny `test` scale). The
    benchmarks compare search methods from the same start, the baseline alone: no recipe point (measured so)."""

    model_scale: str | None = None  # None: what the space chooses
    recipe_point: bool = False

    def trial_constants(self) -> dict:
        constants = super().trial_constants()
        if self.model_scale is not None:
            constants["model_scale"] = self.model_scale  # constants override sampled values (define_trial)
        return constants


class EventLog(tune.Callback):
    """Driver-side timestamps of each trial's life and of every result, in arrival order."""

    def __init__(self):
        self.first_seen: dict[str, float] = {}  # trial_id -> when the driver first listed it (created, pending)
        self.started: dict[str, float] = {}  # trial_id -> on_trial_start (its actor is up)
        self.ended: dict[str, float] = {}  # trial_id -> on_trial_complete / on_trial_error
        self.results: list[dict] = []  # {"t", "trial_id", "iteration", "epoch", "score", "diverged"} in arrival order

    def _seen(self, trials) -> None:
        now = time.time()
        for trial in trials:
            self.first_seen.setdefault(trial.trial_id, now)

    def on_step_end(self, iteration, trials, **info):
        self._seen(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._seen(trials)
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append(
            {
                "t": time.time(),
                "trial_id": trial.trial_id,
                "iteration": int(result.get("training_iteration", 0)),
                "epoch": result.get("epoch"),
                "score": result.get(SCORE_METRIC),
                "diverged": bool(result.get(DIVERGED_KEY)),
            }
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended.setdefault(trial.trial_id, time.time())

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended.setdefault(trial.trial_id, time.time())

    def arrival_times(self) -> dict[tuple[str, int], float]:
        """(trial_id, training_iteration) -> when the driver got that result (first arrival)."""
        times: dict[tuple[str, int], float] = {}
        for r in self.results:
            times.setdefault((r["trial_id"], r["iteration"]), r["t"])
        return times


@dataclass
class SearchRun:
    experiment_dir: Path
    ray_start_s: float  # ray.init
    fit_s: float  # Tuner.fit: the search itself
    shutdown_s: float  # ray.shutdown
    fit_started_at: float  # time.time() when Tuner.fit began
    fit_ended_at: float  # time.time() when it returned
    fit_cpu_s: float  # CPU time of the driver process (all its threads) during Tuner.fit
    events: EventLog = field(default_factory=EventLog)


def run_search(
    cfg: SearchConfig, data: CheckedDataset, stop: tune.Stopper | None = None, cpus: int | None = None
) -> SearchRun:
    """A fresh local Ray, one search into cfg.experiment_dir (an older folder of that name is deleted first),
    then Ray shut down. The same pieces as search/run.py: search record, build_tuner, orphan clean-up. When Ray
    is already running (the caller started it for several searches), the search uses it and leaves it up."""
    experiment = Path(cfg.experiment_dir)
    if experiment.exists():
        shutil.rmtree(experiment)
    events = EventLog()
    start = time.perf_counter()
    own_ray = not ray.is_initialized()
    if own_ray:
        start_ray(None, cpus)
    ray_start_s = time.perf_counter() - start
    try:
        write_search_record(cfg, data.config.yaml_path)
        tuner = build_tuner(cfg, data, [events], stop=stop)
        fit_started_at, start, cpu = time.time(), time.perf_counter(), time.process_time()
        tuner.fit()
        fit_s, fit_ended_at, fit_cpu_s = time.perf_counter() - start, time.time(), time.process_time() - cpu
        close_orphaned_optuna_trials(cfg)  # trials the searcher asked for but Ray never started (budget reached)
    finally:
        start = time.perf_counter()
        if own_ray:
            ray.shutdown()
        shutdown_s = time.perf_counter() - start
    return SearchRun(experiment, ray_start_s, fit_s, shutdown_s, fit_started_at, fit_ended_at, fit_cpu_s, events)


def read_results(experiment_dir: str | Path) -> list[dict]:
    """Every result of every trial from Ray's per-trial result.json (one JSON object per line and epoch); a
    trial's repeated training_iteration (a retry replaying epochs) keeps its latest line."""
    results = []
    for path in sorted(Path(experiment_dir).glob(f"*/{RESULT_FILE}")):
        by_iteration: dict[int, dict] = {}
        for result in read_json_lines(path):  # a line cut by a crash is skipped
            by_iteration[int(result.get("training_iteration", 0))] = result
        results += [by_iteration[i] for i in sorted(by_iteration)]
    return results
