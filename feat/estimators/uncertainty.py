"""Bootstrap standard error over trajectories."""

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


def bootstrap(
    work_f: ArrayLike | None,
    work_r: ArrayLike | None,
    estimator: Estimator,
    n_bootstrap: int = 200,
    seed: int | np.random.Generator | None = 0,
) -> float:
    """Bootstrap standard deviation of ``estimator`` over resampled trajectories.

    Each direction is resampled independently, with replacement, keeping its size; the result
    is ``std_b estimator(W_f[idx_f,b], W_r[idx_r,b])`` with ``ddof=1``.

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
    idx_f = _resample_indices(rng, None if wf is None else wf.size, n_bootstrap)
    idx_r = _resample_indices(rng, None if wr is None else wr.size, n_bootstrap)
    samples_f = None if wf is None else wf[idx_f]
    samples_r = None if wr is None else wr[idx_r]
    for samples in (samples_f, samples_r):
        if samples is not None and not np.isfinite(samples).any(axis=1).all():
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
