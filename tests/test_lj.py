"""Lennard-Jones clusters: energy, exact trap, HMC sampling, the ``lj`` kind and its reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from feat.config import ReferenceConfig
from feat.energies.lj import LennardJonesCluster, lj_pair
from feat.fields import EGNNField
from feat.interpolants.alignment import random_rotation
from feat.specs import KINDS, build_problem
from feat.specs.lj import LJSpec, initial_states, lj_hmc_samples, reference_path, window_schedule
from feat.training.trainer import TrainingConfig


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _configs(n: int, batch: int = 5, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """Random clusters with no pair closer than 0.7 (so the LJ terms are moderate)."""
    g, out = _gen(seed), []
    while len(out) < batch:
        x = scale * torch.randn(n, 3, generator=g, dtype=torch.float64) + 3.0
        if torch.pdist(x).min() > 0.7:
            out.append(x)
    return torch.stack(out)


def _double_loop(x: torch.Tensor, s: float, eps: float | None = None) -> np.ndarray:
    """The paper's formula written out: ordered pairs i != j, trap on x_i - mean."""
    eps = s if eps is None else eps
    out = []
    for conf in x.tolist():
        conf = np.array(conf)
        mean = conf.mean(0)
        u = 0.5 * sum(float(np.sum((xi - mean) ** 2)) for xi in conf)
        for i in range(len(conf)):
            for j in range(len(conf)):
                if i != j and s > 0:
                    r = float(np.linalg.norm(conf[i] - conf[j]))
                    u += 4 * eps * ((s / r) ** 12 - (s / r) ** 6)
        out.append(u)
    return np.array(out)


# -- the energy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [0.0, 0.3, 0.8, 1.0])
def test_energy_equals_the_plain_double_loop(s):
    x = _configs(7, scale=1.2)
    u = LennardJonesCluster(7, s)(x)
    np.testing.assert_allclose(u.numpy(), _double_loop(x, s), rtol=1e-11, atol=1e-10)


def test_epsilon_sets_the_energy_scale_apart_from_s():
    x = _configs(7, scale=1.2)
    for s, eps in ((1.0, 0.1), (0.6, 0.06), (0.5, 2.0)):
        u = LennardJonesCluster(7, s, epsilon=eps)(x)
        np.testing.assert_allclose(u.numpy(), _double_loop(x, s, eps), rtol=1e-11, atol=1e-10)
    torch.testing.assert_close(LennardJonesCluster(7, 0.7, epsilon=0.7)(x),
                               LennardJonesCluster(7, 0.7)(x), rtol=0, atol=0)
    assert LennardJonesCluster(7, 1.0, epsilon=0.0).is_trap
    assert "epsilon=0.1" in repr(LennardJonesCluster(7, 1.0, epsilon=0.1))
    # the TI integrands by central differences: ∂u/∂ε at fixed s, ∂u/∂s at fixed ε/s
    h = 1e-6
    e = LennardJonesCluster(7, 0.9, epsilon=0.2)
    fd_eps = (LennardJonesCluster(7, 0.9, epsilon=0.2 + h)(x)
              - LennardJonesCluster(7, 0.9, epsilon=0.2 - h)(x)) / (2 * h)
    torch.testing.assert_close(e.depsilon_energy(x), fd_eps, rtol=1e-6, atol=1e-6)
    ratio = 0.2 / 0.9
    fd_s = (LennardJonesCluster(7, 0.9 + h, epsilon=ratio * (0.9 + h))(x)
            - LennardJonesCluster(7, 0.9 - h, epsilon=ratio * (0.9 - h))(x)) / (2 * h)
    torch.testing.assert_close(e.ds_energy(x), fd_s, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="epsilon must be"):
        LennardJonesCluster(7, 1.0, epsilon=-0.1)


@pytest.mark.parametrize("s, eps", [(0.0, None), (0.6, None), (1.0, None), (1.0, 0.1)])
def test_score_matches_autograd_and_finite_differences(s, eps):
    energy = LennardJonesCluster(6, s, epsilon=eps)
    x = _configs(6, batch=3, seed=1)
    score = energy.score(x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(xg).sum(), xg)
    torch.testing.assert_close(score, -grad, rtol=1e-10, atol=1e-10)
    h, fd = 1e-6, torch.zeros_like(x)
    for k in range(x[0].numel()):
        e = torch.zeros(x[0].numel(), dtype=x.dtype)
        e[k] = h
        e = e.reshape(x.shape[1:])
        fd.view(3, -1)[:, k] = (energy(x + e) - energy(x - e)) / (2 * h)
    torch.testing.assert_close(score, -fd, rtol=1e-6, atol=1e-6)
    u, s2 = energy.energy_and_score(x)
    torch.testing.assert_close(u, energy(x))
    torch.testing.assert_close(s2, score)
    assert score.sum(1).abs().max() < 1e-10  # translation invariance: COM-free score


