"""Closed-form velocity and score of the Gaussian ↔ Gaussian interpolant (exact test fields).

With independent ``x_a ~ N(μ_a, Σ_a)``, ``x_b ~ N(μ_b, Σ_b)`` and ``z ~ N(0, I)``, ``x_t`` is
Gaussian with mean ``m_t = α μ_a + β μ_b`` and covariance ``C_t = α² Σ_a + β² Σ_b + γ² I``; then
``b(t, x) = m_t' + ½ C_t' C_t⁻¹ (x − m_t)`` and ``s(t, x) = −C_t⁻¹ (x − m_t)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..energies.analytic import Gaussian
from ..interpolants.schedules import Schedule
from .field import Field

__all__ = ["GaussianInterpolantVelocity", "GaussianInterpolantScore",
           "GaussianMixtureInterpolantVelocity", "GaussianMixtureInterpolantScore"]


class _GaussianInterpolantField(Field):
    def __init__(self, gauss_a: Gaussian, gauss_b: Gaussian, schedule: Schedule):
        super().__init__()
        self.a, self.b, self.schedule = gauss_a, gauss_b, schedule

    def _moments(self, t: Tensor):
        c, dev = self.schedule(t.double()), t.device
        eye = torch.eye(self.a.event_shape[0], dtype=torch.float64, device=dev)
        sa, sb = self.a.cov.to(dev), self.b.cov.to(dev)
        mu_a, mu_b = self.a.mean.to(dev), self.b.mean.to(dev)
        e = lambda v: v[:, None, None]  # noqa: E731
        cov = e(c.alpha**2) * sa + e(c.beta**2) * sb + e(c.gamma**2) * eye
        half_d_gamma_sq = 0.5 * self.schedule.d_gamma_sq(t.double(), c)
        half_dcov = (e(c.alpha * c.d_alpha) * sa + e(c.beta * c.d_beta) * sb
                     + e(half_d_gamma_sq) * eye)
        mean = c.alpha[:, None] * mu_a + c.beta[:, None] * mu_b
        dmean = c.d_alpha[:, None] * mu_a + c.d_beta[:, None] * mu_b
        return mean, dmean, cov, half_dcov


class GaussianInterpolantVelocity(_GaussianInterpolantField):
    """Exact velocity ``b(t, x)`` of the Gaussian interpolant, shape (batch, d)."""

    def field(self, t, x):
        mean, dmean, cov, half_dcov = self._moments(t)
        r = torch.linalg.solve(cov, (x.double() - mean)[..., None])
        return (dmean + (half_dcov @ r)[..., 0]).to(x.dtype)


class GaussianInterpolantScore(_GaussianInterpolantField):
    """Exact score ``s(t, x) = ∇ log ρ_t(x)`` of the Gaussian interpolant, shape (batch, d)."""

    def field(self, t, x):
        mean, _, cov, _ = self._moments(t)
        return -torch.linalg.solve(cov, (x.double() - mean)[..., None])[..., 0].to(x.dtype)


class _MixtureInterpolantField(Field):
    """Exact fields of the independent-coupling interpolant between two Gaussian mixtures.

    Component pair (i, j) gives ``x_t ~ N(α μ_i + β ν_j, diag(α² σ_i² + β² τ_j² + γ²))`` with
    weight ``w_i v_j``; the fields are the responsibility-weighted pair fields. Memory is
    (batch, K_a K_b, d): meant for tests and diagnostics.
    """

    def __init__(self, mix_a, mix_b, schedule: Schedule):
        super().__init__()
        self.a, self.b, self.schedule = mix_a, mix_b, schedule

    def _pairs(self, t: Tensor, x: Tensor):
        c = self.schedule(t.double())
        col = lambda v: v[:, None, None, None]  # noqa: E731  (batch, Ka, Kb, d)
        a, b = (self.a.means, self.a.stds, self.a.log_weights), \
            (self.b.means, self.b.stds, self.b.log_weights)
        (m_a, sd_a, lw_a), (m_b, sd_b, lw_b) = ([v.to(t.device) for v in p] for p in (a, b))
        mu, nu = m_a[None, :, None, :], m_b[None, None, :, :]
        va, vb = sd_a[None, :, None, :] ** 2, sd_b[None, None, :, :] ** 2
        mean = col(c.alpha) * mu + col(c.beta) * nu
        var = col(c.alpha) ** 2 * va + col(c.beta) ** 2 * vb + col(c.gamma) ** 2
        r = x.double()[:, None, None, :] - mean
        logw = lw_a[None, :, None] + lw_b[None, None, :]
        logp = logw - 0.5 * (r**2 / var + torch.log(var)).sum(-1)
        resp = torch.softmax(logp.flatten(1), -1).reshape(logp.shape)[..., None]
        return c, col, mu, nu, va, vb, var, r, resp


class GaussianMixtureInterpolantVelocity(_MixtureInterpolantField):
    """Exact velocity for two :class:`GaussianMixture` states (independent coupling)."""

    def field(self, t, x):
        c, col, mu, nu, va, vb, var, r, resp = self._pairs(t, x)
        half_dvar = col(c.alpha * c.d_alpha) * va + col(c.beta * c.d_beta) * vb + \
            col(0.5 * self.schedule.d_gamma_sq(t.double(), c))
        pair = col(c.d_alpha) * mu + col(c.d_beta) * nu + half_dvar / var * r
        return (resp * pair).sum((1, 2)).to(x.dtype)


class GaussianMixtureInterpolantScore(_MixtureInterpolantField):
    """Exact score for two :class:`GaussianMixture` states (independent coupling)."""

    def field(self, t, x):
        *_, var, r, resp = self._pairs(t, x)
        return (resp * (-r / var)).sum((1, 2)).to(x.dtype)
