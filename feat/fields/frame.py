r"""Rotation-equivariant fields for molecules: a plain network evaluated in a molecule frame.

Three atoms ``(i, j, k)`` define a right-handed orthonormal frame of a configuration ``x``
(batch, N, 3):

    e₁ = (x_j − x_i) / |x_j − x_i|,
    e₂ = the unit part of (x_k − x_j) orthogonal to e₁,
    e₃ = e₁ × e₂,

the rows of a proper rotation ``R(x)``. :class:`FrameField` centres ``x``, writes it in that
frame, ``y = (x − x̄) Rᵀ``, evaluates any field there and rotates the COM-free output back:

    v(t, x) = P f(t, y) R(x),

with ``P`` the COM projection. Rotating the input by ``Q`` turns ``R`` into ``R Qᵀ`` and leaves
``y`` unchanged, so ``v(t, x Qᵀ + c) = v(t, x) Qᵀ`` exactly: rotation-equivariant and
translation-invariant like :class:`~feat.fields.egnn.EGNNField`, but at the cost of one MLP
evaluation, which makes training and transport of a small molecule cheap on a CPU. Unlike the
EGNN it is not permutation-equivariant (atoms keep their identity, right for a molecule whose
atoms are typed by name) and not reflection-equivariant (the frame is right-handed; a chiral
molecule's samples are one enantiomer anyway). The frame is smooth wherever the three atoms are
not collinear; pick three bonded, rigidly connected atoms (alanine dipeptide: backbone N, CA, C).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .field import Field

__all__ = ["FrameField", "local_frame"]

_TINY = 1e-24  # keeps coincident atoms finite without biasing the unit vectors


def local_frame(x: Tensor, i: int, j: int, k: int) -> Tensor:
    """The right-handed frame of atoms ``(i, j, k)``: (batch, 3, 3), rows ``e₁, e₂, e₃``."""
    e1 = _unit(x[:, j] - x[:, i])
    u = x[:, k] - x[:, j]
    e2 = _unit(u - (u * e1).sum(-1, keepdim=True) * e1)
    return torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=1)


def _unit(v: Tensor) -> Tensor:
    return v / torch.sqrt((v * v).sum(-1, keepdim=True) + _TINY)


class FrameField(Field):
    """``inner`` evaluated in the frame of atoms ``frame_atoms``: rotation-equivariant,
    translation-invariant, COM-free.

    Parameters
    ----------
    inner : a field on (batch, n_atoms, 3), e.g. :class:`~feat.fields.mlp.MLPField`.
    n_atoms : number of atoms.
    frame_atoms : three distinct atom indices ``(i, j, k)``, not collinear in the samples.
    length_scale : the inner field sees ``y / length_scale`` (outputs are not rescaled).
    """

    def __init__(self, inner: Field, n_atoms: int, frame_atoms: Sequence[int],
                 length_scale: float = 1.0):
        super().__init__()
        atoms = tuple(int(a) for a in frame_atoms)
        if len(atoms) != 3 or len(set(atoms)) != 3 or not all(0 <= a < n_atoms for a in atoms):
            raise ValueError(f"frame_atoms must be three distinct atom indices in [0, {n_atoms}) "
                             f"(e.g. alanine dipeptide's backbone N, CA, C = 6, 8, 14); got "
                             f"{list(frame_atoms)!r}.")
        if not length_scale > 0:
            raise ValueError(f"length_scale must be > 0; got {length_scale}.")
        self.inner, self.frame_atoms = inner, atoms
        self.event_shape, self.length_scale = (int(n_atoms), 3), float(length_scale)

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (batch, {self.event_shape[0]}, 3); got "
                             f"{tuple(x.shape)}.")
        x0 = x - x.mean(dim=1, keepdim=True)
        r = local_frame(x0, *self.frame_atoms)
        v = self.inner(t, x0 @ r.mT / self.length_scale)
        v = v - v.mean(dim=1, keepdim=True)
        return v @ r
