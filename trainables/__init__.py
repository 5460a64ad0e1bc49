"""Thin Ray Tune adapters: config dict -> echotune engine `fit` -> `tune.report(metrics, checkpoint)`."""
from echotune.trainables.dual import train_dual
from echotune.trainables.shared import train_shared

TRAINABLES = {"shared": train_shared, "dual": train_dual}


def train_any(config: dict, data) -> None:
    """For spaces that choose the architecture per trial (`arch` in the config)."""
    arch = config.get("arch", "shared")
    if arch not in TRAINABLES:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(TRAINABLES)}")
    TRAINABLES[arch](config, data)


__all__ = ["TRAINABLES", "train_any", "train_dual", "train_shared"]
