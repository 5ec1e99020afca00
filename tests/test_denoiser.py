"""Field parameterisations that use the end states: the denoiser score (exact for isotropic
Gaussians with a network of t only) and the energy features (exact derivatives for the ODE)."""

import pytest
import torch

from feat import FunctionEnergy
from feat.config import ConfigError, FieldsConfig
from feat.energies.analytic import Gaussian, GaussianMixture
from feat.fields import (
    DenoiserScore,
    EnergyFeatures,
    EnergyInformedScore,
    EnergyInformedVelocity,
    Field,
    MLPField,
    Tube,
    characteristic_width,
)
from feat.interpolants import LinearSchedule, TrigonometricSchedule
from feat.transport import ODEProcess
from tests.gaussians import exact_fields

D = 5


class OfTime(Field):
    """A 'network' that ignores x: ``f(t)`` broadcast to the batch."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def field(self, t, x):
        return self.f(t).to(x.dtype)


def isotropic_pair():
    eye = torch.eye(D, dtype=torch.float64)
    ga = Gaussian(torch.linspace(-1, 1, D, dtype=torch.float64), 0.3**2 * eye)
    gb = Gaussian(torch.full((D,), 2.0, dtype=torch.float64), 0.05**2 * eye)
    return ga, gb


@pytest.mark.parametrize("schedule", [LinearSchedule(a=0.05), TrigonometricSchedule(a=0.2)])
def test_denoiser_score_is_exact_for_gaussians_with_a_network_of_t_only(schedule):
    ga, gb = isotropic_pair()
    _, s_exact = exact_fields(ga, gb, schedule)

    def mean(t):
        c = schedule(t.double())
        return c.alpha[:, None] * ga.mean + c.beta[:, None] * gb.mean

    score = DenoiserScore(OfTime(mean), schedule, 0.3, 0.05)
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(30, generator=g)]).double()
    x = 2 * torch.randn(32, D, generator=g, dtype=torch.float64)
    torch.testing.assert_close(score(t, x), s_exact(t, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule", [LinearSchedule(a=0.05), TrigonometricSchedule(a=0.2)])
def test_tube_prior_with_a_zero_network_is_the_exact_gaussian_velocity_and_score(schedule):
    """One feature per state: the tube is the whole interpolant, so the prior alone is exact
    (velocity included, at t = 0 and 1 too)."""
    ga, gb = isotropic_pair()
    b_exact, s_exact = exact_fields(ga, gb, schedule)
    zero = OfTime(lambda t: torch.zeros(len(t), D))
    feats = EnergyFeatures(ga, gb, 0.3, 0.05)
    b = Tube(zero, schedule, 0.3, 0.05, feats, "velocity")
    s = DenoiserScore(Tube(zero, schedule, 0.3, 0.05, feats, "mean"), schedule, 0.3, 0.05)
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(30, generator=g)]).double()
    x = 2 * torch.randn(32, D, generator=g, dtype=torch.float64)
    torch.testing.assert_close(b(t, x), b_exact(t, x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s(t, x), s_exact(t, x), rtol=1e-10, atol=1e-10)


def test_tube_ends_are_the_features_the_path_comes_from_and_goes_to():
    """Near b, x is nearest to its b feature but maybe not to the a feature it left: that one is
    found by projecting x back along the tube (and symmetrically near a)."""
    from feat.energies.analytic import GaussianMixture
    from feat.interpolants import LinearSchedule

    sch = LinearSchedule(a=0.05)
    means_a = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    means_b = torch.tensor([[0.5, 3.0], [5.0, 5.0]], dtype=torch.float64)
    mix_a = GaussianMixture(means_a, torch.full((2,), 0.1, dtype=torch.float64))
    mix_b = GaussianMixture(means_b, torch.full((2,), 0.05, dtype=torch.float64))
    tube = Tube(OfTime(lambda t: torch.zeros(len(t), 2)), sch, 0.1, 0.05,
                EnergyFeatures(mix_a, mix_b, 0.1, 0.05), "mean")
    # from a's feature at (4, 0) to b's at (0.5, 3), and from a's (0, 0) to b's (5, 5)
    t = torch.tensor([0.8, 0.2], dtype=torch.float64)
    pairs = [(means_a[1], means_b[0]), (means_a[0], means_b[1])]
    x = torch.stack([(1 - ti) * ma + ti * mb for ti, (ma, mb) in zip(t, pairs, strict=True)])
    # nearest to x alone would pair the first with a's (0, 0) and the second with b's (0.5, 3)
    assert torch.cdist(x, means_a).argmin(1).tolist() == [0, 0]
    assert torch.cdist(x, means_b).argmin(1).tolist() == [0, 0]
    mu_a, mu_b = tube.ends(t, x)
    torch.testing.assert_close(mu_a, torch.stack([p[0] for p in pairs]), rtol=0, atol=1e-6)
    torch.testing.assert_close(mu_b, torch.stack([p[1] for p in pairs]), rtol=0, atol=1e-6)


def test_widths_from_scores_recover_the_gaussians_standard_deviations():
    ga, gb = isotropic_pair()
    g = torch.Generator().manual_seed(1)
    for gauss, sd in ((ga, 0.3), (gb, 0.05)):
        x = gauss.sample(20000, generator=g)
        assert characteristic_width(gauss.score(x)) == pytest.approx(sd, rel=0.02)


def narrow_mixtures():
    g = torch.Generator().manual_seed(2)
    means_a = 4 * torch.rand(6, D, generator=g, dtype=torch.float64) - 2
    means_b = 4 * torch.rand(3, D, generator=g, dtype=torch.float64) - 2
    mix_a = GaussianMixture(means_a, torch.full((6,), 0.1, dtype=torch.float64))
    mix_b = GaussianMixture(means_b, torch.full((3,), 0.05, dtype=torch.float64))
    return mix_a, mix_b, g


def test_energy_features_are_the_displacements_to_the_nearest_centres():
    mix_a, mix_b, g = narrow_mixtures()
    feats = EnergyFeatures(mix_a, mix_b, 0.1, 0.05)
    x = mix_a.sample(64, generator=g)
    out = feats(x)
    assert out.shape == (64, 2 * D) and feats.size == 2 * D
    nearest = mix_a.means[torch.cdist(x, mix_a.means).argmin(-1)]
    torch.testing.assert_close(out[:, :D], nearest - x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["features", "informed", "tube"])
def test_exact_divergence_sees_the_end_state_scores_inside_the_velocity(kind):
    """The ODE's log-det needs ∂b/∂x through ∇u as well (second derivatives of u): compare the
    Jacobian the transport uses with central finite differences (float64)."""
    mix_a, mix_b, g = narrow_mixtures()
    # through autograd (FunctionEnergy), not the mixtures' closed-form scores
    mix_a, mix_b = (FunctionEnergy(m, event_shape=(D,)) for m in (mix_a, mix_b))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "features":
            b = MLPField(D, 16, 2, features=EnergyFeatures(mix_a, mix_b, 0.1, 0.05)).double()
        elif kind == "tube":
            feats = EnergyFeatures(mix_a, mix_b, 0.1, 0.05)
            b = Tube(MLPField(D, 16, 2).double(), LinearSchedule(a=0.05), 0.1, 0.05, feats,
                     "velocity")
        else:
            b = EnergyInformedVelocity(MLPField(D, 16, 2).double(), mix_a, mix_b, a=0.05)
    proc = ODEProcess(b, mix_a, mix_b)
    x = 4 * torch.rand(3, D, generator=g, dtype=torch.float64) - 2
    t = 0.3
    _, jac = proc.init_state(t, x)
    h = 1e-6
    fd = torch.stack([(b(t, x + h * e) - b(t, x - h * e)) / (2 * h)
                      for e in torch.eye(D, dtype=torch.float64)], dim=-1)
    torch.testing.assert_close(jac, fd, rtol=1e-5, atol=1e-5)


def test_field_options_are_checked():
    with pytest.raises(ConfigError, match="fields.denoiser_score and fields.informed_score"):
        FieldsConfig(denoiser_score=True, informed_score=True, scaled_score=False)
    with pytest.raises(ConfigError, match="tube_prior needs fields.denoiser_score"):
        FieldsConfig(tube_prior=True)
    with pytest.raises(ConfigError, match="tube_prior and fields.informed_velocity"):
        FieldsConfig(tube_prior=True, denoiser_score=True, scaled_score=False,
                     informed_velocity=True)
    with pytest.raises(ConfigError, match="energy_features needs network = 'mlp'"):
        FieldsConfig(energy_features=True, network="cnn")


def test_a_run_with_energy_features_and_the_denoiser_score_is_unbiased():
    """End to end on two 2-D Gaussians (exact ΔF): the works stay exact with the new inputs."""
    from feat import TwoStateProblem
    from feat.config import RunConfig, TransportConfig
    from feat.pipeline import run_problem
    from feat.training import TrainingConfig

    eye = torch.eye(2, dtype=torch.float64)
    ga = Gaussian(torch.zeros(2, dtype=torch.float64), eye)
    gb = Gaussian(torch.ones(2, dtype=torch.float64), 0.25 * eye)
    g = torch.Generator().manual_seed(0)
    problem = TwoStateProblem(ga, gb, ga.sample(1500, generator=g), gb.sample(1500, generator=g),
                              reference=-(gb.log_z() - ga.log_z()))
    config = RunConfig(
        fields=FieldsConfig(hidden=16, depth=2, energy_features=True, denoiser_score=True),
        training=TrainingConfig(steps=150, batch_size=64),
        transport=TransportConfig(eps=0.05, n_points=40, n_forward=500, n_reverse=500))
    est = run_problem(problem, config, progress=False).estimate
    assert abs(est.delta_f - problem.reference) < 4 * est.sigma
    assert est.bounds.contains(problem.reference)


def test_both_networks_share_one_feature_evaluation_per_input():
    """b and s at the same x (and the x± pair of a training step) evaluate the end-state
    forces once; copies (the EMA networks) share the memory; a changed x is recomputed."""
    import copy

    mix_a, mix_b, g = narrow_mixtures()
    calls = []

    def counted(mix):
        return FunctionEnergy(lambda x: calls.append(len(x)) or mix(x), event_shape=(D,))

    feats = EnergyFeatures(counted(mix_a), counted(mix_b), 0.1, 0.05)
    b, s = MLPField(D, 8, 1, features=feats), MLPField(D, 8, 1, features=feats)
    b_ema = copy.deepcopy(b)
    assert b_ema.features is feats
    t = torch.rand(6, generator=g)
    x_p, x_m = torch.randn(6, D, generator=g), torch.randn(6, D, generator=g)
    out = [f(t, x) for x in (x_p, x_m) for f in (b, s, b_ema)]
    assert len(calls) == 4  # two energies at two inputs
    # tube priors on both networks share the projected points too: 2 more calls, not 4
    sch = LinearSchedule(a=0.05)
    tb, ts = (Tube(f, sch, 0.1, 0.05, feats, kind) for f, kind in ((b, "velocity"), (s, "mean")))
    out += [tb(t, x_p), ts(t, x_p)]
    assert len(calls) == 6
    x_p.add_(1.0)  # in place: the remembered features are stale
    torch.testing.assert_close(feats(x_p), EnergyFeatures(mix_a, mix_b, 0.1, 0.05)(x_p))
    assert len(calls) == 8
    assert all(torch.isfinite(o).all() for o in out)


def test_capped_forces_keep_small_ones_and_bound_each_particle():
    from feat.fields.informed import capped

    f = torch.tensor([[[3.0, 4.0, 0.0], [0.3, 0.4, 0.0], [0.0, 0.0, -50.0]]], dtype=torch.float64)
    out = capped(f, 10.0)
    torch.testing.assert_close(out[0, :2], f[0, :2])                 # |f| = 5, 0.5 ≤ cap: as is
    torch.testing.assert_close(out[0, 2], torch.tensor([0.0, 0.0, -10.0], dtype=torch.float64))
    flat = torch.tensor([[-30.0, 2.0, 12.0]], dtype=torch.float64)   # flat states: per entry
    torch.testing.assert_close(capped(flat, 10.0), torch.tensor([[-10.0, 2.0, 10.0]],
                                                                dtype=torch.float64))
    assert capped(f, None) is f


def test_informed_score_with_a_cap_is_exact_where_forces_are_small_and_bounded_at_clashes():
    ea = Gaussian(torch.zeros(2), 0.25 * torch.eye(2))
    eb = Gaussian(torch.ones(2), 0.04 * torch.eye(2))
    zero = MLPField(2, 8, 1).double()
    torch.nn.init.zeros_(zero.net[-1].weight)
    torch.nn.init.zeros_(zero.net[-1].bias)
    plain, cap = EnergyInformedScore(zero, ea, eb), EnergyInformedScore(zero, ea, eb, cap=20.0)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    near = torch.tensor([[0.1, -0.2], [0.5, 0.5], [1.2, 0.9]], dtype=torch.float64)
    torch.testing.assert_close(cap(t, near), plain(t, near))
    far = torch.full((3, 2), 40.0, dtype=torch.float64)               # forces ~ 160 and 975
    assert plain(t, far).abs().max() > 100 and cap(t, far).abs().max() <= 20.0 + 1e-12
    # power p: still the exact end scores at t = 0 and 1, (1 − t)^p and t^p between
    steep = EnergyInformedScore(zero, ea, eb, power=8.0)
    torch.testing.assert_close(steep(t[[0, 2]], near[[0, 2]]), plain(t[[0, 2]], near[[0, 2]]))
    mid = torch.tensor([0.5], dtype=torch.float64)
    torch.testing.assert_close(steep(mid, near[1:2]), plain(mid, near[1:2]) / 2**7)


def test_force_cap_and_informed_power_are_checked():
    assert FieldsConfig(informed_score=True, scaled_score=False, force_cap=300.0).force_cap == 300
    with pytest.raises(ConfigError, match="force_cap must be >= 0"):
        FieldsConfig(informed_score=True, scaled_score=False, force_cap=-1.0)
    with pytest.raises(ConfigError, match="force_cap caps the end-state scores of the informed"):
        FieldsConfig(force_cap=10.0)
    with pytest.raises(ConfigError, match="informed_power must be >= 1"):
        FieldsConfig(informed_score=True, scaled_score=False, informed_power=0.5)
    with pytest.raises(ConfigError, match="informed_power weights the informed score"):
        FieldsConfig(informed_power=4.0)
