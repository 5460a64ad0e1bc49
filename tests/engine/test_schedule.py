from __future__ import annotations

import pytest

from echotune.engine.config import TrainConfig
from echotune.engine.schedule import FINAL_LR_FRACTION, lr_at, plan_stages, split_epochs, stage_at


@pytest.mark.parametrize(
    "total, fractions, expected",
    [
        (10, (0.3, 0.5, 0.2), [3, 5, 2]),
        (100, (0.3, 0.5, 0.2), [30, 50, 20]),
        (4, (0.3, 0.5, 0.2), [1, 2, 1]),
        (3, (0.3, 0.5, 0.2), [1, 1, 1]),
        (7, (0.3, 0.5, 0.2), [2, 4, 1]),
        (5, (1.0, 0.0, 0.0), [5, 0, 0]),
    ],
)
def test_split_epochs(total, fractions, expected):
    assert split_epochs(total, fractions) == expected


def test_stages_carry_their_settings():
    cfg = TrainConfig(
        epochs=10,
        lr_stage1=0.01,
        lr_stage2=0.001,
        lr_stage3=0.0001,
        aug_strength_stage1=0.3,
        aug_strength_stage2=0.7,
        aug_strength_stage3=0.05,
        hard_mining_frac=0.25,
        label_smoothing_stage3=0.1,
        mixup_alpha=0.4,
    )
    s1, s2, s3 = plan_stages(cfg)
    assert (s1.start_epoch, s1.end_epoch, s2.end_epoch, s3.end_epoch) == (0, 3, 8, 10)
    assert (s1.lr, s2.lr, s3.lr) == (0.01, 0.001, 0.0001)
    assert (s1.aug_strength, s2.aug_strength, s3.aug_strength) == (0.3, 0.7, 0.05)
    assert (s1.hard_mining_frac, s2.hard_mining_frac, s3.hard_mining_frac) == (0.0, 0.25, 0.0)
    assert (s1.label_smoothing, s2.label_smoothing, s3.label_smoothing) == (0.0, 0.0, 0.1)
    assert (s1.mixup_alpha, s2.mixup_alpha, s3.mixup_alpha) == (0.0, 0.0, 0.4)
    assert [stage_at([s1, s2, s3], e).index for e in range(10)] == [1] * 3 + [2] * 5 + [3] * 2
    with pytest.raises(ValueError, match="outside the schedule"):
        stage_at([s1, s2, s3], 10)


def test_lr_warmup_then_cosine_within_each_stage():
    s1, s2, _ = plan_stages(TrainConfig(epochs=10))
    assert lr_at(s1, 0.0, warmup_epochs=1.0) == pytest.approx(0.01 * 0.01)  # warm-up floor
    assert lr_at(s1, 0.5, warmup_epochs=1.0) < lr_at(s1, 1.0, warmup_epochs=1.0)
    assert lr_at(s2, 0.0) == pytest.approx(0.001)  # no warm-up after stage 1
    assert lr_at(s2, s2.epochs) == pytest.approx(0.001 * FINAL_LR_FRACTION)
    values = [lr_at(s2, e / 10) for e in range(0, 51)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone cosine decay


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown config key.*'lr_stage4'.*valid keys:"):
        TrainConfig.from_dict({"lr_stage4": 0.1})
    with pytest.raises(ValueError, match="loss_box='iou' is not valid; choose one of: giou, diou, ciou"):
        TrainConfig.from_dict({"loss_box": "iou"})
    with pytest.raises(ValueError, match="balance=gradnorm needs a shared layer"):
        TrainConfig.from_dict({"arch": "dual", "balance": "gradnorm"})
    with pytest.raises(ValueError, match="img_size must be a multiple of 32"):
        TrainConfig.from_dict({"img_size": 100})
    with pytest.raises(ValueError, match="aug_strength_stage2 must be in"):
        TrainConfig.from_dict({"aug_strength_stage2": 1.5})
    cfg = TrainConfig.from_dict({"stage_split": [0.2, 0.6, 0.2], "arch": "dual", "balance": "fixed"})
    assert cfg.stage_split == (0.2, 0.6, 0.2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_mosaic_acts_in_stages_one_and_two_only():
    stages = plan_stages(TrainConfig(epochs=10, mosaic=0.7))
    assert [s.mosaic for s in stages] == [0.7, 0.7, 0.0]  # the polish stage sees whole frames
    assert all(s.mosaic == 0.0 for s in plan_stages(TrainConfig(epochs=10)))  # off by default (the original recipe)
    with pytest.raises(ValueError, match="mosaic"):
        TrainConfig.from_dict({"mosaic": 1.5})
