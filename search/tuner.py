"""Assemble the Ray Tune search: trainable with resources, Optuna searcher, equal-epoch ASHA, run config.

Data flow: SearchConfig (validated by run.py) + a checked dataset -> `build_tuner` -> `Tuner.fit()`.
The dataset is checked once by the driver and shipped to trials once through Ray's object store
(`tune.with_parameters`); trials never re-read or re-check it.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from echotune.results.layout import is_object_store
from echotune.data.check import CheckedDataset
from echotune.metrics import SELECTION_METRIC
from echotune.search.atomic_storage import atomic_local_filesystem
from echotune.search.optuna_bridge import EchoOptunaSearch
from echotune.search.pbt import DEFAULT_PBT_INTERVAL, build_pbt_scheduler, build_pbt_search, pbt_checkpoint_config
from echotune.search.progress import SearchStatus
from echotune.search.scheduler import EpochASHA
from echotune.spaces import get_space, to_train_config
from echotune.trainables import train_trial

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's multivariate/group

RESULTS_DIR_ENV = "ECHOTUNE_RESULTS_DIR"

# --objectives name -> reported metric. score: the best val/score so far (SELECTION_METRIC), the number ASHA's
# rungs compare, Optuna is told and the leaderboard ranks by; the others are the last epoch's values.
OBJECTIVES = {"score": SELECTION_METRIC, "map50": "val/map50", "map50_95": "val/map50_95",
              "view_acc": "val/view_acc", "view_f1": "val/view_f1", "view_kappa": "val/view_kappa", "f1": "val/f1"}


@dataclass
class SearchConfig:
    space: str = "gradnorm"
    profile: str = "quick"
    name: str = "gradnorm"
    storage: str = "results"  # local dir, NFS path or s3://...
    shared_storage: bool = False  # the local `storage` path is a mount every cluster node shares (NFS)
    num_samples: int = 8
    max_epochs: int = 6
    img_size: int | None = None  # None: the profile's
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    concurrency: int = 2
    seed: int = 0
    objectives: list[str] = field(default_factory=lambda: ["score"])
    scheduler: str = "asha"  # asha, fifo or pbt (search/pbt.py: num_samples is then the population size)
    pbt_interval: int | None = DEFAULT_PBT_INTERVAL  # pbt: perturb every N epochs; None: at the stage ends
    searcher: str = "tpe"
    time_budget_s: float | None = None
    max_failures: int = 2
    # Run the next trial in the finished trial's worker process instead of starting a fresh one (its Python and
    # torch imports cost seconds per trial: benchmarks/overhead.py). Trials stay independent: fit() seeds and
    # builds everything from the config, and a trial that crashes gets a fresh process.
    reuse_actors: bool = True
    # Train and rank on splits that share source videos (run.py --allow-leaky-splits): the results are flagged.
    allow_leaky_splits: bool = False
    # data.yaml's `video_id_pattern` replaced for this search (run.py --video-id-pattern); --resume keeps it.
    video_id_pattern: str | None = None
    # The final round after the search (search/final_round.py): the top `final_top_k` distinct configurations and
    # the baseline trained again for max_epochs with seeds seed+1 ... seed+final_seeds; 0 turns it off.
    final_top_k: int = 3
    final_seeds: int = 1
    # Besides the baseline, start from the detector recipe (spaces/original.py DETECTOR_RECIPE, restricted to the
    # parameters the profile searches) as a second fixed trial: a short search must not miss it by chance (a
    # 10-trial default run on 2026-11-28 never drew the anchor-free head). Off for method comparisons.
    recipe_point: bool = True

    @property
    def metrics(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def experiment_dir(self) -> str:
        return os.path.join(self.storage, self.name) if is_object_store(self.storage) else str(Path(self.storage, self.name).resolve())

    @property
    def local_dir(self) -> Path:
        """Where files that need a filesystem live (optuna.db, search.json): the experiment folder, or for
        object-store experiments (s3://...) $ECHOTUNE_RESULTS_DIR/<name>/, default ./results/<name>/ (a driver
        started by `ray job submit` runs in a temporary copy of the working dir: cluster.yaml sets the variable)."""
        if not is_object_store(self.storage):
            return Path(self.experiment_dir)
        return Path(os.environ.get(RESULTS_DIR_ENV) or "results", self.name).expanduser().resolve()

    @property
    def optuna_storage_url(self) -> str:
        """SQLite in `local_dir` (SQLite needs a filesystem)."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.local_dir / 'optuna.db'}"

    def trial_constants(self) -> dict:
        """Config keys fixed for every trial of this search (merged over what the space samples)."""
        # A trial uses the devices Ray reserved for it: a CPU trial placed on a GPU node must not take the GPU.
        # workers=-1: the engine picks DataLoader processes for the device (CUDA: the trial's CPUs - 1).
        constants = {"epochs": self.max_epochs, "seed": self.seed, "cpus": max(1, int(self.cpus_per_trial)),
                     "device": "cuda" if self.gpus_per_trial > 0 else "cpu", "workers": -1, "cache_images": True}
        if self.img_size is not None:
            constants["img_size"] = self.img_size
        return constants


