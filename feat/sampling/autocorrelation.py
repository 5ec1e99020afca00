"""Integrated autocorrelation times of (multi-chain) time series, for thinning and error bars.

Sokal's convention: ``tau_int = 1/2 + sum_{t>=1} rho(t)`` (independent samples give 0.5), with
the automatic window of Madras & Sokal (1988).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

__all__ = ["AutocorrelationEstimate", "integrated_autocorrelation_time"]


@dataclass(frozen=True)
class AutocorrelationEstimate:
    """Integrated autocorrelation time of a (multi-chain) time series.

    ``tau_int = 1/2 + sum_{t=1}^{window} rho(t)`` (Sokal's convention; independent samples give
    0.5), so the statistical inefficiency is ``g = 2 tau_int`` and
    ``stderr = sqrt(variance * 2 tau_int / n_total)``.
    """

    tau_int: float
    window: int
    mean: float
    variance: float
    n_total: int
    reliable: bool

    @property
    def n_eff(self) -> float:
        """Effective number of independent samples, ``n_total / (2 tau_int)``."""
        return self.n_total / (2.0 * self.tau_int)

    @property
    def stderr(self) -> float:
        """Autocorrelation-corrected standard error of the mean."""
        return math.sqrt(self.variance * 2.0 * self.tau_int / self.n_total)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Chain-averaged biased autocovariance ``(1/n) sum_s x_s x_{s+t}`` of centred (n, C) data."""
    n = x.shape[0]
    f = np.fft.rfft(x, n=2 * n, axis=0)
    return np.fft.irfft(f * np.conj(f), n=2 * n, axis=0)[:n].mean(axis=1) / n


def integrated_autocorrelation_time(series: Tensor | np.ndarray, c: float = 5.0,
                                    min_tau_multiple: float = 50.0) -> AutocorrelationEstimate:
    """Estimate ``tau_int`` with Sokal's automatic window (Madras & Sokal 1988).

    The normalised autocovariance ``rho(t)`` is averaged over chains (centred on the grand
    mean), and the window ``W`` is the smallest with ``W >= c * tau_int(W)``.

    Parameters
    ----------
    series : shape (n_steps,) or (n_steps, n_chains)
        One observable along each chain, time first.
    c : float
        Window constant; 4-10 is customary (5 as in emcee).
    min_tau_multiple : float
        The estimate is flagged unreliable when ``n_steps < min_tau_multiple * tau_int`` or no
        window satisfies the criterion (the chain is too short for its correlations).

    Returns
    -------
    AutocorrelationEstimate
        ``tau_int = inf`` (unreliable) for a constant series.
    """
    x = np.asarray(series.detach().cpu() if isinstance(series, Tensor) else series,
                   dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise ValueError(f"series must be finite with shape (n_steps >= 2,) or (n_steps >= 2, "
                         f"n_chains); got shape {x.shape}"
                         f"{'' if np.isfinite(x).all() else ' with non-finite values'}.")
    n, n_total, mean = x.shape[0], x.size, float(x.mean())
    acov = _autocovariance(x - mean)
    if acov[0] <= 0.0:
        return AutocorrelationEstimate(math.inf, 0, mean, 0.0, n_total, False)
    taus = 0.5 + np.cumsum(acov[1:] / acov[0])            # tau(W) for W = 1 .. n-1
    ok = np.arange(1, n) >= c * taus
    window = int(np.argmax(ok)) + 1 if ok.any() else n - 1
    tau = float(max(taus[window - 1], 0.5)) if n > 1 else 0.5
    reliable = bool(ok.any()) and n >= min_tau_multiple * tau
    return AutocorrelationEstimate(tau, window, mean, float(acov[0]), n_total, reliable)
