"""Where a search's results live: every file name two layers need, and what counts as an object-store URI.

    results/<name>/                    an experiment (SearchConfig.storage / name)
        search.json                    what was asked: SearchConfig, dataset, versions (echotune.results.search_record)
        optuna.db                      the Optuna study (SQLite)
        leaderboard.parquet            one row per trial (echotune.results.leaderboard)
        best_config.yaml               the winner as a runnable training config
        held_out.json, final.json      the final round's test numbers
        pbt_synced.json                population-based training's sync epochs
        ensemble/ manifest.json, metrics.json
        <trial folders>/checkpoint_*/  last.pt + origin.json (who wrote it)
    a training run's folder: last.pt, best.pt, metrics.json, results.csv
"""
from __future__ import annotations

CHECKPOINT_FILE = "last.pt"  # a run's latest checkpoint; the one file in every Ray trial checkpoint folder
BEST_CHECKPOINT_FILE = "best.pt"  # a run's best epoch on val (search/train.py runs)
ORIGIN_FILE = "origin.json"  # {"trial_id": the trial that reported this checkpoint}, beside last.pt
SEARCH_RECORD_FILE = "search.json"
OPTUNA_DB_FILE = "optuna.db"
LEADERBOARD_FILE = "leaderboard.parquet"
BEST_CONFIG_FILE = "best_config.yaml"
HELD_OUT_FILE = "held_out.json"
FINAL_FILE = "final.json"
METRICS_FILE = "metrics.json"  # a training run's or an ensemble's summary
ENSEMBLE_DIR = "ensemble"
PBT_SYNCED_FILE = "pbt_synced.json"  # perturbation epochs at which the whole population was synced (and perturbed)
PBT_PERTURBED_MARK = "@perturbed"  # Ray appends "@perturbed[...]" to a clone's experiment tag


def is_object_store(storage: str) -> bool:
    """s3://, gs://, abfs://... : a URI scheme means "not a local path" (Ray Tune's rule for storage_path)."""
    return "://" in storage
