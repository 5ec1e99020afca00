"""Interpolant schedules: ``x_t = alpha(t) x_a + beta(t) x_b + gamma(t) z`` (METHOD §2).

A schedule gives the coefficients and their time derivatives. ``gamma'`` is singular at t = 0
and t = 1 for the paper's ``sqrt(a t (1 − t))``: it is only ever multiplied by ``z`` in
antithetic pairs (never divided by), and is evaluated with a floored square root.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Coefficients", "Schedule", "LinearSchedule", "TrigonometricSchedule"]

_FLOOR = 1e-12  # floor under a t (1 − t) inside the square root of gamma'


@dataclass(frozen=True)
class Coefficients:
    """``alpha, beta, gamma`` and their derivatives at times t, each of shape (batch,)."""

    alpha: Tensor
    beta: Tensor
    gamma: Tensor
    d_alpha: Tensor
    d_beta: Tensor
    d_gamma: Tensor


class Schedule(abc.ABC):
    """The noise part ``gamma(t) = sqrt(a t (1 − t)) + g0``, shared by every schedule here."""

    def __init__(self, a: float = 0.05, g0: float = 0.0):
        if not a > 0 or not g0 >= 0:
            raise ValueError(f"schedule needs a > 0 and g0 >= 0; got a={a}, g0={g0}.")
        self.a, self.g0 = float(a), float(g0)

    @abc.abstractmethod
    def _mean_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``alpha, beta, alpha', beta'`` at t."""

    def __call__(self, t: Tensor) -> Coefficients:
        """Coefficients at ``t``, shape (batch,), values in [0, 1]."""
        alpha, beta, d_alpha, d_beta = self._mean_coefficients(t)
        v = self.a * t * (1 - t)
        gamma = torch.sqrt(v) + self.g0
        d_gamma = self.a * (1 - 2 * t) / (2 * torch.sqrt(v.clamp_min(_FLOOR)))
        return Coefficients(alpha, beta, gamma, d_alpha, d_beta, d_gamma)

    def d_gamma_sq(self, t: Tensor, c: Coefficients | None = None) -> Tensor:
        """``(gamma²)' = a (1 − 2t) (1 + g0 / sqrt(a t (1 − t)))``: for ``g0 = 0`` its value at
        t = 0 and 1 is the limit ``± a``, where ``gamma · gamma'`` of the coefficients (a floored
        square root times 0) would give 0. ``c``: the coefficients at t, if already computed."""
        c = self(t) if c is None else c
        return self.a * (1 - 2 * t) + (2 * self.g0 * c.d_gamma if self.g0 else 0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(a={self.a}, g0={self.g0})"


class LinearSchedule(Schedule):
    """The paper's default: ``alpha = 1 − t``, ``beta = t``."""

    def _mean_coefficients(self, t):
        one = torch.ones_like(t)
        return 1 - t, t, -one, one


class TrigonometricSchedule(Schedule):
    """``alpha = cos(πt/2)``, ``beta = sin(πt/2)`` (variance-preserving for independent ends)."""

    def _mean_coefficients(self, t):
        w = 0.5 * math.pi
        return torch.cos(w * t), torch.sin(w * t), -w * torch.sin(w * t), w * torch.cos(w * t)
