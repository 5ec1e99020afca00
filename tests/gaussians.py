"""Shared exact test case: two Gaussians with closed-form interpolant fields."""

import torch

from feat.energies.analytic import Gaussian
from feat.fields import GaussianInterpolantScore, GaussianInterpolantVelocity
from feat.interpolants import LinearSchedule


def gaussian_pair(d: int = 3, seed: int = 0, shift: float = 1.0):
    """Two correlated Gaussians in d dimensions and their exact ΔF = −(log Z_b − log Z_a)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(d, d, generator=g, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    ga = Gaussian(torch.zeros(d, dtype=torch.float64), a @ a.T / d + 0.5 * eye)
    gb = Gaussian(torch.full((d,), shift, dtype=torch.float64), b @ b.T / d + 0.2 * eye)
    return ga, gb, -(gb.log_z() - ga.log_z())


def exact_fields(ga, gb, schedule=None):
    schedule = schedule or LinearSchedule()
    return (
        GaussianInterpolantVelocity(ga, gb, schedule),
        GaussianInterpolantScore(ga, gb, schedule),
    )
