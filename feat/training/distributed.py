"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

One code path for CPU and GPU: the process group uses NCCL when the trainer's tensors live on
a CUDA device, gloo otherwise (``feat run/train --device`` passes the resolved device to
:func:`init`; under ``torchrun`` a CUDA device is ``cuda:LOCAL_RANK``, one GPU per process).
Every rank draws the same global minibatch (same seed), computes the loss on its contiguous
slice, and the gradients are averaged with :func:`all_reduce_mean_`, so all ranks take the
same optimiser step and hold identical weights. Outside ``torchrun``
(no ``WORLD_SIZE`` in the environment) everything here is a no-op: rank 0 of a world of 1.

No state is kept here beyond what ``torch.distributed`` keeps itself.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_object",
    "all_reduce_mean_",
    "all_reduce_sum_",
    "backend",
    "barrier",
    "init",
    "is_main",
    "launched",
    "rank",
    "shutdown",
    "world_size",
]


def launched() -> bool:
    """True when started by ``torchrun`` (or any launcher setting WORLD_SIZE > 1 and RANK)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device: str | torch.device | None = None) -> bool:
    """Join the process group of a ``torchrun`` launch; returns whether distributed is on.

    The backend is "nccl" when ``device`` is a CUDA device and CUDA is available (the device
    ``cuda:LOCAL_RANK`` is then made current), else "gloo". Idempotent; a no-op outside
    ``torchrun``.
    """
    if not dist.is_available() or not launched():
        return False
    if dist.is_initialized():
        return True
    device = torch.device(device) if device is not None else torch.device("cpu")
    name = "nccl" if device.type == "cuda" and torch.cuda.is_available() else "gloo"
    if name == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=name)
    atexit.register(shutdown, sync=False)  # a failed rank must not wait for the others
    return True


def shutdown(sync: bool = True) -> None:
    """Leave the process group (a no-op when not in one).

    With ``sync`` every rank first waits at a barrier, so none tears down its connections
    while a peer is still using them; gloo's worker threads otherwise may abort the process at
    exit ("terminate called without an active exception"). Commands that finish normally call
    it with ``sync``; :func:`init` registers the unsynchronised form at exit, for a rank that
    fails (waiting there for ranks that will never come would hang the launch).
    """
    if not _on():
        return
    if sync and world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def _on() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if _on() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if _on() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files and prints."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend ("gloo", "nccl"), or None when not distributed."""
    return str(dist.get_backend()) if _on() else None


def barrier() -> None:
    """Wait for every rank (a no-op when not distributed)."""
    if world_size() > 1:
        dist.barrier()


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean_(grads: Iterable[torch.Tensor | None]) -> None:
    """Average gradients over ranks, in place: ``g ← (Σ_ranks g) / world_size``.

    ``None`` entries (parameters without a gradient, the same on every rank) are skipped. The
    gradients are flattened into one buffer, so this is a single collective.
    """
    n = world_size()
    grads = [g for g in grads if g is not None]
    if n == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
