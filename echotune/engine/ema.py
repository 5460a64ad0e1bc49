"""Exponential moving average of the model weights, used for evaluation and the saved best model.

decay_t = decay * (1 - exp(-t / ramp)): early updates follow the model closely (a fixed 0.999 would leave the
EMA near its random initialisation for a short CPU run of a few hundred steps); later ones average over about
1 / (1 - decay) steps. Buffers (BatchNorm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, ramp: float = 200.0):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp, self.updates = decay, ramp, 0
        self._source: nn.Module | None = None  # the model whose tensors are cached below
        self._pairs: tuple[list, list, list, list] = ([], [], [], [])

    def _tensors(self, model: nn.Module) -> tuple[list, list, list, list]:
        """(ema params, model params, ema buffers, model buffers), listed once per model: walking the module tree
        every step cost more than the update itself on small CPU models (benchmarks/throughput.py)."""
        if model is not self._source:
            self._source = model
            self._pairs = (
                list(self.module.parameters()),
                [p.detach() for p in model.parameters()],
                list(self.module.buffers()),
                list(model.buffers()),
            )
        return self._pairs

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        ema_params, model_params, ema_buffers, model_buffers = self._tensors(model)
        torch._foreach_lerp_(ema_params, model_params, 1.0 - d)  # ema = d * ema + (1 - d) * model
        torch._foreach_copy_(ema_buffers, model_buffers)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