def define_trial(trial: optuna.Trial, space: str, profile: str, constants: dict) -> dict:
    """Define-by-run function handed to Optuna (module level and bound with functools.partial: picklable)."""
    return {**(get_space(space).define(trial, profile) or {}), **constants}


def fixed_points(cfg: SearchConfig) -> list[dict]:
    """The search's fixed starting points, in order: the baseline, then (cfg.recipe_point) the detector recipe
    (spaces/original.py) where the profile searches its parameters and it differs from the baseline."""
    space = get_space(cfg.space)
    baseline = space.baseline(cfg.profile)
    points = [baseline] if baseline is not None else []
    recipe = space.recipe(cfg.profile) if cfg.recipe_point else None
    if recipe and recipe != baseline:
        points.append(recipe)
    return points


def build_searcher(cfg: SearchConfig) -> EchoOptunaSearch:
    sampler = (optuna.samplers.RandomSampler(seed=cfg.seed) if cfg.searcher == "random"
               else optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True, group=True,
                                               constant_liar=True, n_startup_trials=max(4, cfg.concurrency)))
    storage = optuna.storages.RDBStorage(cfg.optuna_storage_url)
    multi = len(cfg.metrics) > 1
    points = fixed_points(cfg)
    return EchoOptunaSearch(
        space=functools.partial(define_trial, space=cfg.space, profile=cfg.profile, constants=cfg.trial_constants()),
        metric=cfg.metrics if multi else cfg.metrics[0], mode=["max"] * len(cfg.metrics) if multi else "max",
        points_to_evaluate=points or None, sampler=sampler, storage=storage,
        study_name=cfg.name)


def build_scheduler(cfg: SearchConfig):
    if cfg.scheduler == "fifo":
        return FIFOScheduler()
    if cfg.scheduler == "pbt":  # refuses several objectives itself
        return build_pbt_scheduler(cfg)
    if len(cfg.metrics) > 1:  # run.py refuses the combination; a SearchConfig built in code must not slip by
        raise ValueError(f"ASHA with several objectives {cfg.objectives}: its pruning on one number would decide "
                         f"the Pareto front; use scheduler='fifo'")
    # The rungs compare the number Optuna is told (SELECTION_METRIC for --objectives score, the default).
    # The baseline point marks the trial ASHA must never stop (the reference of every gain over the baseline).
    return EpochASHA(metric=cfg.metrics[0], mode="max", experiment_dir=cfg.experiment_dir, max_epochs=cfg.max_epochs,
                     baseline=get_space(cfg.space).baseline(cfg.profile), protected=tuple(fixed_points(cfg)[1:]))


