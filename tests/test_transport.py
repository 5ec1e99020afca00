"""Transport and works: exact Gaussian cases, path recomputation, reversal, bad input."""

import math

import pytest
import torch

from feat.estimators import estimate
from feat.fields import Field
from feat.transport import (
    ODEProcess,
    SDEProcess,
    TimeGrid,
    forward_and_reverse,
    path_work,
    transport,
)

from .gaussians import exact_fields, gaussian_pair


class Zero(Field):
    def field(self, t, x):
        return torch.zeros_like(x)


class Linear(Field):
    """b(t, x) = A x, with a known Jacobian."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def field(self, t, x):
        return x @ self.a.T.to(x)


def _run(process, ga, gb, n, grid, seed):
    g = torch.Generator().manual_seed(seed)
    f, r = forward_and_reverse(process, ga.sample(n, g), gb.sample(n, g), grid, generator=g)
    return estimate(f.work, r.work, n_bootstrap=0), f, r


def test_exact_fields_give_exact_delta_f_and_sigma_shrinks_with_grid():
    ga, gb, exact = gaussian_pair(d=3)
    b, s = exact_fields(ga, gb)
    p = SDEProcess(b, s, 0.1, ga, gb)
    for n_points in (6, 100):
        ests = [_run(p, ga, gb, 1000, TimeGrid.uniform(n_points), seed=k)[0] for k in range(8)]
        z = torch.tensor([(e.delta_f - exact) / e.sigma for e in ests])
        assert abs(z.mean().item()) * math.sqrt(len(z)) < 3, z  # pooled z-score of 8 runs
        assert z.abs().max() < 4, z
        if n_points == 6:
            coarse = ests
    assert max(e.sigma for e in ests) < 0.5 * min(e.sigma for e in coarse)
    assert all(e.bounds.lower <= exact <= e.bounds.upper for e in ests)


def test_accumulated_work_equals_work_recomputed_from_stored_path():
    ga, gb, _ = gaussian_pair(d=3)
    b, s = exact_fields(ga, gb)
    p = SDEProcess(b, s, 0.05, ga, gb)
    grid = TimeGrid.ends_refined(30)
    g = torch.Generator().manual_seed(3)
    for proc, x0, gr in (
        (p, ga.sample(50, g), grid),
        (p.reversed(), gb.sample(40, g), grid.reversed()),
    ):
        res = transport(proc, x0, gr, generator=g, store_path=True, batch_size=16)
        assert res.path.shape == (x0.shape[0], 30, 3) and res.work.dtype == torch.float64
        again = path_work(proc, res.path, gr)
        torch.testing.assert_close(again, res.work, rtol=1e-10, atol=1e-10)


def test_zero_fields_are_still_unbiased_but_noisier():
    ga, gb, exact = gaussian_pair(d=2, shift=0.5)
    zero = SDEProcess(Zero(), Zero(), 0.05, ga, gb)
    b, s = exact_fields(ga, gb)
    good = SDEProcess(b, s, 0.05, ga, gb)
    grid = TimeGrid.uniform(20)
    est0, _, _ = _run(zero, ga, gb, 3000, grid, seed=4)
    est1, _, _ = _run(good, ga, gb, 3000, grid, seed=5)
    assert abs(est0.delta_f - exact) < 3 * est0.sigma, est0.summary()
    assert est0.sigma > 2 * est1.sigma
    assert est0.bounds.gap > 2 * est1.bounds.gap


def test_reverse_of_reverse_is_forward_and_reversed_fields():
    ga, gb, _ = gaussian_pair(d=2)
    b, s = exact_fields(ga, gb)
    p = SDEProcess(b, s, 0.1, ga, gb)
    r = p.reversed()
    assert r.reversed() is p and r.energy_start is gb and r.energy_end is ga
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(r.velocity(0.3, x), -b(0.7, x))
    torch.testing.assert_close(r.score(0.3, x), s(0.7, x))
    assert r.velocity.inner is b and r.score.inner is s
    assert TimeGrid.uniform(7).reversed().reversed().times.allclose(TimeGrid.uniform(7).times)


def test_ode_exact_divergence_matches_linear_flow_and_is_exact_one_sided():
    ga, gb, exact = gaussian_pair(d=2)
    a = torch.tensor([[0.3, -0.2], [0.1, 0.5]], dtype=torch.float64)
    p = ODEProcess(Linear(a), ga, gb)
    x = torch.randn(4, 2, dtype=torch.float64)
    dw, _ = p.log_ratio(0.0, 0.1, x, x, p.init_state(0.0, x))
    expected = -torch.logdet(torch.eye(2, dtype=torch.float64) + 0.1 * a)
    torch.testing.assert_close(dw, expected.expand(4))
    b, _ = exact_fields(ga, gb)
    est, f, r = _run(ODEProcess(b, ga, gb), ga, gb, 1000, TimeGrid.uniform(50), seed=6)
    assert abs(est.forward.delta_f - exact) < 3 * est.forward.sigma + 1e-3
    assert abs(est.reverse.delta_f - exact) < 3 * est.reverse.sigma + 1e-3
    hutch = ODEProcess(b, ga, gb, divergence="hutchinson")
    res = transport(hutch, ga.sample(10, torch.Generator().manual_seed(0)), TimeGrid.uniform(5))
    assert "hutchinson" in res.process and torch.isfinite(res.work).all()


@pytest.mark.parametrize("eps", [0.0, -0.1, math.nan, math.inf])
def test_sde_rejects_nonpositive_eps(eps):
    ga, gb, _ = gaussian_pair(d=2)
    with pytest.raises(ValueError, match="eps must be"):
        SDEProcess(Zero(), Zero(), eps, ga, gb)


@pytest.mark.parametrize(
    "times,match",
    [
        ([0.0, 0.5, 0.5, 1.0], "strictly increasing"),
        ([0.0, 0.6, 0.4, 1.0], "strictly increasing"),
        ([0.1, 1.0], "start at 0"),
        ([0.0], "at least 2"),
    ],
)
def test_grid_rejects_bad_times(times, match):
    with pytest.raises(ValueError, match=match):
        TimeGrid(torch.tensor(times))


def test_transport_rejects_wrong_sample_shape():
    ga, gb, _ = gaussian_pair(d=3)
    p = SDEProcess(Zero(), Zero(), 0.1, ga, gb)
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, 3\); got \(5, 2\)"):
        transport(p, torch.zeros(5, 2), TimeGrid.uniform(3))


def test_exact_mixture_fields_transport_a_multimodal_pair():
    from feat.energies.analytic import GaussianMixture
    from feat.fields.exact import (
        GaussianMixtureInterpolantScore,
        GaussianMixtureInterpolantVelocity,
    )
    from feat.interpolants import LinearSchedule

    ea = GaussianMixture(torch.tensor([[-1.0, -1.0], [1.0, 0.5], [0.0, 1.5]]), 0.3)
    eb = GaussianMixture(torch.tensor([[1.0, -1.0], [-0.5, 1.0]]), 0.2, torch.tensor([1.0, 2.0]))
    sch = LinearSchedule()
    b = GaussianMixtureInterpolantVelocity(ea, eb, sch)
    s = GaussianMixtureInterpolantScore(ea, eb, sch)
    x = ea.sample(5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(s(0.0, x), ea.score(x))  # exact at the ends
    est, _, _ = _run(SDEProcess(b, s, 0.05, ea, eb), ea, eb, 1000, TimeGrid.uniform(200), seed=7)
    assert abs(est.delta_f) < 3 * est.sigma, est.summary()
    assert est.bounds.gap < 0.5, est.summary()


def test_reverse_ode_is_the_exact_inverse_of_the_forward_map():
    ga, gb, _ = gaussian_pair(d=2)
    b, _ = exact_fields(ga, gb)
    p = ODEProcess(b, ga, gb)
    grid = TimeGrid.ends_refined(25)
    x0 = ga.sample(20, torch.Generator().manual_seed(1))
    fwd = transport(p, x0, grid)
    rev = transport(p.reversed(), fwd.x_end, grid.reversed())
    torch.testing.assert_close(rev.x_end, x0, rtol=0, atol=1e-8)
    torch.testing.assert_close(rev.work, -fwd.work, rtol=0, atol=1e-8)
    assert "implicit" in repr(p.reversed()) and p.reversed().reversed() is p


def test_reverse_ode_converges_with_a_float32_network():
    """A float32 network resolves y only to ~1e-7 relative: the implicit reverse step must
    stop at that round-off instead of chasing tol = 1e-10 forever, and still invert."""
    ga, gb, _ = gaussian_pair(d=2)
    exact, _ = exact_fields(ga, gb)

    class Float32(Field):
        event_shape = (2,)

        def field(self, t, x):  # float32 inside, float64 out (as the networks do)
            return exact(t.float(), x.float()).to(x.dtype)

    _assert_reverse_inverts_forward(ODEProcess(Float32(), ga, gb), ga, TimeGrid.uniform(50),
                                    atol_x=1e-6, atol_work=1e-5)


def test_reverse_ode_inverts_stiff_steps_where_fixed_point_iteration_diverges():
    """h·Lip(b) ≈ 3 to 4: the fixed-point iteration of the implicit step diverges, Newton's
    method (with the Jacobian the exact divergence needs anyway) still inverts the forward map."""
    ga, gb, _ = gaussian_pair(d=2)

    class Stiff(Field):
        event_shape = (2,)

        def field(self, t, x):  # b = −k(t) x + a twist, k h > 1 on a 5-point grid
            k = (12.0 + 3.6 * t)[:, None].to(x.dtype)
            return -k * x + 0.5 * torch.sin(x.flip(-1))

    _assert_reverse_inverts_forward(ODEProcess(Stiff(), ga, gb), ga, TimeGrid.uniform(5),
                                    atol_x=1e-8, atol_work=1e-8)


def _assert_reverse_inverts_forward(p, ga, grid, atol_x, atol_work):
    """The reverse ODE maps the forward ends back to the starts, with negated works."""
    x0 = ga.sample(20, torch.Generator().manual_seed(1))
    fwd = transport(p, x0, grid)
    rev = transport(p.reversed(), fwd.x_end, grid.reversed())
    torch.testing.assert_close(rev.x_end, x0, rtol=0, atol=atol_x)
    torch.testing.assert_close(rev.work, -fwd.work, rtol=0, atol=atol_work)


def test_seeded_chunks_make_any_shard_reproduce_the_full_run():
    ga, gb, _ = gaussian_pair(d=2)
    b, s = exact_fields(ga, gb)
    p = SDEProcess(b, s, 0.1, ga, gb)
    x0 = ga.sample(23, torch.Generator().manual_seed(0))
    full = transport(p, x0, TimeGrid.uniform(5), seed=11, batch_size=5)
    shards = [transport(p, x0, TimeGrid.uniform(5), seed=11, batch_size=5, chunks=range(k, 5, 2))
              for k in (0, 1)]
    index = torch.cat([r.index for r in shards])
    work = torch.cat([r.work for r in shards])
    assert sorted(index.tolist()) == list(range(23))
    torch.testing.assert_close(work[torch.argsort(index)], full.work, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs seed"):
        transport(p, x0, TimeGrid.uniform(5), chunks=[0])


def test_start_rows_cycle_over_the_start_samples():
    from feat.transport import n_starts, start_rows

    assert n_starts(10, 3) == 4 and n_starts(9, 3) == 3 and n_starts(0, 2) == 0
    assert start_rows(10, 3).tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert start_rows(5, 1).tolist() == list(range(5)) and start_rows(0, 4).numel() == 0
    with pytest.raises(ValueError, match="int >= 1"):
        n_starts(5, 0)


def test_pipeline_starts_several_trajectories_per_held_out_sample(tmp_path):
    """``trajectories_per_start = 4``: ⌈n / 4⌉ samples are held out (the rest train), the works
    count n trajectories, and the estimate (also as ``feat report`` recomputes it) carries the
    start counts and the bootstrap-over-starts σ."""
    from feat.config import resolve
    from feat.pipeline import run_problem, split_holdout
    from feat.report import load_run
    from feat.specs import build_problem

    config = resolve({"system": {"kind": "gaussian", "dim": 2, "n_samples_a": 100,
                                 "n_samples_b": 100},
                      "fields": {"hidden": 8, "depth": 1},
                      "training": {"steps": 5, "batch_size": 8},
                      "transport": {"eps": 0.1, "n_points": 5, "n_forward": 40, "n_reverse": 30,
                                    "trajectories_per_start": 4},
                      "estimate": {"n_bootstrap": 20}})
    problem = build_problem(config.system, torch.Generator().manual_seed(0))
    train, x_a, x_b = split_holdout(problem, config)
    assert (len(x_a), len(x_b), len(train.x_a), len(train.x_b)) == (10, 8, 90, 92)
    est = run_problem(problem, config, tmp_path, progress=False).estimate
    assert (est.n_f, est.n_r, est.n_starts) == (40, 30, (10, 8))
    assert est.sigma >= est.sigma_bootstrap
    record = load_run(tmp_path)
    assert record.mismatches == () and record.estimate.n_starts == (10, 8)
