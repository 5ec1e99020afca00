"""An energy-informed score: exact at both ends by construction (METHOD §4, training levers)."""

from __future__ import annotations

from torch import Tensor

from ..energies.base import Energy
from .field import Field

__all__ = ["EnergyInformedScore"]


class EnergyInformedScore(Field):
    """``s(t, x) = (1 − t)(−∇u_a(x)) + t(−∇u_b(x)) + t(1 − t) · correction(t, x)``.

    At t = 0 and t = 1 this equals the true end-state scores whatever the correction; the
    network only learns the middle. Costs two energy gradients per evaluation.
    """

    def __init__(self, correction: Field, energy_a: Energy, energy_b: Energy):
        super().__init__()
        self.correction = correction
        self.energy_a, self.energy_b = energy_a, energy_b

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        w = t.reshape(t.shape + (1,) * (x.dim() - 1)).to(x.dtype)
        s_ends = (1 - w) * self.energy_a.score(x.detach()) + w * self.energy_b.score(x.detach())
        return s_ends + w * (1 - w) * self.correction(t, x)
