"""Atomic file writes: write to a temporary file beside the target, fsync, then rename.

A reader (or a resumed run) never sees a half-written file; on any failure, disk-full
included, the temporary file is removed and the previous version of the target survives.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "save_npz", "write_json", "save_torch"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any],
                 suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then ``os.replace`` it.

    Raises
    ------
    OSError
        With the original ``errno`` (e.g. ``ENOSPC`` for a full disk) and a message naming
        ``path``; the temporary file is removed and any previous ``path`` is unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        msg = _write_error(path, err)
        raise (OSError(err.errno, msg) if err.errno else OSError(msg)) from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_error(path: Path, err: OSError) -> str:
    why = err.strerror or str(err)
    kept = "the previous version is unchanged" if path.exists() else "nothing was written"
    fix = ("free disk space" if err.errno in (errno.ENOSPC, errno.EDQUOT)
           else "check that the folder exists and is writable")
    return (f"could not write '{path}': {why}; {kept} and no temporary file is left. "
            f"{fix[0].upper()}{fix[1:]} and retry.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` of ``arrays`` to ``path`` (exactly that name), atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, write, ".npz")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Indented JSON (non-JSON values via ``str``), atomically."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)``, atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), ".pt")
