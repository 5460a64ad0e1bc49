"""``all``: the architecture is itself a parameter; each choice opens its own conditional sub-space."""

from __future__ import annotations

from echotune.spaces.dual_backbone import define_dual
from echotune.spaces.gradnorm import define_gradnorm
from echotune.spaces.original import original_config
from echotune.spaces.profiles import Profile
from echotune.spaces.registry import register_space
from echotune.spaces.trials import SuggestTrial

ARCH_SPACES = {"shared": define_gradnorm, "dual": define_dual}


@register_space("all", baseline_config=original_config)
def define_all(trial: SuggestTrial, profile: Profile) -> dict:
    """Both architectures: arch {shared, dual}, then the gradnorm or the dual_backbone space.

      arch                    {shared, dual}
      shared -> the gradnorm space: view_level, gn_alpha, gn_lr, gn_min_weight (conditional on arch=shared)
      dual   -> the dual_backbone space: balance {fixed, uncertainty}, classifier, lr_cls_factor
                (conditional on arch=dual)
      both   -> the common block (model_scale, lr_stage1/2/3, weight_decay, momentum, optimizer, losses,
                augmentation, stage1_frac/stage2_frac, hard_mining_frac, label_smoothing_stage3) with the same
                names and distributions in both branches, so TPE pools what both architectures teach it.
    No parameter name is suggested with two different distributions: `balance` is a parameter only of the dual
    branch (the shared branch's balance=gradnorm is a constant), and the other arch-specific names exist in
    one branch only (tests check this).
    Constants: those of the chosen branch.
    Baseline point: arch=shared + the gradnorm baseline, i.e. the original configuration.
    """
    return ARCH_SPACES[trial.suggest_categorical("arch", tuple(ARCH_SPACES))](trial, profile)
