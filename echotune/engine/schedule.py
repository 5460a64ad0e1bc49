"""The three-stage schedule: which epochs belong to which stage, and each stage's settings and learning rate.

Stage 1 warm-up/pretrain (high lr, basic augmentation), stage 2 fine-tune (lower lr, stronger augmentation,
hard-example mining), stage 3 polish (very low lr, minimal augmentation, label smoothing, mixup). Mosaic
(`cfg.mosaic`, off by default) acts in stages 1 and 2 only: the polish stage sees whole frames, as YOLOv8 closes
mosaic for its last epochs. Inside a stage the lr follows a cosine from the stage's lr down to 10 % of it;
stage 1 starts with a linear warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from echotune.engine.config import TrainConfig

FINAL_LR_FRACTION = 0.1  # cosine floor inside a stage (the next stage starts near there anyway)


@dataclass(frozen=True)
class Stage:
    index: int  # 1, 2 or 3
    start_epoch: int  # first epoch of the stage (0-based, global)
    epochs: int
    lr: float
    aug_strength: float
    hard_mining_frac: float
    label_smoothing: float
    mixup_alpha: float
    mosaic: float = 0.0  # probability that a training image is a 2x2 mosaic (echotune.augment.Mosaic)

    @property
    def end_epoch(self) -> int:
        """One past the stage's last epoch: the epoch count reported when the stage ends."""
        return self.start_epoch + self.epochs


def split_epochs(total: int, fractions: tuple[float, ...]) -> list[int]:
    """Whole epochs per stage by largest remainder; every stage with a positive share gets at least one epoch
    when the total allows. E.g. 10 with (0.3, 0.5, 0.2) -> [3, 5, 2]; 4 -> [1, 2, 1]."""
    shares = [f / sum(fractions) * total for f in fractions]
    counts = [math.floor(s) for s in shares]
    for i in sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))[: total - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):  # a positive share rounded to zero borrows from the largest stage
        if f > 0 and counts[i] == 0 and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    return counts


def plan_stages(cfg: TrainConfig) -> list[Stage]:
    counts = split_epochs(cfg.epochs, cfg.stage_split)
    settings = [
        (cfg.lr_stage1, cfg.aug_strength_stage1, 0.0, 0.0, 0.0, cfg.mosaic),
        (cfg.lr_stage2, cfg.aug_strength_stage2, cfg.hard_mining_frac, 0.0, 0.0, cfg.mosaic),
        (cfg.lr_stage3, cfg.aug_strength_stage3, 0.0, cfg.label_smoothing_stage3, cfg.mixup_alpha, 0.0),
    ]
    stages, start = [], 0
    for index, (count, (lr, aug, mining, smoothing, mixup, mosaic)) in enumerate(zip(counts, settings), start=1):
        if count:
            stages.append(Stage(index, start, count, lr, aug, mining, smoothing, mixup, mosaic))
            start += count
    return stages


def stage_at(stages: list[Stage], epoch: int) -> Stage:
    for stage in stages:
        if stage.start_epoch <= epoch < stage.end_epoch:
            return stage
    raise ValueError(f"epoch {epoch} is outside the schedule (0..{stages[-1].end_epoch - 1})")


def lr_at(stage: Stage, progress: float, warmup_epochs: float = 0.0) -> float:
    """Learning rate at `progress` epochs into the stage (fractional). Warm-up only in the stage-1 plan."""
    t = min(max(progress / stage.epochs, 0.0), 1.0)
    floor = stage.lr * FINAL_LR_FRACTION
    lr = floor + (stage.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    if stage.index == 1 and warmup_epochs > 0 and progress < warmup_epochs:
        lr *= max(progress / warmup_epochs, 0.01)
    return lr
