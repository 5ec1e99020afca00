"""Bennett's acceptance ratio (BAR) on forward and reverse works, any N_f and N_r.

ΔF = F_b - F_a solves (Shirts et al., PRL 91, 140601 (2003), pymbar's convention)

    Σ_i φ(W_f,i - ΔF + M) = Σ_j φ(W_r,j + ΔF - M),   φ(x) = 1 / (1 + e^x),   M = log(N_f / N_r).

We find the root of the log of the two sides' ratio,

    g(ΔF) = log Σ_i φ(W_f,i - ΔF + M) - log Σ_j φ(W_r,j + ΔF - M),

which is strictly increasing in ΔF, goes to -inf / +inf as ΔF -> -inf / +inf, and is evaluated
with ``log φ(x) = -logaddexp(0, x)`` (exact for ``x = +inf``: a ``+inf`` work has zero weight).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import logsumexp

from .jarzynski import jarzynski_forward, jarzynski_reverse
from .works import check_works

__all__ = ["bar"]


def _log_phi(x: np.ndarray) -> np.ndarray:
    """``log φ(x) = -log(1 + e^x)``, stable for any ``x`` including ``+inf``."""
    return -np.logaddexp(0.0, x)


def _bar_zero(delta_f: float, work_f: np.ndarray, work_r: np.ndarray, m: float) -> float:
    """``g(ΔF)``: negative below the BAR solution, positive above it."""
    log_num = logsumexp(_log_phi(work_f - delta_f + m))
    log_den = logsumexp(_log_phi(work_r + delta_f - m))
    return float(log_num - log_den)


def _bracket(
    work_f: np.ndarray, work_r: np.ndarray, m: float, max_iter: int
) -> tuple[float, float]:
    """An interval ``[lo, hi]`` with ``g(lo) <= 0 <= g(hi)``, grown from the Jarzynski estimates."""
    ends = (jarzynski_reverse(work_r).delta_f, jarzynski_forward(work_f).delta_f)
    lo, hi = min(ends), max(ends)
    step = max(1.0, hi - lo)
    for _ in range(max_iter):
        if _bar_zero(lo, work_f, work_r, m) <= 0.0:
            break
        lo, step = lo - step, 2.0 * step
    step = max(1.0, hi - lo)
    for _ in range(max_iter):
        if _bar_zero(hi, work_f, work_r, m) >= 0.0:
            return lo, hi
        hi, step = hi + step, 2.0 * step
    raise RuntimeError(
        f"BAR: could not bracket the root after {max_iter} expansions (last interval "
        f"[{lo:g}, {hi:g}]); the works may be extreme. Increase max_iter."
    )


def _relative_second_moment(log_f: np.ndarray) -> float:
    """``Σ f² / (Σ f)²`` = ``mean(f²) / (N mean(f)²)`` from ``log f``, without overflow."""
    f = np.exp(log_f - np.max(log_f))
    return float(np.sum(f * f) / np.sum(f) ** 2)


def _bar_variance(delta_f: float, work_f: np.ndarray, work_r: np.ndarray, m: float) -> float:
    """Bennett's asymptotic variance (pymbar ``uncertainty_method="BAR"``).

    With ``f_i = φ(W_f,i - ΔF + M)`` and ``r_j = φ(W_r,j + ΔF - M)``,

        σ² = <f²>/(N_f <f>²) + <r²>/(N_r <r>²) - 1/N_f - 1/N_r

    (Bennett 1976, Eq. 10a, with the corrected denominator). Each term is >= 0 by
    Cauchy-Schwarz; rounding below zero is clipped.
    """
    var_f = _relative_second_moment(_log_phi(work_f - delta_f + m)) - 1.0 / work_f.size
    var_r = _relative_second_moment(_log_phi(work_r + delta_f - m)) - 1.0 / work_r.size
    return max(var_f + var_r, 0.0)


def bar(
    work_f: ArrayLike, work_r: ArrayLike, *, tol: float = 1e-12, max_iter: int = 500
) -> tuple[float, float]:
    """Two-sided BAR estimate of ΔF = F_b - F_a in kT and its asymptotic standard error.

    Parameters
    ----------
    work_f : array_like or torch.Tensor
        Shape ``(n_f,)``: forward works (a -> b) in kT.
    work_r : array_like or torch.Tensor
        Shape ``(n_r,)``: reverse works (b -> a) in kT; ``n_r`` may differ from ``n_f``.
    tol : float
        Absolute tolerance on ΔF for the root finder (Brent's method on ``g``).
    max_iter : int
        Maximum Brent iterations, and maximum bracket expansions.

    Returns
    -------
    delta_f : float
        The BAR estimate of ΔF in kT.
    sigma : float
        Bennett's asymptotic standard error in kT, the same formula as
        ``pymbar.other_estimators.bar(w_F, w_R, uncertainty_method="BAR")['dDelta_f']``.

    Notes
    -----
    ``+inf`` works are zero-weight trajectories: ``φ(+inf - ΔF + M) = 0``; they still count in
    ``N_f``, ``N_r`` and hence in ``M``.
    """
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite float; got {tol!r}.")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}.")
    wf = check_works(work_f, "work_f").values
    wr = check_works(work_r, "work_r").values
    m = float(np.log(wf.size / wr.size))
    lo, hi = _bracket(wf, wr, m, int(max_iter))
    # brentq returns an end point at once if g vanishes there.
    delta_f = float(brentq(_bar_zero, lo, hi, args=(wf, wr, m), xtol=tol, maxiter=int(max_iter)))
    return delta_f, float(np.sqrt(_bar_variance(delta_f, wf, wr, m)))
