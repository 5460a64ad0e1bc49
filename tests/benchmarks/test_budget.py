"""search.budget.TrialEpochBudget (the benchmarks' equal-compute stopper) and its way into the Tuner."""

from __future__ import annotations

import pytest

from echotune.search.budget import TrialEpochBudget
from echotune.search.search_config import SearchConfig
from echotune.search.tuner import run_config


def test_counts_each_trial_epoch_once_and_stops_all_at_the_budget():
    budget = TrialEpochBudget(3)
    assert not budget("a", {"training_iteration": 1}) and not budget.stop_all()
    budget("b", {"training_iteration": 1})
    budget("b", {"training_iteration": 1})  # Ray's repeat of a finished function trainable's last result
    assert budget.used == 2 and not budget.stop_all()
    assert not budget("a", {"training_iteration": 2})  # no single trial is stopped by it
    assert budget.used == 3 and budget.stop_all()


@pytest.mark.parametrize("total", [0, -1, 2.5, True])
def test_rejects_a_budget_that_is_not_a_positive_integer(total):
    with pytest.raises(ValueError, match="trial-epoch budget"):
        TrialEpochBudget(total)


def test_run_config_passes_the_stopper_and_defaults_to_none(tmp_path):
    cfg = SearchConfig(storage=str(tmp_path))
    budget = TrialEpochBudget(5)
    assert run_config(cfg, stop=budget).stop is budget
    assert run_config(cfg).stop is None
