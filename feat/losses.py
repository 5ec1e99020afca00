"""The interpolant losses of METHOD §3, as pure functions of network outputs.

Every loss sums over the event dimensions and averages over the batch. Inputs: ``b_plus,
b_minus, s_plus, s_minus`` are field values at ``x±`` with shape (batch, *event_shape);
``sample`` is the :class:`~feat.interpolants.InterpolantSample` they were evaluated at.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .interpolants.interpolant import InterpolantSample

__all__ = ["LossTerms", "velocity_loss", "denoising_score_loss", "target_score_loss"]


def _dot(u: Tensor, v: Tensor) -> Tensor:
    """Per-sample inner product over the event dimensions, shape (batch,)."""
    return (u * v).flatten(1).sum(-1)


def _col(c: Tensor, like: Tensor) -> Tensor:
    return c.reshape(c.shape + (1,) * (like.dim() - 1))


def velocity_loss(b_plus: Tensor, b_minus: Tensor, sample: InterpolantSample) -> Tensor:
    """``½|b(x+)|² − (m' + γ'z)·b(x+) + ½|b(x−)|² − (m' − γ'z)·b(x−)``, batch mean."""
    gz = _col(sample.coef.d_gamma, sample.z) * sample.z
    plus = 0.5 * _dot(b_plus, b_plus) - _dot(sample.dm + gz, b_plus)
    minus = 0.5 * _dot(b_minus, b_minus) - _dot(sample.dm - gz, b_minus)
    return (plus + minus).mean()


def denoising_score_loss(s_plus: Tensor, s_minus: Tensor, sample: InterpolantSample) -> Tensor:
    """``(γ/2)|s(x+)|² + z·s(x+) + (γ/2)|s(x−)|² − z·s(x−)``, batch mean."""
    g, z = sample.coef.gamma, sample.z
    plus = 0.5 * g * _dot(s_plus, s_plus) + _dot(z, s_plus)
    minus = 0.5 * g * _dot(s_minus, s_minus) - _dot(z, s_minus)
    return (plus + minus).mean()


def target_score_loss(
    s_plus: Tensor, s_minus: Tensor, sample: InterpolantSample, score_a: Tensor, score_b: Tensor
) -> Tensor:
    """Target score matching with the end-state scores ``s_a = −∇u_a(x_a)``, ``s_b = −∇u_b(x_b)``.

    For t < ½: ``(α/2)|s|² − s_a·s``; for t ≥ ½: ``(β/2)|s|² − s_b·s``; at both ``x±``.
    """
    early = sample.t < 0.5
    w = torch.where(early, sample.coef.alpha, sample.coef.beta)
    target = torch.where(_col(early, score_a), score_a, score_b)
    terms = [0.5 * w * _dot(s, s) - _dot(target, s) for s in (s_plus, s_minus)]
    return (terms[0] + terms[1]).mean()


@dataclass(frozen=True)
class LossTerms:
    """The three loss terms and their weighted total (scalar tensors)."""

    velocity: Tensor
    denoising: Tensor
    target_score: Tensor | None
    total: Tensor

    def items(self) -> dict[str, float]:
        """Plain floats for logging."""
        out = {
            "velocity": self.velocity.item(),
            "denoising": self.denoising.item(),
            "total": self.total.item(),
        }
        if self.target_score is not None:
            out["target_score"] = self.target_score.item()
        return out


def interpolant_loss(
    b_plus: Tensor,
    b_minus: Tensor,
    s_plus: Tensor,
    s_minus: Tensor,
    sample: InterpolantSample,
    score_a: Tensor | None = None,
    score_b: Tensor | None = None,
    tsm_weight: float = 0.1,
) -> LossTerms:
    """``velocity + denoising + tsm_weight × target score matching`` (TSM when scores given)."""
    lv = velocity_loss(b_plus, b_minus, sample)
    ld = denoising_score_loss(s_plus, s_minus, sample)
    lt = None
    total = lv + ld
    if score_a is not None and score_b is not None and tsm_weight > 0:
        lt = target_score_loss(s_plus, s_minus, sample, score_a, score_b)
        total = total + tsm_weight * lt
    return LossTerms(lv, ld, lt, total)
