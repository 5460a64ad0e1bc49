"""Ray Tune trainable for the shared-backbone architecture (YOLO-style detector + view head, GradNorm etc.)."""
from __future__ import annotations

from echotune.data.check import CheckedDataset
from echotune.trainables.common import train_with_tune


def train_shared(config: dict, data: CheckedDataset) -> None:
    """Function trainable: `tune.with_parameters(train_shared, data=checked_dataset)`."""
    train_with_tune(config, data, arch="shared")
