"""The two-state problem: energies and samples of states a (t = 0) and b (t = 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .energies.base import Energy, check_batch

__all__ = ["TwoStateProblem"]


_HALF = (torch.float16, torch.bfloat16)


def _as_samples(x, energy: Energy, name: str) -> Tensor:
    """Validate an array of samples of one state and return it as a float tensor."""
    shape = ", ".join(map(str, energy.event_shape))
    if x is None:
        raise ValueError(f"{name} is missing: give samples of shape (n, {shape}).")
    if not isinstance(x, Tensor):
        try:
            arr = np.asarray(x)
        except ValueError:  # ragged nested sequences
            arr = np.empty(0, dtype=object)
        if arr.dtype.kind not in "biufc":
            raise TypeError(
                f"{name} must be a tensor or array of real numbers with shape (n, {shape}); "
                f"got {type(x).__name__} of dtype {arr.dtype}"
                + (" (rows of unequal length?)" if arr.dtype == object else "")
                + ". Convert with np.asarray(x, dtype=float)."
            )
        x = torch.as_tensor(arr)
    if x.dtype in _HALF:
        raise TypeError(
            f"{name} must be float32 or float64; got {x.dtype}, whose precision is too low "
            "for energies and works. Convert with x.double()."
        )
    check_batch(x, energy.event_shape, name)
    bad = ~torch.isfinite(x.flatten(1)).all(-1)
    if bool(bad.any()):
        idx = torch.nonzero(bad)[:5, 0].tolist()
        raise ValueError(
            f"{name} has {int(bad.sum())} sample(s) with NaN or inf coordinates "
            f"(first at rows {idx}); remove them before building the problem."
        )
    return x


@dataclass
class TwoStateProblem:
    """Two thermodynamic states and samples of each.

    Parameters
    ----------
    energy_a, energy_b : reduced potentials ``u_a``, ``u_b`` (kT) on the same event shape.
    x_a, x_b : samples of ``ρ_a ∝ exp(−u_a)`` and ``ρ_b ∝ exp(−u_b)``, shapes
        (n_a, *event_shape) and (n_b, *event_shape); tensors or arrays; n_a ≠ n_b is fine.
    score_a, score_b : ``−∇u`` at the samples, same shapes; computed by autograd when omitted.
    reference : the exact or reference ``ΔF = F_b − F_a`` in kT, if known.
    reference_exact : True when ``reference`` is exact (analytic), False for an estimate such
        as MBAR; reports then say "exact" or "reference".
    name : a label for reports.
    """

    energy_a: Energy
    energy_b: Energy
    x_a: Tensor
    x_b: Tensor
    score_a: Tensor | None = None
    score_b: Tensor | None = None
    reference: float | None = None
    name: str = "problem"
    reference_exact: bool = False
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        for nm in ("energy_a", "energy_b"):
            if not isinstance(getattr(self, nm), Energy):
                raise TypeError(
                    f"{nm} must be a feat Energy; got {type(getattr(self, nm)).__name__}."
                    " Wrap a callable with feat.FunctionEnergy(fn, event_shape)."
                )
        if tuple(self.energy_a.event_shape) != tuple(self.energy_b.event_shape):
            raise ValueError(
                f"energy_a and energy_b must share one event shape; got "
                f"{self.energy_a.event_shape} and {self.energy_b.event_shape}. Both states "
                "must live in one space: give both energies the same event_shape."
            )
        self.x_a = _as_samples(self.x_a, self.energy_a, "x_a")
        self.x_b = _as_samples(self.x_b, self.energy_b, "x_b")
        for nm, x in (("score_a", self.x_a), ("score_b", self.x_b)):
            s = getattr(self, nm)
            if s is not None:
                s = torch.as_tensor(np.asarray(s)) if not isinstance(s, Tensor) else s
                if s.shape != x.shape:
                    raise ValueError(
                        f"{nm} must have the shape of its samples {tuple(x.shape)}; "
                        f"got {tuple(s.shape)}. Give -grad u at each sample, or None to "
                        "compute it from the energy."
                    )
                setattr(self, nm, s)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.energy_a.event_shape)

    def scores(self, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
        """End-state scores at the samples, computing (once, in batches) any that are missing.

        Raises ``ValueError`` when an energy is not finite (NaN or ±inf), or its score not
        finite, at a sample of its own state: such a sample has no density, and its works
        would be NaN or infinite.
        """
        if self.score_a is None:
            self.score_a = _batched_score(self.energy_a, self.x_a, batch_size, "a")
        if self.score_b is None:
            self.score_b = _batched_score(self.energy_b, self.x_b, batch_size, "b")
        return self.score_a, self.score_b


def _batched_score(energy: Energy, x: Tensor, batch_size: int, state: str) -> Tensor:
    """``-grad u`` at ``x`` in batches, checking that ``u`` and the score are finite."""
    pairs = [energy.energy_and_score(c) for c in torch.split(x, batch_size)]
    u, score = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    for what, bad in (
        ("energy", ~torch.isfinite(u)),
        ("score", ~torch.isfinite(score.flatten(1)).all(-1)),
    ):
        if bool(bad.any()):
            rows = torch.nonzero(bad)[:5, 0].tolist()
            values = f"; u = {u[rows].tolist()}" if what == "energy" else ""
            raise ValueError(
                f"energy_{state} returned a non-finite {what} at {int(bad.sum())} of {len(x)} "
                f"samples x_{state} (rows {rows}{values}). A reduced potential and its "
                f"gradient must be finite at samples of its own state: fix energy_{state} "
                "(NaN often comes from 0/0, sqrt or log of a negative number), or remove "
                "those samples."
            )
    return score
