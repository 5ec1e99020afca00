"""TwoStateProblem: accepted inputs and the errors a user meets first."""

import numpy as np
import pytest
import torch

from feat import FunctionEnergy, TwoStateProblem
from feat.energies.analytic import Gaussian


def _energies(d=3):
    u = FunctionEnergy(lambda x: 0.5 * (x**2).sum(-1), d)
    return u, FunctionEnergy(lambda x: (x**2).sum(-1), d)


def test_accepts_arrays_and_unequal_sample_counts_and_computes_scores():
    ua, ub = _energies()
    p = TwoStateProblem(ua, ub, np.ones((5, 3)), torch.zeros(7, 3))
    s_a, s_b = p.scores()
    torch.testing.assert_close(s_a, -torch.ones(5, 3, dtype=torch.float64))
    assert s_b.shape == (7, 3) and p.event_shape == (3,)


@pytest.mark.parametrize(
    "x_a,match",
    [
        (torch.zeros(5, 2), r"x_a must have shape \(batch, 3\); got \(5, 2\)"),
        (torch.zeros(0, 3), "x_a is empty"),
        (
            torch.tensor([[0.0, float("nan"), 0.0], [1.0, 1.0, 1.0]]),
            r"1 sample\(s\) with NaN .*rows \[0\]",
        ),
        (torch.zeros(4, 3, dtype=torch.int64), "floating-point"),
        (None, "x_a is missing"),
    ],
)
def test_bad_samples_get_clear_errors(x_a, match):
    ua, ub = _energies()
    with pytest.raises((ValueError, TypeError), match=match):
        TwoStateProblem(ua, ub, x_a, torch.zeros(4, 3))


def test_mismatched_energies_and_scores():
    ua, _ = _energies(3)
    _, ub2 = _energies(2)
    with pytest.raises(ValueError, match="share one event shape"):
        TwoStateProblem(ua, ub2, torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="FunctionEnergy"):
        TwoStateProblem(lambda x: x.sum(-1), ua, torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="score_a must have the shape"):
        TwoStateProblem(ua, ua, torch.zeros(4, 3), torch.zeros(4, 3), score_a=torch.zeros(3, 3))


def test_energy_returning_column_is_caught_when_scores_are_computed():
    bad = FunctionEnergy(lambda x: (x**2).sum(-1, keepdim=True), 3)
    g = Gaussian(torch.zeros(3), torch.eye(3))
    p = TwoStateProblem(bad, g, torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"returned shape \(4, 1\)"):
        p.scores()
