"""Non-equilibrium switching: exact Gaussian ΔF, FEP limit, reversal, +inf energies, budget."""

import dataclasses
import math

import pytest
import torch

from feat.baselines import (
    SwitchingProtocol,
    SwitchingSettings,
    evaluations_per_trajectory,
    run_switching,
    steps_for_budget,
    switch,
    tune_step_sizes,
)
from feat.config import ConfigError
from feat.energies.base import FunctionEnergy
from feat.estimators import estimate, jarzynski_forward
from feat.problem import TwoStateProblem

from .gaussians import gaussian_pair


def _problem(n=2600, d=3, seed=0):
    ga, gb, exact = gaussian_pair(d=d, seed=seed, shift=1.0)
    g = torch.Generator().manual_seed(seed + 10)
    return TwoStateProblem(ga, gb, ga.sample(n, g), gb.sample(n, g), reference=exact), exact


@pytest.mark.parametrize("n_leapfrog", [1, 3])
def test_gaussian_delta_f_within_3_sigma_of_exact(n_leapfrog):
    problem, exact = _problem()
    s = SwitchingSettings(n_steps=10, n_moves=2, n_leapfrog=n_leapfrog, n_pilot=100,
                          n_forward=2000, n_reverse=2000, n_bootstrap=0)
    run = run_switching(problem, s, seed=1)
    est = run.estimate
    assert est.method == "BAR" and est.reference == exact
    assert abs(est.z) < 3, est.summary()
    for one_sided in (est.forward, est.reverse):  # each direction alone is exact too
        assert abs(one_sided.delta_f - exact) < 3 * one_sided.sigma + 1e-3, est.summary()
    assert est.bounds.lower <= exact <= est.bounds.upper
    acc = run.forward.acceptance
    assert torch.isfinite(acc).all() and 0.3 < acc.mean() < 0.9  # the pilot tuned ε
    assert run.forward.n_moves_total == 2000 * 10 * 2


def test_fixed_step_size_is_exact_too_even_when_poor():
    problem, exact = _problem()
    s = SwitchingSettings(n_steps=8, n_moves=1, step_size=2.5, adapt=False, n_forward=2000,
                          n_reverse=2000, n_bootstrap=0)
    run = run_switching(problem, s, seed=2)
    assert run.forward.acceptance.mean() < 0.3  # mostly rejected, still exact
    assert abs(run.estimate.z) < 3, run.estimate.summary()


def test_zero_moves_is_free_energy_perturbation():
    ga, gb, _ = gaussian_pair(d=3)
    x = ga.sample(500, torch.Generator().manual_seed(0))
    proto = SwitchingProtocol.uniform(ga, gb, n_steps=7, n_moves=0)
    res = switch(proto, x, seed=0, batch_size=128)
    fep = (gb(x) - ga(x)).to(torch.float64)
    torch.testing.assert_close(res.work, fep, rtol=1e-12, atol=1e-12)
    assert torch.equal(res.x_end, x.to(torch.float64))
    expected = -(torch.logsumexp(-fep, 0) - math.log(len(fep))).item()
    assert jarzynski_forward(res.work).delta_f == pytest.approx(expected, abs=1e-12)
    assert torch.isnan(res.acceptance).all() and res.n_moves_total == 0


def test_reversing_twice_is_the_forward_protocol():
    ga, gb, _ = gaussian_pair(d=2)
    fwd = SwitchingProtocol.uniform(ga, gb, n_steps=5, n_moves=2)
    rev = fwd.reversed()
    assert rev.lambdas[0].item() == 1.0 and rev.lambdas[-1].item() == 0.0
    assert rev != fwd and rev.reversed() == fwd
    x = ga.sample(64, torch.Generator().manual_seed(1))
    w1 = switch(fwd, x, step_size=0.3, seed=4).work
    w2 = switch(rev.reversed(), x, step_size=0.3, seed=4).work
    assert torch.equal(w1, w2)


def test_reverse_with_zero_moves_is_reverse_fep():
    ga, gb, _ = gaussian_pair(d=2)
    x = gb.sample(100, torch.Generator().manual_seed(2))
    rev = SwitchingProtocol.uniform(ga, gb, n_steps=4, n_moves=0).reversed()
    torch.testing.assert_close(switch(rev, x).work, (ga(x) - gb(x)).double())


def _box(lo, hi):
    """Uniform density on [lo, hi] (1-D): u = 0 inside, +inf outside; log Z = log(hi − lo)."""

    def fn(x):
        inside = (x[:, 0] >= lo) & (x[:, 0] <= hi)
        return torch.where(inside, 0.0 * x[:, 0], torch.full_like(x[:, 0], math.inf))

    return FunctionEnergy(fn, 1, log_z=math.log(hi - lo))


