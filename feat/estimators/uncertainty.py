"""Bootstrap standard error over trajectories, or over their start samples.

When several trajectories share a start sample (``transport.trajectories_per_start`` > 1),
their works are correlated and resampling single trajectories would understate σ; the
bootstrap then resamples whole start samples (a cluster bootstrap), each with all of its
trajectories.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from .works import check_works

__all__ = ["bootstrap"]

Estimator = Callable[[np.ndarray | None, np.ndarray | None], float]


def _resample_indices(rng: np.random.Generator, n: int | None, n_bootstrap: int) -> np.ndarray:
    """Shape ``(n_bootstrap, n)`` trajectory indices drawn with replacement (``(n_bootstrap, 0)``
    when the direction is absent)."""
    return rng.integers(0, n or 1, size=(n_bootstrap, n or 0))


def _resample_groups(rng: np.random.Generator, groups: np.ndarray, n_bootstrap: int
                     ) -> list[np.ndarray]:
    """Per resample, the trajectory indices of ``k`` start samples drawn with replacement
    from the ``k`` distinct labels of ``groups`` (all trajectories of each drawn one)."""
    labels, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    draws = rng.integers(0, labels.size, size=(n_bootstrap, labels.size))
    return [np.concatenate([members[g] for g in row]) for row in draws]


def check_groups(groups: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    """``groups`` as an int array of length ``n`` (one start-sample label per work), or None."""
    if groups is None:
        return None
    arr = np.asarray(groups)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be one integer start-sample label per work, shape ({n},); "
                         f"got shape {arr.shape} of dtype {arr.dtype}.")
    return arr


def bootstrap(
    work_f: ArrayLike | None,
    work_r: ArrayLike | None,
    estimator: Estimator,
    n_bootstrap: int = 200,
    seed: int | np.random.Generator | None = 0,
    groups_f: ArrayLike | None = None,
    groups_r: ArrayLike | None = None,
) -> float:
    """Bootstrap standard deviation of ``estimator`` over resampled trajectories.

    Each direction is resampled independently, with replacement, keeping its size; the result
    is ``std_b estimator(W_f[idx_f,b], W_r[idx_r,b])`` with ``ddof=1``. With ``groups_f`` /
    ``groups_r`` (start-sample labels), a direction's start samples are resampled instead,
    each drawn one bringing all of its trajectories (a cluster bootstrap).

    Parameters
    ----------
    work_f, work_r : array_like or torch.Tensor or None
        Shapes ``(n_f,)`` and ``(n_r,)``: works in kT; ``None`` for a missing direction (the
        estimator then receives ``None`` for it).
    estimator : callable
        ``estimator(work_f, work_r) -> float``, e.g. ``lambda f, r: bar(f, r)[0]``.
    n_bootstrap : int
        Number of resamples, at least 2.
    seed : int or numpy.random.Generator or None
        Seed for ``numpy.random.default_rng``; the global RNG is never used.
    groups_f, groups_r : array_like of int or None
        Shapes ``(n_f,)`` and ``(n_r,)``: the start sample of each trajectory, when several
        trajectories share one; None: every trajectory is independent.

    Returns
    -------
    float
        The bootstrap standard deviation in kT. ``inf`` if some resample has no finite work in
        a direction (its estimate is undefined) or gives a non-finite estimate: then the
        uncertainty really is unbounded at this sample size.
    """
    if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be an integer >= 2; got {n_bootstrap!r}.")
    if not callable(estimator):
        raise ValueError(f"estimator must be callable(work_f, work_r) -> float; got {estimator!r}.")
    wf = check_works(work_f, "work_f").values if work_f is not None else None
    wr = check_works(work_r, "work_r").values if work_r is not None else None
    if wf is None and wr is None:
        raise ValueError("bootstrap needs work_f, work_r or both; got neither.")
    rng = np.random.default_rng(seed)
    n_bootstrap = int(n_bootstrap)
    samples_f = _resample(rng, wf, check_groups(groups_f, 0 if wf is None else wf.size,
                                                "groups_f"), n_bootstrap)
    samples_r = _resample(rng, wr, check_groups(groups_r, 0 if wr is None else wr.size,
                                                "groups_r"), n_bootstrap)
    for samples in (samples_f, samples_r):
        if samples is not None and not all(np.isfinite(s).any() for s in samples):
            return float("inf")
    values = np.array(
        [
            estimator(
                None if samples_f is None else samples_f[b],
                None if samples_r is None else samples_r[b],
            )
            for b in range(n_bootstrap)
        ],
        dtype=np.float64,
    )
    if not np.isfinite(values).all():
        return float("inf")
    return float(np.std(values, ddof=1))


def _resample(rng: np.random.Generator, works: np.ndarray | None, groups: np.ndarray | None,
              n_bootstrap: int) -> list[np.ndarray] | np.ndarray | None:
    """``n_bootstrap`` resampled copies of ``works`` (by trajectory, or by start sample)."""
    if works is None:
        _resample_indices(rng, None, n_bootstrap)  # the draws of an absent direction, as ever
        return None
    if groups is None:
        return works[_resample_indices(rng, works.size, n_bootstrap)]
    return [works[i] for i in _resample_groups(rng, groups, n_bootstrap)]
