r"""End-state sampling with OpenMM Langevin dynamics, written in resumable chunks.

:class:`LangevinMD` runs ``openmm.LangevinMiddleIntegrator`` on a copy of an
``openmm.System``: energy minimisation, ``n_equilibration`` discarded steps, then a frame every
``save_every`` steps. Frames go to disk in chunks of ``chunk_size``, each written atomically
into the chunk store of :mod:`feat.sampling.trajectory` (``topology.pdb``, ``settings.json``,
``chunk_*.dcd`` for mdtraj/VMD and ``chunk_*.npz`` with the exact float32 positions in nm,
``u`` in kT, scores ``-grad u`` in 1/nm, MD steps and an OpenMM checkpoint).

The energies and scores are evaluated on the float32 positions as stored, with the energy
function the works use (default :class:`~feat.energies.openmm.OpenMMEnergy` of the unmodified
System), so a reloaded sample and its stored ``u`` agree bit for bit. A run that is
interrupted, or asked later for more frames, continues from the checkpoint of its last complete
chunk; with one platform the continued chain is identical to an uninterrupted one.

Correctness notes
-----------------
* Masses do not enter the configurational Boltzmann density ``exp(-u(x))``; hydrogen mass
  repartitioning (``hydrogen_mass``, e.g. 3 amu) only slows the fastest vibrations so that
  unconstrained dynamics can take ~2 fs steps.
* The energies are unconstrained, so the System must have no constraints (checked).
* Decorrelation (:func:`decorrelate`): ``pymbar.timeseries`` statistical inefficiency ``g`` of
  ``u`` over the frames, then every ``g``-th frame.

Basin-restricted states (ALDP-T)
--------------------------------
The target is ``exp(-u(x)) 1_A(x) / Z_A``. Run MD in ``u + w`` with a flat-bottom restraint
``w`` that is exactly zero on ``A`` (:func:`flat_bottom_dihedral_restraint`, passed as
``extra_forces``) and keep only frames inside ``A`` (the energy function, e.g. a
:class:`~feat.energies.states.BasinRestrictedEnergy`, returns ``u = +inf`` outside; those
frames are dropped by :func:`decorrelate`). Since ``w = 0`` on ``A``, the biased Boltzmann
density conditioned on ``A`` *is* the target, and the restraint keeps the chain near ``A``, so
a rarely visited basin is sampled as well as a popular one. (Unbiased MD plus discarding is
valid too but wastes the time spent in the other basin; MD in the other basin that never
returns would leave ``A`` unsampled.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
import openmm
import torch
from openmm import unit
from torch import Tensor
from tqdm.auto import tqdm

from feat.energies.base import Energy
from feat.energies.openmm import OpenMMEnergy, _kelvin, _resolve_platform
from feat.energies.states import copy_system
from feat.sampling.trajectory import (
    MDSamples,
    as_mdtraj_topology,
    chunks_on_disk,
    load_md_samples,
    read_checkpoint,
    write_chunk,
)
from feat.storage import atomic_write

__all__ = ["Decorrelation", "LangevinMD", "MDSamples", "decorrelate",
           "flat_bottom_dihedral_restraint", "load_md_samples", "repartition_hydrogen_mass"]

_FORMAT = "feat-md-run-1"
_HYDROGEN_MAX_AMU = 1.5  # a particle lighter than this (but > 0) is a hydrogen


# -- System edits -------------------------------------------------------------------------------

def _bonds(system: openmm.System) -> list[tuple[int, int]]:
    pairs = []
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            pairs += [tuple(force.getBondParameters(k)[:2]) for k in range(force.getNumBonds())]
    return pairs


def repartition_hydrogen_mass(system: openmm.System, hydrogen_mass: float = 3.0) -> openmm.System:
    """Copy of ``system`` with each hydrogen at ``hydrogen_mass`` amu, taken from its bond partner.

    Hydrogens are particles of mass in (0, 1.5) amu; bonds come from every
    ``HarmonicBondForce``. The total mass is unchanged; the potential is untouched, so the
    configurational Boltzmann distribution is the same (only the dynamics change).
    """
    if not (isinstance(hydrogen_mass, (int, float)) and 1.0 < hydrogen_mass < 6.0):
        raise ValueError(f"hydrogen_mass must be in (1, 6) amu, usually 3-4; got "
                         f"{hydrogen_mass!r}.")
    new = copy_system(system)
    mass = [new.getParticleMass(i).value_in_unit(unit.dalton) for i in range(new.getNumParticles())]
    is_h = [0.0 < m < _HYDROGEN_MAX_AMU for m in mass]
    for i, j in _bonds(new):
        if is_h[i] == is_h[j]:
            continue
        h, heavy = (i, j) if is_h[i] else (j, i)
        mass[heavy] -= hydrogen_mass - mass[h]
        mass[h] = hydrogen_mass
    light = [i for i, m in enumerate(mass) if m > 0 and not is_h[i] and m < hydrogen_mass]
    if light:
        raise ValueError(f"hydrogen_mass = {hydrogen_mass} amu leaves heavy atoms {light} "
                         f"lighter than their hydrogens; lower hydrogen_mass.")
    for i, m in enumerate(mass):
        new.setParticleMass(i, m * unit.dalton)
    return new


def flat_bottom_dihedral_restraint(indices: Sequence[int], low: float, high: float, *,
                                   complement: bool = False, k: float = 1000.0,
                                   ) -> openmm.CustomTorsionForce:
    """``w(φ) = k · max(0, d(φ) − w₀)²`` (kJ/mol), exactly zero on the arc ``[low, high]``.

    Parameters
    ----------
    indices : four atom indices of the dihedral ``φ`` (radians, OpenMM/mdtraj convention).
    low, high : the arc, ``low < high`` (rad); with ``complement=True`` the restraint is zero
        on the other arc, ``φ ≤ low`` or ``φ ≥ high`` (periodic).
    k : force constant in kJ/mol/rad².

    ``d(φ)`` is the periodic angular distance from the arc's centre and ``w₀`` its half-width.
    """
    if len(indices) != 4 or not low < high or not high - low < 2 * math.pi or k <= 0:
        raise ValueError("flat_bottom_dihedral_restraint needs 4 indices, low < high < low + "
                         f"2π and k > 0; got indices={list(indices)}, low={low}, high={high}, "
                         f"k={k}.")
    centre, half = 0.5 * (low + high), 0.5 * (high - low)
    if complement:
        centre, half = centre + math.pi, math.pi - half
    force = openmm.CustomTorsionForce(
        "k_fb * step(d - w0) * (d - w0)^2; d = abs(atan2(sin(theta - c0), cos(theta - c0)))")
    for name in ("k_fb", "c0", "w0"):
        force.addPerTorsionParameter(name)
    force.addTorsion(*[int(i) for i in indices], [float(k), centre, half])
    return force


def _check_unconstrained(system: openmm.System) -> None:
    n = system.getNumConstraints()
    if n:
        raise ValueError(
            f"system has {n} constraints, but the end-state energies are unconstrained: MD with "
            "constraints samples a different distribution. Build the System without constraints "
            "(openmmtools: constraints=None; openmm.app: createSystem(..., constraints=None, "
            "rigidWater=False)) and use hydrogen_mass=3.0 for 2 fs steps.")


# -- decorrelation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decorrelation:
    """Frames kept by :func:`decorrelate`: indices into the run's frames (finite ``u`` only)."""

    indices: np.ndarray = field(repr=False)   # (n_kept,) int64
    statistical_inefficiency: float           # g, in frames (1 = uncorrelated)
    n_frames: int                             # frames considered
    n_finite: int                             # frames with finite u (inside a basin)

    @property
    def n_kept(self) -> int:
        return int(len(self.indices))


