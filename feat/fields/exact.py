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

__all__ = ["GaussianInterpolantVelocity", "GaussianInterpolantScore"]


class _GaussianInterpolantField(Field):
    def __init__(self, gauss_a: Gaussian, gauss_b: Gaussian, schedule: Schedule):
        super().__init__()
        self.a, self.b, self.schedule = gauss_a, gauss_b, schedule

    def _moments(self, t: Tensor):
        c = self.schedule(t.double())
        eye = torch.eye(self.a.event_shape[0], dtype=torch.float64)
        sa, sb = self.a.cov, self.b.cov
        e = lambda v: v[:, None, None]  # noqa: E731
        cov = e(c.alpha**2) * sa + e(c.beta**2) * sb + e(c.gamma**2) * eye
        half_dcov = (
            e(c.alpha * c.d_alpha) * sa + e(c.beta * c.d_beta) * sb + e(c.gamma * c.d_gamma) * eye
        )
        mean = c.alpha[:, None] * self.a.mean + c.beta[:, None] * self.b.mean
        dmean = c.d_alpha[:, None] * self.a.mean + c.d_beta[:, None] * self.b.mean
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
