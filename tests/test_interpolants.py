"""Schedules, antithetic interpolant samples and couplings."""

import itertools

import pytest
import torch

from feat.interpolants import (
    IndependentCoupling,
    Interpolant,
    LinearSchedule,
    MinibatchOTCoupling,
    TrigonometricSchedule,
)


@pytest.mark.parametrize("schedule", [LinearSchedule(), TrigonometricSchedule(a=0.2, g0=1e-4)])
def test_schedule_derivatives_match_finite_differences(schedule):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    c, cp, cm = schedule(t), schedule(t + h), schedule(t - h)
    for name in ("alpha", "beta", "gamma"):
        fd = (getattr(cp, name) - getattr(cm, name)) / (2 * h)
        torch.testing.assert_close(getattr(c, "d_" + name), fd, rtol=1e-6, atol=1e-6)


def test_schedule_ends_and_finiteness():
    c = LinearSchedule(g0=1e-4)(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert c.alpha.tolist() == [1.0, 0.0] and c.beta.tolist() == [0.0, 1.0]
    assert torch.allclose(c.gamma, torch.full((2,), 1e-4, dtype=torch.float64))
    assert torch.isfinite(c.d_gamma).all()
    with pytest.raises(ValueError, match="a > 0"):
        LinearSchedule(a=0.0)


def test_antithetic_pair_shares_t_and_z():
    g = torch.Generator().manual_seed(0)
    x_a, x_b = torch.randn(6, 2, 3, generator=g), torch.randn(6, 2, 3, generator=g)
    s = Interpolant().sample(x_a, x_b, g)
    mid = 0.5 * (s.x_plus + s.x_minus)
    a, b = s.coef.alpha[:, None, None], s.coef.beta[:, None, None]
    torch.testing.assert_close(mid, a * x_a + b * x_b)
    torch.testing.assert_close(0.5 * (s.x_plus - s.x_minus), s.coef.gamma[:, None, None] * s.z)
    torch.testing.assert_close(s.dm, -x_a + x_b)
    with pytest.raises(ValueError, match="same shape"):
        Interpolant().sample(x_a, x_b[:3])


def test_minibatch_ot_is_the_exact_assignment():
    g = torch.Generator().manual_seed(1)
    x_a, x_b = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    perm = MinibatchOTCoupling()(x_a, x_b)

    def cost(p):
        return ((x_a - x_b[list(p)]) ** 2).sum().item()

    best = min(cost(p) for p in itertools.permutations(range(6)))
    assert abs(cost(perm.tolist()) - best) < 1e-6
    assert sorted(perm.tolist()) == list(range(6))
    assert IndependentCoupling()(x_a, x_b).tolist() == list(range(6))


def test_time_sampling_ends_follows_the_arcsine_law():
    x = torch.zeros(20000, 1)
    g = torch.Generator().manual_seed(0)
    t = Interpolant(time_sampling="ends").sample(x, x, g).t
    # arcsine law: P(t < 0.1) = (2/π) asin(sqrt(0.1)) ≈ 0.2048
    frac = (t < 0.1).double().mean().item()
    assert abs(frac - 0.2048) < 4 * (0.2048 * 0.7952 / 20000) ** 0.5
    with pytest.raises(ValueError, match="time_sampling"):
        Interpolant(time_sampling="beta")
