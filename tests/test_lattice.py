"""phi^4 lattice energies, their conversions, exact free-field log Z, and bias combinators."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from feat.energies.base import Energy
from feat.energies.bias import Biased, HarmonicUmbrella
from feat.energies.lattice import Phi4, magnetisation, paper_umbrella_states

SHAPES = [(3, 4), (2, 3, 2)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fields(shape, batch=3, seed=0, scale=1.0):
    return scale * torch.randn((batch, *shape), generator=_gen(seed), dtype=torch.float64)


def _neighbour(site, mu, shape):
    n = list(site)
    n[mu] = (n[mu] + 1) % shape[mu]
    return tuple(n)


def _loop_energy_mass(phi, m2, lam, h):
    """Plain-Python reference of the paper's form, one field of shape `shape`."""
    shape, total = phi.shape, 0.0
    for site in itertools.product(*map(range, shape)):
        f = float(phi[site])
        total += sum((float(phi[_neighbour(site, mu, shape)]) - f) ** 2 for mu in range(len(shape)))
        total += m2 * f ** 2 + lam * f ** 4 - h * f
    return total


def _loop_energy_hopping(phi, kappa, lam, h):
    shape, total = phi.shape, 0.0
    for site in itertools.product(*map(range, shape)):
        f = float(phi[site])
        total -= 2 * kappa * sum(f * float(phi[_neighbour(site, mu, shape)])
                                 for mu in range(len(shape)))
        total += f ** 2 + lam * (f ** 2 - 1) ** 2 - h * f
    return total


def _dense_a(shape, m2):
    """A of u = 1/2 phi^T A phi - h^T phi for the paper's free field, built site by site."""
    sites = list(itertools.product(*map(range, shape)))
    index = {s: i for i, s in enumerate(sites)}
    q = np.diag(np.full(len(sites), m2))               # u_quadratic = phi^T q phi
    for s in sites:
        for mu in range(len(shape)):
            i, j = index[s], index[_neighbour(s, mu, shape)]
            q[i, i] += 1
            q[j, j] += 1
            q[i, j] -= 1
            q[j, i] -= 1
    return 2 * q


def _nquad_log_z(energy_2sites):
    """log int exp(-u(phi_0, phi_1)) by adaptive quadrature (scipy nquad) on the real plane."""
    def f(a, b):
        return math.exp(-energy_2sites(np.array([a, b])))
    val, _ = integrate.nquad(f, [(-np.inf, np.inf)] * 2, opts={"epsabs": 1e-13, "epsrel": 1e-11})
    return math.log(val)


def _gaussian_log_z(a, b, c=0.0):
    """log of int exp(-(1/2 x^T a x - b^T x + c)) dx."""
    _, logdet = np.linalg.slogdet(a)
    return 0.5 * len(b) * math.log(2 * math.pi) - 0.5 * logdet + 0.5 * b @ np.linalg.solve(a, b) - c


