"""The losses of METHOD §3 are minimised by the exact fields (z-tests on their gradients).

For a quadratic loss L(f) = E[½ w |f(x)|² − y·f(x)], the minimiser is f = E[y | x] / w and the
directional derivative at it, E[(w f − y)·δ(x)], vanishes for every direction δ. We check that
with the closed-form fields of a Gaussian interpolant, which also checks those fields.
"""

import math

import torch

from feat.interpolants import Interpolant, LinearSchedule
from feat.losses import (
    denoising_score_loss,
    interpolant_loss,
    target_score_loss,
    velocity_loss,
)

from .gaussians import exact_fields, gaussian_pair


def _zscore(per_sample: torch.Tensor) -> float:
    return (per_sample.mean() / (per_sample.std() / math.sqrt(len(per_sample)))).item()


def _setup(n=200000, seed=0):
    ga, gb, _ = gaussian_pair(d=2)
    g = torch.Generator().manual_seed(seed)
    smp = Interpolant(LinearSchedule()).sample(ga.sample(n, g), gb.sample(n, g), g)
    b, s = exact_fields(ga, gb)
    delta = lambda x: torch.sin(3 * x) + x**2  # noqa: E731  a fixed test direction
    return ga, gb, smp, b, s, delta


def test_exact_velocity_is_stationary_for_the_velocity_loss():
    _, _, smp, b, _, delta = _setup()
    gz = smp.coef.d_gamma[:, None] * smp.z
    g_plus = ((b(smp.t, smp.x_plus) - (smp.dm + gz)) * delta(smp.x_plus)).sum(-1)
    g_minus = ((b(smp.t, smp.x_minus) - (smp.dm - gz)) * delta(smp.x_minus)).sum(-1)
    assert abs(_zscore(g_plus + g_minus)) < 3.5


def test_exact_score_is_stationary_for_denoising_and_target_score_losses():
    ga, gb, smp, _, s, delta = _setup(seed=1)
    g = smp.coef.gamma[:, None]
    d_plus = ((g * s(smp.t, smp.x_plus) + smp.z) * delta(smp.x_plus)).sum(-1)
    d_minus = ((g * s(smp.t, smp.x_minus) - smp.z) * delta(smp.x_minus)).sum(-1)
    assert abs(_zscore(d_plus + d_minus)) < 3.5
    early = (smp.t < 0.5)[:, None]
    w = torch.where(early, smp.coef.alpha[:, None], smp.coef.beta[:, None])
    target = torch.where(early, ga.score(smp.x_a), gb.score(smp.x_b))
    t_plus = ((w * s(smp.t, smp.x_plus) - target) * delta(smp.x_plus)).sum(-1)
    assert abs(_zscore(t_plus)) < 3.5


def test_exact_fields_have_lower_loss_than_perturbed_ones():
    ga, gb, smp, b, s, delta = _setup(n=50000, seed=2)
    bp, bm = b(smp.t, smp.x_plus), b(smp.t, smp.x_minus)
    sp, sm = s(smp.t, smp.x_plus), s(smp.t, smp.x_minus)
    for c in (0.1, -0.1):
        assert velocity_loss(bp, bm, smp) < velocity_loss(bp + c * delta(smp.x_plus),
                                                          bm + c * delta(smp.x_minus), smp)
        assert denoising_score_loss(sp, sm, smp) < denoising_score_loss(
            sp + c * delta(smp.x_plus), sm + c * delta(smp.x_minus), smp)
        sa, sb = ga.score(smp.x_a), gb.score(smp.x_b)
        assert target_score_loss(sp, sm, smp, sa, sb) < target_score_loss(
            sp + c * delta(smp.x_plus), sm + c * delta(smp.x_minus), smp, sa, sb)


def test_total_loss_weights_target_score_matching():
    ga, gb, smp, b, s, _ = _setup(n=1000)
    args = (b(smp.t, smp.x_plus), b(smp.t, smp.x_minus), s(smp.t, smp.x_plus),
            s(smp.t, smp.x_minus), smp, ga.score(smp.x_a), gb.score(smp.x_b))
    full, half = interpolant_loss(*args, tsm_weight=0.1), interpolant_loss(*args, tsm_weight=0.05)
    torch.testing.assert_close(full.total - half.total, 0.05 * full.target_score)
    none = interpolant_loss(*args[:5])
    assert none.target_score is None
    torch.testing.assert_close(none.total, none.velocity + none.denoising)
