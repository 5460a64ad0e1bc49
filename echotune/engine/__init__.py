"""The Ray-free training engine: config, three-stage schedule, train/evaluate steps, fit, checkpoints."""

from echotune.engine.config import TrainConfig
from echotune.engine.fit import FitResult, fit
from echotune.engine.steps import NonFiniteLossError, evaluate, train_one_epoch

__all__ = ["FitResult", "NonFiniteLossError", "TrainConfig", "evaluate", "fit", "train_one_epoch"]
