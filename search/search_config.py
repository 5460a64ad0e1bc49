"""What a search is asked to do: `SearchConfig`, its defaults (the CLI's too) and its validation.

`echotune search` (search/cli/) derives its options from these fields, as `echotune train` derives its own
from TrainConfig; a SearchConfig built in code (the notebook API, the benchmarks) is validated the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from echotune.metrics import OBJECTIVES
from echotune.results.layout import OPTUNA_DB_FILE, is_object_store

RESULTS_DIR_ENV = "ECHOTUNE_RESULTS_DIR"
# --pbt-interval's default: None perturbs at the stage ends (benchmarks/pbt_interval.py compares the two).
DEFAULT_PBT_INTERVAL: int | None = None



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
        return f"sqlite:///{self.local_dir / OPTUNA_DB_FILE}"

    def trial_constants(self) -> dict:
        """Config keys fixed for every trial of this search (merged over what the space samples)."""
        # A trial uses the devices Ray reserved for it: a CPU trial placed on a GPU node must not take the GPU.
        # workers=-1: the engine picks DataLoader processes for the device (CUDA: the trial's CPUs - 1).
        constants = {"epochs": self.max_epochs, "seed": self.seed, "cpus": max(1, int(self.cpus_per_trial)),
                     "device": "cuda" if self.gpus_per_trial > 0 else "cpu", "workers": -1, "cache_images": True}
        if self.img_size is not None:
            constants["img_size"] = self.img_size
        return constants
