"""ASHA whose rungs sit at the ends of the training stages, and whose rung state survives a resume.

Time axis: `stages_done` (0 while in stage 1, 1 after stage 1, 2 after stage 2, 3 at the end), reported by
the trainables. With grace period 1, max_t 3 and reduction factor 2, ASHA's rungs are exactly 1 and 2: trials
are compared when they finish stage 1 and stage 2, never mid-stage (stage lengths are themselves searched).

Ray restores the searcher on `Tuner.restore` but gives back the scheduler as pickled when the search started,
so its rungs would be empty. `StageASHA` rebuilds them once, from the `result.json` of every trial in the
experiment folder, before it makes its first decision after a resume.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ray.tune.schedulers import AsyncHyperBandScheduler

logger = logging.getLogger(__name__)
TIME_ATTR = "stages_done"


class StageASHA(AsyncHyperBandScheduler):
    def __init__(self, metric: str, mode: str, experiment_dir: str | Path, reduction_factor: float = 2):
        super().__init__(time_attr=TIME_ATTR, metric=metric, mode=mode, grace_period=1, max_t=3,
                         reduction_factor=reduction_factor)
        self.experiment_dir = str(experiment_dir)
        self._rebuilt = False

    def rung_milestones(self) -> list[float]:
        return sorted(milestone for milestone, _ in self._brackets[0]._rungs)

    def rebuild_rungs(self) -> int:
        """Record each trial's metric at each stage end it reached (from result.json); returns the count."""
        self._rebuilt = True
        recorded = 0
        for result_file in Path(self.experiment_dir).glob("*/result.json"):
            seen: set[float] = set()
            for line in result_file.read_text().splitlines():
                try:
                    result = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if TIME_ATTR not in result or self._metric not in result:
                    continue
                for milestone, rung in self._brackets[0]._rungs:
                    if result[TIME_ATTR] >= milestone and milestone not in seen:
                        seen.add(milestone)
                        rung.setdefault(result["trial_id"], self._metric_op * result[self._metric])
                        recorded += 1
        if recorded:
            logger.info("StageASHA: rebuilt %d rung entries from %s", recorded, self.experiment_dir)
        return recorded

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._rebuilt:
            self.rebuild_rungs()
        super().on_trial_add(tune_controller, trial)
