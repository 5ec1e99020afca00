"""Thermodynamic states built from an ``openmm.System``, and basin-restricted energies.

- :func:`scale_gb_charges`: the ALDP-S family (METHOD §7). State ``lam`` multiplies every
  particle's charge *in the generalised-Born force only* by ``lam``; the NonbondedForce
  (Coulomb, Lennard-Jones) is unchanged. ``lam = 1`` is full implicit solvent; ``lam = 0``
  removes the polar solvation energy ("vacuum"). The non-polar surface-area term of the GB
  force does not depend on charges and stays at every ``lam``: ``lam = 0`` equals vacuum plus
  that term, exactly vacuum only when the surface-area energy is zero.
- :func:`modified_system`: any user edit applied to a copy.
- :class:`BasinRestrictedEnergy`: ``u(x)`` inside a region of a collective variable, exactly
  ``+inf`` outside (ALDP-T: backbone dihedral ``phi`` in ``(0, 2.15)`` rad or its complement).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import openmm
import torch
from torch import Tensor

from feat.energies.base import Energy

__all__ = [
    "BasinRestrictedEnergy",
    "Dihedral",
    "Interval",
    "copy_system",
    "dihedral",
    "modified_system",
    "scale_gb_charges",
]


def copy_system(system: openmm.System) -> openmm.System:
    """An independent deep copy of ``system`` (``openmm.XmlSerializer`` round trip)."""
    if not isinstance(system, openmm.System):
        raise TypeError(f"system must be an openmm.System; got {type(system).__name__}.")
    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))


def modified_system(
    system: openmm.System, edit: Callable[[openmm.System], openmm.System | None]
) -> openmm.System:
    """Apply ``edit`` to a copy of ``system``; the original is never touched.

    Parameters
    ----------
    system : openmm.System
    edit : callable
        ``edit(copy)`` changes ``copy`` in place and returns ``None``, or returns a new
        ``openmm.System`` to use instead.

    Examples
    --------
    >>> from openmmtools.testsystems import AlanineDipeptideImplicit
    >>> s = AlanineDipeptideImplicit(constraints=None).system
    >>> no_gb = modified_system(s, lambda c: c.removeForce(4))
    >>> s.getNumForces() - no_gb.getNumForces()
    1
    """
    if not callable(edit):
        raise TypeError(f"edit must be callable as edit(system); got {type(edit).__name__}.")
    new = copy_system(system)
    result = edit(new)
    if isinstance(result, openmm.System):
        return result
    return new


def _charge_index(force: openmm.CustomGBForce) -> int:
    names = [
        force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())
    ]
    if "charge" not in names:
        raise ValueError(
            "scale_gb_charges needs the CustomGBForce's per-particle charge parameter named "
            f"'charge' (as in openmmtools and openmm.app); got parameters {names}. Scale this "
            "force with modified_system(system, edit) and your own edit instead."
        )
    return names.index("charge")


def _scale_native(force: openmm.GBSAOBCForce, lam: float) -> None:
    for i in range(force.getNumParticles()):
        charge, radius, scale = force.getParticleParameters(i)
        force.setParticleParameters(i, charge * lam, radius, scale)


def _scale_custom(force: openmm.CustomGBForce, lam: float) -> None:
    k = _charge_index(force)
    for i in range(force.getNumParticles()):
        params = list(force.getParticleParameters(i))
        params[k] = params[k] * lam
        force.setParticleParameters(i, params)


def scale_gb_charges(system: openmm.System, lam: float) -> openmm.System:
    """Copy of ``system`` with every charge in its generalised-Born force multiplied by ``lam``.

    Parameters
    ----------
    system : openmm.System
        Must contain a ``GBSAOBCForce`` or a ``CustomGBForce`` with a per-particle parameter
        ``charge`` (openmmtools / ``openmm.app`` implicit solvent: OBC1, OBC2, GBn, ...).
    lam : float
        Charge scale ``λ`` (finite); ``1`` reproduces ``system``, ``0`` switches the polar GB
        energy off. The polar GB energy is quadratic in the charges, hence scales as ``λ²``.

    Returns
    -------
    openmm.System
        A new System; the NonbondedForce and all other forces are unchanged.
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
        raise ValueError(
            f"lam must be a finite real number (the GB charge scale, usually in "
            f"[0, 1]); got {lam!r}."
        )
    new = copy_system(system)
    found = 0
    for force in new.getForces():
        if isinstance(force, openmm.GBSAOBCForce):
            _scale_native(force, float(lam))
            found += 1
        elif isinstance(force, openmm.CustomGBForce):
            _scale_custom(force, float(lam))
            found += 1
    if not found:
        kinds = sorted({type(f).__name__ for f in system.getForces()})
        raise ValueError(
            "scale_gb_charges needs an implicit-solvent System with a "
            f"GBSAOBCForce or CustomGBForce; got forces {kinds}. Build it with "
            "implicitSolvent=... (e.g. openmmtools AlanineDipeptideImplicit)."
        )
    return new


def dihedral(x: Tensor, indices: Sequence[int] | Sequence[Sequence[int]] | Tensor) -> Tensor:
    """Dihedral angles in radians, in ``(-π, π]``, with mdtraj's convention.

    Parameters
    ----------
    x : Tensor, shape (batch, n_atoms, 3)
        Positions (any length unit; no periodic images).
    indices : shape (4,) or (n_angles, 4)
        Atom indices ``(i, j, k, l)`` of each dihedral.

    Returns
    -------
    Tensor, shape (batch,) for one dihedral or (batch, n_angles)
        ``atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3))`` with ``b1 = x_j − x_i``,
        ``b2 = x_k − x_j``, ``b3 = x_l − x_k``, as ``mdtraj.compute_dihedrals``.
    """
    idx = _check_indices(indices, x)
    p = x[:, idx]  # (batch, [n_angles,] 4, 3)
    b1 = p[..., 1, :] - p[..., 0, :]
    b2 = p[..., 2, :] - p[..., 1, :]
    b3 = p[..., 3, :] - p[..., 2, :]
    c1 = torch.linalg.cross(b2, b3)
    c2 = torch.linalg.cross(b1, b2)
    p1 = (b1 * c1).sum(-1) * torch.linalg.vector_norm(b2, dim=-1)
    p2 = (c1 * c2).sum(-1)
    phi = torch.atan2(p1, p2)
    return torch.where(phi <= -math.pi, phi + 2 * math.pi, phi)


