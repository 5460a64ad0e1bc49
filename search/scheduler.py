"""ASHA whose rungs compare trials after the same number of epochs, never stops the baseline (nor the other
fixed starting points, such as the detector recipe), and whose rung state survives a resume.

Time axis: `epoch` (epochs trained, reported by the engine after every epoch and restored with a checkpoint).
Rungs sit at fixed epochs, grace period max_epochs / reduction_factor² (rounded, at least 1) times powers of
the reduction factor: with 12 epochs and factor 2, trials are compared after epochs 3 and 6 (and Ray's last rung
at 12, where every trial ends anyway). A searched stage split moves the stage boundaries, never the epochs at
which trials are compared: rungs at stage ends compared a trial after 1 epoch with one after 6. Epochs, not
trial-epochs of compute: a larger model is judged after the same training as a small one, as in the final
comparison with the baseline; its cost is the search's choice to weigh, not a handicap at the rungs.

The baseline (the original study's configuration, the space's baseline point) is the reference every gain is
measured against, so it always trains the full budget. Its scores still enter the rungs, as any trial's at
the same epoch: it is the first trial, so the early cutoffs are what the original recipe reaches by then. The
search's other fixed points (`protected`: the detector recipe, search/tuner.py) train in full too: after 2 of 10
epochs nothing has learned yet, and a default run's first rung stopped the recipe at 0.011 against the
baseline's 0.013 before it could reach its 0.2.

Ray restores the searcher on `Tuner.restore` but gives back the scheduler as pickled when the search started,
so its rungs would be empty. `EpochASHA` rebuilds them once, from the `result.json` of every trial in the
experiment folder, before it makes its first decision after a resume. Its stop decisions are kept too
(`asha_stopped.json`, written atomically before Ray stops the trial and tells Optuna): a driver killed after a
decision but before Ray's experiment state recorded the stop would otherwise resume the trial, and the rebuilt
rung, which already holds the trial's score, would never judge it again. It would train to the end while
Optuna holds it as PRUNED; instead it is stopped again at its first result after the resume. The file is
written both into the experiment folder (at once: a kill before Ray's next sync must not lose it) and into the
driver's staging folder, which Ray uploads over the experiment folder every second: after a resume that folder
holds the stale copy Ray downloaded with every .json of the experiment, and would overwrite newer decisions.
Read back, the two copies are merged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from echotune.atomic import atomic_write_text
from echotune.results.documents import read_json_lines
from echotune.results.layout import RESULT_FILE

logger = logging.getLogger(__name__)
TIME_ATTR = "epoch"
STOPPED_FILE = "asha_stopped.json"  # trial id -> epoch at which ASHA stopped it


def grace_period(max_epochs: int, reduction_factor: float) -> int:
    """First rung: two reductions before the end (E/4 for factor 2), so a trial is judged after real training."""
    return max(1, round(max_epochs / reduction_factor**2))


class EpochASHA(AsyncHyperBandScheduler):
    def __init__(
        self,
        metric: str,
        mode: str,
        experiment_dir: str | Path,
        max_epochs: int,
        baseline: dict | None = None,
        reduction_factor: float = 2,
        protected: tuple[dict, ...] = (),
    ):
        """`baseline`: the space's baseline point (parameter values); a trial whose config holds all of them is
        the baseline, as in the leaderboard (an empty point, the `baseline` space: every trial). `protected`:
        other points never stopped either (the search's fixed starting points)."""
        super().__init__(
            time_attr=TIME_ATTR,
            metric=metric,
            mode=mode,
            max_t=max_epochs,
            grace_period=grace_period(max_epochs, reduction_factor),
            reduction_factor=reduction_factor,
        )
        self.experiment_dir = str(experiment_dir)
        self.baseline = baseline
        self.protected = tuple(protected)
        self._baseline_trials: set[str] = set()  # the baseline's and the protected points' trials
        self._stopped: dict[str, int] = {}  # trial id -> epoch of the decision (STOPPED_FILE)
        self._staging: Path | None = None  # the driver's staging folder, once a trial names it
        self._rebuilt = False

    def rung_milestones(self) -> list[float]:
        """Epochs at which trials are compared and may be stopped (Ray's rung at max_t decides nothing)."""
        return sorted(milestone for milestone, _ in self._brackets[0]._rungs if milestone < self._max_t)

    def rebuild_rungs(self) -> int:
        """Record each trial's metric at each rung it reached (from result.json); returns the count. As live,
        a rung takes a trial's first result at or after its epoch: the milestone epoch itself, as every epoch
        is reported."""
        self._rebuilt = True
        for folder in self._folders():
            if (folder / STOPPED_FILE).is_file():
                kept = json.loads((folder / STOPPED_FILE).read_text())
                self._stopped.update({str(k): int(v) for k, v in kept.items()})
        recorded = 0
        for result_file in Path(self.experiment_dir).glob(f"*/{RESULT_FILE}"):
            seen: set[float] = set()
            for result in read_json_lines(result_file):  # a line cut by a crash is skipped
                if TIME_ATTR not in result or self._metric not in result:
                    continue
                for milestone, rung in self._brackets[0]._rungs:
                    if result[TIME_ATTR] >= milestone and milestone not in seen:
                        seen.add(milestone)
                        rung.setdefault(result["trial_id"], self._metric_op * result[self._metric])
                        recorded += 1
        if recorded:
            logger.info("EpochASHA: rebuilt %d rung entries from %s", recorded, self.experiment_dir)
        return recorded

    def on_trial_add(self, tune_controller, trial) -> None:
        if self._staging is None:
            self._staging = staging_folder(trial)
        if not self._rebuilt:
            self.rebuild_rungs()
        points = ([self.baseline] if self.baseline is not None else []) + list(self.protected)
        if any(all(trial.config.get(k) == v for k, v in point.items()) for point in points):
            self._baseline_trials.add(trial.trial_id)
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id in self._stopped:  # stopped before a driver crash, resumed by Ray: stop it again
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)  # records the score in its rung
        if action == TrialScheduler.STOP and trial.trial_id in self._baseline_trials:
            self._num_stopped -= 1  # Ray's count of stopped trials, shown in its status
            return TrialScheduler.CONTINUE  # the trainable ends it after its last epoch
        if action == TrialScheduler.STOP and result[TIME_ATTR] < self._max_t:  # at max_t the trial ends anyway
            self._record_stop(trial.trial_id, int(result[TIME_ATTR]))
        return action

    def _record_stop(self, trial_id: str, epoch: int) -> None:
        """Keep the decision before Ray acts on it, in the local experiment folder and the staging folder (see the
        module docstring; on an object store only in staging: the rungs are not rebuilt there either)."""
        self._stopped[trial_id] = epoch
        for folder in self._folders():
            atomic_write_text(folder / STOPPED_FILE, json.dumps(self._stopped, indent=1) + "\n")

    def _folders(self) -> list[Path]:
        """The local folders that hold STOPPED_FILE: the experiment folder and the driver's staging folder."""
        folders = [Path(self.experiment_dir)] + ([self._staging] if self._staging is not None else [])
        return [
            f for i, f in enumerate(folders) if f.is_dir() and f.resolve() not in {g.resolve() for g in folders[:i]}
        ]


def staging_folder(trial) -> Path | None:
    """The driver's staging folder of the trial's experiment (None for a trial without storage, e.g. a stub)."""
    try:
        return Path(trial.local_experiment_path)
    except (AttributeError, TypeError):
        return None
