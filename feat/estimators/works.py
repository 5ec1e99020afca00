"""Validation of work values at the estimator boundary.

Works are reduced (in kT), one value per trajectory, accumulated in float64. Every estimator
in this package calls :func:`check_works` once on its input, so the rules for non-finite works
live in one place (METHOD.md section 5):

- ``+inf`` is a zero-weight trajectory, ``exp(-W) = 0``: it is kept, counts in ``N`` and is
  counted in :attr:`WorkSet.n_posinf`;
- ``NaN`` is an error unless the caller asks for ``nan_policy="drop"``; dropped values are
  counted in :attr:`WorkSet.n_nan_dropped`, never silently discarded;
- ``-inf`` is an error: it would be an infinite weight (a start energy of ``+inf`` or an end
  energy of ``-inf``), which no estimator can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WorkSet", "as_work_array", "check_works"]

_NAN_POLICIES = ("raise", "drop")


@dataclass(frozen=True)
class WorkSet:
    """Validated works of one direction.

    Attributes
    ----------
    values : np.ndarray
        Shape ``(n,)``, float64, read-only: the kept works in kT (``+inf`` included).
    n_posinf : int
        How many of ``values`` are ``+inf`` (zero-weight trajectories).
    n_nan_dropped : int
        How many NaN works were dropped (only with ``nan_policy="drop"``).
    """

    values: np.ndarray
    n_posinf: int
    n_nan_dropped: int

    @property
    def n(self) -> int:
        """Number of kept works ``N`` (``+inf`` included)."""
        return int(self.values.shape[0])


def as_work_array(work: Any, name: str = "work_f") -> np.ndarray:
    """Convert ``work`` to a float64 array of shape ``(n,)``, ``n >= 1``; no value checks.

    Accepts sequences, numpy arrays and torch tensors (detached and moved to the CPU).

    Raises
    ------
    ValueError
        If ``work`` is not real and numeric, not 1-D, or empty.
    """
    if hasattr(work, "detach"):
        work = np.asarray(work.detach().cpu())
    if np.iscomplexobj(work):
        raise ValueError(
            f"{name} must hold real numbers (works in kT); got complex values. Take .real if "
            "the imaginary part is round-off, otherwise find where the works became complex."
        )
    try:
        arr = np.array(work, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be a 1-D array of real numbers (works in kT); got "
            f"{type(work).__name__} that cannot be converted to float64 ({err})."
        ) from None
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with shape (n_trajectories,); got shape {arr.shape}. "
            "Pass one work per trajectory, e.g. work.reshape(-1) if the extra axes are batch axes."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape (0,)); give at least one trajectory's work.")
    return arr


def _indices_text(mask: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:limit])
    return f"[{shown}, ...]" if idx.size > limit else f"[{shown}]"


def check_works(work: Any, name: str = "work_f", nan_policy: str = "raise") -> WorkSet:
    """Validate the works of one direction and count the non-finite ones.

    Parameters
    ----------
    work : array_like or torch.Tensor
        Shape ``(n,)``: one reduced work per trajectory, in kT.
    name : str
        Argument name used in error messages (``"work_f"`` or ``"work_r"``).
    nan_policy : {"raise", "drop"}
        ``"raise"``: any NaN is a ``ValueError``. ``"drop"``: NaN works are removed and counted.

    Returns
    -------
    WorkSet
        The kept works (float64, read-only) with the counts of ``+inf`` and dropped NaN works.

    Raises
    ------
    ValueError
        For a non-1-D or empty input, NaN (with ``nan_policy="raise"``), any ``-inf`` work,
        or when no kept work is finite.
    """
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {_NAN_POLICIES}; got {nan_policy!r}.")
    arr = as_work_array(work, name)
    nan = np.isnan(arr)
    n_nan = int(nan.sum())
    if n_nan and nan_policy == "raise":
        raise ValueError(
            f"{name} contains {n_nan} NaN work(s) out of {arr.size}, at indices "
            f"{_indices_text(nan)}. Find where the transport produced NaN (energies or "
            'networks), or pass nan_policy="drop" to drop them and report the count.'
        )
    values = arr[~nan]
    if values.size == 0:
        raise ValueError(f"{name}: all {arr.size} works are NaN; nothing is left to estimate from.")
    neginf = np.isneginf(values)
    if neginf.any():
        raise ValueError(
            f"{name} contains {int(neginf.sum())} work(s) equal to -inf (at indices "
            f"{_indices_text(neginf)} of the kept works): an infinite weight exp(-W). The start "
            "energy was +inf or the end energy -inf; check the end-state energies and samples."
        )
    n_posinf = int(np.isposinf(values).sum())
    if n_posinf == values.size:
        raise ValueError(
            f"{name}: all {values.size} works are +inf: the transport never reached the target "
            "state with finite work, so every weight exp(-W) is zero. Improve the transport "
            "(fields, time grid, eps) or check the end-state energies."
        )
    values.setflags(write=False)
    return WorkSet(values=values, n_posinf=n_posinf, n_nan_dropped=n_nan)
