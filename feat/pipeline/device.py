"""The compute device of a run: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

The pipeline places the fields, the training minibatches and the transports on this device;
energies follow their inputs' device and dtype. Randomness is always drawn on the CPU from the
run's seeded generators, so a run's random streams do not depend on the device (the numbers
differ between devices only by floating-point round-off of the networks).
"""

from __future__ import annotations

import os

import torch

from ..config import ConfigError

__all__ = ["describe_device", "resolve_device"]


def _cuda_index(name: str) -> int:
    """The GPU index of ``cuda``/``cuda:N``: ``N``, else ``LOCAL_RANK`` under torchrun, else 0."""
    _, _, index = name.partition(":")
    return int(index) if index else int(os.environ.get("LOCAL_RANK", "0"))


def _check_cuda(name: str) -> torch.device:
    if not torch.cuda.is_available():
        why = ("this torch was built without CUDA" if torch.version.cuda is None
               else "no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)")
        raise ConfigError(f"--device {name}: CUDA is not available here ({why}). Use "
                          "--device cpu (or auto, which picks a GPU only when there is one), "
                          "or run on a GPU node with a CUDA build of torch.")
    index, count = _cuda_index(name), torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {name}: GPU {index} does not exist; this node has {count} "
                          f"GPU(s), cuda:0 .. cuda:{count - 1}. Use --device cuda (under "
                          "torchrun: one GPU per process, chosen by LOCAL_RANK).")
    return torch.device("cuda", index)


def resolve_device(name: str = "auto") -> torch.device:
    """The ``torch.device`` a ``device`` setting asks for, checked to exist here.

    Parameters
    ----------
    name : "auto" (a CUDA GPU when available, else the CPU), "cpu", "cuda", "cuda:N" or "mps".
        Under ``torchrun``, "auto" and "cuda" mean ``cuda:LOCAL_RANK``: one GPU per process.

    Raises
    ------
    ConfigError
        When the device is unknown or not available on this machine; the message names
        ``--device`` and the fix.
    """
    if not isinstance(name, str):
        raise ConfigError(f"--device must be a string (auto, cpu, cuda, cuda:N or mps); got "
                          f"{name!r}.")
    if name == "auto":
        return _check_cuda("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("--device mps: Apple's Metal (MPS) backend is not available "
                              "here. Use --device cpu (or auto).")
        return torch.device("mps")
    head, _, index = name.partition(":")
    if head == "cuda" and (not index or index.isdigit()):
        return _check_cuda(name)
    raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {name!r}.")


def describe_device(device: torch.device) -> str:
    """``"cpu"`` or e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"``: the device for provenance."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
