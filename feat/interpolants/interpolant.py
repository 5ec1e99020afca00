"""The stochastic interpolant and its antithetic samples (METHOD §2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .schedules import Coefficients, LinearSchedule, Schedule

__all__ = ["Interpolant", "InterpolantSample"]


@dataclass(frozen=True)
class InterpolantSample:
    """An antithetic pair ``x± = alpha x_a + beta x_b ± gamma z`` with shared ``t`` and ``z``.

    Shapes: ``t`` (batch,); ``x_a, x_b, z, x_plus, x_minus, dm`` (batch, *event_shape) where
    ``dm = alpha' x_a + beta' x_b``; ``coef`` holds (batch,)-shaped coefficients.
    """

    t: Tensor
    x_a: Tensor
    x_b: Tensor
    z: Tensor
    x_plus: Tensor
    x_minus: Tensor
    dm: Tensor
    coef: Coefficients


def _expand(c: Tensor, like: Tensor) -> Tensor:
    return c.reshape(c.shape + (1,) * (like.dim() - 1))


class Interpolant:
    """``x_t = alpha(t) x_a + beta(t) x_b + gamma(t) z`` with ``z ~ N(0, I)`` independent."""

    def __init__(self, schedule: Schedule | None = None,
                 noise_projection: Callable[[Tensor], Tensor] | None = None,
                 time_sampling: str = "uniform"):
        """``noise_projection`` (e.g. ``remove_com`` for molecules) is applied to ``z``.

        ``time_sampling``: "uniform" draws t ~ U[0, 1); "ends" draws the arcsine law
        t = sin²(πu/2), u ~ U[0, 1), which spends more of training where the fields change
        fastest. Either way each t's minimiser is the same conditional expectation.
        """
        if time_sampling not in ("uniform", "ends"):
            raise ValueError(f"time_sampling must be 'uniform' or 'ends'; got {time_sampling!r}.")
        self.schedule = schedule if schedule is not None else LinearSchedule()
        self.noise_projection = noise_projection
        self.time_sampling = time_sampling

    def sample(
        self,
        x_a: Tensor,
        x_b: Tensor,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
    ) -> InterpolantSample:
        """Draw ``t ~ U[0, 1)`` (unless given) and ``z``, and build the antithetic pair."""
        if x_a.shape != x_b.shape:
            raise ValueError(
                f"x_a and x_b must have the same shape (batch, *event_shape); got "
                f"{tuple(x_a.shape)} and {tuple(x_b.shape)}. Pair them first (equal batch "
                "sizes, e.g. with a coupling from feat.interpolants)."
            )
        n = x_a.shape[0]
        if t is None:
            t = torch.rand(n, generator=generator, dtype=x_a.dtype, device=x_a.device)
            if self.time_sampling == "ends":
                t = torch.sin(0.5 * math.pi * t) ** 2
        z = torch.randn(x_a.shape, generator=generator, dtype=x_a.dtype, device=x_a.device)
        if self.noise_projection is not None:
            z = self.noise_projection(z)
        c = self.schedule(t)
        mean = _expand(c.alpha, x_a) * x_a + _expand(c.beta, x_b) * x_b
        noise = _expand(c.gamma, z) * z
        dm = _expand(c.d_alpha, x_a) * x_a + _expand(c.d_beta, x_b) * x_b
        return InterpolantSample(t, x_a, x_b, z, mean + noise, mean - noise, dm, c)
