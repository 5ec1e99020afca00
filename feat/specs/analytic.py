"""Analytic system kinds: exact samples and exact ΔF, no downloaded data."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..energies.analytic import Gaussian, gmm_pair, softplus
from ..problem import TwoStateProblem

__all__ = ["GaussianSpec", "GMMSpec"]


@dataclass(frozen=True)
class GaussianSpec:
    """Two Gaussians in ``dim`` dimensions: a = N(0, I), b = N(shift·1, scale² I); exact ΔF.

    ``ΔF = −(log Z_b − log Z_a) = −dim · log(scale)``.
    """

    dim: int = 10
    shift: float = 1.0
    scale: float = 0.5
    n_samples_a: int = 10000
    n_samples_b: int = 10000

    def build(self, generator: torch.Generator) -> TwoStateProblem:
        eye = torch.eye(self.dim, dtype=torch.float64)
        ga = Gaussian(torch.zeros(self.dim, dtype=torch.float64), eye)
        gb = Gaussian(torch.full((self.dim,), self.shift, dtype=torch.float64), self.scale**2 * eye)
        return TwoStateProblem(
            ga,
            gb,
            ga.sample(self.n_samples_a, generator),
            gb.sample(self.n_samples_b, generator),
            reference=-(gb.log_z() - ga.log_z()), reference_exact=True,
            name="gaussian",
        )


@dataclass(frozen=True)
class GMMSpec:
    """The paper's GMM pair (METHOD §7): exact samples, ΔF = 0 exactly."""

    dim: int = 40
    n_components_a: int = 40
    n_components_b: int = 16
    std_a: float = softplus(-2.0)
    std_b: float = softplus(-3.0)
    box: float = 2.0
    means_seed: int = 0
    n_samples_a: int = 20000
    n_samples_b: int = 20000

    def build(self, generator: torch.Generator) -> TwoStateProblem:
        ea, eb = gmm_pair(
            self.dim,
            self.n_components_a,
            self.n_components_b,
            self.std_a,
            self.std_b,
            self.box,
            self.means_seed,
        )
        return TwoStateProblem(
            ea,
            eb,
            ea.sample(self.n_samples_a, generator),
            eb.sample(self.n_samples_b, generator),
            reference=0.0, reference_exact=True,
            name=f"gmm{self.dim}",
        )
