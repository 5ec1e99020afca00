"""In-training estimates: ΔF, σ, bounds and gap every so many steps."""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..estimators import estimate
from ..training import Trainer
from ..transport import transport
from .build import make_grid, make_process
from .reuse import monitor_settings

__all__ = ["Monitor"]


class Monitor:
    """A training callback: a quick estimate from the EMA fields at every call.

    Uses ``monitor_trajectories`` held-out samples per direction and its own random stream,
    so monitoring never changes the final result. ``records`` are plain dicts. The
    trajectories run on ``device`` (the fields'; default: where ``x_a`` and ``x_b`` are).
    """

    def __init__(self, problem, x_a, x_b, config: RunConfig,
                 device: torch.device | None = None):
        self.problem, self.config = problem, config
        n = config.estimate.monitor_trajectories
        self.x_a, self.x_b = x_a[:n], x_b[:n]
        if device is not None:
            self.x_a, self.x_b = self.x_a.to(device), self.x_b.to(device)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.records: list[dict] = []

    def __call__(self, trainer: Trainer) -> None:
        tc = self.config.transport
        process = make_process(tc, trainer.velocity_ema, trainer.score_ema, self.problem)
        grid, kw = make_grid(tc), dict(generator=self.generator, batch_size=tc.batch_size)
        w_f = transport(process, self.x_a, grid, **kw).work if len(self.x_a) else None
        w_r = transport(process.reversed(), self.x_b, grid.reversed(), **kw).work \
            if len(self.x_b) else None
        est = estimate(w_f, w_r, n_bootstrap=0, nan_policy="drop")
        self.records.append({"step": trainer.step, "delta_f": est.delta_f, "sigma": est.sigma,
                             "lower": est.bounds.lower, "upper": est.bounds.upper,
                             "gap": est.bounds.gap,
                             "loss": trainer.history[-1].losses if trainer.history else None})

    def state_dict(self) -> dict:
        """Records, random state and the settings they were made with."""
        return {"records": list(self.records), "generator": self.generator.get_state(),
                "settings": monitor_settings(self.config)}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        self.generator.set_state(state["generator"])