def trial_resources(cfg: SearchConfig) -> dict[str, float]:
    """What Ray reserves for each trial. Fractions are fine here (0.5 GPU: two trials share one GPU); the nodes
    themselves declare whole CPUs and GPUs (cluster.yaml)."""
    return {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}


def build_trainable(cfg: SearchConfig, data: CheckedDataset):
    return tune.with_resources(tune.with_parameters(train_trial, data=data, to_train_config=to_train_config), trial_resources(cfg))


def storage_filesystem(cfg: SearchConfig):
    """For a local or NFS results folder, a filesystem whose files are written atomically (Ray's own copy would
    leave empty files behind a killed driver: see search/atomic_storage.py); object stores: Ray's default."""
    return None if is_object_store(cfg.storage) else atomic_local_filesystem()


def run_config(cfg: SearchConfig, callbacks: list | None = None, stop: tune.Stopper | None = None) -> tune.RunConfig:
    """`stop`: an optional tune.Stopper (e.g. search.budget.TrialEpochBudget); None stops on num_samples and
    time_budget_s only."""
    return tune.RunConfig(
        name=cfg.name, storage_path=cfg.storage if is_object_store(cfg.storage) else str(Path(cfg.storage).resolve()),
        storage_filesystem=storage_filesystem(cfg),
        checkpoint_config=pbt_checkpoint_config(cfg) if cfg.scheduler == "pbt" else
        tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val/score", checkpoint_score_order="max"),
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        callbacks=callbacks or [], stop=stop, verbose=0)


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default packs the config into the name)."""
    return f"trial_{trial.trial_id}"


def build_tuner(cfg: SearchConfig, data: CheckedDataset, callbacks: list | None = None,
                stop: tune.Stopper | None = None) -> tune.Tuner:
    pbt = cfg.scheduler == "pbt"  # PBT: a fixed population, all live at once (Ray time-slices it), no Optuna
    search_alg, param_space = build_pbt_search(cfg) if pbt else (build_searcher(cfg), None)
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=build_scheduler(cfg), num_samples=cfg.num_samples,
                                  max_concurrent_trials=None if pbt else cfg.concurrency,
                                  time_budget_s=cfg.time_budget_s, reuse_actors=cfg.reuse_actors,
                                  trial_dirname_creator=trial_dirname)
    return tune.Tuner(build_trainable(cfg, data), param_space=param_space, tune_config=tune_config,
                      run_config=run_config(cfg, callbacks, stop))


def restore_tuner(cfg: SearchConfig, data: CheckedDataset, status: tune.Callback | None = None) -> tune.Tuner:
    """Continue an interrupted search: finished trials are kept, unfinished ones resume from their checkpoints,
    the Optuna study (SQLite) keeps its history, and EpochASHA rebuilds its rungs from the trials' results.
    `status`: the live status of this run, in place of the one the experiment saved (its settings were the
    first run's, and experiments of earlier versions saved a ProgressPrinter)."""
    tuner = tune.Tuner.restore(cfg.experiment_dir, trainable=build_trainable(cfg, data), resume_unfinished=True,
                               resume_errored=False, restart_errored=False, storage_filesystem=storage_filesystem(cfg))
    if status is not None:
        replace_status(tuner, status)
    return tuner


def replace_status(tuner: tune.Tuner, status: tune.Callback) -> bool:
    """Put `status` in place of the callbacks of its kind (and any SearchStatus) a restored Tuner unpickled
    (Tuner.restore takes no callbacks; the run config it restored is the one the run uses). False through Ray
    Client, where the Tuner runs on the cluster and keeps the saved callbacks."""
    local = getattr(tuner, "_local_tuner", None)  # Ray's TunerInternal; None through Ray Client
    if local is None:
        return False
    run_config = local.get_run_config()
    replaced = (SearchStatus, type(status))
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, replaced)] + [status]
    return True
