"""Energy-informed fields: the end-state scores carry what the networks would find hardest.

Both are parameterisations only: the transport's works are exact whatever the fields, so
these change the variance of the estimates, never their validity (METHOD §4, training levers).
"""

from __future__ import annotations

from torch import Tensor

from ..energies.base import Energy
from .field import Field

__all__ = ["EnergyInformedScore", "EnergyInformedVelocity", "end_score_mix"]


def _col(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(t.shape + (1,) * (x.dim() - 1)).to(x.dtype)


def end_score_mix(t: Tensor, x: Tensor, energy_a: Energy, energy_b: Energy) -> Tensor:
    """``(1 − t)(−∇u_a(x)) + t(−∇u_b(x))``, shape (batch, *event_shape); no gradient flows."""
    w = _col(t, x)
    xd = x.detach()
    return (1 - w) * energy_a.score(xd) + w * energy_b.score(xd)


class EnergyInformedScore(Field):
    """``s(t, x) = (1 − t)(−∇u_a(x)) + t(−∇u_b(x)) + t(1 − t) · correction(t, x)``.

    Equals the true end-state scores at t = 0 and t = 1 whatever the correction; the network
    only learns the middle. Costs two energy gradients per evaluation.
    """

    def __init__(self, correction: Field, energy_a: Energy, energy_b: Energy):
        super().__init__()
        self.correction = correction
        self.energy_a, self.energy_b = energy_a, energy_b

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        w = _col(t, x)
        mix = end_score_mix(t, x, self.energy_a, self.energy_b)
        return mix + w * (1 - w) * self.correction(t, x)


class EnergyInformedVelocity(Field):
    """``b(t, x) = net(t, x) − ½ a (1 − 2t) · [(1 − t)(−∇u_a(x)) + t(−∇u_b(x))]``.

    The exact velocity splits as ``b = E[α' x_a + β' x_b | x] − γγ' s`` and, for
    ``γ = sqrt(a t (1 − t))``, ``γγ' = ½ a (1 − 2t)``: the stiff score part near the ends is
    supplied from the end-state energies, so the network learns the smooth conditional mean.
    ``a`` is the schedule's noise amplitude (``schedule.a``).
    """

    def __init__(self, net: Field, energy_a: Energy, energy_b: Energy, a: float):
        super().__init__()
        self.net, self.a = net, float(a)
        self.energy_a, self.energy_b = energy_a, energy_b

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        k = 0.5 * self.a * (1 - 2 * _col(t, x))
        return self.net(t, x) - k * end_score_mix(t, x, self.energy_a, self.energy_b)
