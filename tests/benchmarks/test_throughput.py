"""The throughput benchmark's quick mode runs and writes a sane table (never a speed threshold)."""

from __future__ import annotations

import json
import math

import pytest
import throughput  # benchmarks/ is on sys.path (conftest.py)


@pytest.mark.slow  # quick tier: trains for ~10 s
def test_quick_throughput_writes_json_and_markdown(tiny_synthetic, tmp_path):
    assert (
        throughput.main(
            [
                "--quick",
                "--data",
                str(tiny_synthetic.config.yaml_path),
                "--img-size",
                "64",
                "--batch-size",
                "4",
                "--steps",
                "2",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "throughput-quick.json").read_text())
    assert {"date", "machine", "versions", "command"} <= set(result)
    assert result["command"].startswith("python benchmarks/throughput.py --quick")
    assert [(r["arch"], r["scale"]) for r in result["rows"]] == [("shared", "test"), ("shared", "n")]
    for row in result["rows"]:
        assert row["images_per_s"] > 0 and row["gflop_per_step"] > 0 and row["balance"] == "gradnorm"
        assert 0 < row["fraction_of_matmul_peak"] and math.isfinite(row["balance_cost_ratio"])
        # images/s and step time describe the same measurement
        assert math.isclose(row["images_per_s"], 4 / (row["step_ms"] / 1e3), rel_tol=1e-6)
    assert [(r["arch"], r["scale"]) for r in result["engine_rows"]] == [("shared", "test"), ("shared", "n")]
    for row in result["engine_rows"]:
        assert row["bare_images_per_s"] > 0 and row["engine_images_per_s"] > 0
        assert math.isclose(
            row["engine_over_bare"], row["engine_images_per_s"] / row["bare_images_per_s"], rel_tol=1e-6
        )
        assert 0 < row["data_wait_share"] < 1 and 0 < row["data_wait_share_medical"] < 1
    table = (tmp_path / "throughput-quick.md").read_text()
    assert table.count("| shared |") == 4  # two models in each of the two tables
    assert "matmul peak" in table and "engine / bare" in table and "Command: `python benchmarks/throughput.py" in table


def test_bare_step_trains_the_same_criterion(tiny_synthetic):
    """The bare loop is a real training step: a few steps on one batch lower the model's own summed loss."""
    import torch

    from echotune.balance import create_balancer
    from echotune.engine.build import build_model, build_optimizer
    from echotune.engine.config import TrainConfig
    from echotune.engine.steps import soft_views, to_device
    from echotune.losses import DETECTION_LOSS_KEYS, VIEW_LOSS_KEY

    cfg = TrainConfig.from_dict(
        {"model_scale": "test", "img_size": 64, "batch_size": 4, "optimizer": "adamw", "lr_stage1": 1e-3}
    )
    batch = throughput.fixed_batches(tiny_synthetic, 64, 4, 1)[0]
    model = build_model(cfg, tiny_synthetic)
    optimizer = build_optimizer(cfg, model, create_balancer("fixed"))
    for group in optimizer.param_groups:
        group["lr"] = 1e-3

    def loss() -> float:
        images, targets = to_device(batch, torch.device("cpu"))
        targets["views"] = soft_views(targets["views"], model.n_views, 0.0)
        with torch.no_grad():
            losses = model(images, targets)
        return float(sum(losses[k] for k in DETECTION_LOSS_KEYS) + losses[VIEW_LOSS_KEY])

    model.train()
    before = loss()
    for _ in range(5):
        throughput.bare_step(model, optimizer, batch, torch.device("cpu"))
    assert loss() < before
