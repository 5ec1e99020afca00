"""Vectorised HMC: exactness on the free field, tuning, autocorrelation, sample files."""

import math
import os

import numpy as np
import pytest
import torch

from feat.energies.bias import Biased, HarmonicUmbrella
from feat.energies.lattice import Phi4, magnetisation
from feat.sampling import (
    HMC,
    integrated_autocorrelation_time,
    load_samples,
    save_samples,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run(energy, seed=0, n_chains=32, n_steps=1500, n_warmup=300, **kw):
    x0 = torch.randn((n_chains, *energy.event_shape), generator=_gen(seed + 100),
                     dtype=torch.float64)
    sampler = HMC(step_size=0.1, n_leapfrog=5)
    return sampler.sample(energy, x0, n_steps, generator=_gen(seed), n_warmup=n_warmup,
                          progress=False, **kw)


@pytest.fixture(scope="module")
def free_run():
    return _run(Phi4.from_mass((4, 4), m2=1.0, lam=0.0))


def _z_score_of_mean(samples_per_time, exact):
    """z of the mean of a (T, C) series, with the autocorrelation-corrected standard error."""
    est = integrated_autocorrelation_time(samples_per_time)
    return (est.mean - exact) / est.stderr


def test_free_field_phi2_matches_exact(free_run):
    u = Phi4.from_mass((4, 4), m2=1.0, lam=0.0)
    phi2 = (free_run.samples ** 2).flatten(1).mean(1).reshape(-1, free_run.n_chains)
    z = _z_score_of_mean(phi2, u.exact_phi2())
    assert abs(z) < 4.0, f"<phi^2> z-score {z:.2f}"
    assert phi2.numel() > 1000                     # enough decorrelated samples to mean much


def test_free_field_magnetisation_variance(free_run):
    """Var(m) = 1 / (V lambda_0) for the free field: checks the slowest (k = 0) mode."""
    m = magnetisation(free_run.samples).reshape(-1, free_run.n_chains)
    exact = 1.0 / (16 * 2.0)
    z = _z_score_of_mean(m ** 2, exact)
    assert abs(z) < 4.0, f"<m^2> z-score {z:.2f}"


def test_free_field_equipartition(free_run):
    """<u> = V/2 for a free field with h = 0 (each of the V modes carries 1/2 kT)."""
    z = _z_score_of_mean(free_run.energies.reshape(-1, free_run.n_chains), 16 / 2)
    assert abs(z) < 4.0, f"<u> z-score {z:.2f}"


def test_acceptance_and_frozen_step(free_run):
    r = free_run
    assert abs(r.acceptance - 0.8) < 0.05
    assert abs(r.accepted_fraction - r.acceptance) < 0.02
    after = r.step_size_trace[r.n_warmup:]
    assert torch.all(after == r.step_size)
    assert r.step_size_trace[: r.n_warmup].std() > 0   # it was tuned during warm-up
    assert r.samples.shape[1:] == (4, 4) and r.samples.dtype == torch.float64
    assert r.samples.shape[0] == r.n_chains * (r.n_steps // r.thin)
    assert r.thin >= math.ceil(2 * r.tau_int)


def test_scores_and_energies_belong_to_samples(free_run):
    u = Phi4.from_mass((4, 4), m2=1.0, lam=0.0)
    torch.testing.assert_close(free_run.energies, u(free_run.samples))
    torch.testing.assert_close(free_run.scores, u.score(free_run.samples))


def test_biased_free_field_magnetisation_mean():
    """Free field + umbrella on m: <m> = (h + k c / V) / (lambda_0 + k / V), exactly."""
    base = Phi4.from_mass((4, 4), m2=0.5, lam=0.0, h=0.1)
    u = Biased(base, HarmonicUmbrella(magnetisation, k=10.0, center=0.6))
    r = _run(u, seed=3, n_steps=800)
    exact = (0.1 + 10.0 * 0.6 / 16) / (1.0 + 10.0 / 16)
    z = _z_score_of_mean(magnetisation(r.samples).reshape(-1, r.n_chains), exact)
    assert abs(z) < 4.0, f"<m> z-score {z:.2f}"


def test_same_generator_same_chain_and_thin_override():
    u = Phi4.from_mass((3, 3), m2=1.0, lam=0.5)
    a = _run(u, n_chains=4, n_steps=60, n_warmup=20, thin=3)
    b = _run(u, n_chains=4, n_steps=60, n_warmup=20, thin=3)
    assert torch.equal(a.samples, b.samples) and a.step_size == b.step_size
    assert a.thin == 3 and a.samples.shape[0] == 4 * 20
    c = _run(u, seed=1, n_chains=4, n_steps=60, n_warmup=20, thin=3)
    assert not torch.equal(a.samples, c.samples)


def test_store_every():
    u = Phi4.from_mass((3, 3), m2=1.0, lam=0.0)
    r = _run(u, n_chains=4, n_steps=100, n_warmup=20, thin=5, store_every=2)
    assert r.thin == 6 and r.samples.shape[0] == 4 * (100 // 6)


def test_no_warmup_keeps_step_size():
    u = Phi4.from_mass((3, 3), m2=1.0, lam=0.0)
    r = _run(u, n_chains=4, n_steps=50, n_warmup=0, thin=1)
    assert r.step_size == 0.1 and torch.all(r.step_size_trace == 0.1)


# -- integrated autocorrelation time ------------------------------------------------------------

def _ar1(rho, n, n_chains, seed):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, n_chains))
    x = np.empty_like(noise)
    x[0] = noise[0] / math.sqrt(1 - rho ** 2)             # stationary start
    for t in range(1, n):
        x[t] = rho * x[t - 1] + noise[t]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_tau_int_of_ar1(rho):
    exact = 0.5 * (1 + rho) / (1 - rho)                   # 1/2 + sum_t rho^t
    est = integrated_autocorrelation_time(_ar1(rho, 20_000, 4, seed=int(10 * rho)))
    assert est.reliable
    assert est.tau_int == pytest.approx(exact, rel=0.1)


def test_stderr_is_calibrated_on_ar1():
    """z-scores of AR(1) means, over independent replicates, have unit spread."""
    zs = [integrated_autocorrelation_time(_ar1(0.8, 2000, 2, seed=s)).mean
          / integrated_autocorrelation_time(_ar1(0.8, 2000, 2, seed=s)).stderr
          for s in range(200)]
    assert 0.8 < np.std(zs) < 1.2 and abs(np.mean(zs)) < 0.3


def test_tau_int_edge_cases():
    const = integrated_autocorrelation_time(np.ones(100))
    assert math.isinf(const.tau_int) and not const.reliable
    with pytest.raises(ValueError, match="series must be finite"):
        integrated_autocorrelation_time(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="n_steps >= 2"):
        integrated_autocorrelation_time(np.ones(1))


# -- sample files -------------------------------------------------------------------------------

def test_save_load_round_trip_bit_identical(free_run, tmp_path):
    path = tmp_path / "a.npz"
    free_run.save(path, metadata={"system": "free 4x4", "seed": 0})
    loaded = load_samples(path)
    assert torch.equal(loaded.samples, free_run.samples)
    assert torch.equal(loaded.scores, free_run.scores)
    assert torch.equal(loaded.energies, free_run.energies)
    assert loaded.samples.dtype == torch.float64
    assert loaded.metadata["system"] == "free 4x4"
    assert loaded.metadata["step_size"] == free_run.step_size
    assert os.listdir(tmp_path) == ["a.npz"]                  # no temporary file left behind


def test_save_float32_without_scores(tmp_path):
    x = torch.randn(7, 2, 3, generator=_gen(5))
    save_samples(tmp_path / "b.npz", x)
    loaded = load_samples(tmp_path / "b.npz")
    assert torch.equal(loaded.samples, x) and loaded.scores is None and loaded.metadata == {}


def test_save_errors_leave_no_file(tmp_path):
    x = torch.randn(5, 3, generator=_gen(6))
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_samples(tmp_path / "c.npz", x, metadata={"bad": object()})
    with pytest.raises(ValueError, match="scores must have 5 rows"):
        save_samples(tmp_path / "c.npz", x, scores=x[:4])
    assert os.listdir(tmp_path) == []
    np.savez(tmp_path / "other.npz", samples=np.zeros(3))
    with pytest.raises(ValueError, match="not a feat.samples"):
        load_samples(tmp_path / "other.npz")


# -- validation ---------------------------------------------------------------------------------

def test_validation_errors():
    u = Phi4.from_mass((3, 3), m2=1.0, lam=0.0)
    x0 = torch.zeros(4, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, 3, 3\)"):
        HMC().sample(u, torch.zeros(4, 9), 10, generator=_gen(0), progress=False)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        HMC().sample(u, x0, 10, generator=0, progress=False)
    with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
        HMC().sample(u, x0, 0, generator=_gen(0), progress=False)
    for kwargs in ({"target_accept": 1.0}, {"step_size": -0.1}, {"n_leapfrog": 0},
                   {"jitter": 1.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            HMC(**kwargs)
    bad = Phi4.from_mass((3, 3), m2=1.0, lam=0.0)
    x_inf = x0.clone()
    x_inf[1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite energies for chains \[1\]"):
        HMC().sample(bad, x_inf, 10, generator=_gen(0), progress=False)


def test_cost_counts_every_iteration_and_gradient(free_run):
    # 32 chains × (300 warm-up + 1500) iterations, 5 leapfrog gradients each, 1 at the start
    assert free_run.cost == {"sampling_steps": 32 * 1800, "gradient_evals": 32 + 32 * 1800 * 5}
