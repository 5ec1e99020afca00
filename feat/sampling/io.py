"""Sample files: atomic ``.npz`` writes of samples, scores and energies with JSON metadata."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from feat.storage import save_npz

__all__ = ["SampleSet", "save_samples", "load_samples"]

_FORMAT = "feat.samples/1"


@dataclass(frozen=True)
class SampleSet:
    """Samples ``(n, *event_shape)`` with optional scores ``-grad u`` and energies ``(n,)``."""

    samples: Tensor = field(repr=False)
    scores: Tensor | None = field(repr=False)
    energies: Tensor | None = field(repr=False)
    metadata: dict[str, Any]


def _array(name: str, value: Tensor | np.ndarray) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{name} must be float16/32/64; got {value.dtype}. Convert with "
                         ".double() (tensors) or .astype(float) (arrays) first.")
    return arr


def save_samples(path: str | os.PathLike, samples: Tensor | np.ndarray, *,
                 scores: Tensor | np.ndarray | None = None,
                 energies: Tensor | np.ndarray | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
    """Atomically write samples (and scores, energies, JSON metadata) to an ``.npz`` file.

    Written by :func:`feat.storage.save_npz` (temporary file beside ``path``, fsync,
    ``os.replace``), so readers never see a partial file. ``path`` is used as given.
    """
    path = Path(path)
    arrays = {"samples": _array("samples", samples), "format": np.array(_FORMAT)}
    for name, value in (("scores", scores), ("energies", energies)):
        if value is not None:
            arrays[name] = _array(name, value)
    n = arrays["samples"].shape[0] if arrays["samples"].ndim else -1
    for name in ("scores", "energies"):
        if name in arrays and arrays[name].shape[:1] != (n,):
            raise ValueError(f"{name} must have {n} rows like samples; got shape "
                             f"{arrays[name].shape}.")
    try:
        arrays["metadata"] = np.array(json.dumps(metadata or {}, sort_keys=True))
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable (str, numbers, lists, dicts); "
                         f"{err}") from err
    save_npz(path, arrays)


def load_samples(path: str | os.PathLike) -> SampleSet:
    """Read a file written by :func:`save_samples`; arrays come back as CPU tensors.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that is not a
    readable samples file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file '{path}' does not exist; check the path, or "
                                "write it with feat.sampling.save_samples.")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"samples file '{path}' is not a readable .npz file ({err}); delete "
                         "it and write it again with feat.sampling.save_samples.") from None
    with f:
        if "format" not in f.files or str(f["format"]) != _FORMAT:
            raise ValueError(f"{path} is not a {_FORMAT} file (keys {f.files}); write it with "
                             "feat.sampling.save_samples.")
        get = {k: torch.from_numpy(f[k].copy()) for k in ("samples", "scores", "energies")
               if k in f.files}
        meta = json.loads(str(f["metadata"]))
    return SampleSet(get["samples"], get.get("scores"), get.get("energies"), meta)
