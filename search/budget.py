"""A compute budget in trial-epochs: stop the whole search once its trials together have reported that many epochs.

    tuner = build_tuner(cfg, data, stop=TrialEpochBudget(48))     # e.g. 8 full trials of 6 epochs, or more
                                                                   # trials when ASHA stops some early

Every trial reports once per epoch, so counting results counts trial-epochs whatever the scheduler does: with
ASHA, stopped trials free their epochs for new ones; with FIFO every trial runs to the end. When the budget is
reached the trials still running are stopped mid-epoch (that unfinished epoch reported nothing and is not
counted), and results that arrive together can take the count a little past the budget (at most about one per
concurrent trial): `used` says what was really spent. Ray hands a stopper every result, plus, when a function
trainable returns, its last result a second time, so results are counted once per (trial, training_iteration).
The count lives in the driver and starts at 0 (a resumed search starts a fresh budget).
"""

from __future__ import annotations

from ray import tune


class TrialEpochBudget(tune.Stopper):
    def __init__(self, total: int):
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ValueError(f"the trial-epoch budget must be a positive integer, got {total!r}")
        self.total = total
        self._seen: set[tuple[str, int]] = set()  # (trial_id, training_iteration) of every result counted

    @property
    def used(self) -> int:
        """Trial-epochs reported so far (a diverged trial's final report counts too: it ran part of an epoch)."""
        return len(self._seen)

    def __call__(self, trial_id: str, result: dict) -> bool:
        self._seen.add((trial_id, int(result.get("training_iteration", 0))))
        return False  # no single trial is stopped for the budget; stop_all ends them together

    def stop_all(self) -> bool:
        return self.used >= self.total
