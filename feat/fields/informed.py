"""Energy-informed fields: the end-state scores carry what the networks would find hardest.

Both are parameterisations only: the transport's works are exact whatever the fields, so
these change the variance of the estimates, never their validity (METHOD §4, training levers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..energies.base import Energy
from .field import Field

__all__ = ["EnergyFeatures", "EnergyInformedScore", "EnergyInformedVelocity", "capped",
           "end_score", "end_score_mix", "scaled_force"]


def _col(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(t.shape + (1,) * (x.dim() - 1)).to(x.dtype)


def end_score(energy: Energy, x: Tensor) -> Tensor:
    """``−∇u(x)``; differentiable in ``x`` when ``x`` requires grad (the exact-divergence ODE
    transport differentiates the velocity, and with it this score: second derivatives of
    ``u``), otherwise a plain first-derivative evaluation."""
    if not x.requires_grad:
        return energy.score(x)
    (g,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
    return -g


def scaled_force(energy: Energy, sigma: float, x: Tensor) -> Tensor:
    """``σ² (−∇u(x))``: for a state of narrow features of width σ, the displacement from x to
    the nearest feature's centre."""
    return sigma**2 * end_score(energy, x)


def capped(f: Tensor, cap: float | None) -> Tensor:
    """``f`` with each particle's vector (last axis of (batch, n, 3) states; each entry of any
    other state) scaled down to norm ``cap``: ``f · cap / max(cap, |f|)``; ``f`` itself when ``cap``
    is None. A force at a clash (two atoms on top of each other in an interpolant's middle)
    would throw an explicit transport step far away; the capped one cannot, and forces below
    the cap (every force at the end-state samples, for a cap above them) are unchanged."""
    if cap is None:
        return f
    particles = f.dim() == 3 and f.shape[-1] == 3
    norm = f.norm(dim=-1, keepdim=True) if particles else f.abs()
    return f * (cap / torch.clamp(norm, min=cap))


def end_score_mix(t: Tensor, x: Tensor, energy_a: Energy, energy_b: Energy,
                  cap: float | None = None, power: float = 1.0) -> Tensor:
    """``(1 − t)^p (−∇u_a(x)) + t^p (−∇u_b(x))``, shape (batch, *event_shape), each end score
    :func:`capped` at ``cap``; ``p = power`` ≥ 1 (above 1 the end scores fade faster away from
    their end)."""
    w = _col(t, x)
    return ((1 - w) ** power * capped(end_score(energy_a, x), cap)
            + w ** power * capped(end_score(energy_b, x), cap))


class EnergyFeatures(nn.Module):
    """Extra network inputs from the end states: ``σ_a² (−∇u_a(x))`` and ``σ_b² (−∇u_b(x))``.

    For a state made of narrow features of width σ, ``σ² (−∇u(x))`` is the displacement from x
    to the nearest feature's centre: the "which mode, and how far" that a plain network finds
    hardest to learn near the ends. Returns (batch, 2 d); costs two energy gradients per new x.
    The widths (e.g. :func:`~feat.fields.scaled.characteristic_width`) only set the scale.

    The velocity and the score networks share one instance (copies, e.g. the EMA networks',
    share it too: it is a fixed function of x), and it remembers its last two inputs, so both
    networks at the same x (and the x± pair of a training step) cost one evaluation each.
    Inputs that require grad (the exact-divergence ODE) are never served from memory.
    """

    def __init__(self, energy_a: Energy, energy_b: Energy, sigma_a: float, sigma_b: float):
        super().__init__()
        if not (sigma_a > 0 and sigma_b > 0):
            raise ValueError(f"sigma_a and sigma_b must be > 0; got {sigma_a}, {sigma_b}.")
        self.energy_a, self.energy_b = energy_a, energy_b
        self.sigma_a, self.sigma_b = float(sigma_a), float(sigma_b)
        self.size = 2 * energy_a.dim
        self._recent: list[tuple] = []
        self._recent_ends: list[tuple] = []

    def __deepcopy__(self, memo: dict) -> EnergyFeatures:
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self._remember("_recent", x, None, lambda: self._features(x))

    def remember_ends(self, t: Tensor, x: Tensor, compute) -> tuple:
        """``compute()`` (a tube's ends at (t, x), :meth:`~feat.fields.scaled.Tube.ends`), shared
        like the features: the velocity and score tubes at the same (t, x) compute it once."""
        return self._remember("_recent_ends", x, t, compute)

    def _remember(self, slot: str, x: Tensor, t: Tensor | None, compute):
        """``compute()`` for (x, t), or its value from the last two calls of this ``slot``:
        same x object, not changed in place, equal t. Never for x that requires grad."""
        if x.requires_grad:
            return compute()
        for seen, version, seen_t, out in getattr(self, slot):
            if seen is x and version == x._version and (t is None or torch.equal(seen_t, t)):
                return out
        out = compute()
        kept = None if t is None else t.clone()
        setattr(self, slot, [(x, x._version, kept, out)] + getattr(self, slot)[:1])
        return out

    def _features(self, x: Tensor) -> Tensor:
        fa = scaled_force(self.energy_a, self.sigma_a, x)
        fb = scaled_force(self.energy_b, self.sigma_b, x)
        return torch.cat([fa.flatten(1), fb.flatten(1)], dim=-1)


class EnergyInformedScore(Field):
    """``s(t, x) = (1 − t)(−∇u_a(x)) + t(−∇u_b(x)) + t(1 − t) · correction(t, x)``.

    Equals the true end-state scores at t = 0 and t = 1 whatever the correction; the network
    only learns the middle. Costs two energy gradients per evaluation. With ``cap``, each end
    score is :func:`capped` (exact wherever the forces are below it); with ``power`` p > 1 the
    end scores enter as ``(1 − t)^p`` and ``t^p`` (still exact at the ends), leaving the middle
    to the network, where forces at an interpolant's clashing morphs would be large.
    """

    def __init__(self, correction: Field, energy_a: Energy, energy_b: Energy,
                 cap: float | None = None, power: float = 1.0):
        super().__init__()
        self.correction = correction
        self.energy_a, self.energy_b, self.cap, self.power = energy_a, energy_b, cap, power

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        w = _col(t, x)
        mix = end_score_mix(t, x, self.energy_a, self.energy_b, self.cap, self.power)
        return mix + w * (1 - w) * self.correction(t, x)


class EnergyInformedVelocity(Field):
    """``b(t, x) = net(t, x) − ½ a (1 − 2t) · [(1 − t)(−∇u_a(x)) + t(−∇u_b(x))]``.

    The exact velocity splits as ``b = E[α' x_a + β' x_b | x] − γγ' s`` and, for
    ``γ = sqrt(a t (1 − t))``, ``γγ' = ½ a (1 − 2t)``: the stiff score part near the ends is
    supplied from the end-state energies, so the network learns the smooth conditional mean.
    ``a`` is the schedule's noise amplitude (``schedule.a``); ``cap`` as in
    :class:`EnergyInformedScore`.
    """

    def __init__(self, net: Field, energy_a: Energy, energy_b: Energy, a: float,
                 cap: float | None = None):
        super().__init__()
        self.net, self.a = net, float(a)
        self.energy_a, self.energy_b, self.cap = energy_a, energy_b, cap

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        k = 0.5 * self.a * (1 - 2 * _col(t, x))
        return self.net(t, x) - k * end_score_mix(t, x, self.energy_a, self.energy_b, self.cap)
