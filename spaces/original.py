"""The original study's configuration, as TrainConfig keys, adapted to a profile.

From the original study (the training command's `--preset baseline` is built from it): shared architecture with
GradNorm (alpha 1.5, the paper's: no weight floor) and YOLOv5's anchor head, stage learning rates 1e-2 / 1e-3 /
1e-4 over a 30 / 50 / 20 % split, batch size 8, augmentation off (policy none, every stage strength 0, no mixup,
no mosaic), view head at P3, CIoU box loss, BCE objectness and class losses, cross-entropy view loss, YOLOv5s at
640 px.

EchoTune defaults, because the original did not state them (TrainConfig's defaults, read from it): SGD
(Nesterov) with momentum 0.937 and weight decay 5e-4 (YOLOv5's hyper-parameters), GradNorm weight learning rate
0.025, hard-example mining of 25 % in stage 2, label smoothing 0.1 in stage 3.

Per profile: ``model_scale`` and ``img_size`` (quick: n at 160 px, the closest CPU-sized stand-in for s at
640; full: the original s at 640). Not included: ``epochs`` (the search's per-trial budget decides) and the
runtime keys (seed, cpus, device, ...), which the search sets for every trial alike.
"""

from __future__ import annotations

from echotune.engine.config import TrainConfig
from echotune.spaces.profiles import Profile, get_profile

ORIGINAL_STUDY: dict = {
    "arch": "shared",
    "balance": "gradnorm",
    "gn_alpha": 1.5,
    "gn_min_weight": 0.0,
    "head": "anchor",
    "lr_stage1": 1e-2,
    "lr_stage2": 1e-3,
    "lr_stage3": 1e-4,
    "stage_split": (0.3, 0.5, 0.2),
    "batch_size": 8,
    "aug_policy": "none",
    "aug_strength_stage1": 0.0,
    "aug_strength_stage2": 0.0,
    "aug_strength_stage3": 0.0,
    "mixup_alpha": 0.0,
    "mosaic": 0.0,
    "view_level": "P3",
    "loss_box": "ciou",
    "loss_obj": "bce",
    "loss_cls": "bce",
    "loss_view": "ce",
}

_UNSTATED = ("optimizer", "momentum", "weight_decay", "gn_lr", "hard_mining_frac", "label_smoothing_stage3")
ECHOTUNE_DEFAULTS: dict = {key: getattr(TrainConfig(), key) for key in _UNSTATED}


# The detector recipe benchmarks/vs_ultralytics.py chose (README, "EchoTune vs Ultralytics": 3x YOLOv8n's test
# mAP50-95 at 20 epochs, 160 px): the anchor-free head, AdamW at 3e-3 / 1e-3 / 3e-4, and GradNorm's weight floor
# 0.5. Overrides on the original configuration; a search starts from it as its second fixed point
# (SearchSpace.recipe, search/tuner.py) so a short search never misses it by chance.
DETECTOR_RECIPE: dict = {
    "head": "anchorfree",
    "optimizer": "adamw",
    "lr_stage1": 3e-3,
    "lr_stage2": 1e-3,
    "lr_stage3": 3e-4,
    "gn_min_weight": 0.5,
}


def original_config(profile: str | Profile) -> dict:
    """The original configuration for `profile`: study values + EchoTune defaults + the profile's scale/size."""
    p = get_profile(profile)
    return {**ORIGINAL_STUDY, **ECHOTUNE_DEFAULTS, "model_scale": p.baseline_scale, "img_size": p.img_size}
