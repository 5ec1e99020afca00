"""One-sided (Jarzynski / exponential-averaging) estimators.

Forward:  ΔF_f = -log (1/N_f) Σ_i exp(-W_f,i)     (biased high at finite N)
Reverse:  ΔF_r = +log (1/N_r) Σ_j exp(-W_r,j)     (biased low at finite N)

Both use a float64 log-sum-exp; ``+inf`` works contribute zero weight but count in ``N``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp

from .works import check_works

__all__ = ["OneSidedEstimate", "jarzynski_forward", "jarzynski_reverse"]


@dataclass(frozen=True)
class OneSidedEstimate:
    """A one-sided Jarzynski estimate of ΔF = F_b - F_a in kT.

    Attributes
    ----------
    delta_f : float
        The estimate of ΔF in kT.
    sigma : float
        Asymptotic (delta-method) standard error in kT,
        ``σ² = var(w) / (N mean(w)²)`` with weights ``w_i = exp(-W_i)``.
    ess : float
        Kish effective sample size fraction ``(Σ w)² / (N Σ w²)`` in ``[1/N, 1]``.
    n : int
        Number of works used (``+inf`` included).
    n_posinf : int
        Number of ``+inf`` (zero-weight) works.
    """

    delta_f: float
    sigma: float
    ess: float
    n: int
    n_posinf: int


def _log_mean_exp_stats(neg_work: np.ndarray) -> tuple[float, float, float]:
    """Return ``(log mean exp(x), σ of that log-mean, Kish ESS fraction)`` for ``x = -W``.

    The weights ``w = exp(x - max x)`` lie in ``[0, 1]`` with at least one equal to 1, so
    ``var(w) / mean(w)²`` and ``(Σw)² / (N Σw²)`` are computed without overflow.
    """
    n = neg_work.size
    log_mean = float(logsumexp(neg_work) - np.log(n))
    w = np.exp(neg_work - np.max(neg_work))
    mean_w = w.mean()
    sigma = float(np.std(w) / (np.sqrt(n) * mean_w))
    ess = float(w.sum() ** 2 / (n * np.sum(w * w)))
    return log_mean, sigma, ess


def jarzynski_forward(work_f: ArrayLike) -> OneSidedEstimate:
    """Forward Jarzynski estimate ``ΔF_f = -log mean exp(-W_f)``.

    Parameters
    ----------
    work_f : array_like or torch.Tensor
        Shape ``(n_f,)``: forward works in kT (a -> b). ``+inf`` allowed; NaN and ``-inf`` raise.

    Returns
    -------
    OneSidedEstimate
    """
    works = check_works(work_f, "work_f")
    log_mean, sigma, ess = _log_mean_exp_stats(-works.values)
    return OneSidedEstimate(-log_mean, sigma, ess, works.n, works.n_posinf)


def jarzynski_reverse(work_r: ArrayLike) -> OneSidedEstimate:
    """Reverse Jarzynski estimate ``ΔF_r = +log mean exp(-W_r)``.

    Parameters
    ----------
    work_r : array_like or torch.Tensor
        Shape ``(n_r,)``: reverse works in kT (b -> a). ``+inf`` allowed; NaN and ``-inf`` raise.

    Returns
    -------
    OneSidedEstimate
        ``delta_f`` is ΔF = F_b - F_a (the reverse works estimate F_a - F_b = -ΔF).
    """
    works = check_works(work_r, "work_r")
    log_mean, sigma, ess = _log_mean_exp_stats(-works.values)
    return OneSidedEstimate(log_mean, sigma, ess, works.n, works.n_posinf)
