"""TrainConfig.head through the engine: validation, fit end to end with the anchor-free head, checkpoints that
rebuild the right head, and older checkpoints (no `head` key) loading as the anchor head."""

from __future__ import annotations

import math

import pytest

from echotune.engine import TrainConfig, fit
from echotune.engine.build import create_network
from echotune.engine.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from echotune.engine.evaluate_checkpoint import evaluate_checkpoint, load_model
from tests.conftest import TINY_TRAIN
from tests.engine.test_fit import REPORTED


def test_head_is_validated_and_defaults_to_anchor():
    assert TrainConfig().head == "anchor" and TrainConfig.from_dict({"head": "anchorfree"}).head == "anchorfree"
    with pytest.raises(ValueError, match="head='free' is not valid; choose one of: anchor, anchorfree"):
        TrainConfig.from_dict({"head": "free"})
    with pytest.raises(ValueError, match="kmeans_anchors=True needs head='anchor'"):
        TrainConfig.from_dict({"head": "anchorfree", "kmeans_anchors": True})


@pytest.mark.slow  # quick tier: trains for ~10 s
@pytest.mark.parametrize("arch", ["shared", "dual"])
def test_fit_with_the_anchorfree_head_reports_finite_metrics_and_checkpoints_it(arch, tiny_synthetic, tmp_path):
    # 3 epochs: one per stage, so hard mining (stage 2), label smoothing and mixup (stage 3) run with its loss
    extra = {"balance": "fixed", "classifier": "resnet10t"} if arch == "dual" else {}
    cfg = TrainConfig.from_dict({**TINY_TRAIN, "epochs": 3, "head": "anchorfree", "arch": arch, **extra})
    reports = []
    result = fit(cfg, tiny_synthetic, report=lambda m, _: reports.append(m), out_dir=tmp_path, log=lambda _: None)
    assert [m["stage"] for m in reports] == [1, 2, 3]
    for metrics in reports:
        assert REPORTED - {"gradnorm/w_det", "gradnorm/w_view"} <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["train/loss/obj"] == 0 and metrics["train/loss/box"] > 0 and metrics["train/loss/cls_det"] > 0
    state = load_checkpoint(result.last_checkpoint)
    assert state["config"]["head"] == "anchorfree"
    model, loaded_cfg, _ = load_model(result.last_checkpoint, device="cpu")
    assert model.head_kind == "anchorfree" and model.anchors is None and loaded_cfg.head == "anchorfree"
    metrics = evaluate_checkpoint(result.last_checkpoint, tiny_synthetic, split="test", device="cpu")
    assert all(math.isfinite(v) for v in metrics.values()) and "test/map50" in metrics


def test_checkpoint_without_head_loads_as_the_anchor_head(tmp_path):
    cfg = TrainConfig.from_dict({"model_scale": "test", "img_size": 64})
    model = create_network(cfg, 4, 3)
    old_config = {k: v for k, v in cfg.to_dict().items() if k != "head"}  # written before `head` existed
    path = save_checkpoint(
        tmp_path / "old.pt", {"config": {**old_config, "nc": 4, "n_views": 3}, "ema": {"module": model.state_dict()}}
    )
    loaded, loaded_cfg, state = load_model(path, device="cpu")
    assert loaded.head_kind == "anchor" and loaded_cfg.head == "anchor" and loaded.anchors.shape == (3, 3, 2)
    check_compatible(state, {**cfg.to_dict(), "nc": 4, "n_views": 3}, path)
    check_compatible(state, {**cfg.to_dict(), "nc": 4, "n_views": 3}, path, strict=True)
    with pytest.raises(ValueError, match="head: checkpoint 'anchor' vs config 'anchorfree'"):
        check_compatible(state, {**cfg.to_dict(), "head": "anchorfree", "nc": 4, "n_views": 3}, path)
