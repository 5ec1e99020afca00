"""Analytic energies: exact normalisers, exact samplers, scores, the energy contract."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from feat import FunctionEnergy
from feat.energies.analytic import Gaussian, GaussianMixture, gmm_pair, softplus


def test_gaussian_log_z_matches_quadrature_in_2d():
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    g = Gaussian(torch.tensor([0.3, -0.1], dtype=torch.float64), cov)

    def f(y, x):
        return math.exp(-g(torch.tensor([[x, y]], dtype=torch.float64)).item())

    z, _ = integrate.dblquad(f, -6, 6, -6, 6, epsabs=1e-11)
    assert abs(math.log(z) - g.log_z()) < 1e-6


def test_gmm_is_normalised_and_score_matches_autograd():
    means = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    gmm = GaussianMixture(means, torch.tensor([0.3, 0.5, 0.2]), torch.tensor([1.0, 2.0, 1.0]))
    z, _ = integrate.quad(lambda x: math.exp(-gmm(torch.tensor([[x]])).item()), -8, 8, limit=200)
    assert abs(math.log(z) - gmm.log_z()) < 1e-7
    x = torch.randn(7, 1, dtype=torch.float64)
    torch.testing.assert_close(gmm.score(x), super(GaussianMixture, gmm).score(x))


def test_gmm_sampler_matches_moments():
    gmm = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 2.0]]), 0.25, torch.tensor([1.0, 3.0]))
    x = gmm.sample(40000, torch.Generator().manual_seed(0))
    expected = torch.tensor([0.5, 1.5], dtype=torch.float64)  # 1/4·(−1, 0) + 3/4·(1, 2)
    se = x.std(0) / math.sqrt(len(x))
    assert ((x.mean(0) - expected).abs() < 4 * se).all()


def test_gmm_pair_follows_the_paper_and_keeps_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = gmm_pair(seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a.means.shape == (40, 40) and b.means.shape == (16, 40)
    assert a.means.abs().max() <= 2 and abs(a.stds[0, 0].item() - softplus(-2)) < 1e-15
    assert abs(b.stds[0, 0].item() - 0.0486) < 1e-4
    a2, _ = gmm_pair(seed=3)
    assert torch.equal(a.means, a2.means)
    assert a.log_z() == b.log_z() == 0.0


def test_energy_contract_errors_are_clear():
    u = FunctionEnergy(lambda x: (x**2).sum(-1, keepdim=True), event_shape=(3,))
    with pytest.raises(ValueError, match=r"returned shape \(4, 1\).*squeeze"):
        u(torch.zeros(4, 3))
    good = FunctionEnergy(lambda x: (x**2).sum(-1), 3)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\); got \(4, 2\)"):
        good(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="empty"):
        good(torch.zeros(0, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        good(np.zeros((2, 3)))


def test_gaussian_rejects_bad_covariance():
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian(torch.zeros(2), -torch.eye(2))
    with pytest.raises(ValueError, match="shape"):
        Gaussian(torch.zeros(2), torch.eye(3))
