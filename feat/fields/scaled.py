"""Output scaling so that networks predict O(1) numbers (METHOD §4, training levers)."""

from __future__ import annotations

import math

from torch import Tensor

from ..interpolants.schedules import Schedule
from .field import Field

__all__ = ["ScaledScore", "characteristic_width"]


def characteristic_width(score: Tensor) -> float:
    """``σ = sqrt(d / E|s|²)`` from end-state scores (batch, *event): the width of the state.

    For a Gaussian of standard deviation σ in every coordinate, ``E|s|² = d / σ²``.
    """
    d = math.prod(score.shape[1:])
    return math.sqrt(d / (score.double().flatten(1) ** 2).sum(-1).mean().item())


class ScaledScore(Field):
    """``s(t, x) = net(t, x) / σ_t`` with ``σ_t² = α² σ_a² + β² σ_b² + γ²``.

    ``σ_t`` is the width of one interpolated "tube" between two end-state features of widths
    ``σ_a`` and ``σ_b``: scores are O(1/σ_t), so ``net`` predicts O(1) numbers at every t.
    """

    def __init__(self, net: Field, schedule: Schedule, sigma_a: float, sigma_b: float):
        super().__init__()
        if not (sigma_a > 0 and sigma_b > 0):
            raise ValueError(f"sigma_a and sigma_b must be > 0; got {sigma_a}, {sigma_b}.")
        self.net, self.schedule = net, schedule
        self.sigma_a, self.sigma_b = float(sigma_a), float(sigma_b)

    def width(self, t: Tensor) -> Tensor:
        """``σ_t``, shape (batch,)."""
        c = self.schedule(t.double())
        var = (c.alpha * self.sigma_a) ** 2 + (c.beta * self.sigma_b) ** 2 + c.gamma**2
        return var.sqrt()

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        w = self.width(t).to(x.dtype).reshape(t.shape + (1,) * (x.dim() - 1))
        return self.net(t, x) / w
