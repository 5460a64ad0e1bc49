from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from echotune.engine import NonFiniteLossError, TrainConfig, fit
from echotune.engine.checkpoint import load_checkpoint
from echotune.engine.evaluate_checkpoint import evaluate_checkpoint, evaluate_held_out, paired_difference
from echotune.engine.schedule import lr_at, plan_stages
from tests.conftest import TINY_TRAIN
from tests.test_metrics import METRIC_KEYS

REPORTED = {
    *METRIC_KEYS,
    "val/best_score",
    "train/loss",
    "train/loss/box",
    "train/loss/obj",
    "train/loss/cls_det",
    "train/loss/view",
    "gradnorm/w_det",
    "gradnorm/w_view",
    "stage",
    "epoch",
}


def test_fit_reports_every_epoch_with_the_fixed_names_and_stages(tiny_synthetic, tmp_path):
    reports = []
    cfg = TrainConfig.from_dict({**TINY_TRAIN, "epochs": 4})
    result = fit(
        cfg, tiny_synthetic, report=lambda m, ckpt: reports.append((m, ckpt)), out_dir=tmp_path, log=lambda _: None
    )
    assert len(reports) == 4
    for metrics, ckpt in reports:
        assert REPORTED <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
        assert ckpt == tmp_path / "last.pt"
    assert [m["stage"] for m, _ in reports] == [1, 2, 2, 3]
    settings = [
        (m["stage/aug_strength"], m["stage/hard_mining_frac"], m["stage/label_smoothing"], m["stage/mixup_alpha"])
        for m, _ in reports
    ]
    assert settings == [(cfg.aug_strength_stage1, 0.0, 0.0, 0.0)] + [
        (cfg.aug_strength_stage2, cfg.hard_mining_frac, 0.0, 0.0)
    ] * 2 + [(cfg.aug_strength_stage3, 0.0, cfg.label_smoothing_stage3, cfg.mixup_alpha)]
    assert [m["epoch"] for m, _ in reports] == [1, 2, 3, 4]
    stages = plan_stages(cfg)
    for (metrics, _), stage in zip(reports, [stages[0], stages[1], stages[1], stages[2]]):
        steps = math.ceil(len(tiny_synthetic.samples["train"]) / cfg.batch_size)
        into = metrics["epoch"] - 1 - stage.start_epoch + (steps - 1) / steps
        assert metrics["lr"] == pytest.approx(lr_at(stage, into, cfg.warmup_epochs))
    w = reports[-1][0]
    assert w["gradnorm/w_det"] + w["gradnorm/w_view"] == pytest.approx(2.0, abs=1e-4)
    assert result.best["val/score"] == max(m["val/score"] for m, _ in reports)
    state = load_checkpoint(tmp_path / "best.pt")
    assert state["epoch"] == result.best["epoch"] and state["config"]["nc"] == 4
    assert state["versions"]["torch"].startswith("2.") and state["config"]["seed"] == 0
    assert (tmp_path / "run.json").is_file()


def test_mosaic_and_the_gradnorm_floor_train_through_the_engine(tiny_synthetic):
    """Mosaic images (no view label) through GradNorm with a floor on its weights, the anchor-free head."""
    cfg = TrainConfig.from_dict(
        {**TINY_TRAIN, "epochs": 4, "mosaic": 1.0, "gn_min_weight": 0.6, "gn_lr": 0.5, "head": "anchorfree"}
    )
    reports = []
    fit(cfg, tiny_synthetic, report=lambda m, _: reports.append(m), log=lambda _: None)
    assert [m["stage/mosaic"] for m in reports] == [1.0, 1.0, 1.0, 0.0]
    assert all(math.isfinite(m["train/loss"]) for m in reports)
    for m in reports:
        assert min(m["gradnorm/w_det"], m["gradnorm/w_view"]) >= 0.6 - 1e-5
        assert m["gradnorm/w_det"] + m["gradnorm/w_view"] == pytest.approx(2.0, abs=1e-4)


@pytest.mark.slow  # quick tier: trains for ~10 s
def test_resume_reproduces_straight_training(tiny_synthetic, tmp_path):
    cfg = {**TINY_TRAIN, "epochs": 4, "hard_mining_frac": 0.5, "mixup_alpha": 0.5, "aug_strength_stage2": 0.8}
    straight = fit(cfg, tiny_synthetic, out_dir=tmp_path / "a", log=lambda _: None)
    with pytest.raises(_Interrupted):  # a trial killed after its second epoch's checkpoint
        fit(cfg, tiny_synthetic, out_dir=tmp_path / "b", log=lambda _: None, report=_interrupt_after(2))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2
    resumed = fit(
        cfg, tiny_synthetic, out_dir=tmp_path / "b", resume_from=tmp_path / "b" / "last.pt", log=lambda _: None
    )
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(b["balancer"]["w"], a["balancer"]["w"])
    assert [m["val/score"] for m in resumed.history] == pytest.approx([m["val/score"] for m in straight.history])
    # the search's selection metric is the running best, also across the resume, and ends at best.pt's score
    scores = [m["val/score"] for m in straight.history]
    for run in (straight, resumed):
        assert [m["val/best_score"] for m in run.history] == pytest.approx(np.maximum.accumulate(scores).tolist())
        assert run.history[-1]["val/best_score"] == pytest.approx(run.best["val/score"])


