"""One row per trial of an experiment directory (echotune.results.leaderboard's schema), read from Ray's files.

Reads Ray's own files (experiment state, params, results) through `ExperimentAnalysis`, so it works on a
finished, running or interrupted search; the rows are written as `leaderboard.parquet` by the core
(echotune.results.leaderboard), which owns the columns.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from ray.tune import ExperimentAnalysis

from echotune.metrics import SCORE_METRIC
from echotune.reporting.lineage import is_pbt_search, lineage_columns, read_lineage
from echotune.results.layout import BEST_PREFIX, FINAL_PREFIX, HP_PREFIX, trial_folder_name
from echotune.results.leaderboard import METRICS, SCHEMA, finite_or_none, hp_value
from echotune.search.legacy_names import legacy_module_names
from echotune.trainables.trial import DIVERGED_KEY, ERROR_KEY


def _error_message(experiment_dir: Path, trial) -> str | None:
    """Last line of the trial's error.txt (read from the experiment folder: Trial.error_file needs a live Ray)."""
    name = trial.run_metadata.error_filename or "error.txt"
    path = experiment_dir / (trial.storage.trial_dir_name or trial_folder_name(trial.trial_id)) / name
    if not path.is_file():
        return f"errored (no {name} in {path.parent})"
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][:500] if lines else None


def load_analysis(experiment_dir: str | Path) -> ExperimentAnalysis:
    """Ray's view of an experiment folder (finished, running or interrupted)."""
    with quiet_ray_analysis(), legacy_module_names():  # experiments of versions before echotune.search
        return ExperimentAnalysis(str(experiment_dir), default_metric=SCORE_METRIC, default_mode="max")


@contextlib.contextmanager
def quiet_ray_analysis():
    """Ray logs a warning per trial without results yet (pending, or errored before its first epoch) and an
    error per trial without a checkpoint: normal in a running or interrupted search, and the rows say so."""
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def trial_rows(
    experiment_dir: str | Path,
    space: str | None = None,
    baseline: dict | None = None,
    analysis: ExperimentAnalysis | None = None,
) -> list[dict]:
    """Rows for every trial in the experiment (any status)."""
    analysis = analysis or load_analysis(experiment_dir)
    frames = analysis.trial_dataframes
    lineage = (
        read_lineage(experiment_dir, {t.trial_id: (t.experiment_tag, t.config) for t in analysis.trials})
        if is_pbt_search(experiment_dir)
        else {}
    )
    rows = []
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        clones = lineage[trial.trial_id].exploits if trial.trial_id in lineage else []
        if clones and frame is not None and "epoch" in frame:  # a PBT member is its models since its last clone
            frame = frame[frame["epoch"] > clones[-1].epoch]
        last = trial.last_result or {}
        best_row = {}
        if frame is not None and SCORE_METRIC in frame and len(frame):
            best_row = frame.loc[frame[SCORE_METRIC].idxmax()].to_dict()
        planned = int(trial.config.get("epochs", 0) or 0)
        trained = int(last.get("epoch", 0) or 0)
        error = last.get(ERROR_KEY) if last.get(DIVERGED_KEY) else None
        if trial.status == "ERROR":
            error = _error_message(Path(experiment_dir), trial)
        status = trial.status
        if last.get(DIVERGED_KEY):
            status = "DIVERGED"
        elif status == "TERMINATED" and trained < planned:
            status = "STOPPED_EARLY"
        checkpoint = None
        try:
            with quiet_ray_analysis():
                best_checkpoint = analysis.get_best_checkpoint(trial, SCORE_METRIC, "max")
            checkpoint = best_checkpoint.path if best_checkpoint is not None else None
        except (ValueError, KeyError, RuntimeError):
            checkpoint = None
        row = {
            "trial_id": trial.trial_id,
            "experiment": Path(experiment_dir).name,
            "space": space,
            "arch": trial.config.get("arch"),
            "status": status,
            "stopped_early": status == "STOPPED_EARLY",
            "is_baseline": baseline is not None and all(trial.config.get(k) == v for k, v in baseline.items()),
            "error": error,
            "retries": int(trial.run_metadata.num_failures or 0),
            "epochs_trained": trained,
            "epochs_planned": planned,
            "wall_time_s": finite_or_none(last.get("time_total_s")),
            "best_epoch": int(best_row["epoch"]) if best_row else None,
            "checkpoint_path": checkpoint,
            "config_json": json.dumps(trial.config, sort_keys=True, default=str),
        }
        for metric in METRICS:
            row[BEST_PREFIX + metric] = finite_or_none(best_row.get(metric)) if best_row else None
            row[FINAL_PREFIX + metric] = None if last.get(DIVERGED_KEY) else finite_or_none(last.get(metric))
        for field in SCHEMA:
            if field.name.startswith(HP_PREFIX):
                row[field.name] = hp_value(field, trial.config.get(field.name[len(HP_PREFIX) :]))
        row.update(lineage_columns(lineage.get(trial.trial_id)))
        rows.append(row)
    return rows
