"""A Ray Tune searcher that runs exactly a given list of trial configs, once each, in order.

    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=FixedConfigs(configs),
                                                              num_samples=len(configs), ...))

Ray's own BasicVariantGenerator(points_to_evaluate=...) presets only keys its param_space declares, and trial
configs of one space differ in which keys they hold (conditional parameters), so the final round hands its
configs to Ray through this searcher instead: each `suggest` returns the next config unchanged, then FINISHED.
Its position is saved with the experiment (Ray calls `save` with every experiment snapshot), so a Tuner
restored after a crash hands out only the configs it had not yet turned into trials.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ray.tune.search import Searcher

from echotune.atomic import atomic_write_text
from echotune.metrics import SCORE_METRIC


class FixedConfigs(Searcher):
    def __init__(self, configs: list[dict], metric: str = SCORE_METRIC, mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.configs = [copy.deepcopy(c) for c in configs]
        self.handed_out = 0  # configs already turned into trials

    def suggest(self, trial_id: str) -> dict | str:
        if self.handed_out >= len(self.configs):
            return Searcher.FINISHED
        config = copy.deepcopy(self.configs[self.handed_out])
        self.handed_out += 1
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: the list is fixed

    def get_state(self) -> dict:
        return {"configs": self.configs, "handed_out": self.handed_out}

    def set_state(self, state: dict) -> None:
        self.configs, self.handed_out = state["configs"], int(state["handed_out"])

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(checkpoint_path, json.dumps(self.get_state(), default=str))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))
