from __future__ import annotations

import os
from importlib import metadata

import numpy as np
import pytest
import torch

from echotune.engine.build import build_model, train_box_sizes
from echotune.engine.checkpoint import check_compatible, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from echotune.engine.config import TrainConfig


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/echotune-pwned",))


def test_pickle_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": _Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/echotune-pwned")


def test_round_trip_rng_and_versions(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3))
    path = save_checkpoint(tmp_path / "c.pt", {"epoch": 2, "mining_losses": {4: 1.5}})
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2 and loaded["mining_losses"] == {4: 1.5}
    assert loaded["versions"]["torch"] == metadata.version("torch") and "python" in loaded["versions"]
    restore_rng_state(state)
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert not list(tmp_path.glob(".*.tmp"))


def test_damaged_and_foreign_files(tmp_path):
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not a loadable EchoTune checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an EchoTune checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_compatibility_check_names_the_differences(tmp_path):
    state = {"config": {"arch": "shared", "model_scale": "n", "nc": 4, "n_views": 3}}
    check_compatible(state, {"arch": "shared", "model_scale": "n", "nc": 4, "n_views": 3}, "c.pt")
    with pytest.raises(ValueError, match=r"arch: checkpoint 'shared' vs config 'dual'.*nc: checkpoint 4 vs config 5"):
        check_compatible(state, {"arch": "dual", "model_scale": "n", "nc": 5, "n_views": 3}, "c.pt")


def test_kmeans_anchors_come_from_the_training_boxes(tiny_synthetic):
    wh = train_box_sizes(tiny_synthetic, 64)
    assert wh.shape[1] == 2 and len(wh) == sum(len(s.labels.boxes) for s in tiny_synthetic.samples["train"])
    default = build_model(TrainConfig.from_dict({"model_scale": "test", "img_size": 64}), tiny_synthetic)
    fitted = build_model(
        TrainConfig.from_dict({"model_scale": "test", "img_size": 64, "kmeans_anchors": True}), tiny_synthetic
    )
    assert not torch.equal(default.anchors, fitted.anchors)
    assert fitted.anchors.shape == (3, 3, 2) and float(fitted.anchors.max()) <= 64 * 1.5
