"""Analytic energies with exact normalisers and exact samplers: Gaussians and Gaussian mixtures.

These are the exact test cases of the project: a pair of them has a known
``ΔF = F_b − F_a = −(log Z_b − log Z_a)`` in kT.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Energy

__all__ = ["Gaussian", "GaussianMixture", "gmm_pair", "softplus"]


class _FollowsInput:
    """Parameter tensors (float64, CPU) copied once per device and dtype of the inputs.

    ``energy(x)`` then runs on ``x``'s device in ``x``'s dtype without copying the parameters
    on every call. Subclasses list the attribute names in ``_parameters``.
    """

    _parameters: tuple[str, ...] = ()

    def _on(self, x: Tensor) -> tuple[Tensor, ...]:
        cache = self.__dict__.setdefault("_copies", {})
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = tuple(getattr(self, n).to(device=x.device, dtype=x.dtype)
                               for n in self._parameters)
        return cache[key]


def softplus(v: float) -> float:
    """``log(1 + e^v)``, the paper's parameterisation of the GMM widths."""
    return math.log1p(math.exp(v))


class Gaussian(_FollowsInput, Energy):
    """``u(x) = ½ (x − μ)ᵀ Σ⁻¹ (x − μ)`` in kT, a Gaussian with full covariance.

    Parameters
    ----------
    mean : Tensor, shape (d,)
    cov : Tensor, shape (d, d), symmetric positive definite.

    ``log_z() = (d/2) log 2π + ½ log det Σ`` exactly; :meth:`sample` draws exact samples.
    The energy and score follow the device and dtype of ``x``.
    """

    _parameters = ("mean", "precision")

    def __init__(self, mean: Tensor, cov: Tensor):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        d = mean.shape[0] if mean.dim() == 1 else -1
        if mean.dim() != 1 or tuple(cov.shape) != (d, d):
            raise ValueError(
                f"mean must have shape (d,) and cov (d, d); got {tuple(mean.shape)} "
                f"and {tuple(cov.shape)}."
            )
        if not torch.allclose(cov, cov.T):
            raise ValueError("cov must be symmetric; got an asymmetric matrix. Use (C + C.T) / 2.")
        chol, info = torch.linalg.cholesky_ex(cov)
        if info.item() != 0:
            raise ValueError("cov must be positive definite; its Cholesky factorisation failed.")
        self.mean, self.cov, self.chol = mean, cov, chol
        self.precision = torch.cholesky_inverse(chol)
        self.event_shape = (d,)

    def energy(self, x: Tensor) -> Tensor:
        mean, precision = self._on(x)
        r = x - mean
        return 0.5 * ((r @ precision) * r).sum(-1)

    def score(self, x: Tensor) -> Tensor:
        mean, precision = self._on(x)
        return -(x - mean) @ precision

    def log_z(self) -> float:
        d = self.event_shape[0]
        return 0.5 * d * math.log(2 * math.pi) + torch.log(torch.diagonal(self.chol)).sum().item()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples, shape (n, d), float64."""
        z = torch.randn(n, self.event_shape[0], generator=generator, dtype=torch.float64)
        return self.mean + z @ self.chol.T


class GaussianMixture(_FollowsInput, Energy):
    """``u(x) = −log Σ_k w_k N(x; μ_k, diag σ_k²)``: a normalised mixture, so ``log Z = 0``.

    Parameters
    ----------
    means : Tensor, shape (K, d)
    stds : Tensor, shape (K,) (isotropic components) or (K, d)
    weights : Tensor, shape (K,), optional; positive, normalised here. Equal weights by default.

    The energy and score follow the device and dtype of ``x``.
    """

    _parameters = ("precisions", "scaled_means", "log_constants")

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d); got {tuple(means.shape)}.")
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        stds = stds.expand(k).clone() if stds.dim() == 0 else stds
        stds = stds[:, None].expand(k, d) if stds.dim() == 1 else stds
        if tuple(stds.shape) != (k, d) or bool((stds <= 0).any()):
            raise ValueError(f"stds must be positive with shape (K,) or (K, d) = ({k}, {d}).")
        weights = (
            torch.full((k,), 1.0 / k, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64)
        )
        if tuple(weights.shape) != (k,) or bool((weights <= 0).any()):
            raise ValueError(
                f"weights must be positive with shape ({k},); got {tuple(weights.shape)}."
            )
        self.means, self.stds = means, stds.contiguous()
        self.log_weights = torch.log(weights / weights.sum())
        self.event_shape = (d,)
        # |x − μ_k|²_k = x²·p_k − 2 x·(μ_k p_k) + μ_k²·p_k with p_k = 1/σ_k²: matrix products,
        # never a (batch, K, d) tensor
        self.precisions = self.stds**-2
        self.scaled_means = means * self.precisions
        self.log_constants = (self.log_weights - torch.log(self.stds).sum(-1)
                              - 0.5 * d * math.log(2 * math.pi)
                              - 0.5 * (means * self.scaled_means).sum(-1))

    def _component_log_density(self, x: Tensor) -> Tensor:
        """``log w_k + log N(x; μ_k, σ_k²)``, shape (batch, K), float64."""
        x = x.double()
        prec, scaled_means, log_c = self._on(x)
        return log_c + x @ scaled_means.T - 0.5 * (x * x) @ prec.T

    def energy(self, x: Tensor) -> Tensor:
        return -torch.logsumexp(self._component_log_density(x), dim=-1).to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        resp = torch.softmax(self._component_log_density(x), dim=-1)
        prec, scaled_means, _ = self._on(resp)
        return (resp @ scaled_means - x.double() * (resp @ prec)).to(x.dtype)

    def log_z(self) -> float:
        return 0.0

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples, shape (n, d), float64."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.event_shape[0], generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k] * z


def gmm_pair(
    dim: int = 40,
    n_a: int = 40,
    n_b: int = 16,
    std_a: float = softplus(-2.0),
    std_b: float = softplus(-3.0),
    box: float = 2.0,
    seed: int = 0,
) -> tuple[GaussianMixture, GaussianMixture]:
    """The paper's GMM pair (METHOD §7): means uniform in [−box, box]^dim, ΔF = 0 exactly.

    Defaults give GMM-40; ``gmm_pair(dim=100)`` gives GMM-100. The means come from a private
    ``torch.Generator`` seeded with ``seed``; the global RNG is never touched.
    """
    g = torch.Generator().manual_seed(int(seed))
    means_a = (torch.rand(n_a, dim, generator=g, dtype=torch.float64) * 2 - 1) * box
    means_b = (torch.rand(n_b, dim, generator=g, dtype=torch.float64) * 2 - 1) * box
    return GaussianMixture(means_a, std_a), GaussianMixture(means_b, std_b)
