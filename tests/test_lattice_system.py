"""Lattice system kinds: valid problems, exact free-field samples, the HMC sample cache, and an
end-to-end pipeline run on a free-field pair against its exact ΔF."""

import math
import os

import pytest
import torch

import feat.specs.lattice as lattice_specs
from feat.config import ConfigError, resolve
from feat.energies.bias import Biased, HarmonicUmbrella
from feat.energies.lattice import Phi4, magnetisation
from feat.pipeline import run
from feat.sampling import integrated_autocorrelation_time
from feat.specs import build_problem
from feat.specs.lattice import FreeFieldPairSpec, Phi4UmbrellaSpec, sample_free_field


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _umbrella_system(cache_dir, **kw):
    system = {"kind": "phi4_umbrella", "shape": [3, 3], "n_samples_a": 60, "n_samples_b": 50,
              "n_chains": 8, "n_warmup": 30, "n_steps": 40, "n_leapfrog": 4, "thin": 2,
              "cache_dir": str(cache_dir)}
    return {**system, **kw}


def _z(x, exact):
    est = integrated_autocorrelation_time(x[:, None])
    return (est.mean - exact) / est.stderr


# -- free fields ----------------------------------------------------------------------------------

def test_free_field_samples_have_exact_moments():
    base = Phi4.from_mass((4, 6), m2=0.7, lam=0.0, h=0.1)
    x = sample_free_field(base, 20000, _gen(0))
    assert x.shape == (20000, 4, 6) and x.dtype == torch.float64
    assert abs(_z((x ** 2).flatten(1).mean(1), base.exact_phi2())) < 3.0
    assert abs(_z(base(x), 24 / 2 - 0.5 * 24 * 0.1 ** 2 / 1.4)) < 3.0   # <u> = V/2 - V h^2/2l0
    u = Biased(base, HarmonicUmbrella(magnetisation, 10.0, 0.6))
    m = magnetisation(sample_free_field(u, 20000, _gen(1)))
    exact = (0.1 + 10.0 * 0.6 / 24) / (2 * 0.7 + 10.0 / 24)    # (h + k c / V) / lambda_0'
    assert abs(_z(m, exact)) < 3.0
    assert abs(_z(m ** 2, exact ** 2 + 1 / (24 * (1.4 + 10 / 24)))) < 3.0


def test_free_field_pair_problem():
    problem = build_problem({"kind": "free_field_pair", "shape": [4, 4], "m2_a": 1.0,
                             "m2_b": 0.5, "h_b": 0.2, "n_samples_a": 30, "n_samples_b": 20},
                            _gen(0))
    ea, eb = problem.energy_a, problem.energy_b
    assert problem.x_a.shape == (30, 4, 4) and problem.x_b.shape == (20, 4, 4)
    assert problem.reference == pytest.approx(-(eb.log_z() - ea.log_z()))
    assert ea.params.m2 == 1.0 and eb.params.h == 0.2 and ea.is_free and eb.is_free
    with pytest.raises(ConfigError, match="m2_b must be > 0"):
        build_problem({"kind": "free_field_pair", "m2_b": 0.0}, _gen(0))
    with pytest.raises(ConfigError, match="shape must be a list of 1 to 3 positive ints"):
        build_problem({"kind": "free_field_pair", "shape": [4, 0]}, _gen(0))
    with pytest.raises(ValueError, match="must be a free Phi4"):
        sample_free_field(Phi4.from_mass((3,), -1.0, 0.8), 3, _gen(0))


# -- phi^4 umbrellas and the cache ----------------------------------------------------------------

