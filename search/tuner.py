"""Assemble the Ray Tune search: trainable with resources, Optuna searcher, equal-epoch ASHA, run config.

Data flow: SearchConfig (validated by run.py) + a checked dataset -> `build_tuner` -> `Tuner.fit()`.
The dataset is checked once by the driver and shipped to trials once through Ray's object store
(`tune.with_parameters`); trials never re-read or re-check it.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from echotune.data.check import CheckedDataset
from echotune.metrics import SCORE_METRIC
from echotune.results.layout import is_object_store, trial_folder_name
from echotune.search.atomic_storage import atomic_local_filesystem
from echotune.search.legacy_names import LegacyExperimentError, legacy_module_names
from echotune.search.optuna_bridge import EchoOptunaSearch
from echotune.search.pbt import build_pbt_scheduler, build_pbt_search, pbt_checkpoint_config
from echotune.search.progress import SearchStatus
from echotune.search.scheduler import EpochASHA
from echotune.search.search_config import SearchConfig
from echotune.spaces import get_space, to_train_config
from echotune.trainables import train_trial

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's multivariate/group


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
    sampler = (
        optuna.samplers.RandomSampler(seed=cfg.seed)
        if cfg.searcher == "random"
        else optuna.samplers.TPESampler(
            seed=cfg.seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=max(4, cfg.concurrency)
        )
    )
    storage = optuna.storages.RDBStorage(cfg.optuna_storage_url)
    multi = len(cfg.metrics) > 1
    points = fixed_points(cfg)
    return EchoOptunaSearch(
        space=functools.partial(define_trial, space=cfg.space, profile=cfg.profile, constants=cfg.trial_constants()),
        metric=cfg.metrics if multi else cfg.metrics[0],
        mode=["max"] * len(cfg.metrics) if multi else "max",
        points_to_evaluate=points or None,
        sampler=sampler,
        storage=storage,
        study_name=cfg.name,
    )


def build_scheduler(cfg: SearchConfig):
    if cfg.scheduler == "fifo":
        return FIFOScheduler()
    if cfg.scheduler == "pbt":  # refuses several objectives itself
        return build_pbt_scheduler(cfg)
    if len(cfg.metrics) > 1:  # run.py refuses the combination; a SearchConfig built in code must not slip by
        raise ValueError(
            f"ASHA with several objectives {cfg.objectives}: its pruning on one number would decide "
            f"the Pareto front; use scheduler='fifo'"
        )
    # The rungs compare the number Optuna is told (SELECTION_METRIC for --objectives score, the default).
    # The baseline point marks the trial ASHA must never stop (the reference of every gain over the baseline).
    return EpochASHA(
        metric=cfg.metrics[0],
        mode="max",
        experiment_dir=cfg.experiment_dir,
        max_epochs=cfg.max_epochs,
        baseline=get_space(cfg.space).baseline(cfg.profile),
        protected=tuple(fixed_points(cfg)[1:]),
    )


def trial_resources(cfg: SearchConfig) -> dict[str, float]:
    """What Ray reserves for each trial. Fractions are fine here (0.5 GPU: two trials share one GPU); the nodes
    themselves declare whole CPUs and GPUs (cluster.yaml)."""
    return {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}


def build_trainable(cfg: SearchConfig, data: CheckedDataset):
    return tune.with_resources(
        tune.with_parameters(train_trial, data=data, to_train_config=to_train_config), trial_resources(cfg)
    )


def storage_filesystem(cfg: SearchConfig):
    """For a local or NFS results folder, a filesystem whose files are written atomically (Ray's own copy would
    leave empty files behind a killed driver: see search/atomic_storage.py); object stores: Ray's default."""
    return None if is_object_store(cfg.storage) else atomic_local_filesystem()


def run_config(cfg: SearchConfig, callbacks: list | None = None, stop: tune.Stopper | None = None) -> tune.RunConfig:
    """`stop`: an optional tune.Stopper (e.g. search.budget.TrialEpochBudget); None stops on num_samples and
    time_budget_s only."""
    return tune.RunConfig(
        name=cfg.name,
        storage_path=cfg.storage if is_object_store(cfg.storage) else str(Path(cfg.storage).resolve()),
        storage_filesystem=storage_filesystem(cfg),
        checkpoint_config=pbt_checkpoint_config(cfg)
        if cfg.scheduler == "pbt"
        else tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=SCORE_METRIC, checkpoint_score_order="max"
        ),
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        callbacks=callbacks or [],
        stop=stop,
        verbose=0,
    )


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default packs the config into the name)."""
    return trial_folder_name(trial.trial_id)


def build_tuner(
    cfg: SearchConfig, data: CheckedDataset, callbacks: list | None = None, stop: tune.Stopper | None = None
) -> tune.Tuner:
    pbt = cfg.scheduler == "pbt"  # PBT: a fixed population, all live at once (Ray time-slices it), no Optuna
    search_alg, param_space = build_pbt_search(cfg) if pbt else (build_searcher(cfg), None)
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=build_scheduler(cfg),
        num_samples=cfg.num_samples,
        max_concurrent_trials=None if pbt else cfg.concurrency,
        time_budget_s=cfg.time_budget_s,
        reuse_actors=cfg.reuse_actors,
        trial_dirname_creator=trial_dirname,
    )
    return tune.Tuner(
        build_trainable(cfg, data),
        param_space=param_space,
        tune_config=tune_config,
        run_config=run_config(cfg, callbacks, stop),
    )


def restore_tuner(cfg: SearchConfig, data: CheckedDataset, status: tune.Callback | None = None) -> tune.Tuner:
    """Continue an interrupted search: finished trials are kept, unfinished ones resume from their checkpoints,
    the Optuna study (SQLite) keeps its history, and EpochASHA rebuilds its rungs from the trials' results.
    `status`: the live status of this run, in place of the one the experiment saved (its settings were the
    first run's, and experiments of earlier versions saved a ProgressPrinter)."""
    try:
        with legacy_module_names():  # experiments saved before echotune.search name `search.tuner` & co.
            tuner = tune.Tuner.restore(
                cfg.experiment_dir,
                trainable=build_trainable(cfg, data),
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
                storage_filesystem=storage_filesystem(cfg),
            )
    except ValueError as exc:
        if "expected 'train_any'" not in str(exc):
            raise
        raise LegacyExperimentError(
            f"{cfg.experiment_dir}: started by an EchoTune version before the `echotune` command (its trials run "
            "`trainables.train_any`); this version cannot continue it. Its results stay readable (echotune "
            "leaderboard / ensemble); to finish it, resume it with the version that started it."
        ) from None
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
