"""Stage reuse: a run directory's finished stages are reused only when they match the settings.

``feat run`` into a directory that already holds

* a finished ``checkpoint.pt`` whose identity (system, seed, fields, training; see
  :func:`~feat.pipeline.stages.identity`) and in-training monitor settings equal the config's
  skips training and loads it;
* a ``works.npz`` whose stored transport settings, seed and checkpoint fingerprint equal the
  current ones skips the transports and only re-estimates.

Anything else reruns, and a one-line note on stderr says which stage reruns and why; nothing
stale is reused silently. ``--force`` (``force=True``) reruns every stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import torch

from ..config import ConfigError, RunConfig
from ..estimators import SavedWorks, load_works
from ..training import distributed
from ..training.checkpoint import CheckpointError, load_checkpoint

__all__ = ["finished_checkpoint", "fingerprint", "monitor_settings", "reusable_works", "say",
           "works_settings"]


def say(note: str | None) -> None:
    """Print a stage note on stderr (rank 0 only; nothing for None)."""
    if note and distributed.is_main():
        print(note, file=sys.stderr)


def _changes(saved, now, prefix: str = "") -> list[str]:
    """``key: saved → now`` for every leaf of two nested dicts that differs."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [c for k in sorted(set(saved) | set(now))
                for c in _changes(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [f"{prefix.rstrip('.')}: {saved!r} → {now!r}"]


def monitor_settings(config: RunConfig) -> dict:
    """The settings of the in-training estimates (stored with the checkpoint's monitor)."""
    e = config.estimate
    return {"monitor_every": e.monitor_every, "monitor_trajectories": e.monitor_trajectories}


def _saved_identity(path: Path) -> dict:
    for candidate in (path, path.with_name(path.stem + ".prev" + path.suffix)):
        try:
            return torch.load(candidate, map_location="cpu", weights_only=False)["identity"]
        except Exception:  # noqa: BLE001, S112  (an unreadable candidate: try the next one)
            continue
    return {}


def finished_checkpoint(out: Path, config: RunConfig, identity: dict
                        ) -> tuple[dict | None, str | None]:
    """The state of ``out/checkpoint.pt`` when it is finished and matches, and a note.

    Returns ``(state, note)``: ``state`` is None when training must run; ``note`` says why
    (None for a directory without a checkpoint).
    """
    path = Path(out) / "checkpoint.pt"
    try:
        state = load_checkpoint(path, identity)
    except ConfigError:
        diff = "; ".join(_changes(_saved_identity(path), identity)[:5])
        return None, f"training reruns: checkpoint.pt was trained with other settings ({diff})."
    except CheckpointError as err:
        return None, f"training reruns: {err}"
    if state is None:
        return None, None
    step, steps = state["trainer"]["step"], config.training.steps
    if step < steps:
        return None, (f"training reruns from step 0: checkpoint.pt stopped at step {step} of "
                      f"{steps} (give --resume to continue it instead).")
    unknown = {"monitor_every": None if state["monitor"]["records"] else 0,
               "monitor_trajectories": None}  # a checkpoint from before settings were stored
    saved = state["monitor"].get("settings", unknown)
    now = monitor_settings(config)
    if saved["monitor_every"] != now["monitor_every"] or (
            now["monitor_every"] and saved != now):
        diff = "; ".join(_changes(saved, now))
        return None, f"training reruns: its in-training estimates used other settings ({diff})."
    return state, (f"training skipped: checkpoint.pt is finished ({step} steps) and matches the "
                   "settings (--force retrains).")


def fingerprint(identity: dict, step: int, ema: dict) -> str:
    """A digest of a trained state: its identity, step and EMA weights (what transport uses).

    ``ema`` maps "velocity" and "score" to the averaged networks' state dicts.
    """
    h = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    h.update(str(int(step)).encode())
    for net in ("velocity", "score"):
        for key, value in sorted(ema[net].items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def works_settings(config: RunConfig, checkpoint: str) -> dict:
    """What works must match to be reused: transport settings, seed, checkpoint fingerprint."""
    return {"transport": dataclasses.asdict(config.transport), "seed": config.seed,
            "checkpoint": checkpoint}


def _works_changes(stored: dict, settings: dict) -> str:
    if stored.get("checkpoint") != settings["checkpoint"]:
        return "works.npz came from other trained fields (the checkpoint's fingerprint differs)"
    diff = _changes({k: stored.get(k) for k in ("transport", "seed")},
                    {k: settings[k] for k in ("transport", "seed")})
    return f"works.npz was made with other settings ({'; '.join(diff[:5])})"


def reusable_works(out: Path, settings: dict) -> tuple[SavedWorks | None, str | None]:
    """``out/works.npz`` when its stored settings equal ``settings``, and a note.

    Returns ``(works, note)``: ``works`` is None when the transports must run; ``note`` says
    why (None for a directory without works).
    """
    path = Path(out) / "works.npz"
    if not path.is_file():
        return None, None
    try:
        saved = load_works(path)
    except (OSError, ValueError) as err:
        return None, f"transport reruns: works.npz is unreadable ({err})."
    stored = saved.metadata.get("settings")
    if stored is None:
        return None, "transport reruns: works.npz has no stored settings to compare with."
    if stored != settings:
        return None, f"transport reruns: {_works_changes(stored, settings)}."
    return saved, ("transport skipped: works.npz matches the transport settings, seed and "
                   "checkpoint; re-estimating only (--force reruns it).")
