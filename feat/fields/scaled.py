"""Output scaling so that networks predict O(1), slowly varying numbers (METHOD §4, levers).

Both parameterisations here use the width ``σ_t`` of one interpolated "tube" between two
end-state features of widths ``σ_a`` and ``σ_b`` (read off the end-state scores):
``σ_t² = α² σ_a² + β² σ_b² + γ²``. They change what the network has to represent, never the
validity of the works (which are exact whatever the fields).
"""

from __future__ import annotations

import math

from torch import Tensor

from ..interpolants.schedules import Schedule
from .field import Field

__all__ = ["DenoiserScore", "ScaledScore", "characteristic_width"]


def characteristic_width(score: Tensor) -> float:
    """``σ = sqrt(d / E|s|²)`` from end-state scores (batch, *event): the width of the state.

    For a Gaussian of standard deviation σ in every coordinate, ``E|s|² = d / σ²``.
    """
    d = math.prod(score.shape[1:])
    return math.sqrt(d / (score.double().flatten(1) ** 2).sum(-1).mean().item())


def _col(v: Tensor, x: Tensor) -> Tensor:
    return v.to(x.dtype).reshape(v.shape + (1,) * (x.dim() - 1))


class _WidthField(Field):
    """A network whose output is rescaled by the interpolated width ``σ_t``."""

    def __init__(self, net: Field, schedule: Schedule, sigma_a: float, sigma_b: float):
        super().__init__()
        if not (sigma_a > 0 and sigma_b > 0):
            raise ValueError(f"sigma_a and sigma_b must be > 0; got {sigma_a}, {sigma_b}.")
        self.net, self.schedule = net, schedule
        self.sigma_a, self.sigma_b = float(sigma_a), float(sigma_b)

    def var(self, t: Tensor) -> Tensor:
        """``σ_t²``, shape (batch,), float64."""
        c = self.schedule(t.double())
        return (c.alpha * self.sigma_a) ** 2 + (c.beta * self.sigma_b) ** 2 + c.gamma**2


class ScaledScore(_WidthField):
    """``s(t, x) = net(t, x) / σ_t``: scores are O(1/σ_t), so ``net`` predicts O(1) numbers."""

    def width(self, t: Tensor) -> Tensor:
        """``σ_t``, shape (batch,)."""
        return self.var(t).sqrt()

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        return self.net(t, x) / _col(self.width(t), x)


class DenoiserScore(_WidthField):
    """``s(t, x) = (net(t, x) − x) / σ_t²``: the network predicts a denoised point.

    For a mixture of narrow features the exact score is ``(D(t, x) − x) / σ_t²`` with ``D`` the
    responsibility-weighted feature centre: piecewise constant in x, where ``net / σ_t`` must
    instead follow a saw-tooth of slope ``1/σ_t``. Exact for isotropic Gaussian end states
    (widths ``σ_a``, ``σ_b``) with ``D`` the interpolated mean, a function of t only.
    """

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        return (self.net(t, x) - x) / _col(self.var(t), x)
