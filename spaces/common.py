"""Suggestions every architecture shares: detector scale, optimisation, losses, augmentation, stage schedule.

``suggest_training(trial, profile)`` makes all of them and returns the constants they imply; the gradnorm and
dual_backbone spaces add their architecture's own parameters around it. The categorical choices are the
vocabularies of the modules that act on them (echotune.models, echotune.losses, echotune.engine.config), imported,
never copied. A stored study (optuna.db) keeps the choices it was created with and Optuna refuses to continue it
when they change, so tests/spaces pins the choices to the values stored studies hold: a changed vocabulary fails
there first, where one decides between keeping the space's old choices and migrating the old studies.

Stage split: TPE sees two floats, ``stage1_frac`` [0.1, 0.5] and ``stage2_frac`` [0.2, 0.7]; stage 3 gets the
rest, at least ``STAGE3_FLOOR`` = 0.05 (when the two sum past 0.95 both shrink by the same factor, keeping
their ratio). The result is returned as the constant ``stage_split`` (rounded to 4 decimals, so 0.3/0.5 gives
exactly (0.3, 0.5, 0.2)). The two floats are search-only parameters, not TrainConfig fields: Ray puts every
suggested parameter into the trial's config, so trainables pass it through ``to_train_config`` first.
"""

from __future__ import annotations

from collections.abc import Sequence

from echotune.engine.config import OPTIMIZERS
from echotune.losses import BINARY_LOSSES, BOX_LOSSES, FOCAL_LOSSES, VIEW_LOSSES
from echotune.models import DETECT_HEADS
from echotune.spaces.profiles import Profile
from echotune.spaces.trials import SuggestTrial

BATCH_SIZE = 8  # the original study's; a constant of every space so the baseline point compares like for like
STAGE3_FLOOR = 0.05
SEARCH_ONLY_PARAMS = ("stage1_frac", "stage2_frac")


def split_from_fractions(stage1: float, stage2: float) -> tuple[float, float, float]:
    """(stage1, stage2, rest) with the rest >= STAGE3_FLOOR, e.g. (0.3, 0.5) -> (0.3, 0.5, 0.2)."""
    shrink = min(1.0, (1.0 - STAGE3_FLOOR) / (stage1 + stage2))
    s1, s2 = round(stage1 * shrink, 4), round(stage2 * shrink, 4)
    return s1, s2, round(max(1.0 - s1 - s2, STAGE3_FLOOR), 4)


def fractions_from_split(split: Sequence[float]) -> dict[str, float]:
    """The search-only parameters that give `split` back (inverse of split_from_fractions for stage 3 >= floor)."""
    total = sum(split)
    return {"stage1_frac": split[0] / total, "stage2_frac": split[1] / total}


def to_train_config(config: dict) -> dict:
    """A trial's config without the search-only parameters: the input for ``TrainConfig.from_dict``."""
    return {k: v for k, v in config.items() if k not in SEARCH_ONLY_PARAMS}


def suggest_optimisation(trial: SuggestTrial) -> dict:
    """Per-stage learning rates (log), weight decay (log), momentum (SGD momentum / AdamW beta1), optimizer."""
    trial.suggest_float("lr_stage1", 1e-3, 3e-2, log=True)
    trial.suggest_float("lr_stage2", 1e-4, 3e-3, log=True)
    trial.suggest_float("lr_stage3", 1e-5, 3e-4, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
    trial.suggest_float("momentum", 0.8, 0.98)
    trial.suggest_categorical("optimizer", OPTIMIZERS)
    return {}


def suggest_losses(trial: SuggestTrial, head: str = "anchor") -> dict:
    """Box/objectness/class/view losses; objectness only for the anchor head (the anchor-free head has none),
    focal_gamma only with a focal-type binary loss, view_smoothing only with the label-smoothing view loss."""
    trial.suggest_categorical("loss_box", BOX_LOSSES)
    loss_obj = trial.suggest_categorical("loss_obj", BINARY_LOSSES) if head == "anchor" else None
    loss_cls = trial.suggest_categorical("loss_cls", BINARY_LOSSES)
    if loss_obj in FOCAL_LOSSES or loss_cls in FOCAL_LOSSES:
        trial.suggest_float("focal_gamma", 1.0, 3.0)
    if trial.suggest_categorical("loss_view", VIEW_LOSSES) == "label_smoothing":
        trial.suggest_float("view_smoothing", 0.02, 0.2)
    return {}


def suggest_augmentation(trial: SuggestTrial, profile: Profile) -> dict:
    """Policy from the profile; per-stage strengths only when a policy is on (else constants 0); stage-3 mixup."""
    constants = {}
    if trial.suggest_categorical("aug_policy", profile.aug_policies) == "none":
        constants = {"aug_strength_stage1": 0.0, "aug_strength_stage2": 0.0, "aug_strength_stage3": 0.0}
    else:
        trial.suggest_float("aug_strength_stage1", 0.0, 1.0)
        trial.suggest_float("aug_strength_stage2", 0.0, 1.0)
        trial.suggest_float("aug_strength_stage3", 0.0, 0.3)  # stage 3 polishes: light augmentation only
    trial.suggest_float("mixup_alpha", 0.0, 0.8)
    trial.suggest_float("mosaic", 0.0, 1.0)  # stages 1-2
    return constants


def suggest_schedule(trial: SuggestTrial) -> dict:
    """Stage split (two search-only floats -> constant stage_split), stage-2 hard mining, stage-3 label smoothing."""
    split = split_from_fractions(
        trial.suggest_float("stage1_frac", 0.1, 0.5), trial.suggest_float("stage2_frac", 0.2, 0.7)
    )
    trial.suggest_float("hard_mining_frac", 0.0, 0.5)
    trial.suggest_float("label_smoothing_stage3", 0.0, 0.2)
    return {"stage_split": split}


def suggest_training(trial: SuggestTrial, profile: Profile) -> dict:
    """Everything both architectures search, plus the profile's img_size and the batch size as constants."""
    trial.suggest_categorical("model_scale", profile.scales)
    head = trial.suggest_categorical("head", DETECT_HEADS)
    return {
        **suggest_optimisation(trial),
        **suggest_losses(trial, head),
        **suggest_augmentation(trial, profile),
        **suggest_schedule(trial),
        "img_size": profile.img_size,
        "batch_size": BATCH_SIZE,
    }
