"""Time embeddings that are smooth and finite on all of [0, 1]."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["FourierTimeEmbedding"]


class FourierTimeEmbedding(nn.Module):
    """``t ↦ [t, cos(πkt), sin(πkt)]_{k=1..K}``: smooth, bounded, finite at t = 0 and 1.

    Input ``t`` of shape (batch,); output (batch, 2K + 1).
    """

    def __init__(self, n_frequencies: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, n_frequencies + 1.0))
        self.dim = 2 * n_frequencies + 1

    def forward(self, t: Tensor) -> Tensor:
        w = t[:, None] * self.freqs.to(t)
        return torch.cat([t[:, None], torch.cos(w), torch.sin(w)], dim=-1)
