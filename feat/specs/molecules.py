"""Molecular system kinds: alanine dipeptide in OBC1 implicit solvent (METHOD §7).

* ``aldp_s`` (:class:`ALDPSolvationSpec`): state λ scales every charge of the GB force by λ
  (:func:`~feat.energies.states.scale_gb_charges`); a = ``lam_a`` (0, "vacuum"), b = ``lam_b``
  (1, solvated). λ = 0 keeps the charge-independent OBC1 surface-area term (~6.8 kT at the
  start structure), as METHOD §7 defines λ on charges only.
* ``aldp_t`` (:class:`ALDPBasinSpec`): the energy at GB charge scale ``lam`` restricted to a
  backbone-φ basin, a: φ ∈ (``phi_low``, ``phi_high``) = (0, 2.15) rad, b: the complement;
  ``u = +inf`` outside (:class:`~feat.energies.states.BasinRestrictedEnergy`).

Samples come from :class:`~feat.sampling.md.LangevinMD` (basins with a flat-bottom φ restraint
that is zero inside the basin, frames outside dropped) and are cached under ``cache_dir`` in a
folder named after the kind, the state and a hash of every key that changes the Markov chain.
``production_steps`` is left out of the hash on purpose: runs of different lengths are
prefixes of one chain, so a longer run extends the cached one and a shorter one reads its
start. ``n_samples_*`` frames are then taken evenly from the decorrelated frames, centred
(centroid removed: the energies are translation-invariant), with their scores ``-∇u`` (1/nm).

The energies use ``on_error="inf"``: a configuration OpenMM cannot evaluate (overlapping
atoms on a transport path) gets ``u = +inf``, a zero-weight work that the estimators count.
``build`` ignores its generator: the samples are a deterministic function of the spec.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..accounting import total_cost
from ..config import ReferenceConfig
from ..energies.base import Energy
from ..energies.internal import ArcMap, ZMatrix, internal_problem
from ..energies.openmm import OpenMMEnergy
from ..energies.scaling import rescale_problem
from ..energies.states import BasinRestrictedEnergy, Dihedral, Interval, scale_gb_charges
from ..problem import TwoStateProblem
from ..reference.mbar import LadderReference, mbar_delta_f, mbar_from_matrix

__all__ = ["ALDPBasinSpec", "ALDPSolvationSpec"]

_PHI = (4, 6, 8, 14)  # backbone φ of AlanineDipeptideImplicit (C, N, CA, C), as mdtraj.compute_phi
_CHAIN_KEYS = ("temperature", "timestep_fs", "hydrogen_mass", "friction",
               "equilibration_steps", "save_every", "md_seed")
_CACHE_VERSION = 1


@dataclass(frozen=True)
class _ALDPSpec:
    """Keys shared by the alanine-dipeptide kinds (MD in fs, ps, amu, K)."""

    temperature: float = 300.0
    n_samples_a: int = 10_000
    n_samples_b: int = 10_000
    timestep_fs: float = 2.0
    hydrogen_mass: float = 3.0        # amu; 0 switches repartitioning off (then 1 fs)
    friction: float = 1.0             # 1/ps
    equilibration_steps: int = 50_000
    production_steps: int = 6_000_000  # per state
    save_every: int = 250
    chunk_frames: int = 1000
    md_seed: int = 0
    platform: str = "auto"            # OpenMM platform of MD and energies ("auto": CPU, 1 thread)
    cache_dir: str = "data/"
    progress: bool = True
    reference: float = math.nan       # reference ΔF in kT, if known
    coordinate_scale: float = 20.0    # the problem's units per nm (the paper: x_net = 20 x_nm)
    coordinates: str = "cartesian"    # or "internal": whitened bonds, angles, dihedrals

    def __post_init__(self):
        ints = ("n_samples_a", "n_samples_b", "equilibration_steps", "production_steps",
                "save_every", "chunk_frames")
        for key in ints:
            low = 0 if key == "equilibration_steps" else 1
            if getattr(self, key) < low:
                raise ValueError(f"system.{key} must be >= {low}; got {getattr(self, key)!r}.")
        if self.production_steps < self.save_every:
            raise ValueError(f"system.production_steps ({self.production_steps}) must be >= "
                             f"system.save_every ({self.save_every}).")
        if not (math.isfinite(self.coordinate_scale) and self.coordinate_scale > 0):
            raise ValueError(f"system.coordinate_scale must be a finite number > 0 (problem "
                             f"units per nm; the paper uses 20); got {self.coordinate_scale}.")
        if self.coordinates not in ("cartesian", "internal"):
            raise ValueError(f"system.coordinates must be 'cartesian' (positions, "
                             f"coordinate_scale units per nm) or 'internal' (whitened bonds, "
                             f"angles and dihedrals); got {self.coordinates!r}.")
        if self.hydrogen_mass and not 1.0 < self.hydrogen_mass < 6.0:
            raise ValueError(f"system.hydrogen_mass must be 0 (off) or in (1, 6) amu; got "
                             f"{self.hydrogen_mass}.")

    # -- helpers shared by both kinds -----------------------------------------------------------

    def _sampler(self):
        from ..sampling.md import LangevinMD

        return LangevinMD(temperature=self.temperature, timestep=self.timestep_fs,
                          friction=self.friction, hydrogen_mass=self.hydrogen_mass or None,
                          n_equilibration=self.equilibration_steps, save_every=self.save_every,
                          chunk_size=self.chunk_frames, platform=self._platform())

    def _platform(self) -> str | None:
        return None if self.platform == "auto" else self.platform

    def cache_path(self, kind: str, state: str, state_keys: dict) -> Path:
        """``cache_dir/KIND-STATE-HASH``: HASH covers every key that changes the chain."""
        keys = {k: getattr(self, k) for k in _CHAIN_KEYS}
        blob = json.dumps({"kind": kind, "state": state, "version": _CACHE_VERSION,
                           "system": "openmmtools.AlanineDipeptideImplicit(constraints=None)",
                           **keys, **state_keys}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return Path(self.cache_dir) / f"{kind}-{state}-{digest}"

    def _samples(self, ts, energy: Energy, out: Path, tag: str, extra_forces=(),
                 salt: int = 0, n_samples: int | None = None, steps: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """MD (or the cache) of state ``tag``, decorrelate, take ``n_samples_{tag}`` evenly.

        ``n_samples`` and ``steps`` override ``n_samples_{tag}`` and ``production_steps`` (the
        reference's windows). Returns centred positions (n, 22, 3) nm, their scores
        (n, 22, 3) 1/nm, and a summary.
        """
        name = f"n_samples_{tag}" if n_samples is None else "reference.n_samples"
        n_samples = getattr(self, name) if n_samples is None else n_samples
        steps = self.production_steps if steps is None else steps
        steps_key = ("production_steps" if steps == self.production_steps
                     else "reference.window_steps")
        run = self._sampler().run(
            ts.system, ts.positions, ts.topology, steps // self.save_every,
            out, energy=energy, extra_forces=extra_forces, seed=self.md_seed * 2 + salt,
            progress=self.progress)
        dec = run.decorrelate()
        if not extra_forces and dec.n_finite < dec.n_frames:
            raise ValueError(f"state {tag}: {dec.n_frames - dec.n_finite} MD frames in '{out}' "
                             "have a non-finite energy; delete that folder and sample again "
                             "(with a smaller timestep_fs).")
        if dec.n_kept < n_samples:
            g = dec.statistical_inefficiency
            need = math.ceil(n_samples * g * max(dec.n_frames / max(dec.n_finite, 1), 1.0))
            raise ValueError(
                f"state {tag}: only {dec.n_kept} decorrelated frames (statistical inefficiency "
                f"g = {g:.1f} frames, {dec.n_finite} of {dec.n_frames} frames inside the state) "
                f"but {_key(name)} = {n_samples}. Raise {_key(steps_key)} to about "
                f"{need * self.save_every} (the cached run in '{out}' is extended, not redone) "
                f"or lower {_key(name)}.")
        pick = dec.indices[np.linspace(0, dec.n_kept - 1, n_samples).round().astype(np.int64)]
        x, _, s = run.select(pick)
        info = {"md_dir": str(out), "statistical_inefficiency": dec.statistical_inefficiency,
                "md_steps": self.equilibration_steps + steps, "n_frames": dec.n_frames,
                "n_inside": dec.n_finite, "n_decorrelated": dec.n_kept}
        return x - x.mean(dim=1, keepdim=True), s, info

    def _metadata(self, ts, info_a: dict, info_b: dict) -> dict:
        from ..fields.egnn import atom_types_from_topology

        types, vocab = atom_types_from_topology(ts.topology, by="name")
        etypes, evocab = atom_types_from_topology(ts.topology, by="element")
        return {"com_free": True, "atom_types": types, "atom_type_names": vocab,
                "element_types": etypes, "elements": evocab, "phi_indices": list(_PHI),
                "frame_atoms": list(_PHI[1:]),
                "temperature_K": self.temperature, "md_a": info_a, "md_b": info_b,
                "sampling_cost": total_cost(*({"sampling_steps": i["md_steps"],
                                               "gradient_evals": i["md_steps"]}
                                              for i in (info_a, info_b))),
                "spec": asdict(self)}

    def _reference(self) -> float | None:
        return None if math.isnan(self.reference) else float(self.reference)

    def _problem(self, ea, eb, xa, xb, sa, sb, name: str, metadata: dict,
                 topology, arc: tuple[float, float] | None = None) -> TwoStateProblem:
        """The problem in nm, then rescaled to ``coordinate_scale`` units per nm, or mapped to
        whitened internal coordinates (``coordinates = "internal"``, the Z-matrix of the
        topology's bonds; :mod:`feat.energies.internal`), with state a's φ arc ``arc`` mapped
        onto its complement when given (:class:`~feat.energies.internal.ArcMap`)."""
        problem = TwoStateProblem(ea, eb, xa, xb, score_a=sa, score_b=sb,
                                  reference=self._reference(), name=name, metadata=metadata)
        if self.coordinates == "internal":
            zmatrix = ZMatrix.from_topology(topology)
            arc_map = None if arc is None else ArcMap.onto_complement(
                zmatrix.dihedral_column(_PHI), *arc)
            return internal_problem(problem, zmatrix, arc_map)
        return rescale_problem(problem, self.coordinate_scale)


def _key(name: str) -> str:
    return name if "." in name else f"system.{name}"


def _system():
    from openmmtools.testsystems import AlanineDipeptideImplicit

    return AlanineDipeptideImplicit(constraints=None)


@dataclass(frozen=True)
class ALDPSolvationSpec(_ALDPSpec):
    """ALDP-S: GB charges scaled by ``lam_a`` (state a) and ``lam_b`` (state b).

    ``ΔF = F_b − F_a`` is the polar solvation free energy in kT; the paper reports
    ``log Z_b − log Z_a = 29.43 ± 0.01``, i.e. ``ΔF ≈ −29.43`` kT (METHOD §7).
    """

    lam_a: float = 0.0
    lam_b: float = 1.0

    def build(self, generator: torch.Generator) -> TwoStateProblem:
        ts = _system()
        states = []
        for salt, (tag, lam) in enumerate((("a", self.lam_a), ("b", self.lam_b))):
            energy, out, ts_state = self._state(ts, lam)
            states.append((energy, *self._samples(ts_state, energy, out, tag, salt=salt)))
        (ea, xa, sa, ia), (eb, xb, sb, ib) = states
        return self._problem(ea, eb, xa, xb, sa, sb,
                             "aldp_s", self._metadata(ts, ia, ib), ts.topology)

    def _state(self, ts, lam: float) -> tuple[OpenMMEnergy, Path, SimpleNamespace]:
        """State λ: its energy, its MD cache folder and the system MD runs on."""
        energy = OpenMMEnergy(scale_gb_charges(ts.system, lam), self.temperature,
                              platform=self._platform(), on_error="inf")
        out = self.cache_path("aldp_s", f"lam{lam:g}", {"lam": lam})
        return energy, out, SimpleNamespace(system=energy.system, topology=ts.topology,
                                            positions=ts.positions)

    def mbar_reference(self, config: ReferenceConfig) -> LadderReference:
        """MBAR over ``config.n_windows`` evenly spaced λ states from ``lam_a`` to ``lam_b``.

        Each state gets its own Langevin MD run (the spec's MD settings, ``window_steps`` of
        production, or ``production_steps`` when 0) in the same cache as :meth:`build`, so the
        two end windows share their chains with the FEAT samples. Every run is decorrelated
        with the statistical inefficiency of its ``u`` and ``config.n_samples`` frames are
        taken evenly from the decorrelated ones; pymbar's MBAR then gives ΔF = F_b − F_a.
        """
        t0, ts = time.perf_counter(), _system()
        lams = [float(v) for v in np.linspace(self.lam_a, self.lam_b, config.n_windows)]
        steps = config.window_steps or self.production_steps
        energies, samples, windows = [], [], []
        for k, lam in enumerate(lams):
            salt = 0 if k == 0 else 1 if k == len(lams) - 1 else 1 + k
            energy, out, ts_state = self._state(ts, lam)
            t1 = time.perf_counter()
            x, _, info = self._samples(ts_state, energy, out, f"λ={lam:g}", salt=salt,
                                       n_samples=config.n_samples, steps=steps)
            energies.append(energy)
            samples.append(x)
            windows.append({"lambda": lam, "seconds": time.perf_counter() - t1, **info})
        mbar = mbar_delta_f(energies, samples, n_bootstrap=config.n_bootstrap, seed=config.seed)
        protocol = (f"Langevin MD per λ state ({self.timestep_fs:g} fs, H mass "
                    f"{self.hydrogen_mass:g} amu, friction {self.friction:g}/ps, "
                    f"{self.equilibration_steps} equilibration + {steps} production steps), "
                    f"{config.n_samples} decorrelated frames per state, MBAR (pymbar)")
        return LadderReference(mbar, "lambda", tuple(lams), tuple(windows), protocol,
                               time.perf_counter() - t0)


@dataclass(frozen=True)
class ALDPBasinSpec(_ALDPSpec):
    """ALDP-T: φ ∈ (``phi_low``, ``phi_high``) (state a) and its complement (state b).

    MD in each basin runs with a flat-bottom φ restraint (``restraint_k`` kJ/mol/rad²) that
    is exactly zero inside the basin, so the kept frames sample ``exp(−u)`` restricted to it.
    The paper reports ``ΔF = −4.25 ± 0.05`` kT (METHOD §7).
    """

    phi_low: float = 0.0
    phi_high: float = 2.15
    restraint_k: float = 1000.0
    umbrella_k: float = 100.0         # kJ/mol/rad², the reference's φ umbrellas
    lam: float = 1.0                  # GB charge scale of the energy (1: full solvent)
    map_basins: bool = False          # internal coordinates: state a's φ arc mapped onto b's

    def __post_init__(self):
        super().__post_init__()
        if self.map_basins and self.coordinates != "internal":
            raise ValueError("system.map_basins = true maps state a's φ arc onto state b's in "
                             "internal coordinates: set system.coordinates = 'internal' too.")

    def _energy(self, on_error: str = "raise") -> tuple[OpenMMEnergy, SimpleNamespace]:
        """The unrestricted energy at GB charge scale ``lam`` and the system MD runs on."""
        ts = _system()
        energy = OpenMMEnergy(scale_gb_charges(ts.system, self.lam), self.temperature,
                              platform=self._platform(), on_error=on_error)
        return energy, SimpleNamespace(system=energy.system, topology=ts.topology,
                                       positions=ts.positions)

    def _keys(self, keys: dict) -> dict:
        """Cache keys; ``lam`` enters only when it is not 1 (caches made before it existed
        are λ = 1 chains and stay valid)."""
        return keys if self.lam == 1.0 else {**keys, "lam": self.lam}

    def build(self, generator: torch.Generator) -> TwoStateProblem:
        from ..sampling.md import flat_bottom_dihedral_restraint

        full, ts = self._energy(on_error="inf")
        states = []
        for salt, (tag, comp) in enumerate((("a", False), ("b", True))):
            energy = BasinRestrictedEnergy(full, Dihedral(_PHI),
                                           Interval(self.phi_low, self.phi_high, comp))
            restraint = flat_bottom_dihedral_restraint(_PHI, self.phi_low, self.phi_high,
                                                       complement=comp, k=self.restraint_k)
            keys = {"phi": [self.phi_low, self.phi_high], "complement": comp,
                    "restraint_k": self.restraint_k}
            out = self.cache_path("aldp_t", "phi-out" if comp else "phi-in", self._keys(keys))
            states.append((energy, *self._samples(ts, energy, out, tag, (restraint,), salt)))
        (ea, xa, sa, ia), (eb, xb, sb, ib) = states
        return self._problem(ea, eb, xa, xb, sa, sb, "aldp_t", self._metadata(ts, ia, ib),
                             ts.topology, (self.phi_low, self.phi_high) if self.map_basins
                             else None)

    def mbar_reference(self, config: ReferenceConfig) -> LadderReference:
        """Umbrella sampling over the whole φ circle and MBAR, then ``F_b − F_a`` by basin.

        ``config.n_windows`` umbrellas ``w_k(φ) = umbrella_k · max(0, d(φ, φ_k) − 0.02)²``
        (kJ/mol, ``d`` the periodic distance, centres ``φ_k = −π + 2πk/K``), each sampled by
        Langevin MD of the energy (GB charges × ``lam``) plus ``w_k`` (``window_steps`` of
        production), decorrelated, ``config.n_samples`` frames each. MBAR on the biases gives
        the unbiased density; the two basins are unsampled target states (``u = +inf`` outside), so
        ``ΔF = F_b − F_a = −log(P(b) / P(a))``.
        """
        from ..energies.openmm import boltzmann_kt
        from ..sampling.md import flat_bottom_dihedral_restraint

        t0, kt = time.perf_counter(), boltzmann_kt(self.temperature)
        full, ts = self._energy()
        centers = [-math.pi + 2 * math.pi * k / config.n_windows for k in range(config.n_windows)]
        steps = config.window_steps or self.production_steps
        phis, windows = [], []
        for k, c in enumerate(centers):
            restraint = flat_bottom_dihedral_restraint(_PHI, c - _FLAT, c + _FLAT,
                                                       k=self.umbrella_k)
            out = self.cache_path("aldp_t", f"umbrella{k}", self._keys(
                {"phi0": c, "umbrella_k": self.umbrella_k, "flat": _FLAT}))
            t1 = time.perf_counter()
            x, _, info = self._samples(ts, full, out, f"φ₀={c:+.2f}", (restraint,), 2 + k,
                                       n_samples=config.n_samples, steps=steps)
            phis.append(Dihedral(_PHI)(x).numpy())
            windows.append({"phi0": c, "seconds": time.perf_counter() - t1, **info})
        phi = np.concatenate(phis)
        u_kn = np.stack([self.umbrella_k * np.maximum(_arc(phi, c) - _FLAT, 0.0) ** 2 / kt
                         for c in centers])
        inside = Interval(self.phi_low, self.phi_high)(torch.from_numpy(phi)).numpy()
        u_ln = np.stack([np.where(inside, 0.0, np.inf), np.where(inside, np.inf, 0.0)])
        mbar = mbar_from_matrix(u_kn, [len(f) for f in phis], u_ln=u_ln,
                                n_bootstrap=config.n_bootstrap, seed=config.seed)
        protocol = (f"GB charges × {self.lam:g}; "
                    f"{config.n_windows} umbrellas on φ ({self.umbrella_k:g} kJ/mol/rad², "
                    f"flat bottom ±{_FLAT} rad) over the circle, Langevin MD "
                    f"({self.timestep_fs:g} fs, {self.equilibration_steps} + {steps} steps "
                    f"each), {config.n_samples} decorrelated frames per window, MBAR (pymbar) "
                    f"with the basins φ ∈ ({self.phi_low:g}, {self.phi_high:g}) and its "
                    "complement as unsampled target states")
        return LadderReference(mbar, "phi0", tuple(centers), tuple(windows), protocol,
                               time.perf_counter() - t0)


_FLAT = 0.02  # rad: half-width of the umbrellas' flat bottom (the restraint needs low < high)


def _arc(phi: np.ndarray, center: float) -> np.ndarray:
    """Periodic angular distance |φ − center| in [0, π]."""
    return np.abs(np.arctan2(np.sin(phi - center), np.cos(phi - center)))
