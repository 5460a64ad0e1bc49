"""TrainConfig: one trial's full configuration, flat and prefixed like the search's trial config dicts.

`TrainConfig.from_dict` refuses unknown keys (listing the valid ones) and bad values, so a typo in a search
space or a CLI never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from echotune.augment import POLICIES
from echotune.balance import BALANCERS
from echotune.losses import BINARY_LOSSES, BOX_LOSSES, VIEW_LOSSES
from echotune.losses.functional import check_choice
from echotune.models import DETECT_HEADS, SCALES, VIEW_LEVELS

ARCHITECTURES = ("shared", "dual")  # the registered models engine.build.create_network builds
OPTIMIZERS = ("sgd", "adamw")  # engine.build.build_optimizer
# Every string field with a fixed vocabulary -> its valid values, each taken from the module that acts on the value
# (the models for architecture choices, the losses, balancers and augmentation for theirs), so a new choice is
# added in one place. Command lines can offer these as argparse choices.
CHOICES: dict[str, tuple[str, ...]] = {
    "arch": ARCHITECTURES,
    "model_scale": tuple(SCALES),
    "view_level": tuple(VIEW_LEVELS),
    "head": DETECT_HEADS,
    "balance": BALANCERS,
    "optimizer": OPTIMIZERS,
    "loss_box": BOX_LOSSES,
    "loss_obj": BINARY_LOSSES,
    "loss_cls": BINARY_LOSSES,
    "loss_view": VIEW_LOSSES,
    "aug_policy": POLICIES,
}

# The per-stage schedule keys, by the stage they act in: `fit` reads them every epoch (through plan_stages), so a
# run resumed with new values trains with them from its next epoch. They are the only training keys a resume may
# change (checkpoint.check_compatible), which is what population-based training needs when a member continues
# from another member's checkpoint with mutated values (search/pbt.py mutates exactly these). Not here: momentum
# and weight decay (the optimizer's saved param groups would override a new value), the stage split and epochs
# (they move the stage boundaries of a run already under way), hard mining (stage 2's share; could join).
MUTABLE_KEYS_BY_STAGE: dict[int, tuple[str, ...]] = {
    1: ("lr_stage1", "aug_strength_stage1"),
    2: ("lr_stage2", "aug_strength_stage2"),
    3: ("lr_stage3", "aug_strength_stage3", "label_smoothing_stage3", "mixup_alpha"),
}
MUTABLE_KEYS: tuple[str, ...] = tuple(k for keys in MUTABLE_KEYS_BY_STAGE.values() for k in keys)
# Where and how fast a run trains, not what it learns: a resume may move to another machine or device.
RUNTIME_KEYS: tuple[str, ...] = ("cpus", "device", "amp", "workers", "cache_images")


@dataclass
class TrainConfig:
    # model
    arch: str = "shared"
    model_scale: str = "n"
    img_size: int = 160
    view_level: str = "P3"
    view_dropout: float = 0.2
    classifier: str = "resnet18"  # timm name, dual only
    classifier_weights: str | None = None
    kmeans_anchors: bool = False  # anchor head only
    head: str = "anchor"  # detection head: models.heads.DETECT_HEADS ("anchor": YOLOv5-style, "anchorfree")
    # balancing of the detection and view losses
    balance: str = "gradnorm"
    gn_alpha: float = 1.5
    gn_lr: float = 0.025
    # GradNorm's floor on each task weight (a share of the uniform weight 1; 0 = the paper). GradNorm equalises the
    # tasks' gradient norms on the shared layer, and the detection loss's is several times the view loss's there,
    # so unbounded it drives w_det to ~0.2 within a few hundred steps and detection stalls (README, "Detector").
    gn_min_weight: float = 0.0
    # balance=fixed: the view loss's weight (the detection loss's is 1). 0 trains detection only: the view head
    # is still built and evaluated, but neither it nor the shared trunk learns from the view labels.
    view_loss_weight: float = 1.0
    # optimisation, per stage
    epochs: int = 10  # total over the three stages
    stage_split: tuple[float, float, float] = (0.3, 0.5, 0.2)  # the original study's 30/50/20
    lr_stage1: float = 1e-2
    lr_stage2: float = 1e-3
    lr_stage3: float = 1e-4
    lr_cls_factor: float = 1.0  # dual: classifier lr = detector lr * factor
    optimizer: str = "sgd"
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear warm-up at the start of stage 1 (fraction of an epoch allowed)
    batch_size: int = 16
    grad_clip: float = 10.0
    ema_decay: float = 0.999
    # losses
    loss_box: str = "ciou"
    loss_obj: str = "bce"
    loss_cls: str = "bce"
    focal_gamma: float = 1.5
    loss_view: str = "ce"
    view_smoothing: float = 0.1  # for loss_view=label_smoothing
    # augmentation per stage, hard mining (stage 2), label smoothing and mixup (stage 3)
    aug_policy: str = "medical"
    aug_strength_stage1: float = 0.3
    aug_strength_stage2: float = 0.6
    aug_strength_stage3: float = 0.1
    hard_mining_frac: float = 0.25  # stage 2: share of each epoch drawn again from the highest-loss images
    label_smoothing_stage3: float = 0.1
    mixup_alpha: float = 0.2  # stage 3, Beta(alpha, alpha); 0 disables
    # stages 1-2: probability that a training image is a 2x2 mosaic with three others (YOLOv4); 0 (the original
    # study's recipe) disables. Mosaic images carry no view label: a collage has no single echo view.
    mosaic: float = 0.0
    # evaluation and objective
    score_weights: dict[str, float] = field(default_factory=dict)  # empty: the documented default
    # runtime
    seed: int = 0
    cpus: int = 1
    device: str = "auto"
    amp: bool = True  # on CUDA only
    workers: int = -1  # DataLoader processes; -1: auto (CUDA: cpus - 1, CPU: 0; see engine.build.device_runtime)
    cache_images: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(valid))}")
        values = dict(values)
        if "stage_split" in values:
            values["stage_split"] = tuple(float(v) for v in values["stage_split"])
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for name, valid in CHOICES.items():
            check_choice(name, getattr(self, name), valid)
        if self.kmeans_anchors and self.head != "anchor":
            raise ValueError(
                f"kmeans_anchors=True needs head='anchor': the {self.head!r} head has no anchors (drop kmeans_anchors)"
            )
        if self.arch == "dual" and self.balance == "gradnorm":
            raise ValueError(
                "balance=gradnorm needs a shared layer; the dual architecture has none "
                "(use balance=fixed or uncertainty)"
            )
        if self.view_loss_weight != 1.0 and self.balance != "fixed":
            raise ValueError(
                f"view_loss_weight applies to balance=fixed only ({self.balance} learns the task "
                f"weights itself), got view_loss_weight={self.view_loss_weight}"
            )
        if self.img_size < 64 or self.img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 and >= 64, got {self.img_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if len(self.stage_split) != 3 or any(s < 0 for s in self.stage_split) or sum(self.stage_split) <= 0:
            raise ValueError(f"stage_split must be three non-negative fractions, got {self.stage_split}")
        for name in ("lr_stage1", "lr_stage2", "lr_stage3", "gn_lr", "batch_size", "cpus"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "aug_strength_stage1",
            "aug_strength_stage2",
            "aug_strength_stage3",
            "hard_mining_frac",
            "label_smoothing_stage3",
            "view_dropout",
            "ema_decay",
            "view_smoothing",
            "mosaic",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.gn_min_weight < 1.0:
            raise ValueError(f"gn_min_weight must be in [0, 1), got {self.gn_min_weight}")
        if self.workers < -1:
            raise ValueError(f"workers must be >= 0, or -1 for auto, got {self.workers}")
        for name in (
            "gn_alpha",
            "mixup_alpha",
            "weight_decay",
            "momentum",
            "warmup_epochs",
            "grad_clip",
            "focal_gamma",
            "lr_cls_factor",
            "view_loss_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
