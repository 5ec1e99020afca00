r"""Biases as a combinator over any :class:`~feat.energies.base.Energy`.

``Biased(energy, bias)`` is the energy ``u(x) + w(x)``; a bias ``w`` is any callable mapping
``(batch, *event_shape)`` to ``(batch,)`` in kT. :class:`HarmonicUmbrella` is the usual
``w(x) = (k/2)(cv(x) - center)^2`` on a collective variable ``cv`` (e.g. the magnetisation).

Examples
--------
>>> from feat.energies.lattice import Phi4, magnetisation
>>> u_a = Biased(Phi4.from_mass((16, 16), -1.0, 0.8), HarmonicUmbrella(magnetisation, 10.0, -0.3))
>>> u_a.event_shape
(16, 16)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from feat.energies.base import Energy

__all__ = ["Biased", "HarmonicUmbrella"]


class HarmonicUmbrella:
    """``w(x) = (k/2) (cv(x) - center)^2`` in kT.

    Parameters
    ----------
    cv : callable
        Collective variable, ``(batch, *event_shape) -> (batch,)``, differentiable by autograd.
    k : float
        Force constant in kT per cv unit squared, ``k >= 0``.
    center : float
        Umbrella centre, in cv units.
    """

    def __init__(self, cv: Callable[[Tensor], Tensor], k: float, center: float):
        if not callable(cv):
            raise TypeError(f"cv must be callable (batch, ...) -> (batch,); got "
                            f"{type(cv).__name__}.")
        for name, value in (("k", k), ("center", center)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite real number; got {value!r}.")
        if k < 0:
            raise ValueError(f"k must be >= 0 (a negative force constant is unbounded below); "
                             f"got k={k}.")
        self.cv, self.k, self.center = cv, float(k), float(center)

    def __repr__(self) -> str:
        name = getattr(self.cv, "__name__", type(self.cv).__name__)
        return f"HarmonicUmbrella(cv={name}, k={self.k}, center={self.center})"

    def __call__(self, x: Tensor) -> Tensor:
        """Bias value, shape (batch,), for ``x`` of shape (batch, *event_shape)."""
        return 0.5 * self.k * (self.cv(x) - self.center) ** 2

    def biased_log_z(self, energy: Energy) -> float | None:
        """Exact log Z of ``energy + self`` when known (free phi^4 with magnetisation cv)."""
        from feat.energies.lattice import Phi4, magnetisation

        if isinstance(energy, Phi4) and self.cv is magnetisation:
            return energy.log_z_umbrella(self.k, self.center)
        return None


class Biased(Energy):
    """The energy ``u(x) + w(x)`` of a wrapped ``energy`` u and a ``bias`` w, both in kT.

    ``event_shape`` is the wrapped energy's. The score is the wrapped energy's score (closed
    form where it has one) plus ``-grad w`` by autograd. ``log_z()`` is exact where the bias
    knows it for this energy (``bias.biased_log_z(energy)``), else ``None``.
    """

    def __init__(self, energy: Energy, bias: Callable[[Tensor], Tensor]):
        if not isinstance(energy, Energy):
            raise TypeError(f"energy must be a feat Energy; got {type(energy).__name__}. Wrap a "
                            "plain function with FunctionEnergy(fn, event_shape).")
        if not callable(bias):
            raise TypeError(f"bias must be callable (batch, ...) -> (batch,); got "
                            f"{type(bias).__name__}.")
        self.base, self.bias = energy, bias
        self.event_shape = tuple(energy.event_shape)

    def __repr__(self) -> str:
        return f"Biased({self.base!r}, {self.bias!r})"

    def _bias(self, x: Tensor) -> Tensor:
        w = self.bias(x)
        if not isinstance(w, Tensor) or tuple(w.shape) != (x.shape[0],):
            got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"bias {self.bias!r} returned shape {got} for a batch of "
                             f"{x.shape[0]}; a bias must return shape ({x.shape[0]},).")
        return w

    def energy(self, x: Tensor) -> Tensor:
        """``u(x) + w(x)``, shape (batch,)."""
        return self.base.energy(x) + self._bias(x)

    def _bias_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            w = self._bias(xg)
            (g,) = torch.autograd.grad(w.sum(), xg)
        return w.detach(), -g

    def score(self, x: Tensor) -> Tensor:
        """``-grad (u + w)``, shape (batch, *event_shape)."""
        return self.energy_and_score(x)[1]

    def energy_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``u + w`` (batch,) and ``-grad (u + w)`` (batch, *event_shape)."""
        u, s = self.base.energy_and_score(x)
        w, s_w = self._bias_and_score(x)
        return u + w, s + s_w

    def log_z(self) -> float | None:
        """Exact ``log Z`` of the biased energy where the bias provides it, else ``None``."""
        hook = getattr(self.bias, "biased_log_z", None)
        return hook(self.base) if hook is not None else None
