"""Works on disk (.npz) and in pymbar's format."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ..storage import save_npz
from .works import as_work_array, check_works

__all__ = ["SavedWorks", "load_works", "save_works", "to_pymbar"]

FORMAT_VERSION = 1


class SavedWorks(NamedTuple):
    """Works read back by :func:`load_works`: ``work_f, work_r, metadata = load_works(path)``."""

    work_f: np.ndarray | None
    work_r: np.ndarray | None
    metadata: dict[str, Any]


def to_pymbar(work_f: ArrayLike, work_r: ArrayLike) -> dict[str, np.ndarray]:
    """Works in the form pymbar's two-state estimators take.

    Our works are already pymbar's reduced works (dimensionless, in kT, forward a -> b and
    reverse b -> a), so no conversion is needed:
    ``pymbar.other_estimators.bar(**to_pymbar(work_f, work_r))``.

    Parameters
    ----------
    work_f, work_r : array_like or torch.Tensor
        Shapes ``(n_f,)`` and ``(n_r,)``, validated by :func:`check_works` (NaN, ``-inf`` raise).
        pymbar does not handle ``+inf`` works; our :func:`bar` does.

    Returns
    -------
    dict
        ``{"w_F": float64 (n_f,), "w_R": float64 (n_r,)}``.
    """
    return {
        "w_F": np.array(check_works(work_f, "work_f").values),
        "w_R": np.array(check_works(work_r, "work_r").values),
    }


def save_works(
    path: str | os.PathLike, work_f: ArrayLike | None, work_r: ArrayLike | None, **metadata: Any
) -> Path:
    """Save raw works (non-finite values included) and JSON metadata to ``path`` (.npz), atomically.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so a reader never sees a half-written file. No pickles are stored.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; written exactly as given (no suffix is added).
    work_f, work_r : array_like or torch.Tensor or None
        Shapes ``(n_f,)`` and ``(n_r,)``, in kT; ``None`` for a direction not run.
    **metadata
        JSON-serialisable values (e.g. system, seed, eps, n_steps).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if work_f is None and work_r is None:
        raise ValueError("save_works needs work_f, work_r or both; got neither.")
    try:
        meta = json.dumps(metadata, allow_nan=True)
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable; {err}.") from None
    arrays = {"format_version": np.array(FORMAT_VERSION), "metadata": np.array(meta)}
    for name, work in (("work_f", work_f), ("work_r", work_r)):
        if work is not None:
            arrays[name] = as_work_array(work, name)
    return save_npz(path, arrays)


def load_works(path: str | os.PathLike) -> SavedWorks:
    """Read works saved by :func:`save_works`.

    Returns
    -------
    SavedWorks
        ``(work_f, work_r, metadata)``; float64 arrays of shape ``(n,)`` or ``None``.
    """
    with np.load(path, allow_pickle=False) as data:
        if "metadata" not in data.files:
            raise ValueError(f"{path} is not a works file written by save_works (no metadata).")
        work_f = np.array(data["work_f"], dtype=np.float64) if "work_f" in data.files else None
        work_r = np.array(data["work_r"], dtype=np.float64) if "work_r" in data.files else None
        metadata = json.loads(str(data["metadata"]))
    return SavedWorks(work_f, work_r, metadata)
