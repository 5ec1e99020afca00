r"""Translation-equivariant convolutional fields for periodic lattices (d = 1, 2, 3).

A lattice state ``x`` of shape ``(batch, L_0, ..., L_{d-1})`` is read as a one-channel image;
every layer is a periodic (``padding_mode="circular"``) convolution, so shifting the input by a
lattice vector shifts the output the same way:

.. math:: v(t, \mathrm{roll}(x, a)) = \mathrm{roll}(v(t, x), a)

Time enters by FiLM: each hidden layer's channels are scaled and shifted by a linear map of the
Fourier time embedding (smooth and finite at t = 0 and 1). Optionally each layer also adds a
linear map of its input's site average (``global_features``): the mean over sites is invariant
under translations, so equivariance is kept, and the network sees global quantities such as the
magnetisation at once (an umbrella on the magnetisation acts on every site equally) instead of
only after ``depth * (kernel_size - 1) / 2`` sites of receptive field.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from .embedding import FourierTimeEmbedding
from .field import Field

__all__ = ["CNNField"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _check_lattice(event_shape: tuple[int, ...] | int) -> tuple[int, ...]:
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if len(shape) not in _CONV or not all(isinstance(n, int) and n >= 1 for n in shape):
        raise ValueError(f"event_shape must be a lattice shape of 1 to 3 positive ints, e.g. "
                         f"(16, 16); got {event_shape!r}. Flatten other states and use "
                         "MLPField.")
    return shape


class _FiLMBlock(nn.Module):
    """``silu(FiLM_t(conv(h) + W mean_sites(h)))``: (batch, c_in, *L) -> (batch, c_out, *L)."""

    def __init__(self, ndim: int, c_in: int, c_out: int, kernel_size: int, emb_dim: int,
                 global_features: bool):
        super().__init__()
        self.conv = _CONV[ndim](c_in, c_out, kernel_size, padding=kernel_size // 2,
                                padding_mode="circular")
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.pool = nn.Linear(c_in, c_out, bias=False) if global_features else None

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        tail = (1,) * (h.dim() - 2)
        y = self.conv(h)
        if self.pool is not None:
            y = y + self.pool(h.flatten(2).mean(-1)).reshape(*y.shape[:2], *tail)
        gain, shift = self.film(emb).chunk(2, dim=-1)
        y = y * (1.0 + gain.reshape(*y.shape[:2], *tail)) + shift.reshape(*y.shape[:2], *tail)
        return nn.functional.silu(y)


class CNNField(Field):
    """``v(t, x) = scale · CNN_t(x)``, periodic and translation-equivariant, same shape as ``x``.

    Parameters
    ----------
    event_shape : tuple of int
        The lattice shape ``(L_0, ..., L_{d-1})`` with ``d`` in {1, 2, 3}; periodic in every axis.
    channels : int
        Hidden channels per layer.
    depth : int
        Number of hidden convolution layers (each followed by FiLM and SiLU); one more
        convolution maps to the single output channel.
    kernel_size : int
        Odd kernel extent (3 = nearest neighbours); the receptive field is
        ``(depth + 1) * (kernel_size - 1) + 1`` sites per axis.
    n_frequencies : int
        Frequencies of the Fourier time embedding.
    scale : float
        Fixed output scale so the network itself predicts O(1) numbers.
    global_features : bool
        Add a linear map of each layer's site-averaged input (translation-invariant).

    Parameters are float32 by default; inputs of any dtype are cast in and the output cast back.

    Examples
    --------
    >>> import torch
    >>> net = CNNField((8, 8), channels=8, depth=2)
    >>> net(torch.tensor(0.5), torch.zeros(3, 8, 8, dtype=torch.float64)).shape
    torch.Size([3, 8, 8])
    """

    def __init__(self, event_shape: tuple[int, ...] | int, channels: int = 32, depth: int = 4,
                 kernel_size: int = 3, n_frequencies: int = 8, scale: float = 1.0,
                 global_features: bool = True):
        super().__init__()
        self.event_shape = _check_lattice(event_shape)
        _check_sizes(channels, depth, kernel_size, scale)
        ndim = len(self.event_shape)
        self.embed = FourierTimeEmbedding(n_frequencies)
        widths = [1] + [channels] * depth
        self.blocks = nn.ModuleList(
            _FiLMBlock(ndim, c_in, c_out, kernel_size, self.embed.dim, global_features)
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True))
        self.out = _CONV[ndim](channels, 1, kernel_size, padding=kernel_size // 2,
                               padding_mode="circular")
        self.scale = float(scale)

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        """``v(t, x)``: ``t`` (batch,), ``x`` (batch, *event_shape) -> (batch, *event_shape)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.event_shape))})"
                             f"; got {tuple(x.shape)}.")
        dtype = self.out.weight.dtype
        emb = self.embed(t.to(dtype))
        h = x.to(dtype).unsqueeze(1)
        for block in self.blocks:
            h = block(h, emb)
        return (self.scale * self.out(h)).squeeze(1).to(x.dtype)


def _check_sizes(channels: int, depth: int, kernel_size: int, scale: float) -> None:
    for name, value in (("channels", channels), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}.")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1 (centred periodic stencil), e.g. "
                         f"3; got {kernel_size!r}.")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite float > 0; got {scale!r}.")
