"""Network coordinates y = c x: same ΔF, consistent energies and scores."""

import math

import pytest
import torch

from feat.energies.analytic import Gaussian
from feat.energies.scaling import Rescaled, rescale_problem
from feat.problem import TwoStateProblem


def _pair():
    a = Gaussian(torch.zeros(3), torch.eye(3) * 0.01)
    b = Gaussian(torch.full((3,), 0.1), torch.diag(torch.tensor([0.02, 0.01, 0.005])))
    gen = torch.Generator().manual_seed(0)
    xa = 0.1 * torch.randn(50, 3, generator=gen, dtype=torch.float64)
    xb = 0.1 + 0.1 * torch.randn(40, 3, generator=gen, dtype=torch.float64)
    return TwoStateProblem(a, b, xa, xb, reference=-(b.log_z() - a.log_z()),
                           reference_exact=True, name="pair")


def test_rescaled_energy_score_and_log_z():
    base = _pair().energy_b
    e = Rescaled(base, 20.0)
    y = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(e(y), base(y / 20.0))
    auto = _autograd_score(e, y)
    torch.testing.assert_close(e.score(y), auto)
    u, s = e.energy_and_score(y)
    torch.testing.assert_close(s, auto)
    assert e.log_z() == pytest.approx(base.log_z() + 3 * math.log(20.0), rel=1e-12)


def _autograd_score(e, y):
    yg = y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(e(yg).sum(), yg)
    return -g


def test_rescale_problem_keeps_delta_f_and_scales_samples_and_scores():
    p = _pair()
    sa, sb = p.scores()
    q = rescale_problem(p, 20.0)
    assert q.reference == p.reference and q.reference_exact and q.name == "pair"
    exact = -(q.energy_b.log_z() - q.energy_a.log_z())
    assert exact == pytest.approx(p.reference, abs=1e-10)
    torch.testing.assert_close(q.x_a, 20.0 * p.x_a)
    torch.testing.assert_close(q.score_b, sb / 20.0)
    torch.testing.assert_close(q.energy_a.score(q.x_a), q.score_a)
    assert q.metadata["coordinate_scale"] == 20.0
    assert rescale_problem(p, 1.0) is p


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, "20"])
def test_rescaled_rejects_bad_scale(scale):
    with pytest.raises((ValueError, TypeError), match="scale must be a finite number > 0"):
        Rescaled(_pair().energy_a, scale)


def test_rescaled_log_z_is_none_when_the_base_has_none():
    from feat.energies.base import FunctionEnergy

    e = Rescaled(FunctionEnergy(lambda x: (x**2).sum(-1), 2), 20.0)
    assert e.log_z() is None