def test_phi4_umbrella_problem_is_valid(tmp_path):
    problem = build_problem(_umbrella_system(tmp_path, reference=1.25), _gen(0))
    assert problem.x_a.shape == (60, 3, 3) and problem.x_b.shape == (50, 3, 3)
    assert problem.reference == 1.25 and problem.event_shape == (3, 3)
    ea, eb = problem.energy_a, problem.energy_b
    assert (ea.bias.center, eb.bias.center, ea.bias.k) == (-0.3, 0.6, 10.0)
    assert ea.base.params.m2 == -1.0 and ea.base.params.lam == 0.8
    torch.testing.assert_close(problem.score_a, ea.score(problem.x_a))
    torch.testing.assert_close(problem.score_b, eb.score(problem.x_b))
    assert problem.metadata["hmc"]["a"]["hmc"]["thin"] == 2
    # one round per state: 8 chains × (30 warm-up + 40) iterations × 4 leapfrog gradients
    assert problem.metadata["sampling_cost"] == {"sampling_steps": 2 * 8 * 70,
                                                 "gradient_evals": 2 * (8 + 8 * 70 * 4)}
    assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == ["a", "b"]
    assert build_problem(_umbrella_system(tmp_path), _gen(0)).reference is None


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    first = build_problem(_umbrella_system(tmp_path), gen := _gen(0))
    after_first = torch.rand(1, generator=gen)
    files = {p.name: os.stat(p).st_mtime_ns for p in tmp_path.iterdir()}

    def no_sampling(*args, **kwargs):
        raise AssertionError("HMC ran although the cache holds these samples")

    with monkeypatch.context() as m:
        m.setattr(lattice_specs, "hmc_samples", no_sampling)
        second = build_problem(_umbrella_system(tmp_path), gen := _gen(0))
    assert torch.equal(first.x_a, second.x_a) and torch.equal(first.score_b, second.score_b)
    assert torch.equal(torch.rand(1, generator=gen), after_first)   # same generator state
    assert {p.name: os.stat(p).st_mtime_ns for p in tmp_path.iterdir()} == files

    changed = build_problem(_umbrella_system(tmp_path, center_b=0.5), _gen(0))
    assert torch.equal(changed.x_a, first.x_a)                       # state a unchanged
    assert not torch.equal(changed.x_b, first.x_b)
    assert len(list(tmp_path.iterdir())) == 3
    build_problem(_umbrella_system(tmp_path, n_leapfrog=5), _gen(0))  # HMC setting: both
    build_problem(_umbrella_system(tmp_path), _gen(1))                # another seed: both
    assert len(list(tmp_path.iterdir())) == 7
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_stale_file_under_the_same_name_is_ignored(tmp_path):
    spec = Phi4UmbrellaSpec(**{k: v for k, v in _umbrella_system(tmp_path).items()
                               if k != "kind"})
    seed = int(torch.randint(0, 2**62, (2,), generator=_gen(0))[0])
    path = spec.cache_path("a", seed)
    lattice_specs.save_samples(path, torch.zeros(60, 3, 3), metadata={"key": "other"})
    with pytest.warns(UserWarning, match="does not match"):
        problem = spec.build(_gen(0))
    assert problem.x_a.abs().sum() > 0


def test_phi4_umbrella_validation(tmp_path):
    for bad, match in (({"n_chains": 0}, "n_chains must be an int >= 1"),
                       ({"step_size": -1.0}, "step_size must be"),
                       ({"shape": [3, 3, 3, 3]}, "shape must be a list"),
                       ({"centre_a": 0.1}, "Did you mean 'center_a'")):
        with pytest.raises(ConfigError, match=match):
            build_problem(_umbrella_system(tmp_path, **bad), _gen(0))


# -- end to end -----------------------------------------------------------------------------------

def test_pipeline_on_free_field_pair_matches_exact():
    config = resolve({
        "seed": 0,
        "system": {"kind": "free_field_pair", "shape": [4, 4], "m2_a": 1.0, "m2_b": 0.5,
                   "h_b": 0.2, "n_samples_a": 1500, "n_samples_b": 1500},
        "fields": {"hidden": 64, "depth": 2},
        "training": {"steps": 300, "batch_size": 128},
        "transport": {"eps": 0.05, "n_points": 50, "n_forward": 500, "n_reverse": 500},
        "estimate": {"n_bootstrap": 50}})
    est = run(config, None, progress=False).estimate
    exact = FreeFieldPairSpec([4, 4], 1.0, 0.5, 0.0, 0.2).build(_gen(0)).reference
    assert est.reference == pytest.approx(exact) and abs(exact) > 1.0
    assert abs(est.delta_f - exact) < 3.0 * est.sigma, est.summary()
    assert math.isfinite(est.bounds.gap) and est.bounds.gap >= 0