def test_infinite_energies_give_infinite_works_not_nan():
    # a = U[0, 2], b = U[0, 1]: ΔF = −log(1/2) = log 2; half of a's samples leave b's support.
    ua, ub = _box(0.0, 2.0), _box(0.0, 1.0)
    x = 2 * torch.rand(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = switch(SwitchingProtocol.uniform(ua, ub, 4, n_moves=0), x, seed=0)
    assert not torch.isnan(res.work).any()
    assert torch.equal(torch.isposinf(res.work), x[:, 0] > 1.0)
    est = estimate(res.work, n_bootstrap=0, reference=math.log(2.0))
    assert abs(est.z) < 3 and est.forward.n_posinf == int((x[:, 0] > 1).sum())
    # with moves: interior λ states are also +inf outside [0, 1]; moves there are rejected
    res = switch(SwitchingProtocol.uniform(ua, ub, 4, n_moves=2), x, step_size=0.3, seed=0)
    assert not torch.isnan(res.work).any() and bool(torch.isposinf(res.work).any())


def test_start_samples_of_infinite_energy_are_rejected():
    ua, ub = _box(0.0, 1.0), _box(0.0, 2.0)
    x = torch.tensor([[0.5], [1.5]], dtype=torch.float64)
    with pytest.raises(ValueError, match="finite energy"):
        switch(SwitchingProtocol.uniform(ua, ub, 2), x)


def test_pilot_schedule_does_not_depend_on_production_and_is_reproducible():
    ga, gb, _ = gaussian_pair(d=3)
    proto = SwitchingProtocol.uniform(ga, gb, 6, n_moves=1)
    pilot = ga.sample(50, torch.Generator().manual_seed(5))
    e1 = tune_step_sizes(proto, pilot, generator=torch.Generator().manual_seed(0))
    e2 = tune_step_sizes(proto, pilot, generator=torch.Generator().manual_seed(0))
    assert torch.equal(e1, e2) and e1.shape == (6,) and (e1 > 0).all()


def test_bad_arguments_name_the_fix():
    ga, gb, _ = gaussian_pair(d=2)
    with pytest.raises(ValueError, match="from 0 to 1"):
        SwitchingProtocol(ga, gb, [0.0, 0.5])
    with pytest.raises(ValueError, match="monotone"):
        SwitchingProtocol(ga, gb, [0.0, 0.7, 0.5, 1.0])
    with pytest.raises(ValueError, match="step_size"):
        switch(SwitchingProtocol.uniform(ga, gb, 3), ga.sample(4), step_size=[0.1, 0.2])
    with pytest.raises(ConfigError, match="did you mean|Did you mean"):
        SwitchingSettings.from_mapping({"n_step": 3})
    problem, _ = _problem(n=50)
    with pytest.raises(ValueError, match="pilot"):
        run_switching(problem, SwitchingSettings(n_forward=40, n_pilot=20))


def test_budget_arithmetic():
    s = SwitchingSettings(n_steps=1, n_moves=2, n_leapfrog=1, n_pilot=10, n_warmup=5,
                          n_forward=100, n_reverse=50)
    n = steps_for_budget(100_000, s)
    chains = 150 + 20
    total = lambda k: 2 * chains * (1 + 2 * k) + 2 * 20 * 5  # noqa: E731
    assert total(n) <= 100_000 < total(n + 1)
    assert evaluations_per_trajectory(SwitchingSettings(n_steps=n, n_moves=2)) == 2 * (1 + 2 * n)


def test_shared_start_samples_stay_exact_with_an_honest_sigma():
    """Four trajectories per start sample: 250 start samples per direction, σ from the
    bootstrap over starts, exact ΔF within 3 σ; too few samples name the fix."""
    problem, exact = _problem(n=400)
    s = SwitchingSettings(n_steps=6, n_moves=1, n_pilot=100, n_forward=1000, n_reverse=1000,
                          n_bootstrap=100, trajectories_per_start=4)
    run = run_switching(problem, s, seed=3)
    est = run.estimate
    assert est.n_f == est.n_r == 1000 and est.n_starts == (250, 250)
    assert est.sigma >= est.sigma_bootstrap and abs(est.z) < 3, est.summary()
    # trajectory i starts from start row i mod 250: the last 250 samples of each state
    assert torch.equal(run.forward.x_start[:250], problem.x_a[150:])
    assert torch.equal(run.forward.x_start[250:500], problem.x_a[150:])
    with pytest.raises(ValueError, match="raise trajectories_per_start"):
        run_switching(problem, dataclasses.replace(s, trajectories_per_start=2), seed=3)
