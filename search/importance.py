"""Which hyperparameters mattered (Optuna's fANOVA importance) and, for multi-objective searches, the Pareto front.

Both read the search's own Optuna study (results/<name>/optuna.db). Importance uses Optuna's rule: COMPLETE
trials only (trials ASHA stopped early are PRUNED, so they do not enter it), over the parameters every one of
those trials has (conditional parameters of one architecture drop out in the `all` space). The count of
trials it rests on is always reported with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd

from echotune.search.optuna_bridge import RAY_TRIAL_ID_ATTR

MIN_TRIALS_FOR_IMPORTANCE = 3


@dataclass
class Importance:
    objective: str
    values: dict[str, float]  # parameter -> share of the objective's variance it explains, descending
    n_trials: int
    evaluator: str = "fANOVA"


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def importances(study: optuna.Study, objectives: list[str], seed: int = 0) -> tuple[list[Importance], list[str]]:
    """One Importance per objective, plus notes on what could not be computed and why."""
    complete = _complete(study)
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return [], [
            f"importance needs >= {MIN_TRIALS_FOR_IMPORTANCE} completed (not pruned) trials; the study has "
            f"{len(complete)}"
        ]
    found, notes = [], []
    for index, objective in enumerate(objectives):
        target = (lambda t, i=index: t.values[i]) if len(objectives) > 1 else None
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        try:
            values = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        except (ValueError, RuntimeError) as exc:  # e.g. no parameter varies across the completed trials
            notes.append(f"importance for {objective} not computed: {exc}")
            continue
        if values:
            found.append(Importance(objective, dict(values), len(complete)))
    return found, notes


def pareto_front(study: optuna.Study, objectives: list[str]) -> pd.DataFrame:
    """All completed trials with their objective values and a `pareto` flag (Optuna's best_trials).
    Columns: trial_id (Ray's, when recorded), optuna_number, one column per objective, pareto."""
    if len(objectives) < 2:
        raise ValueError("a Pareto front needs a multi-objective search (--objectives a,b)")
    front = {t.number for t in study.best_trials}
    rows = [
        {
            "trial_id": t.user_attrs.get(RAY_TRIAL_ID_ATTR, f"optuna#{t.number}"),
            "optuna_number": t.number,
            **dict(zip(objectives, t.values)),
            "pareto": t.number in front,
        }
        for t in _complete(study)
    ]
    return pd.DataFrame(rows, columns=["trial_id", "optuna_number", *objectives, "pareto"])
