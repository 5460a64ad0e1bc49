"""Load experiment folders (finished, running or interrupted) into a leaderboard and a per-epoch history.

    exp = load_experiment("results/gradnorm")
    exp.rows       # one dict per trial, columns of search.trial_table.SCHEMA
    exp.history    # pandas DataFrame, one row per (trial, epoch) result
    exp.study      # the Optuna study (None when optuna.db is missing)

Everything is read from the files a search writes (Ray's experiment state and per-trial results, optuna.db,
search.json), so it works while the search is still running and after a crash.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from echotune.metrics import OBJECTIVES, REPORTED_VAL_METRICS, TASK_WEIGHT_METRICS, TRAIN_LOSS
from echotune.results.layout import HP_PREFIX, INTERRUPTED, LIVE_STATUSES, OPTUNA_DB_FILE, is_object_store
from echotune.results.search_record import read_search_record
from echotune.search.trial_table import load_analysis, trial_rows
from echotune.spaces import get_space, list_spaces
from echotune.trainables.trial import DIVERGED_KEY

# Ray rewrites the experiment state at least every TUNE_GLOBAL_CHECKPOINT_S (1 s, see orchestrate.py); a state
# file older than this while trials are still marked RUNNING means the driver is gone (interrupted search).
LIVE_STATE_MAX_AGE_S = 120.0
HISTORY_COLUMNS = (
    *REPORTED_VAL_METRICS,
    TRAIN_LOSS,
    *TASK_WEIGHT_METRICS.values(),
    "lr",
    "time_total_s",
    "stage",
    "epoch",
    "timestamp",
)


@dataclass
class Experiment:
    path: Path
    name: str
    record: dict  # search.json ({} for a search written by an older version)
    rows: list[dict]
    history: pd.DataFrame
    study: optuna.Study | None
    live: bool  # the driver rewrote the experiment state recently: trials marked RUNNING really are
    notes: list[str] = field(default_factory=list)

    @property
    def space(self) -> str | None:
        return self.record.get("config", {}).get("space")

    @property
    def leaky_splits(self) -> dict | None:
        """The search ran on leaky splits (run.py --allow-leaky-splits): search.json's counts, else None."""
        return self.record.get("leaky_splits") or None

    @property
    def objectives(self) -> list[str]:
        """Reported metric names the study optimised, e.g. ["val/score"] or ["val/map50", "val/view_acc"]."""
        return [OBJECTIVES[o] for o in self.record.get("config", {}).get("objectives", ["score"])]


def _check_folder(path: Path) -> None:
    if not path.exists():
        raise ValueError(f"{path}: no such experiment folder (expected results/<name> written by echotune search)")
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder (expected an experiment folder like results/<name>)")
    if not any(path.glob("experiment_state-*.json")):
        raise ValueError(
            f"{path}: not a Ray Tune experiment folder (no experiment_state-*.json inside); expected "
            f"results/<name> written by echotune search"
        )


def _baseline(record: dict, path: Path, notes: list[str]) -> tuple[str | None, dict | None]:
    config = record.get("config", {})
    space = config.get("space")
    if space is None:
        notes.append(f"{path}: no search.json (a search from an older version), so the baseline trial is unknown")
        return None, None
    if space not in list_spaces():
        notes.append(f"{path}: search.json names space {space!r}, unknown to this version; baseline unknown")
        return space, None
    return space, get_space(space).baseline(config.get("profile", "quick"))


def _history(analysis, rows: list[dict], experiment: str) -> pd.DataFrame:
    """One row per (trial, epoch); a retried trial's replayed epochs keep their latest report."""
    by_trial = {r["trial_id"]: r for r in rows}
    frames = []
    for trial_id, frame in analysis.trial_dataframes.items():
        if frame is None or frame.empty or "epoch" not in frame:
            continue
        if DIVERGED_KEY in frame:  # the final report of a diverged trial carries zeros, not a real epoch
            frame = frame[frame[DIVERGED_KEY] != 1]
        frame = frame[[c for c in HISTORY_COLUMNS if c in frame]].copy()
        frame = frame.drop_duplicates("epoch", keep="last")
        row = by_trial.get(trial_id, {})
        frame.insert(0, "trial_id", trial_id)
        frame.insert(0, "experiment", experiment)
        frame["arch"], frame["balance"] = row.get("arch"), row.get(HP_PREFIX + "balance")
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["experiment", "trial_id", *HISTORY_COLUMNS, "arch", "balance"])
    history = pd.concat(frames, ignore_index=True)
    history[["epoch", "stage"]] = history[["epoch", "stage"]].astype(int)
    return history.sort_values(["timestamp", "trial_id", "epoch"], ignore_index=True)


def load_study(record: dict, path: Path, notes: list[str]) -> optuna.Study | None:
    db = path / OPTUNA_DB_FILE
    if not db.is_file():
        local = Path(record.get("config", {}).get("storage", ""))
        where = " (object-store search: it is in ./results/<name>/)" if is_object_store(str(local)) else ""
        notes.append(f"{path}: no optuna.db here{where}; importance and Pareto front skipped")
        return None
    name = record.get("config", {}).get("name", path.name)
    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{db.resolve()}")
    except KeyError:
        names = optuna.get_all_study_names(storage=f"sqlite:///{db.resolve()}")
        if len(names) == 1:
            return optuna.load_study(study_name=names[0], storage=f"sqlite:///{db.resolve()}")
        notes.append(f"{db}: no study named {name!r} (found {names}); importance skipped")
        return None


def load_experiment(path: str | Path) -> Experiment:
    """Read one experiment folder; ValueError with the path when it is not one."""
    path = Path(path).expanduser().resolve()
    _check_folder(path)
    notes: list[str] = []
    record = read_search_record(path)
    space, baseline = _baseline(record, path, notes)
    state_age = time.time() - max(p.stat().st_mtime for p in path.glob("experiment_state-*.json"))
    live = state_age < LIVE_STATE_MAX_AGE_S
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray warns about trials without results (pending ones): expected here
        analysis = load_analysis(path)
    rows = trial_rows(path, space=space, baseline=baseline, analysis=analysis)
    for row in rows:
        if row["status"] in LIVE_STATUSES and not live:
            row["status"] = INTERRUPTED
    if not live and any(r["status"] == INTERRUPTED for r in rows):
        notes.append(
            f"{path.name}: interrupted search (state not updated for {state_age / 60:.0f} min); continue "
            f"it with: echotune search --name {record.get('config', {}).get('name', path.name)} --resume"
        )
    return Experiment(
        path=path,
        name=path.name,
        record=record,
        rows=rows,
        history=_history(analysis, rows, path.name),
        study=load_study(record, path, notes),
        live=live,
        notes=notes,
    )