# -- energy and score ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_mass_form_matches_loop(shape):
    u = Phi4.from_mass(shape, m2=-1.0, lam=0.8, h=0.3)
    phi = _fields(shape)
    ref = torch.tensor([_loop_energy_mass(f, -1.0, 0.8, 0.3) for f in phi], dtype=torch.float64)
    torch.testing.assert_close(u(phi), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_hopping_form_matches_loop(shape):
    u = Phi4.from_hopping(shape, kappa=0.2, lam=0.5, h=-0.4)
    phi = _fields(shape, seed=1)
    ref = torch.tensor([_loop_energy_hopping(f, 0.2, 0.5, -0.4) for f in phi],
                       dtype=torch.float64)
    torch.testing.assert_close(u(phi), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("energy", [Phi4.from_mass((3, 4), -1.0, 0.8, 0.3),
                                    Phi4.from_hopping((2, 3, 2), 0.2, 0.5, -0.4),
                                    Phi4.from_mass((2, 1), 0.5, 0.1, 0.2)])
def test_score_is_minus_gradient(energy):
    phi = _fields(energy.event_shape, batch=2, seed=2)
    score = energy.score(phi)
    torch.testing.assert_close(score, Energy.score(energy, phi), rtol=1e-10, atol=1e-10)
    u, s = energy.energy_and_score(phi)
    torch.testing.assert_close(u, energy(phi))
    torch.testing.assert_close(s, score)
    step, flat = 1e-5, phi.reshape(2, -1)
    fd = torch.empty_like(flat)
    for i in range(flat.shape[1]):
        e = torch.zeros_like(flat)
        e[:, i] = step
        up = energy((flat + e).reshape(phi.shape))
        down = energy((flat - e).reshape(phi.shape))
        fd[:, i] = (up - down) / (2 * step)
    torch.testing.assert_close(-fd.reshape(phi.shape), score, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_periodicity(shape):
    u = Phi4.from_mass(shape, -1.0, 0.8, 0.2)
    phi = _fields(shape, seed=3)
    for shift in itertools.product(*[range(n) for n in shape]):
        rolled = torch.roll(phi, shifts=shift, dims=tuple(range(1, len(shape) + 1)))
        torch.testing.assert_close(u(rolled), u(phi), rtol=1e-12, atol=1e-12)


def test_h_term_sign():
    phi = _fields((3, 4), seed=4)
    u0, uh = Phi4.from_mass((3, 4), -1.0, 0.8), Phi4.from_mass((3, 4), -1.0, 0.8, h=0.5)
    torch.testing.assert_close(uh(phi) - u0(phi), -0.5 * phi.flatten(1).sum(1))
    plus = torch.full((1, 3, 4), 0.7, dtype=torch.float64)
    assert uh(plus) < uh(-plus)                        # h > 0 favours positive fields


def test_magnetisation():
    phi = _fields((3, 4), seed=5)
    torch.testing.assert_close(magnetisation(phi), phi.mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="batch"):
        magnetisation(torch.zeros(5))


# -- the two parameterisations ------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("m2, lam, h", [(-1.0, 0.8, 0.0), (0.5, 0.0, 0.3), (-3.0, 2.0, -0.7)])
def test_mass_to_hopping_is_exact(shape, m2, lam, h):
    source = Phi4.from_mass(shape, m2, lam, h)
    conv = source.to_hopping()
    assert isinstance(conv.target.params, type(Phi4.from_hopping(shape, 0.1, 0.1).params))
    phi_t = _fields(shape, seed=6)
    # the documented identity: u_target(phi') = u_source(scale * phi') + shift
    torch.testing.assert_close(conv.target(phi_t), source(conv.to_source(phi_t)) + conv.shift,
                               rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(conv.to_target(conv.to_source(phi_t)), phi_t)
    back = conv.target.to_mass().target.params             # round trip of the parameters
    assert back.m2 == pytest.approx(m2, abs=1e-12)
    assert back.lam == pytest.approx(lam, abs=1e-12)
    assert back.h == pytest.approx(h, abs=1e-12)


def test_hopping_to_mass_is_exact():
    source = Phi4.from_hopping((2, 3, 2), kappa=0.18, lam=1.1, h=0.25)
    conv = source.to_mass()
    phi = _fields((2, 3, 2), seed=7)
    torch.testing.assert_close(conv.target(phi), source(conv.to_source(phi)) + conv.shift,
                               rtol=1e-12, atol=1e-10)
    assert conv.shift == pytest.approx(-12 * 1.1)
    with pytest.raises(ValueError, match="kappa must be > 0"):
        Phi4.from_hopping((4,), kappa=-0.1, lam=0.5).to_mass()


def test_free_field_conversion_log_z_offset():
    source = Phi4.from_mass((3, 4), m2=0.7, lam=0.0, h=0.2)
    conv = source.to_hopping()
    assert conv.shift == 0.0 and conv.target.is_free
    assert source.log_z() == pytest.approx(conv.target.log_z() + conv.log_z_offset, abs=1e-10)


def test_interacting_conversion_log_z_offset_by_quadrature():
    """The Jacobian scale^V and exp(shift) are exactly what separates the two log Z."""
    source = Phi4.from_mass((2,), m2=-1.0, lam=0.8, h=0.1)
    conv = source.to_hopping()

    p, q = source.params, conv.target.params
    log_z_mass = _nquad_log_z(lambda f: _loop_energy_mass(f, p.m2, p.lam, p.h))
    log_z_hop = _nquad_log_z(lambda f: _loop_energy_hopping(f, q.kappa, q.lam, q.h))
    assert log_z_mass - log_z_hop == pytest.approx(conv.log_z_offset, abs=1e-7)


# -- exact free-field log Z ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES + [(2,), (5,), (1, 3)])
def test_free_log_z_matches_dense_gaussian(shape):
    m2, h = 0.6, 0.35
    a = _dense_a(shape, m2)
    ref = _gaussian_log_z(a, np.full(len(a), h))
    assert Phi4.from_mass(shape, m2, 0.0, h).log_z() == pytest.approx(ref, abs=1e-10)
    assert Phi4.from_mass(shape, m2, 0.0, h).exact_phi2() == pytest.approx(
        np.diag(np.linalg.inv(a)).mean() + (np.linalg.solve(a, np.full(len(a), h)) ** 2).mean(),
        abs=1e-12)


def test_free_log_z_by_nquad_two_sites():
    u = Phi4.from_mass((2,), m2=0.7, lam=0.0, h=0.3)
    log_z = _nquad_log_z(lambda f: _loop_energy_mass(f, 0.7, 0.0, 0.3))
    assert log_z == pytest.approx(u.log_z(), abs=1e-6)


def test_free_log_z_by_grid_quadrature_three_sites():
    """Tensor-product trapezoid rule (spectrally accurate for this smooth, decaying integrand)."""
    u = Phi4.from_mass((3,), m2=0.5, lam=0.0, h=-0.4)
    grid = torch.linspace(-8.0, 8.0, 129, dtype=torch.float64)
    pts = torch.cartesian_prod(grid, grid, grid)
    log_w = torch.logsumexp(-u(pts), 0) + 3 * math.log(float(grid[1] - grid[0]))
    assert float(log_w) == pytest.approx(u.log_z(), abs=1e-6)


def test_free_log_z_hopping_form_and_interacting_none():
    hop = Phi4.from_hopping((3, 4), kappa=0.1, lam=0.0, h=0.2)
    m2 = 1 / 0.1 - 4                                   # mass form of the same theory
    ref = _gaussian_log_z(0.1 * _dense_a((3, 4), m2), np.full(12, 0.2))
    assert hop.log_z() == pytest.approx(ref, abs=1e-10)
    assert Phi4.from_mass((3, 4), -1.0, 0.8).log_z() is None
    assert Phi4.from_mass((3, 4), -1.0, 0.8).exact_phi2() is None


def test_delta_f_between_free_fields():
    """Zwanzig with exact samples of a: -log <exp(-(u_b - u_a))>_a = -(log Z_b - log Z_a)."""
    shape, n = (2, 2), 200_000
    u_a, u_b = Phi4.from_mass(shape, 1.0, 0.0), Phi4.from_mass(shape, 1.3, 0.0, h=0.2)
    a = torch.as_tensor(_dense_a(shape, 1.0))
    chol = torch.linalg.cholesky(torch.linalg.inv(a))
    x = (torch.randn(n, 4, generator=_gen(8), dtype=torch.float64) @ chol.T).reshape(n, *shape)
    w = torch.exp(-(u_b(x) - u_a(x)))
    delta_f = -math.log(float(w.mean()))
    stderr = float(w.std()) / (float(w.mean()) * math.sqrt(n))   # delta method
    exact = -(u_b.log_z() - u_a.log_z())
    assert abs(delta_f - exact) / stderr < 4.0


def test_free_field_not_normalisable_raises():
    with pytest.raises(ValueError, match="not normalisable"):
        Phi4.from_mass((4, 4), m2=-0.5, lam=0.0).log_z()
    with pytest.raises(ValueError, match="not normalisable"):
        Phi4.from_hopping((4, 4), kappa=0.3, lam=0.0).log_z()       # 1 - 2 d kappa < 0


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"shape": (0, 4)}, "shape must be"), ({"shape": ()}, "shape must be"),
    ({"shape": (4, 2.0)}, "shape must be"), ({"lam": -0.1}, "lam must be >= 0"),
    ({"m2": float("nan")}, "m2 must be a finite"), ({"h": "x"}, "h must be a finite")])
