"""Time grids ``0 = t_0 < t_1 < … < t_M = 1`` for transport."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TimeGrid"]


@dataclass(frozen=True)
class TimeGrid:
    """An increasing time grid from 0 to 1, float64, shape (M + 1,)."""

    times: Tensor

    def __post_init__(self):
        t = torch.as_tensor(self.times, dtype=torch.float64).flatten().clone()
        if t.numel() < 2:
            raise ValueError(f"grid needs at least 2 points; got {t.numel()}.")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("grid has NaN or inf times; give finite times from 0 to 1.")
        steps = t[1:] - t[:-1]
        if bool((steps <= 0).any()):
            i = int(torch.nonzero(steps <= 0)[0, 0])
            raise ValueError(
                f"grid must be strictly increasing; t[{i}] = {t[i].item()} is followed "
                f"by t[{i + 1}] = {t[i + 1].item()}. Sort it and drop duplicates."
            )
        if abs(t[0].item()) > 1e-12 or abs(t[-1].item() - 1) > 1e-12:
            raise ValueError(
                f"grid must start at 0 and end at 1; got {t[0].item()} … {t[-1].item()}. "
                "Rescale it with (t - t[0]) / (t[-1] - t[0])."
            )
        t[0], t[-1] = 0.0, 1.0
        object.__setattr__(self, "times", t)

    @classmethod
    def uniform(cls, n_points: int = 500) -> TimeGrid:
        """``n_points`` equally spaced times (the paper: 500)."""
        if int(n_points) < 2:
            raise ValueError(f"n_points must be >= 2; got {n_points}.")
        return cls(torch.linspace(0.0, 1.0, int(n_points), dtype=torch.float64))

    @classmethod
    def ends_refined(cls, n_points: int = 500, power: float = 2.0) -> TimeGrid:
        """Points denser near both ends: ``t = ½(1 − cos(π u))`` generalised by ``power``.

        ``power = 1`` is uniform; larger powers crowd points where the drift changes fastest.
        """
        u = torch.linspace(0.0, 1.0, int(n_points), dtype=torch.float64)
        w = torch.where(u < 0.5, 0.5 * (2 * u) ** power, 1 - 0.5 * (2 * (1 - u)) ** power)
        return cls(w)

    def reversed(self) -> TimeGrid:
        """The grid in reversed time ``τ = 1 − t``, again increasing."""
        return TimeGrid(1.0 - self.times.flip(0))

    def __len__(self) -> int:
        return self.times.numel()

    @property
    def n_steps(self) -> int:
        return self.times.numel() - 1