def _check_indices(indices, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (batch, n_atoms, 3); got {got}.")
    idx = torch.as_tensor(indices, dtype=torch.long, device=x.device)
    if idx.dim() not in (1, 2) or idx.shape[-1] != 4:
        raise ValueError(f"indices must have shape (4,) or (n_angles, 4); got {tuple(idx.shape)}.")
    if idx.numel() and (idx.min() < 0 or idx.max() >= x.shape[1]):
        raise ValueError(
            f"indices must lie in [0, {x.shape[1]}) for {x.shape[1]} atoms; got {idx.tolist()}."
        )
    return idx


@dataclass(frozen=True)
class Dihedral:
    """Collective variable: one dihedral angle (radians, mdtraj convention) of ``x`` (B, N, 3).

    ``indices`` are the four atoms, e.g. backbone ``phi`` of alanine dipeptide from
    ``mdtraj.compute_phi``.
    """

    indices: tuple[int, int, int, int]

    def __post_init__(self):
        idx = tuple(int(i) for i in self.indices)
        if len(idx) != 4:
            raise ValueError(f"Dihedral needs 4 atom indices; got {self.indices!r}.")
        object.__setattr__(self, "indices", idx)

    def __call__(self, x: Tensor) -> Tensor:
        return dihedral(x, self.indices)


@dataclass(frozen=True)
class Interval:
    """Region ``low < cv < high`` (open), or its complement with ``complement=True``."""

    low: float
    high: float
    complement: bool = False

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"Interval needs low < high; got low={self.low}, high={self.high}.")

    def __call__(self, cv: Tensor) -> Tensor:
        inside = (cv > self.low) & (cv < self.high)
        return ~inside if self.complement else inside


class BasinRestrictedEnergy(Energy):
    """``u(x)`` where ``inside(cv(x))`` holds, exactly ``+inf`` elsewhere (kT).

    Parameters
    ----------
    energy : Energy
        The wrapped reduced potential.
    collective_variable : callable
        ``cv(x)`` of shape (batch,) for ``x`` (batch, *event_shape), e.g. :class:`Dihedral`.
    inside : callable or (low, high)
        ``inside(cv) -> bool`` (batch,), e.g. :class:`Interval`; a pair means
        ``Interval(low, high)``.

    Notes
    -----
    The wrapped energy is evaluated only inside (and where the collective variable is not
    finite, so that its own non-finite policy sees bad inputs). Outside, ``u = +inf`` and the
    score is zero. Use picklable callables (:class:`Dihedral`, :class:`Interval`) to pickle.
    """

    def __init__(
        self,
        energy: Energy,
        collective_variable: Callable[[Tensor], Tensor],
        inside: Callable[[Tensor], Tensor] | tuple[float, float],
    ):
        if not isinstance(energy, Energy):
            raise TypeError(f"energy must be a feat Energy; got {type(energy).__name__}.")
        if not callable(collective_variable):
            raise TypeError(
                "collective_variable must be callable as cv(x) -> (batch,); got "
                f"{type(collective_variable).__name__}."
            )
        if isinstance(inside, tuple):
            inside = Interval(*inside)
        if not callable(inside):
            raise TypeError(
                "inside must be callable as inside(cv) -> bool (batch,) or a "
                f"(low, high) pair; got {type(inside).__name__}."
            )
        self.wrapped = energy
        self.collective_variable = collective_variable
        self.inside = inside
        self.event_shape = tuple(energy.event_shape)

    def inside_mask(self, x: Tensor) -> Tensor:
        """Boolean (batch,): True where ``x`` lies in the basin."""
        with torch.no_grad():
            cv = self.collective_variable(x)
            mask = self.inside(cv)
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (x.shape[0],):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"inside(collective_variable(x)) must return a bool tensor of shape "
                f"({x.shape[0]},); got {got}."
            )
        return mask.to(torch.bool) | ~torch.isfinite(cv)

    def energy(self, x: Tensor) -> Tensor:
        """``u(x)`` (batch,) in kT inside, ``+inf`` outside."""
        idx = torch.nonzero(self.inside_mask(x)).squeeze(-1)
        if idx.numel() == 0:  # all outside: +inf, still in x's graph with a zero gradient
            outside = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            return torch.where(outside, x.reshape(x.shape[0], -1)[:, 0], math.inf)
        u_in = self.wrapped(x[idx])
        u = torch.full((x.shape[0],), math.inf, dtype=u_in.dtype, device=u_in.device)
        return u.index_put((idx,), u_in)

    def energy_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``u`` (batch,) and ``-grad u`` (batch, *event_shape); zero score outside."""
        idx = torch.nonzero(self.inside_mask(x)).squeeze(-1)
        u = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
        s = torch.zeros_like(x)
        if idx.numel():
            u_in, s_in = self.wrapped.energy_and_score(x[idx])
            u = u.to(u_in.dtype).index_put((idx,), u_in)
            s = s.to(s_in.dtype).index_put((idx,), s_in)
        return u.detach(), s.detach()
