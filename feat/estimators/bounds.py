"""Variational (Jensen) bounds on ΔF and the forward/reverse gap.

    -mean(W_r) <= ΔF <= mean(W_f),     gap = mean(W_f) + mean(W_r) >= 0.

The gap is the symmetrised path KL divergence between the forward and reverse path measures:
a convergence diagnostic to report with every estimate (zero for a perfect transport).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .works import check_works

__all__ = ["Bounds", "bounds"]


@dataclass(frozen=True)
class Bounds:
    """Jensen bounds on ΔF = F_b - F_a in kT; ``None`` where that direction was not given.

    Attributes
    ----------
    lower : float or None
        ``-mean(W_r)`` (``-inf`` if any reverse work is ``+inf``).
    upper : float or None
        ``mean(W_f)`` (``+inf`` if any forward work is ``+inf``).
    gap : float or None
        ``upper - lower = mean(W_f) + mean(W_r) >= 0``; needs both directions.
    """

    lower: float | None = None
    upper: float | None = None
    gap: float | None = None

    def contains(self, delta_f: float) -> bool:
        """Whether ``lower <= delta_f <= upper`` (a missing bound does not constrain)."""
        above = self.lower is None or self.lower <= delta_f
        below = self.upper is None or delta_f <= self.upper
        return above and below


def bounds(work_f: ArrayLike | None = None, work_r: ArrayLike | None = None) -> Bounds:
    """Jensen bounds from forward and/or reverse works.

    Parameters
    ----------
    work_f : array_like or torch.Tensor or None
        Shape ``(n_f,)``: forward works in kT; gives the upper bound ``mean(W_f)``.
    work_r : array_like or torch.Tensor or None
        Shape ``(n_r,)``: reverse works in kT; gives the lower bound ``-mean(W_r)``.

    Returns
    -------
    Bounds
        A ``+inf`` work makes its bound (and the gap) infinite: honest, since that trajectory
        did not reach the target with finite work.
    """
    upper = float(np.mean(check_works(work_f, "work_f").values)) if work_f is not None else None
    lower = -float(np.mean(check_works(work_r, "work_r").values)) if work_r is not None else None
    gap = upper - lower if upper is not None and lower is not None else None
    return Bounds(lower=lower, upper=upper, gap=gap)
