"""Couplings of end-state minibatches: independent, or minibatch optimal transport (METHOD §2)."""

from __future__ import annotations

import abc

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["Coupling", "IndependentCoupling", "MinibatchOTCoupling", "PermKabschOTCoupling",
           "lift_periodic", "minimal_image"]


class Coupling(abc.ABC):
    """Pairs a minibatch of ``x_a`` with one of ``x_b`` (both (batch, *event_shape)).

    Calling returns the permutation ``perm`` (batch,) so that ``(x_a[i], x_b[perm[i]])`` are the
    pairs; apply it to anything attached to ``x_b`` (e.g. its scores) too.
    """

    @abc.abstractmethod
    def __call__(self, x_a: Tensor, x_b: Tensor) -> Tensor:
        """The permutation of ``x_b``, shape (batch,), int64."""


class IndependentCoupling(Coupling):
    """Independent pairs: the minibatches are returned as drawn."""

    def __call__(self, x_a, x_b):
        return torch.arange(x_b.shape[0], device=x_b.device)


class MinibatchOTCoupling(Coupling):
    """Exact assignment on squared Euclidean cost (scipy's ``linear_sum_assignment``).

    Reorders ``x_b`` so that ``Σ_i |x_a,i − x_b,i|²`` is minimal over permutations. With
    ``periods`` (one per flattened coordinate, 0: not periodic) a periodic coordinate's
    difference is its minimal image (:func:`minimal_image`): the cost on the torus.
    """

    def __init__(self, periods: Tensor | None = None):
        self.periods = None if periods is None else torch.as_tensor(periods).double()

    def __call__(self, x_a, x_b):
        a, b = x_a.flatten(1).double(), x_b.flatten(1).double()
        if self.periods is None or not bool((self.periods > 0).any()):
            cost = torch.cdist(a, b) ** 2
        else:
            cost = (minimal_image(b[None] - a[:, None], self.periods.to(a.device)) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(cols[np.argsort(rows)], device=x_b.device)


def minimal_image(d: Tensor, periods: Tensor) -> Tensor:
    """Differences ``d`` (..., n) with each periodic coordinate (``periods > 0``) wrapped into
    ``[−L/2, L/2)``; the others unchanged."""
    per = periods.to(d.dtype)
    wrapped = d - per * torch.floor(d / torch.where(per > 0, per, 1.0) + 0.5)
    return torch.where(per > 0, wrapped, d)


def lift_periodic(x_a: Tensor, x_b: Tensor, periods: Tensor) -> Tensor:
    """The image of ``x_b`` nearest ``x_a`` in every periodic coordinate: ``x_a + d`` with ``d``
    the minimal image of ``x_b − x_a``. On the torus it is the same point, so a pair
    ``(x_a, lift)`` couples the same marginals, and the straight line between them is the
    shorter arc."""
    shape = x_b.shape
    a, b = x_a.flatten(1), x_b.flatten(1)
    return (a + minimal_image(b - a, periods.to(a.device))).reshape(shape)


class PermKabschOTCoupling(MinibatchOTCoupling):
    """Minibatch OT on identical particles aligned to one reference ("perm_kabsch_ot").

    :meth:`align` centres every sample of both states and relabels and rotates it onto one
    reference configuration (the first sample of ``x_b``, centred) with
    :func:`~feat.interpolants.alignment.perm_kabsch` (Hungarian assignment + Kabsch, iterated,
    several starts), carrying the scores along; call it once on the training sets. Calling
    the coupling then pairs minibatches by exact OT on the squared Euclidean cost of the
    aligned coordinates, like :class:`MinibatchOTCoupling`.

    Valid only when the end states are invariant under permutations of the particles,
    rotations and translations, and the learned fields are equivariant under all three with
    COM-free noise (EGNN with equal atom types; METHOD section 2): the transport then does not
    depend on which aligned copy of a sample it is given.

    Parameters
    ----------
    n_iter, n_random : rounds per start and random start rotations of ``perm_kabsch``.
    seed : seed of the random start rotations.
    """

    def __init__(self, n_iter: int = 10, n_random: int = 4, seed: int = 0):
        super().__init__()
        self.n_iter, self.n_random, self.seed = n_iter, n_random, seed

    def align(self, x_a: Tensor, x_b: Tensor, s_a: Tensor | None = None,
              s_b: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(x_a, x_b, s_a, s_b)`` centred, relabelled and rotated onto ``x_b[0]``.

        Positions are (n, n_atoms, 3) per state; scores (same shapes) or None.
        """
        from .alignment import perm_kabsch_align, remove_com

        for name, x in (("x_a", x_a), ("x_b", x_b)):
            if x.dim() != 3 or x.shape[-1] != 3:
                raise ValueError(f"training.coupling 'perm_kabsch_ot' needs particle samples "
                                 f"(n, n_atoms, 3); {name} has shape {tuple(x.shape)}. Use "
                                 "'ot' or 'independent'.")
        ref = remove_com(x_b[:1])[0]
        kw = {"n_iter": self.n_iter, "n_random": self.n_random}
        gen = torch.Generator().manual_seed(self.seed)
        x_a, s_a = perm_kabsch_align(x_a, ref, s_a, generator=gen, **kw)
        gen = torch.Generator().manual_seed(self.seed)
        x_b, s_b = perm_kabsch_align(x_b, ref, s_b, generator=gen, **kw)
        return x_a, x_b, s_a, s_b