def decorrelate(energies: np.ndarray | Tensor) -> Decorrelation:
    """Subsample frames of one trajectory by the statistical inefficiency of ``u``.

    Frames with ``u = +inf`` (outside a restricted basin) are dropped first; ``g`` is then
    ``pymbar.timeseries.statistical_inefficiency`` of the remaining ``u`` series and the kept
    frames are ``pymbar.timeseries.subsample_correlated_data(u, g)``.
    """
    u = np.asarray(energies.cpu() if isinstance(energies, Tensor) else energies, np.float64)
    finite = np.flatnonzero(np.isfinite(u))
    if len(finite) < 3 or np.ptp(u[finite]) == 0:
        return Decorrelation(finite.astype(np.int64), 1.0, len(u), len(finite))
    from pymbar import timeseries  # lazy: pymbar prints a banner on import

    g = float(timeseries.statistical_inefficiency(u[finite]))
    keep = np.asarray(timeseries.subsample_correlated_data(u[finite], g=g), dtype=np.int64)
    return Decorrelation(finite[keep], g, len(u), len(finite))


# -- the sampler --------------------------------------------------------------------------------

def _openmm_seed(seed: int, salt: int) -> int:
    """A nonzero 31-bit seed (OpenMM treats 0 as 'pick one at random')."""
    digest = hashlib.sha256(f"{seed}/{salt}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "little") % (2**31 - 2)


def _nm(positions: Any, n_atoms: int) -> np.ndarray:
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    x = np.asarray(positions, dtype=np.float64)
    if x.shape != (n_atoms, 3) or not np.isfinite(x).all():
        raise ValueError(f"positions must be finite with shape ({n_atoms}, 3) in nm; got shape "
                         f"{x.shape}.")
    return x


def _energy_temperature(energy: Energy) -> float | None:
    while energy is not None and not hasattr(energy, "temperature"):
        energy = getattr(energy, "wrapped", None)
    return None if energy is None else float(energy.temperature)


@dataclass(frozen=True)
class _Run:
    """What one call of :meth:`LangevinMD.run` works on."""

    out: Path
    topology: mdtraj.Topology
    x0: np.ndarray
    system: openmm.System       # the MD System: HMR masses and extra forces applied
    energy: Energy              # evaluates the saved frames
    seed: int


@dataclass(frozen=True)
class LangevinMD:
    """Langevin MD settings for end-state sampling; :meth:`run` samples and writes to disk.

    Parameters
    ----------
    temperature : float
        Kelvin; must equal the energy function's temperature.
    timestep : float
        Femtoseconds: 1 fs unconstrained, 2 fs with ``hydrogen_mass`` ~3 amu.
    friction : float
        Collision rate, 1/ps.
    hydrogen_mass : float or None
        Hydrogen mass repartitioning to this many amu on a copy of the System; None: off.
    n_equilibration : int
        Steps after minimisation that are discarded.
    save_every : int
        Steps between saved frames.
    chunk_size : int
        Frames per chunk file (the unit of atomic writes and of resuming).
    minimise : bool
        Minimise the energy before equilibration (tolerance ``minimise_tolerance`` kJ/mol/nm).
    platform, platform_properties
        OpenMM platform of the MD Context; default as :class:`OpenMMEnergy` (CPU with one
        thread for GB systems, Reference otherwise).
    """

    temperature: float = 300.0
    timestep: float = 1.0
    friction: float = 1.0
    hydrogen_mass: float | None = None
    n_equilibration: int = 10_000
    save_every: int = 100
    chunk_size: int = 1000
    minimise: bool = True
    minimise_tolerance: float = 10.0
    platform: str | None = None
    platform_properties: dict | None = None

    def __post_init__(self) -> None:
        _kelvin(self.temperature)
        checks = [("timestep", 0 < self.timestep <= 5, "in (0, 5] fs (1 fs, or 2 fs with HMR)"),
                  ("friction", self.friction > 0, "> 0 per ps, e.g. 1.0"),
                  ("hydrogen_mass", self.hydrogen_mass is None or 1 < self.hydrogen_mass < 6,
                   "None or in (1, 6) amu, e.g. 3.0"),
                  ("n_equilibration", _int(self.n_equilibration, 0), "an int >= 0"),
                  ("save_every", _int(self.save_every, 1), "an int >= 1"),
                  ("chunk_size", _int(self.chunk_size, 1), "an int >= 1"),
                  ("minimise_tolerance", self.minimise_tolerance > 0, "> 0 kJ/mol/nm")]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"LangevinMD.{name} must be {want}; got {getattr(self, name)!r}.")

    def settings(self) -> dict:
        """The settings that define the chain (a resumed run must share them)."""
        d = asdict(self)
        for key in ("chunk_size", "platform", "platform_properties"):
            d.pop(key)
        return d

    def run(self, system: openmm.System, positions: Any, topology: Any, n_frames: int,
            out_dir: str | os.PathLike, *, energy: Energy | None = None,
            extra_forces: Sequence[openmm.Force] = (), seed: int = 0,
            progress: bool = True) -> MDSamples:
        """Sample ``n_frames`` frames into ``out_dir``, resuming whatever is already there.

        Parameters
        ----------
        system : openmm.System
            The potential ``U``, without constraints; not modified.
        positions : (n_atoms, 3) array in nm or an ``openmm.unit.Quantity``; the start.
        topology : mdtraj or openmm topology, or a topology file.
        n_frames : int
            Total frames wanted (an existing longer run is truncated, a shorter one extended).
        out_dir : folder of the run (created).
        energy : Energy, optional
            Evaluates ``u`` (kT) and ``-grad u`` (1/nm) of the saved frames; default
            ``OpenMMEnergy(system, temperature)``. Return ``+inf`` to mark frames outside a
            restricted state (they are kept on disk, dropped by :func:`decorrelate`).
        extra_forces : forces added to the MD System only (e.g.
            :func:`flat_bottom_dihedral_restraint`); copies are added, the originals untouched.
        seed : int
            Seeds the velocities and the Langevin noise.

        Returns
        -------
        MDSamples
            All ``n_frames`` frames, as reloaded from disk.
        """
        if not _int(n_frames, 1):
            raise ValueError(f"n_frames must be an int >= 1; got {n_frames!r}.")
        run = self._prepare(system, positions, topology, out_dir, energy, extra_forces, seed)
        n_chunks, n_done = chunks_on_disk(run.out)
        if n_done < n_frames:
            self._produce(run, n_chunks, n_done, n_frames, progress)
        return load_md_samples(run.out, n_frames)

    def _prepare(self, system, positions, topology, out_dir, energy, extra_forces, seed) -> _Run:
        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System; got {type(system).__name__}.")
        _check_unconstrained(system)
        top = as_mdtraj_topology(topology)
        n = system.getNumParticles()
        if top.n_atoms != n:
            raise ValueError(f"topology has {top.n_atoms} atoms, system has {n}; give the "
                             "topology of this system.")
        energy = energy if energy is not None else OpenMMEnergy(
            system, self.temperature, platform=self.platform,
            platform_properties=self.platform_properties)
        self._check_energy(energy, n)
        run = _Run(Path(out_dir), top, _nm(positions, n), self._md_system(system, extra_forces),
                   energy, int(seed))
        self._init_dir(run)
        return run

    def _check_energy(self, energy: Energy, n_atoms: int) -> None:
        if not isinstance(energy, Energy) or tuple(energy.event_shape) != (n_atoms, 3):
            raise ValueError(f"energy must be a feat Energy on event shape ({n_atoms}, 3); got "
                             f"{type(energy).__name__} {getattr(energy, 'event_shape', None)}.")
        t = _energy_temperature(energy)
        if t is not None and not math.isclose(t, float(self.temperature), rel_tol=1e-9):
            raise ValueError(f"energy is at {t} K but LangevinMD.temperature is "
                             f"{self.temperature} K; sample at the energy's temperature.")

    def _md_system(self, system: openmm.System, extra_forces) -> openmm.System:
        if self.hydrogen_mass is not None:
            md_system = repartition_hydrogen_mass(system, self.hydrogen_mass)
        else:
            md_system = copy_system(system)
            light = any(0 < system.getParticleMass(i).value_in_unit(unit.dalton) <
                        _HYDROGEN_MAX_AMU for i in range(system.getNumParticles()))
            if light and self.timestep > 1.5:
                warnings.warn(f"timestep {self.timestep} fs with unconstrained hydrogens at "
                              "~1 amu is unstable; give hydrogen_mass=3.0 (or 1 fs).",
                              stacklevel=3)
        for force in extra_forces:
            if not isinstance(force, openmm.Force):
                raise TypeError(f"extra_forces must hold openmm.Force objects; got "
                                f"{type(force).__name__}.")
            md_system.addForce(openmm.XmlSerializer.deserialize(
                openmm.XmlSerializer.serialize(force)))
        return md_system

    def _init_dir(self, run: _Run) -> None:
        settings = json.loads(json.dumps({
            **self.settings(), "seed": run.seed, "n_atoms": int(run.x0.shape[0]),
            "system_sha256": _sha(openmm.XmlSerializer.serialize(run.system).encode()),
            "positions_sha256": _sha(run.x0.tobytes()), "format": _FORMAT}))
        path = run.out / "settings.json"
        if path.is_file():
            old = json.loads(path.read_text())
            diff = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
            if diff:
                raise ValueError(
                    f"'{run.out}' holds an MD run with different settings ({', '.join(diff)}: "
                    f"{[old.get(k) for k in diff]} there, {[settings.get(k) for k in diff]} "
                    "now); it cannot be resumed. Use another out_dir, or delete that one.")
            return
        run.out.mkdir(parents=True, exist_ok=True)
        traj = mdtraj.Trajectory(run.x0[None].astype(np.float32), run.topology)
        atomic_write(run.out / "topology.pdb", traj.save_pdb, ".pdb")
        atomic_write(path, lambda p: Path(p).write_text(json.dumps(settings, indent=1)), ".json")

    # -- dynamics -------------------------------------------------------------------------------

    def _context(self, system: openmm.System, seed: int, salt: int) -> openmm.Context:
        integrator = openmm.LangevinMiddleIntegrator(
            self.temperature * unit.kelvin, self.friction / unit.picosecond,
            self.timestep * unit.femtosecond)
        integrator.setRandomNumberSeed(_openmm_seed(seed, salt))
        name, props = _resolve_platform(system, self.platform, self.platform_properties)
        return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(name), props)

    def _start(self, run: _Run, pbar: tqdm) -> openmm.Context:
        """Fresh chain: minimise, draw velocities, equilibrate (discarded)."""
        ctx = self._context(run.system, run.seed, 0)
        ctx.setPositions(run.x0)
        if self.minimise:
            tol = self.minimise_tolerance * unit.kilojoule_per_mole / unit.nanometer
            openmm.LocalEnergyMinimizer.minimize(ctx, tol, 0)
        ctx.setVelocitiesToTemperature(self.temperature * unit.kelvin,
                                       _openmm_seed(run.seed, -1))
        left = self.n_equilibration
        while left > 0:
            k = min(left, 10 * self.save_every)
            ctx.getIntegrator().step(k)
            pbar.update(k)
            left -= k
        return ctx

    def _resume(self, run: _Run, n_chunks: int) -> openmm.Context:
        """Continue from the checkpoint of the last complete chunk."""
        checkpoint, state = read_checkpoint(run.out, n_chunks - 1)
        ctx = self._context(run.system, run.seed, 0)
        try:
            ctx.loadCheckpoint(checkpoint)
        except openmm.OpenMMException:  # another platform or machine: same state, new noise
            warnings.warn(f"the checkpoint in '{run.out}' is for another platform or machine; "
                          "resuming from its positions and velocities with fresh Langevin "
                          "noise (valid, but not bit-identical to an uninterrupted run).",
                          stacklevel=3)
            ctx = self._context(run.system, run.seed, n_chunks)
            ctx.setState(openmm.XmlSerializer.deserialize(state))
        return ctx

    def _produce(self, run: _Run, n_chunks: int, n_done: int, n_frames: int,
                 progress: bool) -> None:
        total = (n_frames - n_done) * self.save_every + (0 if n_chunks else self.n_equilibration)
        with tqdm(total=total, unit="step", disable=not progress, desc=f"MD {run.out.name}",
                  unit_scale=True, mininterval=1.0) as pbar:
            ctx = self._resume(run, n_chunks) if n_chunks else self._start(run, pbar)
            while n_done < n_frames:
                m = min(self.chunk_size, n_frames - n_done)
                xyz = self._advance(ctx, m, pbar)
                steps = (n_done + 1 + np.arange(m, dtype=np.int64)) * self.save_every
                _write_chunk(run, n_chunks, xyz, steps, ctx)
                n_chunks, n_done = n_chunks + 1, n_done + m

    def _advance(self, ctx: openmm.Context, m: int, pbar: tqdm) -> np.ndarray:
        """Run ``m * save_every`` steps; positions (m, n_atoms, 3) in nm, one per save."""
        xyz = np.empty((m, ctx.getSystem().getNumParticles(), 3))
        for k in range(m):
            ctx.getIntegrator().step(self.save_every)
            xyz[k] = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(
                unit.nanometer)
            pbar.update(self.save_every)
        if not np.isfinite(xyz).all():
            raise ValueError("Langevin MD became unstable (non-finite positions); lower "
                             "timestep or give hydrogen_mass=3.0.")
        return xyz


def _write_chunk(run: _Run, i: int, xyz: np.ndarray, steps: np.ndarray,
                 ctx: openmm.Context) -> None:
    """Evaluate ``u`` and ``-grad u`` on the float32 positions as stored; write chunk ``i``."""
    x32 = xyz.astype(np.float32)
    u, s = run.energy.energy_and_score(torch.from_numpy(x32.astype(np.float64)))
    state = ctx.getState(getPositions=True, getVelocities=True, getParameters=True)
    write_chunk(run.out, i, x32, u.double().numpy(), s.double().numpy(), steps,
                ctx.createCheckpoint(), openmm.XmlSerializer.serialize(state))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _int(value: Any, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
