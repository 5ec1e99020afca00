"""MBAR reference on free-field ladders with exact log Z: z-scores against the exact ΔF."""

import math

import numpy as np
import pytest
import torch

from feat.energies.lattice import Phi4
from feat.reference import mbar_delta_f, reduced_potential_matrix, umbrella_windows, window_centers
from feat.sampling import HMC
from feat.specs.lattice import sample_free_field


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _exact(energies, i=0, j=-1):
    return -(energies[j].log_z() - energies[i].log_z())


def _umbrellas(shape=(4, 4), m2=0.5, k=10.0, n_windows=6):
    return umbrella_windows(Phi4.from_mass(shape, m2, 0.0), k, window_centers(-0.3, 0.6, n_windows))


def _exact_samples(energies, n, seed):
    gen = _gen(seed)
    return [sample_free_field(e, n, gen) for e in energies]


def test_umbrella_ladder_matches_exact():
    windows = _umbrellas()
    exact = _exact(windows)
    zs = []
    for seed in range(5):
        r = mbar_delta_f(windows, _exact_samples(windows, 400, seed), n_bootstrap=0)
        zs.append((r.delta_f - exact) / r.sigma)
    assert abs(exact) > 0.1                       # a non-trivial difference
    assert max(abs(z) for z in zs) < 3.0, zs
    assert abs(np.mean(zs)) * math.sqrt(len(zs)) < 3.0, zs   # pooled z


def test_mass_ladder_matches_exact_with_bootstrap():
    """States that differ in every mode (ΔF of 1.6 kT), unequal N_k, i and j inside."""
    energies = [Phi4.from_mass((3, 4), m2, 0.0, 0.2) for m2 in (0.5, 0.8, 1.2, 1.8, 2.5)]
    gen = _gen(7)
    samples = [sample_free_field(e, n, gen) for e, n in zip(energies, (300, 400, 500, 400, 300),
                                                            strict=True)]
    r = mbar_delta_f(energies, samples, i=1, j=-2, n_bootstrap=50, seed=1)
    exact = _exact(energies, 1, 3)
    assert (r.i, r.j) == (1, 3) and r.n_k == (300, 400, 500, 400, 300)
    assert abs(exact) > 1.0
    assert abs(r.delta_f - exact) / r.sigma < 3.0, (r.delta_f, exact, r.sigma)
    assert 0.6 < r.sigma_bootstrap / r.sigma < 1.6
    assert len(r.f_k) == 5 and r.f_k[0] == 0.0
    assert len(r.neighbour_overlap) == 4 and 0 < r.min_overlap <= 1
    full = [-(e.log_z() - energies[0].log_z()) for e in energies]
    assert np.allclose(r.f_k, full, atol=5 * r.sigma + 0.1)
    assert "MBAR" in r.summary() and r.to_dict()["min_overlap"] == r.min_overlap


def test_hmc_samples_in_windows():
    """The same ladder sampled by HMC (thinned by tau_int) still gives the exact ΔF."""
    windows = _umbrellas(n_windows=4)
    samples = []
    for c, e in enumerate(windows):
        x0 = torch.zeros(32, 4, 4, dtype=torch.float64)
        res = HMC(step_size=0.2, n_leapfrog=5).sample(e, x0, 400, generator=_gen(c),
                                                       n_warmup=200, progress=False)
        samples.append(res.samples)
    r = mbar_delta_f(windows, samples)
    assert abs(r.delta_f - _exact(windows)) / r.sigma < 3.0


def test_u_kn_layout():
    windows = _umbrellas(n_windows=3)
    samples = _exact_samples(windows, 5, 0)
    u_kn, n_k = reduced_potential_matrix(windows, samples)
    assert u_kn.shape == (3, 15) and u_kn.dtype == np.float64 and list(n_k) == [5, 5, 5]
    assert np.allclose(u_kn[2, 5:10], windows[2](samples[1]).numpy())


def test_validation():
    windows = _umbrellas(n_windows=3)
    samples = _exact_samples(windows, 5, 0)
    with pytest.raises(ValueError, match="equal length K >= 2"):
        mbar_delta_f(windows, samples[:2])
    with pytest.raises(ValueError, match=r"samples\[1\] must have shape \(batch, 4, 4\)"):
        mbar_delta_f(windows, [samples[0], samples[1].flatten(1), samples[2]])
    with pytest.raises(ValueError, match="j must be a state index"):
        mbar_delta_f(windows, samples, j=3)
    with pytest.raises(ValueError, match="n_windows must be an int >= 2"):
        window_centers(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="energy 0 is NaN"):
        bad = [s.clone() for s in samples]
        bad[0][0, 0, 0] = float("nan")
        mbar_delta_f(windows, bad)


def test_phi4_umbrella_spec_reference_matches_exact_free_field():
    """The spec's HMC umbrella ladder (``feat reference``) on a free field: z-score vs exact."""
    from feat.config import ReferenceConfig
    from feat.specs.lattice import Phi4UmbrellaSpec

    spec = Phi4UmbrellaSpec(shape=[3, 3], m2=0.5, lam=0.0, k=10.0, n_chains=32, n_warmup=100,
                            n_steps=200, n_leapfrog=10, cache_dir="unused")
    ref = spec.mbar_reference(ReferenceConfig(n_windows=4, n_samples=400, n_bootstrap=0))
    a, b = spec.energies()
    exact = -(b.log_z() - a.log_z())
    assert ref.parameter == "center" and len(ref.values) == 4 and len(ref.windows) == 4
    assert ref.values[0] == spec.center_a and ref.values[-1] == spec.center_b
    assert abs(ref.mbar.delta_f - exact) / ref.mbar.sigma < 3.0, (ref.mbar.delta_f, exact)
    assert list(ref.to_dict()["mbar"]["n_k"]) == [400] * 4


def test_mbar_from_matrix_between_unsampled_regions_matches_exact():
    """Two unit-Gaussian umbrellas; targets: the unbiased N(0, 1) restricted to x < 0.5 and to
    x >= 0.5 (+inf outside). ΔF = -log(P(x >= 0.5) / P(x < 0.5)) exactly."""
    from scipy.stats import norm

    from feat.reference import mbar_from_matrix

    rng = np.random.default_rng(3)
    centres = np.array([-0.5, 0.5, 1.5])
    x = np.concatenate([rng.normal(c, 1.0, 600) for c in centres])
    # sampled states: N(c, 1) = unbiased 0.5 x^2 + bias; drop the common 0.5 x^2 per column
    u_kn = np.stack([0.5 * (x - c) ** 2 - 0.5 * x**2 for c in centres])
    u_ln = np.stack([np.where(x < 0.5, 0.0, np.inf), np.where(x >= 0.5, 0.0, np.inf)])
    r = mbar_from_matrix(u_kn, [600] * 3, u_ln=u_ln, n_bootstrap=50, seed=1)
    p = norm.sf(0.5)
    exact = -math.log(p / (1 - p))
    assert abs(r.delta_f - exact) / r.sigma < 3.0, (r.delta_f, exact, r.sigma)
    assert 0.5 < r.sigma_bootstrap / r.sigma < 2.0
