"""Exponential moving average of a module's weights (used for estimation)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Keeps ``averaged = decay · averaged + (1 − decay) · live`` after every update.

    ``averaged`` is a frozen deep copy of the live module (no gradients), ready to evaluate.
    """

    def __init__(self, module: nn.Module, decay: float = 0.995):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1); got {decay}.")
        self.decay = float(decay)
        self.averaged = copy.deepcopy(module).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for avg, live in zip(self.averaged.parameters(), module.parameters(), strict=True):
            avg.lerp_(live.detach(), 1.0 - self.decay)
        for avg, live in zip(self.averaged.buffers(), module.buffers(), strict=True):
            avg.copy_(live)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.averaged.load_state_dict(state["averaged"])
