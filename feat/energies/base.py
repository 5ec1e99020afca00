"""The one energy contract: a reduced potential u(x) in kT.

An :class:`Energy` maps positions ``x`` of shape ``(batch, *event_shape)`` to the reduced
potential ``u(x) = U(x) / kT`` of shape ``(batch,)``. Its score is ``-grad u``; by default it
comes from autograd, subclasses with closed forms override :meth:`Energy.score`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Energy", "FunctionEnergy", "check_batch"]


def check_batch(x: Tensor, event_shape: tuple[int, ...], name: str = "x") -> None:
    """Raise unless ``x`` is a real floating-point tensor of shape ``(batch, *event_shape)``.

    A ``TypeError`` for a non-tensor or a non-floating dtype (integer, bool, complex), a
    ``ValueError`` for a wrong shape or an empty batch; each message names ``name``, the
    expected and the received value, and the fix.
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor; got {type(x).__name__}. "
            "Convert arrays with torch.as_tensor(...)."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a real floating-point tensor (float32 or float64); got {x.dtype}. "
            + (
                "Take x.real if the imaginary part is round-off."
                if x.is_complex()
                else "Convert with x.double()."
            )
        )
    shape = tuple(int(n) for n in event_shape)
    expected = "(batch, " + ", ".join(str(n) for n in shape) + ")"
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{name} must have shape {expected}; got {tuple(x.shape)}. {_shape_fix(x, shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}; give at least one sample.")


def _shape_fix(x: Tensor, event_shape: tuple[int, ...]) -> str:
    """How to turn ``x`` into shape ``(batch, *event_shape)``, as one sentence."""
    if tuple(x.shape) == event_shape:
        return "For one configuration add a batch dimension: x[None]."
    per_sample = 1
    for n in event_shape:
        per_sample *= n
    if x.dim() >= 1 and x.shape[0] > 0 and x[0].numel() == per_sample:
        return f"Reshape with x.reshape(-1, {', '.join(map(str, event_shape))})."
    return (
        f"Each sample must have the energy's event shape {event_shape}; check that the "
        "samples belong to this energy (same dimension, same number of atoms)."
    )


class Energy(abc.ABC):
    """A reduced potential ``u(x)`` in kT (dimensionless).

    Subclasses set ``event_shape`` and implement :meth:`energy`. Calling the object validates
    the input and output shapes once at the boundary and returns ``u`` of shape ``(batch,)``.
    """

    event_shape: tuple[int, ...]

    def __deepcopy__(self, memo: dict) -> Energy:
        """An energy is a fixed function of ``x``: copies of what holds it (the EMA copy of an
        energy-informed field) share it, and with it its OpenMM Context and its counters."""
        return self

    @abc.abstractmethod
    def energy(self, x: Tensor) -> Tensor:
        """Reduced potential of ``x`` with shape ``(batch, *event_shape)``; returns ``(batch,)``."""

    def __call__(self, x: Tensor) -> Tensor:
        check_batch(x, self.event_shape)
        u = self.energy(x)
        if not isinstance(u, Tensor) or tuple(u.shape) != (x.shape[0],):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(
                f"{type(self).__name__} returned shape {got} for a batch of {x.shape[0]}; a "
                f"reduced potential must return shape ({x.shape[0]},). If it returns (B, 1), "
                "squeeze the last dimension."
            )
        return u

    def score(self, x: Tensor) -> Tensor:
        """The score ``-grad u(x)``, shape ``(batch, *event_shape)`` (autograd by default)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            u = self(xg)
            (g,) = torch.autograd.grad(u.sum(), xg)
        return -g

    def energy_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both ``u(x)`` (batch,) and ``-grad u(x)`` (batch, *event_shape) from one pass."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            u = self(xg)
            (g,) = torch.autograd.grad(u.sum(), xg)
        return u.detach(), -g

    @property
    def dim(self) -> int:
        """Number of degrees of freedom, the product of ``event_shape``."""
        n = 1
        for k in self.event_shape:
            n *= int(k)
        return n

    def log_z(self) -> float | None:
        """``log Z = log ∫ exp(-u(x)) dx`` when known exactly, else ``None``."""
        return None


class FunctionEnergy(Energy):
    """Wrap any torch-callable reduced potential ``fn(x) -> (batch,)`` in kT.

    Examples
    --------
    >>> import torch
    >>> u = FunctionEnergy(lambda x: 0.5 * (x**2).sum(-1), event_shape=(3,))
    >>> u(torch.zeros(2, 3))
    tensor([0., 0.])
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        event_shape: tuple[int, ...] | int,
        log_z: float | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable; got {type(fn).__name__}.")
        self.fn = fn
        self.event_shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        self._log_z = log_z

    def energy(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def log_z(self) -> float | None:
        return self._log_z