class _Interrupted(Exception):
    pass


def _interrupt_after(epochs):
    def report(metrics, ckpt):
        if metrics["epoch"] == epochs:
            raise _Interrupted

    return report


def test_non_finite_loss_raises_a_clear_error(tiny_synthetic):
    # Fault injection: one NaN weight makes every loss NaN; the step must raise, not report NaN.
    from echotune.balance import create_balancer
    from echotune.data.dataset import EchoDataset, make_loader
    from echotune.engine.build import build_model, build_optimizer
    from echotune.engine.steps import StepSettings, train_one_epoch

    cfg = TrainConfig.from_dict(TINY_TRAIN)
    model = build_model(cfg, tiny_synthetic)
    with torch.no_grad():
        model.gradnorm_shared_weight.view(-1)[0] = float("nan")
    balancer = create_balancer("gradnorm")
    loader = make_loader(EchoDataset(tiny_synthetic.samples["train"], 64), batch_size=4)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step 1: .*loss/"):
        train_one_epoch(
            model,
            balancer,
            loader,
            build_optimizer(cfg, model, balancer),
            StepSettings(lr_at_step=lambda step: 0.01),
            0,
            torch.device("cpu"),
        )


@pytest.mark.slow  # quick tier: trains for ~10 s
def test_dual_architecture_trains_and_checkpoint_evaluates_on_test(tiny_synthetic, tmp_path):
    cfg = {**TINY_TRAIN, "arch": "dual", "balance": "uncertainty", "classifier": "resnet10t", "epochs": 2}
    result = fit(cfg, tiny_synthetic, out_dir=tmp_path, log=lambda _: None)
    assert set(result.best) >= REPORTED
    test = evaluate_checkpoint(result.best_checkpoint, tiny_synthetic, split="test")
    assert set(test) == {
        "test/map50",
        "test/map50_95",
        "test/precision",
        "test/recall",
        "test/f1",
        "test/view_acc",
        "test/view_f1",
        "test/view_kappa",
        "test/score",
        "test/conf",
    }
    # re-evaluating the best checkpoint on val reproduces the metrics recorded during training
    val = evaluate_checkpoint(result.best_checkpoint, tiny_synthetic, split="val")
    assert val["val/score"] == pytest.approx(result.best["val/score"], abs=1e-9)
    # selection on val, reporting on test: test's P/R/F1 are read at the confidence val chose, not re-chosen
    assert test["test/conf"] == val["val/conf"] == result.best["val/conf"]
    assert evaluate_checkpoint(result.best_checkpoint, tiny_synthetic, split="test", conf=0.5)["test/conf"] == 0.5


def test_held_out_evaluation_applies_the_val_conf_and_brackets_every_metric(tiny_synthetic, tmp_path):
    result = fit({**TINY_TRAIN, "epochs": 2}, tiny_synthetic, out_dir=tmp_path, log=lambda _: None)
    held = evaluate_held_out(result.best_checkpoint, tiny_synthetic, n_resamples=200)
    assert list(held.metrics) == ["val", "test"] and held.conf == result.best["val/conf"]
    assert held.metrics["test"]["test/conf"] == held.conf
    assert held.metrics["test"] == pytest.approx(evaluate_checkpoint(result.best_checkpoint, tiny_synthetic), abs=1e-12)
    for split in ("val", "test"):
        for name, estimate in held.ci[split].items():  # the point estimate is the metric on the split as it is
            assert estimate.value == pytest.approx(held.metrics[split][f"{split}/{name}"], abs=1e-12)
            assert estimate.low <= estimate.value <= estimate.high
        assert held.ci[split]["view_acc"].high > held.ci[split]["view_acc"].low  # 4 videos: not a point
        assert set(held.per_class[split]) <= set(tiny_synthetic.config.names)
    same = paired_difference(held, held, "test", n_resamples=200)
    assert all((e.value, e.low, e.high) == (0.0, 0.0, 0.0) for e in same.values())
    saved = json.loads(json.dumps(held.to_dict()))  # what train.py writes into metrics.json
    assert saved["conf_chosen_on"] == "val" and saved["ci95"]["test"]["score"]["low"] == held.ci["test"]["score"].low


def test_hard_mining_replaces_the_easiest_with_the_hardest():
    import numpy as np

    from echotune.engine.fit import hard_mining_indices

    losses = {i: float(i) for i in range(10)}  # image 9 hardest, image 0 easiest
    plan = hard_mining_indices(10, losses, 0.2, np.random.default_rng(0))
    assert len(plan) == 10 and sorted(plan) == [2, 3, 4, 5, 6, 7, 8, 8, 9, 9]
    assert sorted(hard_mining_indices(10, losses, 0.0, np.random.default_rng(0))) == list(range(10))
    assert sorted(hard_mining_indices(10, {}, 0.2, np.random.default_rng(0))) == list(range(10))  # no losses yet
