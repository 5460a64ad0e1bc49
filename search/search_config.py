"""What a search is asked to do: `SearchConfig`, its defaults (the command line's too) and its validation.

`echotune search` (search/cli/search.py) derives its options' defaults from these fields, as `echotune train`
derives its own from TrainConfig, and turns the ValueError of `validate()` into its usage error; a SearchConfig
built in code (the notebook API, the benchmarks) is validated the same way, when it is constructed.

The defaults are the README's product command, `echotune search` (`python search/run.py --space gradnorm`):
8 trials x 10 epochs of the quick gradnorm space, 2 at a time, ASHA, and a final round of the top 3 and the
baseline; within 10 minutes on 2 CPU cores with the synthetic set's 256-image val/test splits (10 x 12 took
702 s on 2026-11-28: README, "The search").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from echotune.data.config import compile_video_id_pattern
from echotune.metrics import OBJECTIVES
from echotune.results.layout import OPTUNA_DB_FILE, is_object_store
from echotune.spaces import PROFILES, list_spaces

RESULTS_DIR_ENV = "ECHOTUNE_RESULTS_DIR"
STORAGE_ENV = "ECHOTUNE_STORAGE"  # a cluster's default storage (its shared bucket), set by cluster.yaml
# pbt_interval's default: None perturbs at the stage ends (benchmarks/pbt_interval.py compares the two).
DEFAULT_PBT_INTERVAL: int | None = None
SCHEDULERS = ("asha", "fifo", "pbt")
SEARCHERS = ("tpe", "random")
MIN_EPOCHS = 3  # one per training stage


def _default_storage() -> str:
    return os.environ.get(STORAGE_ENV) or "results"


@dataclass
class SearchConfig:
    space: str = "gradnorm"
    profile: str = "quick"
    name: str | None = None  # None: the space's name
    storage: str = field(default_factory=_default_storage)  # local dir, NFS path or s3://...; $ECHOTUNE_STORAGE
    shared_storage: bool = False  # the local `storage` path is a mount every cluster node shares (NFS)
    num_samples: int = 8  # trials; with scheduler pbt the population size
    max_epochs: int = 10  # per trial, over the three stages
    img_size: int | None = None  # None: the profile's
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions allowed (0.5: two trials share a GPU); above 1 whole GPUs
    concurrency: int = 2
    seed: int = 0
    objectives: list[str] = field(default_factory=lambda: ["score"])
    # asha, fifo or pbt (search/pbt.py: num_samples is then the population size). None: asha with one objective,
    # fifo with several (ASHA prunes on one number, so it, not the objectives, would decide the Pareto front).
    scheduler: str | None = None
    pbt_interval: int | None = DEFAULT_PBT_INTERVAL  # pbt: perturb every N epochs; None: at the stage ends
    searcher: str = "tpe"
    time_budget_s: float | None = None
    max_failures: int = 2
    # Run the next trial in the finished trial's worker process instead of starting a fresh one (its Python and
    # torch imports cost seconds per trial: benchmarks/overhead.py). Trials stay independent: fit() seeds and
    # builds everything from the config, and a trial that crashes gets a fresh process.
    reuse_actors: bool = True
    # Train and rank on splits that share source videos (--allow-leaky-splits): the results are flagged.
    allow_leaky_splits: bool = False
    # data.yaml's `video_id_pattern` replaced for this search (--video-id-pattern); --resume keeps it.
    video_id_pattern: str | None = None
    # The final round after the search (search/final_round.py): the top `final_top_k` distinct configurations and
    # the baseline trained again for max_epochs with seeds seed+1 ... seed+final_seeds; 0 turns it off.
    final_top_k: int = 3
    final_seeds: int = 1
    # Besides the baseline, start from the detector recipe (spaces/original.py DETECTOR_RECIPE, restricted to the
    # parameters the profile searches) as a second fixed trial: a short search must not miss it by chance (a
    # 10-trial default run on 2026-11-28 never drew the anchor-free head). Off for method comparisons.
    recipe_point: bool = True

    def __post_init__(self):
        if self.name is None:
            self.name = self.space
        if self.scheduler is None:
            self.scheduler = "fifo" if len(self.objectives) > 1 else "asha"
        self.validate()

    def validate(self) -> None:
        """ValueError naming the field and its value for the first setting a search cannot run with."""
        _choice("space", self.space, tuple(list_spaces()))
        _choice("profile", self.profile, PROFILES)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("searcher", self.searcher, SEARCHERS)
        if not self.name:
            raise ValueError(f"name must be a non-empty experiment name, got {self.name!r}")
        if self.shared_storage and is_object_store(self.storage):
            raise ValueError(
                f"shared_storage is for a local path mounted on every node; storage={self.storage} is an object store"
            )
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives:
            raise ValueError(
                f"objectives={unknown or list(self.objectives)} is not valid; choose one or more of: "
                f"{', '.join(OBJECTIVES)}"
            )
        if len(self.objectives) > 1 and self.scheduler == "asha":
            raise ValueError(
                f"scheduler='asha' with several objectives ({', '.join(self.objectives)}): ASHA stops "
                f"trials on one number, so its pruning, not the objectives, would decide the Pareto "
                f"front; use scheduler='fifo' (the default with several objectives)"
            )
        if len(self.objectives) > 1 and self.scheduler == "pbt":
            raise ValueError(
                f"scheduler='pbt' with several objectives ({', '.join(self.objectives)}): PBT ranks "
                f"members on one number (val/score), so it, not the objectives, would decide which "
                f"models survive; use scheduler='fifo' for a Pareto front"
            )
        for name in ("num_samples", "concurrency", "final_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_epochs < MIN_EPOCHS:
            raise ValueError(f"max_epochs must be >= {MIN_EPOCHS} (one per training stage), got {self.max_epochs}")
        if self.img_size is not None and (self.img_size < 64 or self.img_size % 32):
            raise ValueError(f"img_size must be a multiple of 32 and >= 64, got {self.img_size}")
        if not self.cpus_per_trial > 0:
            raise ValueError(f"cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        if not self.gpus_per_trial >= 0:
            raise ValueError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError(f"gpus_per_trial above 1 must be a whole number, got {self.gpus_per_trial}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0 (None: no limit), got {self.time_budget_s}")
        for name in ("final_top_k", "max_failures"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.pbt_interval is not None and self.pbt_interval < 1:
            raise ValueError(f"pbt_interval must be >= 1 epoch (None: at the stage ends), got {self.pbt_interval}")
        if self.video_id_pattern is not None:
            try:
                compile_video_id_pattern(self.video_id_pattern)
            except ValueError as exc:
                raise ValueError(f"video_id_pattern={self.video_id_pattern!r}: {exc}") from None
        if self.scheduler == "pbt":
            self._validate_pbt()

    def _validate_pbt(self) -> None:
        """A population that could never be perturbed: no mutable key in the space, no perturbation epoch."""
        from echotune.search.pbt import mutation_ranges, pbt_stage_split, perturbation_epochs  # imports Ray

        mutation_ranges(self)
        if not perturbation_epochs(self.max_epochs, self.pbt_interval, pbt_stage_split(self)):
            raise ValueError(
                f"pbt_interval={self.pbt_interval} with max_epochs={self.max_epochs}: no perturbation "
                f"before the last epoch"
            )

    @property
    def metrics(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def experiment_dir(self) -> str:
        return (
            os.path.join(self.storage, self.name)
            if is_object_store(self.storage)
            else str(Path(self.storage, self.name).resolve())
        )

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
        return f"sqlite:///{self.local_dir / OPTUNA_DB_FILE}"

    def trial_constants(self) -> dict:
        """Config keys fixed for every trial of this search (merged over what the space samples)."""
        # A trial uses the devices Ray reserved for it: a CPU trial placed on a GPU node must not take the GPU.
        # workers=-1: the engine picks DataLoader processes for the device (CUDA: the trial's CPUs - 1).
        constants = {
            "epochs": self.max_epochs,
            "seed": self.seed,
            "cpus": max(1, int(self.cpus_per_trial)),
            "device": "cuda" if self.gpus_per_trial > 0 else "cpu",
            "workers": -1,
            "cache_images": True,
        }
        if self.img_size is not None:
            constants["img_size"] = self.img_size
        return constants


def _choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")
