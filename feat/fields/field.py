"""The field interface: a module ``(t, x) ↦ v`` with ``t`` (batch,) and ``x, v`` (batch, *event)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Field", "as_time"]


def as_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or (batch,) time to shape (batch,) on ``x``'s device and dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class Field(nn.Module):
    """A time-dependent vector field on the state space (velocity ``b`` or score ``s``).

    Subclasses implement :meth:`field`. Calling broadcasts ``t`` and returns the output in the
    input's dtype, whatever dtype the parameters use.
    """

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        return self.field(as_time(t, x), x)
