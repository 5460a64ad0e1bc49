"""Where a search's results live: every file and column name two layers need, and what counts as an object-store URI.

    results/<name>/                    an experiment (SearchConfig.storage / name)
        search.json                    what was asked: SearchConfig, dataset, versions (echotune.results.search_record)
        optuna.db                      the Optuna study (SQLite)
        leaderboard.parquet            one row per trial (echotune.results.leaderboard)
        best_config.yaml               the winner as a runnable training config
        held_out.json, final.json      the final round's test numbers
        pbt_synced.json                population-based training's sync epochs
        pbt_global.txt, pbt_policy_<trial id>.txt  Ray's population-based training log (echotune.reporting.lineage)
        ensemble/ manifest.yaml, metrics.json
        trial_<trial id>/              Ray's per-trial folder: result.json (one line per report)
            checkpoint_*/              last.pt + origin.json (who wrote it)
    a training run's folder: last.pt, best.pt, metrics.json, results.csv
"""
from __future__ import annotations

from echotune.metrics.score import SCORE_METRIC

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
PBT_GLOBAL_FILE = "pbt_global.txt"  # Ray's PBT: every exploit of the search, one JSON list a line
PBT_POLICY_FILE = "pbt_policy_{}.txt"  # Ray's PBT, .format(trial_id): the exploits a member's weights went through
RESULT_FILE = "result.json"  # Ray's per-trial results, one JSON object a line (a crash may cut the last one)

# Leaderboard columns (the schema: echotune.results.leaderboard): a trial's metrics at its best and its final epoch,
# and its TrainConfig fields, e.g. best/val/score, final/val/map50, hp/lr_stage1.
BEST_PREFIX, FINAL_PREFIX, HP_PREFIX = "best/", "final/", "hp/"
BEST_SCORE_COLUMN = BEST_PREFIX + SCORE_METRIC  # what trials are ranked by: val/score at the best epoch
# Values of the status column beside Ray's own (TERMINATED, RUNNING, PENDING, PAUSED, ERROR): DIVERGED (a non-finite
# loss), STOPPED_EARLY (by the scheduler), INTERRUPTED (unfinished when the driver went away).
FAILED_STATUSES = ("ERROR", "DIVERGED")  # no usable model: not an ensemble member, not a gain over the baseline
LIVE_STATUSES = ("RUNNING", "PENDING", "PAUSED")  # still training, as long as the driver lives
INTERRUPTED = "INTERRUPTED"  # what a live status becomes once the driver is gone (search.experiment)


def trial_folder_name(trial_id: str) -> str:
    """The folder Ray gives a trial inside the experiment folder (search.tuner names it so; reports read it)."""
    return f"trial_{trial_id}"


def is_object_store(storage: str) -> bool:
    """s3://, gs://, abfs://... : a URI scheme means "not a local path" (Ray Tune's rule for storage_path)."""
    return "://" in storage
