"""What a trial switches on for its device (AMP, channels_last, pinned memory, DataLoader workers).

The decisions are unit-tested for both device types (a torch.device("cuda") object needs no GPU); the one test
that trains on CUDA for real skips where there is none (CI, laptops).
"""

from __future__ import annotations

import pytest
import torch

from echotune.engine import TrainConfig, fit
from echotune.engine.build import DeviceRuntime, device_runtime
from echotune.engine.checkpoint import load_checkpoint
from tests.conftest import TINY_TRAIN

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize(
    "device, values, expected",
    [
        # CUDA, auto workers: everything on; loader workers are the trial's CPUs minus the one feeding the GPU
        (CUDA, {"cpus": 4}, DeviceRuntime(CUDA, amp=True, channels_last=True, pin_memory=True, workers=3)),
        (CUDA, {"cpus": 1}, DeviceRuntime(CUDA, amp=True, channels_last=True, pin_memory=True, workers=0)),
        (
            CUDA,
            {"cpus": 4, "amp": False},
            DeviceRuntime(CUDA, amp=False, channels_last=True, pin_memory=True, workers=3),
        ),
        (
            CUDA,
            {"cpus": 4, "workers": 1},
            DeviceRuntime(CUDA, amp=True, channels_last=True, pin_memory=True, workers=1),
        ),
        # CPU: unchanged behaviour (no AMP, NCHW, no pinning, training threads use the trial's CPUs, no loader workers)
        (CPU, {"cpus": 4}, DeviceRuntime(CPU, amp=False, channels_last=False, pin_memory=False, workers=0)),
        (
            CPU,
            {"cpus": 4, "workers": 2},
            DeviceRuntime(CPU, amp=False, channels_last=False, pin_memory=False, workers=2),
        ),
    ],
)
def test_device_runtime_decisions(device, values, expected):
    assert device_runtime(TrainConfig.from_dict(values), device) == expected


def test_auto_workers_is_the_default_and_below_minus_one_is_refused():
    assert TrainConfig().workers == -1
    with pytest.raises(ValueError, match="workers must be >= 0, or -1 for auto"):
        TrainConfig.from_dict({"workers": -2})


def test_cpu_trial_resolves_to_the_cpu_runtime():
    assert device_runtime(TrainConfig.from_dict({"device": "cpu"})).device == CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_epoch_on_cuda_uses_amp_and_channels_last(tiny_synthetic, tmp_path):
    cfg = TrainConfig.from_dict({**TINY_TRAIN, "epochs": 1, "device": "cuda", "cpus": 2})
    result = fit(cfg, tiny_synthetic, out_dir=tmp_path, log=lambda _: None)
    assert result.last["epoch"] == 1 and 0.0 <= result.last["val/score"] <= 1.0
    state = load_checkpoint(tmp_path / "last.pt")
    assert "scale" in state["scaler"]  # an enabled GradScaler: the epoch ran with float16 autocast
    kernels = [t for t in state["model"].values() if t.dim() == 4 and t.shape[-1] > 1 and t.shape[1] > 1]
    assert kernels and all(
        t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in kernels
    )  # torch.save keeps strides: the model trained in NHWC


def test_loader_workers_deliver_the_same_batches(tiny_synthetic):
    """The CUDA runtime's loader worker processes (here on CPU) change where items are decoded, not what they are."""
    from echotune.augment import Augmenter
    from echotune.data.dataset import EchoDataset, make_loader

    dataset = EchoDataset(tiny_synthetic.samples["train"], 64, cache=True)
    dataset.set_epoch(1, Augmenter("medical", 0.5), seed=3)
    inline, forked = (list(make_loader(dataset, 4, shuffle=True, workers=w, seed=5)) for w in (0, 2))
    assert len(inline) == len(forked) == 4
    for a, b in zip(inline, forked):
        assert a["paths"] == b["paths"] and torch.equal(a["images"], b["images"])
        assert all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))
