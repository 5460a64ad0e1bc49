"""Search profiles: what a space may choose from on a laptop CPU (``quick``) or on a GPU (``full``).

A profile fixes the detector scales, the input size, the dual architecture's timm classifiers and the
augmentation policies a space offers, plus the scale/classifier its baseline point uses. Every classifier
name exists in timm and builds with ``pretrained=False, num_classes=3`` (checked by tests/spaces).
"""

from __future__ import annotations

from dataclasses import dataclass

from echotune.augment import POLICIES
from echotune.models import SCALES


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    scales: tuple[str, ...]  # detector `model_scale` choices
    img_size: int  # returned as a constant (the search's --img-size may override it)
    classifiers: tuple[str, ...]  # dual `classifier` choices (timm names)
    aug_policies: tuple[str, ...]  # `aug_policy` choices
    baseline_scale: str  # the scale that stands for the original study's YOLOv5s
    baseline_classifier: str  # the dual baseline's classifier
    # The parameters this profile searches (None: every parameter of the space); the others stay at the
    # baseline's values (spaces/registry.py SearchSpace.fixed_values). Names a space does not have are ignored.
    searched: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # A profile offers a subset of each vocabulary (the models' scales, the augmentation policies); checked
        # here so that a profile offering a value the engine refuses fails at import, not in its first trial.
        for what, offered, valid in (("scales", self.scales, SCALES), ("aug_policies", self.aug_policies, POLICIES)):
            unknown = [v for v in offered if v not in valid]
            if unknown:
                raise ValueError(f"profile {self.name!r}: unknown {what} {unknown}; valid: {', '.join(valid)}")
        if self.baseline_scale not in self.scales or self.baseline_classifier not in self.classifiers:
            raise ValueError(f"profile {self.name!r}: the baseline's scale and classifier must be among its choices")


# The quick profile's parameters: the 8 with the best mean rank of fANOVA importance over bootstrap resamples of
# a 64-trial random search of the whole quick gradnorm space (benchmarks/space_importance.py; the table is in the
# README, "The quick space"): a 16-trial search cannot model 20 dimensions. The two stage fractions are one
# choice, the stage split. Other spaces' own switches (arch, classifier, balance, lr_cls_factor: not measured
# there) are searched where a space has them; every other parameter stays at the original recipe's value.
# Two more were added after that study, by benchmarks/vs_ultralytics.py (README, "EchoTune vs Ultralytics"): the
# detection head (the anchor-free head doubled val mAP50-95 at equal epochs) and GradNorm's weight floor (without
# one GradNorm starves detection); the original recipe (anchor head, no floor) stays the fixed and baseline value.
QUICK_SEARCHED: tuple[str, ...] = (
    "lr_stage3",
    "optimizer",
    "momentum",
    "stage1_frac",
    "stage2_frac",
    "view_level",
    "mixup_alpha",
    "label_smoothing_stage3",
    "head",
    "gn_min_weight",
    "arch",
    "classifier",
    "balance",
    "lr_cls_factor",
)

_QUICK_SIZES = dict(
    scales=("test", "n"),
    img_size=160,
    classifiers=("resnet10t", "mobilenetv3_small_050", "mobilenetv3_large_100", "efficientnet_b0"),
    aug_policies=("none", "medical"),
    # The original study used YOLOv5s; "n" is the largest scale that trains in CPU minutes, so the quick
    # baseline is the original recipe on the closest CPU-sized detector.
    baseline_scale="n",
    baseline_classifier="resnet10t",
)

_PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="quick",
            description="laptop CPU: test/n detectors, 160 px, small timm classifiers, no flips; the parameters "
            "that mattered most (QUICK_SEARCHED)",
            **_QUICK_SIZES,
            searched=QUICK_SEARCHED,
        ),
        Profile(
            name="quick-all",
            description="the quick profile's sizes with every parameter searched (what QUICK_SEARCHED was chosen "
            "from: benchmarks/space_importance.py)",
            **_QUICK_SIZES,
        ),
        Profile(
            name="full",
            description="GPU: n/s/m/l detectors at the original 640 px, ResNet/EfficientNet/ConvNeXt classifiers",
            scales=("n", "s", "m", "l"),
            img_size=640,
            classifiers=(
                "resnet18",
                "resnet34",
                "resnet50",
                "efficientnet_b0",
                "efficientnet_b1",
                "efficientnet_b2",
                "convnext_tiny",
                "mobilenetv3_large_100",
            ),
            aug_policies=("none", "medical", "medical+flip"),
            baseline_scale="s",  # the original study's YOLOv5s
            baseline_classifier="resnet18",
        ),
    )
}

PROFILES: tuple[str, ...] = tuple(_PROFILES)


def get_profile(profile: str | Profile) -> Profile:
    """The named profile (a Profile passes through); unknown names raise ValueError listing the valid ones."""
    if isinstance(profile, Profile):
        return profile
    if profile not in _PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    return _PROFILES[profile]
