"""ModelEMA: ema = d * ema + (1 - d) * model for parameters, buffers copied; the cached tensor lists follow
in-place updates of the model (optimizer steps, load_state_dict) and a different model."""

from __future__ import annotations

import math

import torch
from torch import nn

from echotune.engine.ema import ModelEMA


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_update_follows_the_formula_and_copies_buffers():
    model = _model()
    ema = ModelEMA(model, decay=0.9, ramp=2.0)
    start = [p.detach().clone() for p in ema.module.parameters()]
    for step in range(1, 4):  # in place, as an optimizer does: the cached lists must see it
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        model.train()(torch.randn(5, 3))  # updates BatchNorm's running stats (buffers)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-step / 2.0))
        start = [d * e + (1 - d) * m for e, m in zip(start, model.parameters())]
        for expected, actual in zip(start, ema.module.parameters()):
            torch.testing.assert_close(actual, expected.detach())
        for mine, theirs in zip(ema.module.buffers(), model.buffers()):
            assert torch.equal(mine, theirs)
    other = _model()  # another model (e.g. re-created): its tensors are used, not the cached ones
    ema.update(other)
    assert torch.equal(ema.module[1].running_mean, other[1].running_mean)
