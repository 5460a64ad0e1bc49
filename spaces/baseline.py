"""``baseline``: no free parameters; every trial runs the original configuration (e.g. to measure its spread)."""

from __future__ import annotations

from echotune.spaces.original import original_config
from echotune.spaces.profiles import Profile
from echotune.spaces.registry import register_space
from echotune.spaces.trials import SuggestTrial


@register_space("baseline", baseline_config=original_config)
def define_baseline(trial: SuggestTrial, profile: Profile) -> dict:
    """The original study's configuration as constants; nothing is searched.

    No parameters. Constants: spaces/original.py's configuration for the profile: shared + GradNorm alpha 1.5,
    lr 1e-2/1e-3/1e-4, split 30/50/20, batch 8, augmentation and mixup off, P3, ciou/bce/bce/ce (the original
    study's values), SGD momentum 0.937, weight decay 5e-4, gn_lr 0.025, hard mining 0.25, stage-3 label
    smoothing 0.1 (EchoTune defaults: the original did not state them); quick: scale n at 160 px (the closest
    CPU-sized stand-in for the original YOLOv5s at 640), full: scale s at 640 px.
    Baseline point: {} (the space has no parameters; every trial is the baseline).
    """
    return original_config(profile)
