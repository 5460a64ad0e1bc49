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

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        ema_params = [p for p in self.module.parameters()]
        model_params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, model_params, 1.0 - d)  # ema = d * ema + (1 - d) * model
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
