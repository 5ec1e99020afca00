"""Free-energy estimators on forward and reverse works (ΔF = F_b - F_a, in kT).

The one entry point is :func:`estimate`; the pieces (Jarzynski, BAR, bounds, bootstrap) are
exported for direct use. Works are reduced (kT) and float64, one per trajectory; see
:func:`check_works` for the rules on non-finite works.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .bar import bar
from .bounds import Bounds, bounds
from .io import (
    SavedWorks,
    load_works,
    read_works_csv,
    save_pymbar_npz,
    save_works,
    to_pymbar,
    write_works_csv,
)
from .jarzynski import OneSidedEstimate, jarzynski_forward, jarzynski_reverse
from .results import FreeEnergyEstimate
from .uncertainty import bootstrap, check_groups
from .works import WorkSet, check_works

__all__ = [
    "Bounds",
    "FreeEnergyEstimate",
    "OneSidedEstimate",
    "SavedWorks",
    "WorkSet",
    "bar",
    "bootstrap",
    "bounds",
    "check_works",
    "estimate",
    "jarzynski_forward",
    "jarzynski_reverse",
    "load_works",
    "read_works_csv",
    "save_pymbar_npz",
    "save_works",
    "to_pymbar",
    "write_works_csv",
]


def _bar_delta_f(work_f: np.ndarray, work_r: np.ndarray) -> float:
    return bar(work_f, work_r)[0]


def _forward_delta_f(work_f: np.ndarray, work_r: None) -> float:
    return jarzynski_forward(work_f).delta_f


def _reverse_delta_f(work_f: None, work_r: np.ndarray) -> float:
    return jarzynski_reverse(work_r).delta_f


def _pair(one_sided: OneSidedEstimate) -> tuple[float, float]:
    return one_sided.delta_f, one_sided.sigma


def _n_nan(works: WorkSet | None) -> int:
    return 0 if works is None else works.n_nan_dropped


def estimate(
    work_f: ArrayLike | None = None,
    work_r: ArrayLike | None = None,
    *,
    reference: float | None = None,
    reference_exact: bool = False,
    n_bootstrap: int | None = 200,
    seed: int | np.random.Generator | None = 0,
    nan_policy: str = "raise",
    starts_f: ArrayLike | None = None,
    starts_r: ArrayLike | None = None,
) -> FreeEnergyEstimate:
    """Estimate ΔF = F_b - F_a in kT from forward and/or reverse works.

    Parameters
    ----------
    work_f : array_like or torch.Tensor or None
        Shape ``(n_f,)``: forward works (a -> b) in kT.
    work_r : array_like or torch.Tensor or None
        Shape ``(n_r,)``: reverse works (b -> a) in kT; ``n_r`` may differ from ``n_f``.
    reference : float or None
        Exact or reference ΔF, reported with the z-score ``(ΔF - reference) / σ``.
    reference_exact : bool
        True when ``reference`` is exact (analytic); the summary then says "exact", else
        "reference" (e.g. an MBAR value, which has its own error).
    n_bootstrap : int or None
        Bootstrap resamples for ``sigma_bootstrap``; ``0`` or ``None`` skips the bootstrap.
    seed : int or numpy.random.Generator or None
        Seed of the bootstrap's ``numpy.random.default_rng``.
    nan_policy : {"raise", "drop"}
        What to do with NaN works (see :func:`check_works`); dropped ones are counted.
    starts_f, starts_r : array_like of int or None
        Shapes ``(n_f,)`` and ``(n_r,)``: the start sample of each trajectory, when several
        trajectories share one (``transport.trajectories_per_start``). Their works are then
        correlated: the bootstrap resamples start samples, not trajectories, and the headline
        σ is the larger of the asymptotic σ (which assumes independent trajectories) and that
        bootstrap σ. None: independent trajectories.

    Returns
    -------
    FreeEnergyEstimate
        Headline ΔF: BAR (Bennett's acceptance ratio) with both directions, else the one-sided
        Jarzynski estimate; plus both one-sided estimates, bounds, ESS and non-finite counts.
    """
    if work_f is None and work_r is None:
        raise ValueError(
            "estimate needs work_f (forward works), work_r (reverse works) or both; got neither."
        )
    if reference is not None and not math.isfinite(float(reference)):
        raise ValueError(f"reference must be a finite float or None; got {reference!r}.")
    wf = None if work_f is None else check_works(work_f, "work_f", nan_policy)
    wr = None if work_r is None else check_works(work_r, "work_r", nan_policy)
    f = None if wf is None else wf.values
    r = None if wr is None else wr.values
    forward = None if f is None else jarzynski_forward(f)
    reverse = None if r is None else jarzynski_reverse(r)
    if forward is not None and reverse is not None:
        method, (delta_f, sigma), fn = "BAR", bar(f, r), _bar_delta_f
    elif forward is not None:
        method, delta_f, sigma, fn = "Jarzynski forward", *_pair(forward), _forward_delta_f
    else:
        method, delta_f, sigma, fn = "Jarzynski reverse", *_pair(reverse), _reverse_delta_f
    groups = [_starts(g, w, raw, name) for g, w, raw, name in
              ((starts_f, wf, work_f, "starts_f"), (starts_r, wr, work_r, "starts_r"))]
    shared = any(g is not None and np.unique(g).size < g.size for g in groups)
    if shared and not n_bootstrap:
        raise ValueError("trajectories share start samples (starts_f/starts_r) but n_bootstrap "
                         "is 0: only the bootstrap over start samples gives an honest σ then; "
                         "ask for n_bootstrap >= 2.")
    sigma_bootstrap = bootstrap(f, r, fn, n_bootstrap, seed, *groups) if n_bootstrap else None
    if shared:
        sigma = max(sigma, sigma_bootstrap)
    return FreeEnergyEstimate(
        delta_f=delta_f,
        sigma=sigma,
        sigma_bootstrap=sigma_bootstrap,
        method=method,
        forward=forward,
        reverse=reverse,
        bounds=bounds(f, r),
        n_f=0 if wf is None else wf.n,
        n_r=0 if wr is None else wr.n,
        n_nan_dropped=(_n_nan(wf), _n_nan(wr)),
        reference=None if reference is None else float(reference),
        reference_exact=bool(reference_exact) and reference is not None,
        n_starts=(_n_starts(groups[0], wf), _n_starts(groups[1], wr)) if shared else None,
    )


def _starts(starts: ArrayLike | None, works: WorkSet | None, raw, name: str
            ) -> np.ndarray | None:
    """The start labels of the works kept (NaN works dropped by the policy drop theirs)."""
    if starts is None or works is None:
        return None
    labels = check_groups(starts, int(np.shape(np.asarray(raw))[0]), name)
    if works.n_nan_dropped:
        labels = labels[~np.isnan(np.asarray(raw, dtype=np.float64))]
    return labels


def _n_starts(groups: np.ndarray | None, works: WorkSet | None) -> int:
    """Distinct start samples of a direction (its number of works when not grouped)."""
    if groups is None:
        return 0 if works is None else works.n
    return int(np.unique(groups).size)
