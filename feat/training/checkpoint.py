"""Checkpoints of a run: written atomically, rotated, verified against the run's settings.

``save_checkpoint`` writes the new checkpoint completely (atomically, beside the target), then
renames the current one to ``<name>.prev.pt`` and the new one into place, so at every instant
at least one complete checkpoint exists.
``load_checkpoint`` falls back to the previous one when the newest is unreadable.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, RunConfig
from ..storage import save_torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]

FORMAT = "feat-checkpoint-1"


class CheckpointError(RuntimeError):
    """No usable checkpoint: the message says why and what to do."""


def _previous(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(path: str | os.PathLike, state: dict, identity: dict) -> Path:
    """Write ``state`` with the run's ``identity`` (the settings a resume must match)."""
    from .. import __version__

    path = Path(path)
    new = path.with_name(path.stem + ".new" + path.suffix)
    save_torch(new, {"format": FORMAT, "feat": __version__, "torch": torch.__version__,
                     "identity": identity, "state": state})
    if path.exists():
        os.replace(path, _previous(path))
    os.replace(new, path)
    return path


def _read(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001  (any unreadable file is reported the same way)
        raise CheckpointError(f"checkpoint '{path}' is unreadable ({type(err).__name__}: "
                              f"{err}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a feat checkpoint of format {FORMAT}.")
    return data


_ABSENT = object()


def _differences(saved: dict, current: dict, defaults: Any, prefix: str = "") -> list[str]:
    """Settings that differ between a checkpoint and now. A setting absent from the checkpoint
    (added to feat after it was written) matches when it is at its default now: new settings
    default to the behaviour that older versions had."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, _ABSENT), current.get(key)
        d = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, d, f"{prefix}{key}.")
        elif a is _ABSENT and d is not _ABSENT and d == b:
            continue
        elif a != b:
            shown = "absent" if a is _ABSENT else repr(a)
            out.append(f"{prefix}{key}: checkpoint {shown}, now {b!r}")
    return out


def load_checkpoint(path: str | os.PathLike, identity: dict) -> dict[str, Any] | None:
    """The saved state, or None when no checkpoint exists yet.

    Raises ``ConfigError`` when the checkpoint belongs to other settings (naming them), and
    ``CheckpointError`` when neither the newest nor the previous checkpoint can be read.
    """
    path = Path(path)
    candidates = [p for p in (path, _previous(path)) if p.exists()]
    if not candidates:
        return None
    problems = []
    for candidate in candidates:
        try:
            data = _read(candidate)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        diff = _differences(data["identity"], identity, RunConfig().to_dict())
        if diff:
            raise ConfigError("cannot resume: the run directory was made with other settings ("
                              + "; ".join(diff[:5]) + "). Use a new --out directory, or run "
                              "without --resume to start over.")
        if problems:
            warnings.warn(f"{problems[0]} Resuming from the previous checkpoint '{candidate}'.",
                          stacklevel=2)
        return data["state"]
    raise CheckpointError(" ".join(problems) + " Delete the run directory's checkpoints (or use "
                          "a new --out) to start over.")
