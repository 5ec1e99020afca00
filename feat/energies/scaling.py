r"""Network coordinates: the one place where positions are rescaled, ``y = c x``.

Molecules are in nm inside the library (METHOD §1), but the interpolant noise ``gamma`` and
the transport noise ``eps`` are absolute lengths and squared lengths. The paper transports
alanine dipeptide in ``x_net = 20 x_nm``. The largest curvature of its reduced potential is
``k ≈ 5.4e5 nm^-2`` (power iteration on the Hessian at the openmmtools structure), so a
transport step with ``eps = 0.01`` on a 500-point grid has ``eps h k ≈ 11`` in nm (unstable:
an Euler step needs < 2) but ``≈ 0.03`` in network units.

:func:`rescale_problem` maps a :class:`~feat.problem.TwoStateProblem` to ``y = c x``:
``u'(y) = u(y / c)``, ``score'(y) = score(y / c) / c``, samples ``c x``. Each partition
function gains the same Jacobian, ``Z' = c^d Z``, so ``ΔF`` is unchanged (METHOD §1: the
Jacobian cancels because both ends use the same scale).
"""

from __future__ import annotations

import dataclasses
import math

from torch import Tensor

from ..problem import TwoStateProblem
from .base import Energy

__all__ = ["Rescaled", "rescale_problem"]


class Rescaled(Energy):
    """``u'(y) = u(y / scale)``: ``energy`` in coordinates ``y = scale * x``.

    Parameters
    ----------
    energy : the reduced potential in the original coordinates ``x``.
    scale : ``c > 0``, network units per original unit (e.g. 20 per nm).
    """

    def __init__(self, energy: Energy, scale: float):
        if not isinstance(energy, Energy):
            raise TypeError(f"energy must be a feat Energy; got {type(energy).__name__}.")
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0 (network units per original "
                             f"unit, e.g. 20.0 per nm); got {scale!r}.")
        self.base, self.scale = energy, float(scale)
        self.event_shape = tuple(energy.event_shape)

    def __repr__(self) -> str:
        return f"Rescaled({self.base!r}, scale={self.scale:g})"

    def energy(self, y: Tensor) -> Tensor:
        return self.base(y / self.scale)

    def score(self, y: Tensor) -> Tensor:
        return self.base.score(y / self.scale) / self.scale

    def energy_and_score(self, y: Tensor) -> tuple[Tensor, Tensor]:
        u, s = self.base.energy_and_score(y / self.scale)
        return u, s / self.scale

    def log_z(self) -> float | None:
        """``log Z' = log Z + d log c``, or None when the base energy's is not known."""
        base = self.base.log_z()
        return None if base is None else base + self.dim * math.log(self.scale)


def rescale_problem(problem: TwoStateProblem, scale: float) -> TwoStateProblem:
    """The same two states in coordinates ``y = scale * x`` (same ΔF and reference).

    Samples are multiplied by ``scale``, scores divided by it; ``metadata["coordinate_scale"]``
    records ``scale`` (multiplied with any earlier one) so reports can convert back.
    """
    if scale == 1.0:
        return problem
    ea, eb = Rescaled(problem.energy_a, scale), Rescaled(problem.energy_b, scale)
    sa, sb = (None if s is None else s / ea.scale for s in (problem.score_a, problem.score_b))
    metadata = dict(problem.metadata)
    metadata["coordinate_scale"] = metadata.get("coordinate_scale", 1.0) * ea.scale
    return dataclasses.replace(problem, energy_a=ea, energy_b=eb, x_a=problem.x_a * ea.scale,
                               x_b=problem.x_b * ea.scale, score_a=sa, score_b=sb,
                               metadata=metadata)