def test_translation_rotation_and_permutation_invariance():
    energy = LennardJonesCluster(9, 1.0)
    x = _configs(9, batch=4, seed=2)
    u, score = energy.energy_and_score(x)
    r = random_rotation(4, generator=_gen(3))
    perm = torch.randperm(9, generator=_gen(4))
    moved = x[:, perm] @ r.mT + torch.randn(4, 1, 3, generator=_gen(5), dtype=torch.float64)
    u2, score2 = energy.energy_and_score(moved)
    torch.testing.assert_close(u2, u, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(score2, score[:, perm] @ r.mT, rtol=1e-9, atol=1e-9)


def test_minimum_of_a_pair_and_dtype_device_follow_x():
    d = 2 ** (1 / 6)
    x = torch.tensor([[[0.0, 0.0, 0.0], [d, 0.0, 0.0]]])
    for dtype in (torch.float32, torch.float64):
        u = LennardJonesCluster(2, 1.0)(x.to(dtype))
        assert u.dtype == dtype
        assert abs(float(u) - (-2.0 + d**2 / 4)) < 1e-5   # two ordered pairs at −1 each
    assert LennardJonesCluster(2, 1.0).score(x).abs().max() < 1e-5 + d / 2  # only the trap


def test_singular_points_give_inf_or_finite_never_nan():
    x = _configs(4, batch=3, seed=6)
    x[0, 1] = x[0, 0]                        # coincident particles
    x[1, 2] = x[1, 3] + 1e-4                 # overflows (s/r)^12 in float32
    for dtype in (torch.float32, torch.float64):
        xd = x.to(dtype)
        u = LennardJonesCluster(4, 1.0)(xd)
        assert u[0] == math.inf and not torch.isnan(u).any()
        assert u[1] > 1e40 if dtype == torch.float64 else u[1] == math.inf
        assert torch.isfinite(LennardJonesCluster(4, 1.0).score(xd)).all()
        trap = LennardJonesCluster(4, 0.0)
        assert torch.isfinite(trap(xd)).all() and torch.isfinite(trap.score(xd)).all()
    tiny = LennardJonesCluster(4, 1e-8)(x)   # s -> 0: the LJ terms vanish except at r = 0
    assert tiny[0] == math.inf
    torch.testing.assert_close(tiny[1:], LennardJonesCluster(4, 0.0)(x)[1:], rtol=0,
                               atol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_particles"):
        LennardJonesCluster(1)
    with pytest.raises(ValueError, match="s must be"):
        LennardJonesCluster(5, -1.0)
    with pytest.raises(ValueError, match=r"\(batch, 5, 3\)"):
        LennardJonesCluster(5)(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="s = 0"):
        LennardJonesCluster(5, 1.0).sample(3)


# -- the trap: exact log Z and sampler ------------------------------------------------------------


def _radial_log_z(s: float) -> float:
    """log Z_s of 2 particles on the COM-free subspace: y = (x1 − x2)/√2 ∈ R³ (orthonormal)."""
    energy = LennardJonesCluster(2, s)

    def integrand(rho: float) -> float:
        x = torch.tensor([[[0.0, 0.0, 0.0], [math.sqrt(2) * rho, 0.0, 0.0]]],
                         dtype=torch.float64)
        return 4 * math.pi * rho**2 * math.exp(-float(energy(x)))

    lo = 0.5 / math.sqrt(2) if s > 0 else 0.0  # u > 4e4 kT below r = 0.5
    return math.log(quad(integrand, lo, 12.0, limit=200, points=[0.79, 1.0])[0])


def test_trap_log_z_by_quadrature_and_formula():
    trap = LennardJonesCluster(2, 0.0)
    assert trap.log_z() == pytest.approx(1.5 * math.log(2 * math.pi))
    assert _radial_log_z(0.0) == pytest.approx(trap.log_z(), rel=1e-10)
    assert LennardJonesCluster(13, 0.0).log_z() == pytest.approx(18 * math.log(2 * math.pi))
    assert LennardJonesCluster(13, 1.0).log_z() is None


def test_trap_samples_are_com_free_standard_normal_on_the_subspace():
    n, trap = 5, LennardJonesCluster(5, 0.0)
    x = trap.sample(40_000, _gen(7))
    assert x.shape == (40_000, n, 3) and x.sum(1).abs().max() < 1e-12
    u = trap(x)                                # ½|y|² of a d = 3(n − 1) standard normal
    d = 3 * (n - 1)
    z = (u.mean() - d / 2) / math.sqrt(d / 2 / len(u))
    assert abs(float(z)) < 4
    flat = x.reshape(len(x), -1)
    cov = flat.T @ flat / len(x)
    proj = torch.kron(torch.eye(n) - 1.0 / n, torch.eye(3)).double()
    assert torch.allclose(cov, proj, atol=0.03)


# -- sampling, the kind, the reference -------------------------------------------------------------


def test_hmc_samples_the_two_particle_distance_distribution():
    """HMC at s = 1 for 2 particles against the exact radial density (KS-like CDF check)."""
    energy = LennardJonesCluster(2, 1.0)
    spec = LJSpec(n_particles=2, n_chains=64, n_warmup=100, n_steps=300, n_leapfrog=5)
    x0 = initial_states(2, 1.0, 64, _gen(8))
    x, score, u, info = lj_hmc_samples(energy, 3000, spec._hmc_settings(), x0,
                                       generator=_gen(9), trajectory_length=1.0)
    assert x.shape == (3000, 2, 3) and x.sum(1).abs().max() < 1e-10
    torch.testing.assert_close(score, energy.score(x))
    torch.testing.assert_close(u, energy(x))
    rho = ((x[:, 0] - x[:, 1]).norm(dim=-1) / math.sqrt(2)).numpy()
    grid = np.linspace(0.55, 3.0, 400)

    def dens(r):
        y = torch.tensor([[[0.0, 0.0, 0.0], [math.sqrt(2) * r, 0.0, 0.0]]], dtype=torch.float64)
        return r**2 * math.exp(-float(energy(y)))

    p = np.array([dens(r) for r in grid])
    cdf = np.cumsum(p) / p.sum()
    emp = np.searchsorted(np.sort(rho), grid) / len(rho)
    assert np.abs(emp - cdf).max() < 1.63 / math.sqrt(len(rho) / (2 * info["tau_int_energy"]))


@pytest.mark.filterwarnings("ignore:HMC autocorrelation estimate is unreliable")
def test_kind_builds_a_com_free_problem_and_caches_b(tmp_path):
    assert KINDS["lj"] is LJSpec
    system = {"kind": "lj", "n_particles": 4, "n_samples_a": 50, "n_samples_b": 60,
              "n_chains": 16, "n_warmup": 30, "n_steps": 60, "cache_dir": str(tmp_path)}
    p1 = build_problem(system, _gen(0))
    assert p1.x_a.shape == (50, 4, 3) and p1.x_b.shape == (60, 4, 3)
    assert p1.metadata["com_free"] and p1.metadata["atom_types"] == [0, 0, 0, 0]
    for x, s, e in ((p1.x_a, p1.score_a, p1.energy_a), (p1.x_b, p1.score_b, p1.energy_b)):
        assert x.sum(1).abs().max() < 1e-10
        torch.testing.assert_close(s, e.score(x))
    assert (p1.energy_a.s, p1.energy_b.s) == (0.0, 1.0)
    assert len(list(tmp_path.glob("lj4-b-*.npz"))) == 1
    p2 = build_problem(system, _gen(0))      # same seed: read back from the cache
    torch.testing.assert_close(p2.x_b, p1.x_b)
    torch.testing.assert_close(p2.x_a, p1.x_a)
    with pytest.raises(ValueError, match="n_particles"):
        build_problem({**system, "n_particles": 1}, _gen(0))


@pytest.mark.filterwarnings("ignore:HMC autocorrelation estimate is unreliable")
def test_no_progress_silences_the_state_b_sampler(tmp_path, capfd):
    system = {"kind": "lj", "n_particles": 3, "n_samples_a": 20, "n_samples_b": 20,
              "n_chains": 8, "n_warmup": 10, "n_steps": 20, "cache_dir": str(tmp_path)}
    build_problem(system, _gen(0), progress=False)
    assert "HMC" not in capfd.readouterr().err
    build_problem({**system, "n_samples_b": 24}, _gen(0))          # default: a progress bar
    assert "HMC" in capfd.readouterr().err
    gaussian = build_problem({"kind": "gaussian", "dim": 2}, _gen(0), progress=False)
    assert gaussian.x_a.shape[1] == 2                                # kinds without a bar


def test_window_schedule():
    assert window_schedule(3) == [0.0, 0.5, 1.0]
    assert window_schedule(3, 2.0) == [0.0, 0.25, 1.0]
    with pytest.raises(ValueError, match="n_windows"):
        window_schedule(1)


def test_reference_path_one_and_two_legs():
    assert reference_path(3, 2.0) == [(0.0, 0.0, 0.0), (0.25, 0.25, 0.25), (1.0, 1.0, 1.0)]
    path = reference_path(8, 0.5, 0.09, 3)
    t, s, eps = (np.array(v) for v in zip(*path, strict=True))
    assert path[0] == (0.0, 0.0, 0.0) and path[-1] == (2.0, 1.0, 1.0)   # the end states exactly
    np.testing.assert_allclose(s[:5], window_schedule(5, 0.5))
    assert (s[5:] == 1.0).all()
    np.testing.assert_allclose(eps[:5], 0.09 * s[:5])                     # leg 1: ε = ε₀ s
    np.testing.assert_allclose(np.diff(np.sqrt(eps[4:])), 0.7 / 3)      # leg 2: √ε uniform
    np.testing.assert_allclose(t[4:], [1.0, 4 / 3, 5 / 3, 2.0])
    for args, match in (((8, 0.5, 0.1, 0), "epsilon_windows"), ((8, 0.5, 1.0, 2), "epsilon_w"),
                        ((8, 0.5, 0.0, 2), "window_epsilon"), ((3, 0.5, 0.1, 2), "exceed")):
        with pytest.raises(ValueError, match=match):
            reference_path(*args)
    with pytest.raises(ValueError, match="epsilon_windows"):
        LJSpec(window_epsilon=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("legs", [{}, {"window_epsilon": 0.1, "epsilon_windows": 3}])
def test_reference_matches_two_particle_quadrature(legs, tmp_path):
    exact = -(_radial_log_z(1.0) - _radial_log_z(0.0))
    spec = LJSpec(n_particles=2, n_chains=64, n_warmup=100, n_steps=200, n_leapfrog=5,
                  cache_dir=str(tmp_path), **legs)
    config = ReferenceConfig(n_windows=8, n_samples=2000, n_bootstrap=0)
    ladder = spec.mbar_reference(config, progress=False)
    res = ladder.mbar
    assert len(list(tmp_path.glob("lj2-window-*.npz"))) == 7    # every HMC window is cached
    again = spec.mbar_reference(config, progress=False)           # read back: the same ΔF
    assert again.mbar.delta_f == res.delta_f
    end = 2.0 if legs else 1.0
    assert ladder.parameter == ("path" if legs else "s")
    assert ladder.values[0] == 0.0 and ladder.values[-1] == end
    assert abs(res.delta_f - exact) < 4 * res.sigma + 0.01, (res.delta_f, exact, res.sigma)


def test_lj_pair_and_training_config_accepts_the_coupling():
    ua, ub = lj_pair(13)
    assert ua.is_trap and ub.s == 1.0
    assert TrainingConfig(coupling="perm_kabsch_ot").coupling == "perm_kabsch_ot"


# -- EGNN with identical particles ----------------------------------------------------------------


def test_egnn_is_permutation_equivariant_for_equal_atom_types():
    torch.manual_seed(0)
    net = EGNNField([0] * 13, hidden=32, depth=3)
    for layer in net.layers:  # O(1) coordinate updates, so the check is not trivially small
        torch.nn.init.normal_(layer.coord[-1].weight, std=0.3)
    x = _configs(13, batch=4, seed=10).float()
    t = torch.rand(4, generator=_gen(11))
    perm = torch.randperm(13, generator=_gen(12))
    with torch.no_grad():
        v, v_perm = net(t, x), net(t, x[:, perm])
    assert v.abs().mean() > 1e-2
    torch.testing.assert_close(v_perm, v[:, perm], rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:HMC autocorrelation estimate is unreliable")
def test_trainer_with_perm_kabsch_ot_on_an_lj_problem(tmp_path):
    from feat.interpolants import Interpolant
    from feat.interpolants.alignment import remove_com
    from feat.training.trainer import Trainer

    system = {"kind": "lj", "n_particles": 5, "n_samples_a": 40, "n_samples_b": 40,
              "n_chains": 8, "n_warmup": 20, "n_steps": 60, "cache_dir": str(tmp_path)}
    problem = build_problem(system, _gen(1))
    torch.manual_seed(0)
    b, s = (EGNNField(problem.metadata["atom_types"], hidden=8, depth=1) for _ in range(2))
    trainer = Trainer(problem, b, s, TrainingConfig(steps=2, batch_size=8,
                                                    coupling="perm_kabsch_ot"),
                      Interpolant(noise_projection=remove_com), _gen(2))
    ref = remove_com(problem.x_b[:1])[0].float()
    torch.testing.assert_close(trainer._x_b[0], ref)                   # aligned onto x_b[0]
    assert trainer._x_a.sum(1).abs().max() < 1e-5
    ua = problem.energy_a(trainer._x_a.double())                      # invariant energies:
    torch.testing.assert_close(ua, problem.energy_a(problem.x_a), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(trainer._s_b, problem.energy_b.score(trainer._x_b.double()).float(),
                               rtol=1e-4, atol=1e-3)                  # scores moved along
    records = trainer.train(progress=False)
    assert trainer.step == 2 and trainer.n_skipped == 0
    assert all(math.isfinite(v) for r in records for v in r.losses.values())
