"""``gradnorm``: the shared-backbone model with GradNorm balancing (the original study's architecture)."""

from __future__ import annotations

from echotune.models import VIEW_LEVELS
from echotune.spaces.common import suggest_training
from echotune.spaces.original import original_config
from echotune.spaces.profiles import Profile
from echotune.spaces.registry import register_space
from echotune.spaces.trials import SuggestTrial


@register_space("gradnorm", baseline_config=original_config)
def define_gradnorm(trial: SuggestTrial, profile: Profile) -> dict:
    """Shared backbone + GradNorm: where the view head branches, GradNorm's alpha and lr, and the common recipe.

    Architecture-specific:
      view_level              {P3, P4, P5, backbone}
      gn_alpha                float [0, 3]             GradNorm restoring force
      gn_lr                   float [1e-3, 1e-1] log   GradNorm task-weight learning rate
      gn_min_weight           float [0, 0.75]          floor on each task weight (0: the paper)
    Common (spaces/common.py):
      model_scale             profile scales (quick: test, n; full: n, s, m, l)
      head                    {anchor, anchorfree}     detection head
      lr_stage1/2/3           float log [1e-3, 3e-2] / [1e-4, 3e-3] / [1e-5, 3e-4]
      weight_decay            float [1e-5, 1e-2] log
      momentum                float [0.8, 0.98]        SGD momentum / AdamW beta1
      optimizer               {sgd, adamw}
      loss_box                {giou, diou, ciou}
      loss_obj, loss_cls      {bce, focal, varifocal}  loss_obj only for head=anchor
      focal_gamma             float [1, 3]             only if loss_obj or loss_cls is focal/varifocal
      loss_view               {ce, label_smoothing, focal, class_balanced}
      view_smoothing          float [0.02, 0.2]        only if loss_view is label_smoothing
      aug_policy              quick: {none, medical}; full: {none, medical, medical+flip}
      aug_strength_stage1/2   float [0, 1]             only if aug_policy is not none (else constants 0)
      aug_strength_stage3     float [0, 0.3]           only if aug_policy is not none (else constant 0)
      mixup_alpha             float [0, 0.8]           stage 3
      mosaic                  float [0, 1]             stages 1-2, probability of a 2x2 mosaic
      stage1_frac             float [0.1, 0.5]         search-only: -> stage_split
      stage2_frac             float [0.2, 0.7]         search-only: -> stage_split (stage 3: rest, >= 0.05)
      hard_mining_frac        float [0, 0.5]           stage 2
      label_smoothing_stage3  float [0, 0.2]
    Constants: arch=shared, balance=gradnorm, img_size (quick 160, full 640), batch_size=8, stage_split.
    Baseline point: the original configuration (spaces/original.py) exactly.
    """
    trial.suggest_categorical("view_level", tuple(VIEW_LEVELS))
    trial.suggest_float("gn_alpha", 0.0, 3.0)
    trial.suggest_float("gn_lr", 1e-3, 1e-1, log=True)
    trial.suggest_float("gn_min_weight", 0.0, 0.75)
    return {"arch": "shared", "balance": "gradnorm", **suggest_training(trial, profile)}
