"""Ray Tune's OptunaSearch, with the trial states Optuna should see.

Ray closes every trial that returned a result as COMPLETE, so a trial ASHA stopped after one stage would enter
TPE's model as a finished low score. Here a trial that reported fewer epochs than it planned is told to Optuna
as PRUNED (its per-epoch values were already reported as intermediate values), and a trial that raised (e.g. a
non-finite loss) as FAIL, never COMPLETE and never left RUNNING.

User attributes per trial (optuna-dashboard shows them): `ray_trial_id`, and, updated while the trial runs, the
validation metrics of its best epoch so far (`val/map50`, `val/map50_95`, `val/view_kappa`, `val/score`, ...)
with `best_epoch`; `stopped_at_epoch` for a pruned trial.
"""

from __future__ import annotations

import logging
import math

import optuna
from ray.tune.search.optuna import OptunaSearch

from echotune.metrics import SCORE_METRIC, SELECTION_METRIC, VAL_PREFIX
from echotune.trainables.trial import DIVERGED_KEY

logger = logging.getLogger(__name__)
RAY_TRIAL_ID_ATTR = "ray_trial_id"
BEST_EPOCH_ATTR = "best_epoch"


def best_epoch_attrs(result: dict) -> dict[str, float | int]:
    """The user attributes of a result that is its trial's best epoch so far (val/score equal to the running
    best SELECTION_METRIC, the number Optuna is told): every finite validation metric (val/map50, val/view_kappa,
    ...) and the epoch; {} for any other result. So optuna-dashboard shows, per trial, the metrics of the
    checkpoint the trial hands back, while the trial runs."""
    score, best = result.get(SCORE_METRIC), result.get(SELECTION_METRIC)
    if score is None or best is None or result.get(DIVERGED_KEY) or not score >= best:
        return {}
    attrs = {
        k: float(v)
        for k, v in result.items()
        if k.startswith(VAL_PREFIX)
        and k != SELECTION_METRIC
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }
    return {**attrs, BEST_EPOCH_ATTR: int(result["epoch"])} if "epoch" in result else attrs


def final_state(result: dict | None, error: bool) -> optuna.trial.TrialState:
    """FAIL on error or divergence; PRUNED when stopped before its planned epochs; COMPLETE otherwise."""
    if error or (result and result.get(DIVERGED_KEY)):
        return optuna.trial.TrialState.FAIL
    if not result or "epoch" not in result:
        return optuna.trial.TrialState.PRUNED
    if result["epoch"] < result.get("epochs_planned", result["epoch"]):
        return optuna.trial.TrialState.PRUNED
    return optuna.trial.TrialState.COMPLETE


class EchoOptunaSearch(OptunaSearch):
    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # lets the leaderboard join Optuna's trials to Ray's
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # After a resume, Ray may replay the last epoch(s) of a trial whose end Optuna already recorded (the
        # driver died between the two): that history is final, so later reports are dropped, not errors.
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.info("Optuna trial of %s already finished; dropping a replayed result", trial_id)
            return
        self._record_best_epoch(trial_id, result)

    def _record_best_epoch(self, trial_id: str, result: dict | None) -> None:
        attrs = best_epoch_attrs(result or {})
        if not attrs or trial_id not in self._ot_trials:
            return
        try:
            for key, value in attrs.items():
                self._ot_trials[trial_id].set_user_attr(key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # a replayed result after a resume: the finished trial keeps what it recorded

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        state = final_state(result, error)
        ot_trial = self._ot_trials[trial_id]
        self._record_best_epoch(trial_id, result)  # Ray passes a trial's last result only here
        single = not isinstance(self.metric, list)
        if single and result and self.metric in result and state != optuna.trial.TrialState.FAIL:
            # Ray passes a trial's last result only here, not to on_trial_result: record it as well, so a pruned
            # trial's value (Optuna takes its last intermediate value) is the score at the rung that stopped it.
            step = int(result["training_iteration"])
            try:
                reported = next(
                    t.intermediate_values
                    for t in self._ot_study.get_trials(deepcopy=False)
                    if t.number == ot_trial.number
                )
                if step not in reported:  # (sometimes Ray does pass it to both)
                    ot_trial.report(float(result[self.metric]), step)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._completed_trials.add(trial_id)  # already told before a driver crash: keep that record
                return
        values = None
        if state == optuna.trial.TrialState.COMPLETE:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [result[m] for m in metrics]
            values = values if isinstance(self.metric, list) else values[0]
        elif state == optuna.trial.TrialState.PRUNED and result and single:
            ot_trial.set_user_attr("stopped_at_epoch", int(result.get("epoch", 0)))
        try:
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:  # a study already told (e.g. after a resume) must not crash the search
            logger.warning("Optuna could not record trial %s as %s: %s", trial_id, state.name, exc)
        self._completed_trials.add(trial_id)