def test_validation(kwargs, match):
    args = {"shape": (4, 4), "m2": -1.0, "lam": 0.8, "h": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        Phi4.from_mass(**args)


def test_wrong_field_shape_names_expected_shape():
    u = Phi4.from_mass((4, 4), -1.0, 0.8)
    with pytest.raises(ValueError, match=r"\(batch, 4, 4\)"):
        u(torch.zeros(2, 16))
    with pytest.raises(ValueError, match=r"\(batch, 4, 4\)"):
        u.score(torch.zeros(4, 4))


# -- biases -------------------------------------------------------------------------------------

def test_biased_value_is_plain_sum():
    base = Phi4.from_mass((3, 4), -1.0, 0.8)
    umb = HarmonicUmbrella(magnetisation, k=10.0, center=-0.3)
    biased = Biased(base, umb)
    phi = _fields((3, 4), seed=9)
    ref = base(phi) + 5.0 * (phi.mean(dim=(1, 2)) + 0.3) ** 2
    torch.testing.assert_close(biased(phi), ref)
    assert biased.event_shape == (3, 4) and biased.log_z() is None


def test_umbrella_on_magnetisation_gradient():
    base = Phi4.from_mass((3, 4), -1.0, 0.8, h=0.1)
    biased = Biased(base, HarmonicUmbrella(magnetisation, k=10.0, center=0.6))
    phi = _fields((3, 4), seed=10)
    m = phi.mean(dim=(1, 2))
    # d/dphi_x (k/2)(m - c)^2 = k (m - c) / V
    expected = base.score(phi) - (10.0 * (m - 0.6) / 12).reshape(-1, 1, 1)
    torch.testing.assert_close(biased.score(phi), expected)
    torch.testing.assert_close(Energy.score(biased, phi), expected)
    u, s = biased.energy_and_score(phi)
    torch.testing.assert_close(u, biased(phi))
    torch.testing.assert_close(s, expected)


def test_umbrella_free_field_exact_log_z():
    """Free field + umbrella on m is Gaussian: compare with A, b, c read off by autograd."""
    base = Phi4.from_mass((3, 4), m2=0.4, lam=0.0, h=0.15)
    biased = Biased(base, HarmonicUmbrella(magnetisation, k=10.0, center=0.6))
    zero = torch.zeros(1, 3, 4, dtype=torch.float64)
    def flat(v):
        return biased(v.reshape(1, 3, 4))[0]
    a = torch.autograd.functional.hessian(flat, torch.zeros(12, dtype=torch.float64))
    b = biased.score(zero).reshape(-1)                    # -grad u at 0 = b
    ref = _gaussian_log_z(a.numpy(), b.numpy(), float(biased(zero)))
    assert biased.log_z() == pytest.approx(ref, abs=1e-10)


def test_paper_states():
    u_a, u_b = paper_umbrella_states()
    assert u_a.event_shape == (16, 16) and u_a.base is u_b.base
    assert (u_a.bias.center, u_b.bias.center, u_a.bias.k) == (-0.3, 0.6, 10.0)
    phi = torch.full((1, 16, 16), 0.6)
    assert float(u_b(phi) - u_b.base(phi)) == 0.0


def test_bias_validation():
    with pytest.raises(ValueError, match="k must be >= 0"):
        HarmonicUmbrella(magnetisation, k=-1.0, center=0.0)
    with pytest.raises(TypeError, match="energy must be a feat Energy"):
        Biased(lambda x: x, HarmonicUmbrella(magnetisation, 1.0, 0.0))
    bad = Biased(Phi4.from_mass((2, 2), 1.0, 0.0), lambda x: x.flatten(1))
    with pytest.raises(ValueError, match="bias .* returned shape"):
        bad(torch.zeros(3, 2, 2))
