"""Multilayer-perceptron fields for flat or any-shaped states."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .embedding import FourierTimeEmbedding
from .field import Field

__all__ = ["MLPField"]


class MLPField(Field):
    """``v(t, x) = scale · MLP([flatten(x), emb(t)])`` reshaped to the event shape.

    Parameters
    ----------
    event_shape : the state's shape without the batch, e.g. (40,).
    hidden, depth : width and number of hidden layers (SiLU activations).
    scale : fixed output scale so the network itself predicts O(1) numbers.
    features : optional module ``x ↦ (batch, features.size)`` of extra inputs (e.g.
        :class:`~feat.fields.informed.EnergyFeatures`).
    periods : optional period of each flattened coordinate (0: not periodic); a periodic
        coordinate enters as ``cos(2π x / L)``, ``sin(2π x / L)``, so the field is periodic in
        it (angles, e.g. the dihedrals of :mod:`feat.energies.internal`).

    Parameters are float32 by default; inputs of any dtype are cast in and the output cast back.
    """

    def __init__(
        self,
        event_shape: tuple[int, ...] | int,
        hidden: int = 256,
        depth: int = 4,
        n_frequencies: int = 8,
        scale: float = 1.0,
        features: nn.Module | None = None,
        periods=None,
    ):
        super().__init__()
        self.event_shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        d = math.prod(self.event_shape)
        self.embed = FourierTimeEmbedding(n_frequencies)
        self.features = features
        periods = torch.zeros(d) if periods is None else torch.as_tensor(periods).double()
        if periods.shape != (d,) or not bool((torch.isfinite(periods) & (periods >= 0)).all()):
            raise ValueError(f"periods must give each of the {d} coordinates a finite period "
                             f">= 0 (0: not periodic); got shape {tuple(periods.shape)}.")
        self.register_buffer("periodic", torch.nonzero(periods > 0).squeeze(-1), persistent=False)
        self.register_buffer("plain", torch.nonzero(periods == 0).squeeze(-1), persistent=False)
        self.register_buffer("frequency", 2 * math.pi / periods[periods > 0], persistent=False)
        width = len(self.plain) + 2 * len(self.periodic)
        layers, width = [], width + self.embed.dim + (features.size if features is not None else 0)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, d))
        self.net = nn.Sequential(*layers)
        self.scale = float(scale)

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        dtype = self.net[0].weight.dtype
        parts = [self._inputs(x.flatten(1))]
        parts += [self.features(x)] if self.features is not None else []
        h = torch.cat([p.to(dtype) for p in parts] + [self.embed(t.to(dtype))], dim=-1)
        return (self.scale * self.net(h)).reshape(x.shape).to(x.dtype)

    def _inputs(self, x: Tensor) -> Tensor:
        if not len(self.periodic):
            return x
        angle = x[:, self.periodic] * self.frequency.to(x.dtype)
        return torch.cat([x[:, self.plain], torch.cos(angle), torch.sin(angle)], dim=-1)
