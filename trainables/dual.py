"""Ray Tune trainable for the dual-backbone architecture (YOLO-style detector + independent timm classifier)."""
from __future__ import annotations

from echotune.data.check import CheckedDataset
from echotune.trainables.common import train_with_tune


def train_dual(config: dict, data: CheckedDataset) -> None:
    """Function trainable: `tune.with_parameters(train_dual, data=checked_dataset)`."""
    train_with_tune(config, data, arch="dual")
