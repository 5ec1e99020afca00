"""Output scaling so that networks predict O(1), slowly varying numbers (METHOD §4, levers).

The parameterisations here use the width ``σ_t`` of one interpolated "tube" between two
end-state features of widths ``σ_a`` and ``σ_b`` (read off the end-state scores):
``σ_t² = α² σ_a² + β² σ_b² + γ²``. They change what the network has to represent, never the
validity of the works (which are exact whatever the fields).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..interpolants.schedules import Schedule
from .field import Field
from .informed import scaled_force

_MIN_WEIGHT = 1e-3  # floor under the far end's weight when projecting x back along the tube

__all__ = ["DenoiserScore", "ScaledScore", "Tube", "characteristic_width"]


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


def _nearest(energy, sigma: float, y: Tensor) -> Tensor:
    """``y + σ² (−∇u(y))``: the centre of the feature nearest to y."""
    return y + scaled_force(energy, sigma, y).to(y.dtype)


class Tube(_WidthField):
    """``net(t, x)`` plus the exact field of one Gaussian "tube" from a feature ``μ_a`` of
    state a to a feature ``μ_b`` of state b (``fields.tube_prior``).

    Between two Gaussian features the interpolant's marginal is Gaussian with mean
    ``m = α μ_a + β μ_b`` and variance ``σ_t²``, and

    - ``output = "mean"``: ``m + net`` (wrap it in :class:`DenoiserScore`: score ``(m − x)/σ_t²``);
    - ``output = "velocity"``: ``m' + ½ (σ_t²)'/σ_t² (x − m) + net``, the tube's exact velocity.

    The tube's ends are read off the energies with ``features``
    (:class:`~feat.fields.informed.EnergyFeatures`): ``y + σ² (−∇u(y))`` is, for states made of
    narrow features, the centre of the feature nearest to y. The feature of one state nearest
    to x need not be the one the path comes from: near b, the a end is the a feature nearest
    to x projected back along the tube, ``(x − β μ_b) / α`` (symmetrically near a; see
    :meth:`ends`). The network learns only what one tube does not explain. Costs the shared
    features' two energy gradients per new x plus two for the projected points (shared by the
    velocity and score tubes at the same t and x).
    """

    def __init__(self, net: Field, schedule: Schedule, sigma_a: float, sigma_b: float,
                 features, output: str):
        super().__init__(net, schedule, sigma_a, sigma_b)
        if output not in ("mean", "velocity"):
            raise ValueError(f"Tube output must be 'mean' or 'velocity'; got {output!r}.")
        self.features, self.output = features, output

    def d_var(self, t: Tensor) -> Tensor:
        """``(σ_t²)'``, shape (batch,), float64; finite at t = 0 and 1 when ``g0 = 0``."""
        t = t.double()
        c = self.schedule(t)
        return (2 * c.alpha * c.d_alpha * self.sigma_a**2 + 2 * c.beta * c.d_beta
                * self.sigma_b**2 + self.schedule.d_gamma_sq(t, c))

    def ends(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The tube's ends ``μ_a, μ_b`` for each row of x (shape of x); the velocity and score
        tubes share them through their shared ``features``.

        Two candidate tubes: see :meth:`_ends`."""
        return self.features.remember_ends(t, x, lambda: self._ends(t, x))

    def _ends(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The tube's ends ``μ_a, μ_b`` for each row of x (shape of x).

        Two candidate tubes: b's feature nearest to x with a's found by projecting back, and
        a's nearest with b's projected forward. They are weighted by how well each explains x,
        ``exp(−|x − α μ_a − β μ_b|² / 2σ_t²)``, so the ends change smoothly where the
        candidates disagree."""
        feats, c = self.features, self.schedule(t.double())
        f = feats(x).to(x.dtype).reshape((len(x), 2) + x.shape[1:])
        near_a, near_b = x + f[:, 0], x + f[:, 1]
        al, be = (_col(v.clamp_min(_MIN_WEIGHT), x) for v in (c.alpha, c.beta))
        back_a = _nearest(feats.energy_a, feats.sigma_a, (x - _col(c.beta, x) * near_b) / al)
        fwd_b = _nearest(feats.energy_b, feats.sigma_b, (x - _col(c.alpha, x) * near_a) / be)
        cands = torch.stack([back_a, near_a]), torch.stack([near_b, fwd_b])  # (2, batch, ...)
        resid = x - _col(c.alpha, x) * cands[0] - _col(c.beta, x) * cands[1]
        logits = -0.5 * resid.flatten(2).double().pow(2).sum(-1) / self.var(t)
        w = torch.softmax(logits, 0).to(x.dtype)
        w = w.reshape(w.shape + (1,) * (x.dim() - 1))
        return (w * cands[0]).sum(0), (w * cands[1]).sum(0)

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        c = self.schedule(t.double())
        mu_a, mu_b = self.ends(t, x)
        m = _col(c.alpha, x) * mu_a + _col(c.beta, x) * mu_b
        if self.output == "mean":
            return m + self.net(t, x)
        dm = _col(c.d_alpha, x) * mu_a + _col(c.d_beta, x) * mu_b
        k = _col(0.5 * self.d_var(t) / self.var(t), x)
        return dm + k * (x - m) + self.net(t, x)
