"""``dual_backbone``: detector + independent timm classifier (no shared layer, so no GradNorm)."""

from __future__ import annotations

from echotune.balance import BALANCERS
from echotune.spaces.common import suggest_training
from echotune.spaces.original import original_config
from echotune.spaces.profiles import Profile
from echotune.spaces.registry import register_space
from echotune.spaces.trials import SuggestTrial

DUAL_BALANCERS = tuple(b for b in BALANCERS if b != "gradnorm")  # GradNorm needs a shared layer the dual model lacks


def dual_baseline_config(profile: Profile) -> dict:
    """The original recipe on the dual architecture. GradNorm needs a shared layer, so the balancer is `fixed`
    (plain sum of the task losses); the classifier is the profile's baseline classifier at the detector's lr."""
    return {
        **original_config(profile),
        "arch": "dual",
        "balance": "fixed",
        "classifier": profile.baseline_classifier,
        "lr_cls_factor": 1.0,
    }


@register_space("dual_backbone", baseline_config=dual_baseline_config)
def define_dual(trial: SuggestTrial, profile: Profile) -> dict:
    """Dual backbone: balancer, timm classifier and its learning-rate factor, and the common recipe.

    Architecture-specific:
      balance                 {fixed, uncertainty}     GradNorm needs a shared layer the dual model lacks
      classifier              quick: {resnet10t, mobilenetv3_small_050, mobilenetv3_large_100, efficientnet_b0}
                              full: {resnet18, resnet34, resnet50, efficientnet_b0, efficientnet_b1,
                                     efficientnet_b2, convnext_tiny, mobilenetv3_large_100}
      lr_cls_factor           float [0.1, 10] log      classifier lr = detector stage lr * factor
    Common (spaces/common.py): the same parameters and ranges as gradnorm's common block: model_scale
      (detector), lr_stage1/2/3 (detector), weight_decay, momentum, optimizer, head, loss_box, loss_obj (anchor
      head), loss_cls, focal_gamma (conditional), loss_view, view_smoothing (conditional), aug_policy,
      aug_strength_stage1/2/3 (conditional), mixup_alpha, mosaic, stage1_frac, stage2_frac (search-only),
      hard_mining_frac, label_smoothing_stage3. No view_level: the view comes from the classifier.
    Constants: arch=dual, img_size (quick 160, full 640), batch_size=8, stage_split.
    Baseline point: the original recipe with balance=fixed, the profile's baseline classifier (quick
      resnet10t, full resnet18) and lr_cls_factor=1 (EchoTune choices: the original had no dual model).
    """
    trial.suggest_categorical("balance", DUAL_BALANCERS)
    trial.suggest_categorical("classifier", profile.classifiers)
    trial.suggest_float("lr_cls_factor", 0.1, 10.0, log=True)
    return {"arch": "dual", **suggest_training(trial, profile)}
