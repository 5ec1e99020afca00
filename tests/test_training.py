"""Trainer: losses go down, non-finite steps are skipped and counted, EMA, determinism, and a
trained small GMM whose bounds bracket the exact ΔF."""

import copy

import torch

from feat import TwoStateProblem
from feat.energies.analytic import GaussianMixture
from feat.estimators import estimate
from feat.fields import EnergyInformedScore, EnergyInformedVelocity, Field, MLPField
from feat.training import EMA, Trainer, TrainingConfig
from feat.transport import SDEProcess, TimeGrid, forward_and_reverse

from .gaussians import gaussian_pair


def _gaussian_problem(n=2000, seed=0):
    ga, gb, exact = gaussian_pair(d=2)
    g = torch.Generator().manual_seed(seed)
    return TwoStateProblem(ga, gb, ga.sample(n, g), gb.sample(n, g), reference=exact)


class Poisoned(Field):
    """Returns NaN on the calls listed in ``bad_calls`` (to test skipping)."""

    def __init__(self, inner, bad_calls):
        super().__init__()
        self.inner, self.bad_calls, self.calls = inner, set(bad_calls), 0

    def field(self, t, x):
        self.calls += 1
        out = self.inner(t, x)
        return out * float("nan") if self.calls in self.bad_calls else out


def test_loss_decreases_and_training_is_deterministic():
    def fit(seed):
        problem = _gaussian_problem()
        torch.manual_seed(0)  # network initialisation only; sampling uses the generator
        tr = Trainer(
            problem,
            MLPField(2, 32, 2),
            MLPField(2, 32, 2),
            TrainingConfig(steps=300, batch_size=128, tsm_weight=0.1),
            generator=torch.Generator().manual_seed(seed),
        )
        first = sum(tr.loss().total.item() for _ in range(10)) / 10
        tr.train(progress=False)
        last = sum(tr.loss().total.item() for _ in range(10)) / 10
        return first, last, tr

    first, last, tr1 = fit(1)
    assert last < first - 1.0
    _, _, tr2 = fit(1)
    for p1, p2 in zip(tr1.velocity_ema.parameters(), tr2.velocity_ema.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_nonfinite_loss_is_skipped_and_counted():
    problem = _gaussian_problem()
    v = Poisoned(MLPField(2, 16, 1), bad_calls={5})  # 2 calls per step: step 3 is poisoned
    tr = Trainer(
        problem,
        v,
        MLPField(2, 16, 1),
        TrainingConfig(steps=4, batch_size=32),
        generator=torch.Generator().manual_seed(0),
    )
    records = [tr.train_step() for _ in range(2)]
    before = copy.deepcopy(tr.velocity.state_dict())
    bad = tr.train_step()
    assert bad.n_skipped == 1 and tr.n_skipped == 1
    for k, v in tr.velocity.state_dict().items():
        assert torch.equal(v, before[k])
    assert records[-1].n_skipped == 0 and tr.train_step().n_skipped == 1


def test_ema_update_rule():
    m = torch.nn.Linear(2, 1)
    ema = EMA(m, decay=0.9)
    old = ema.averaged.weight.clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    torch.testing.assert_close(ema.averaged.weight, 0.9 * old + 0.1 * m.weight)
    assert not ema.averaged.weight.requires_grad


def test_trained_small_gmm_bounds_bracket_exact_delta_f():
    g = torch.Generator().manual_seed(0)
    ea = GaussianMixture(torch.tensor([[-1.0, -1.0], [1.0, 0.5], [0.0, 1.5]]), 0.3)
    eb = GaussianMixture(torch.tensor([[1.0, -1.0], [-0.5, 1.0]]), 0.2)
    problem = TwoStateProblem(ea, eb, ea.sample(4000, g), eb.sample(4000, g), reference=0.0)
    torch.manual_seed(0)
    b = EnergyInformedVelocity(MLPField(2, 64, 3), ea, eb, a=0.05)
    s = EnergyInformedScore(MLPField(2, 64, 3), ea, eb)
    tr = Trainer(
        problem, b, s, TrainingConfig(steps=2000, batch_size=256, lr_final=1e-4), generator=g
    )
    tr.train(progress=False)
    p = SDEProcess(tr.velocity_ema, tr.score_ema, 0.05, ea, eb)
    f, r = forward_and_reverse(
        p, ea.sample(1000, g), eb.sample(1000, g), TimeGrid.uniform(100), generator=g
    )
    est = estimate(f.work, r.work, reference=0.0, n_bootstrap=0)
    assert est.bounds.lower <= 0.0 <= est.bounds.upper, est.summary()
    assert abs(est.z) < 3, est.summary()
    assert est.bounds.gap < 4.0, est.summary()  # untrained fields: gap > 20


def test_interpolant_noise_is_configurable_and_validated():
    import pytest

    from feat.training.trainer import TrainingConfig

    assert TrainingConfig().noise_a == 0.05 and TrainingConfig().noise_g0 == 0.0
    with pytest.raises(ValueError, match="training.noise_a"):
        TrainingConfig(noise_a=0.0)
    with pytest.raises(ValueError, match="training.noise_g0"):
        TrainingConfig(noise_g0=-1.0)


def test_periodic_coordinates_are_paired_along_the_shorter_arc_unless_unrolled():
    problem = _gaussian_problem(n=200)
    problem.metadata["periods"] = [0.0, 1.0]  # the second coordinate lives on a circle
    pairs = {}
    for shortest in (True, False):
        tr = Trainer(problem, MLPField(2, 8, 1), MLPField(2, 8, 1),
                     TrainingConfig(steps=1, batch_size=64, coupling="ot",
                                    shortest_arc=shortest),
                     generator=torch.Generator().manual_seed(0))
        x_a, x_b, _ = tr._batch()
        pairs[shortest] = (x_b - x_a)[:, 1].abs().max().item()
    assert pairs[True] <= 0.5 + 1e-6 < pairs[False]
