"""Couplings of end-state minibatches: independent, or minibatch optimal transport (METHOD §2)."""

from __future__ import annotations

import abc

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["Coupling", "IndependentCoupling", "MinibatchOTCoupling"]


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

    Reorders ``x_b`` so that ``Σ_i |x_a,i − x_b,i|²`` is minimal over permutations.
    """

    def __call__(self, x_a, x_b):
        cost = torch.cdist(x_a.flatten(1).double(), x_b.flatten(1).double()) ** 2
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(cols[np.argsort(rows)], device=x_b.device)
