"""Trajectory I/O: any mdtraj-readable file in, and the chunk store of MD runs.

:func:`load_trajectory` reads a trajectory (DCD, XTC, NetCDF, PDB, ...) with its topology,
checks the atom count against what the energy expects and checks that the numbers look like
nanometres (bonded atoms ~0.1-0.15 nm apart), so that a file written in Å, or nm written
where the format expects Å, fails loudly instead of giving energies off by orders of
magnitude.

The chunk store of :class:`feat.sampling.md.LangevinMD` is one folder per run:

    topology.pdb, settings.json     written once
    chunk_000000.dcd                positions for mdtraj / VMD (DCD: float32 Å)
    chunk_000000.npz                positions (float32 nm, exact), energies u (kT), scores
                                    -grad u (1/nm), MD steps, an OpenMM checkpoint and State

Each chunk is written to temporary files and renamed, the .npz last: a chunk exists once its
.npz does, so an interrupted write leaves no partial chunk. :func:`load_md_samples` reads a
run back as :class:`MDSamples`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
import torch
from torch import Tensor

__all__ = ["MDSamples", "as_mdtraj_topology", "check_nanometres", "load_md_samples",
           "load_trajectory", "median_nearest_neighbour_distance"]

_CHUNK_FORMAT = "feat-md-chunk-1"

#: Median nearest-neighbour distances (nm) accepted as "molecule in nm": H-X bonds are
#: ~0.1 nm, heavy-atom bonds ~0.15 nm, so Å data gives ~1-1.5 and double-scaled nm ~0.01.
NEAREST_NEIGHBOUR_RANGE_NM = (0.05, 0.4)


def as_mdtraj_topology(topology: Any) -> mdtraj.Topology:
    """An ``mdtraj.Topology`` from an mdtraj or ``openmm.app`` topology or a structure file.

    Parameters
    ----------
    topology : mdtraj.Topology, openmm.app.Topology, str or os.PathLike
        A path is read with ``mdtraj.load_topology`` (PDB, PRMTOP, PSF, GRO, H5, ...).
    """
    if isinstance(topology, mdtraj.Topology):
        return topology
    if isinstance(topology, (str, os.PathLike)):
        path = Path(topology)
        if not path.is_file():
            raise ValueError(f"topology file '{path}' does not exist; check the path, or give "
                             "a PDB (or any mdtraj topology file) of the system.")
        return mdtraj.load_topology(str(path))
    try:
        return mdtraj.Topology.from_openmm(topology)
    except Exception as err:
        raise TypeError("topology must be an mdtraj.Topology, an openmm.app.Topology or a "
                        f"path to a topology file; got {type(topology).__name__}.") from err


def median_nearest_neighbour_distance(x: np.ndarray, max_frames: int = 10) -> float:
    """Median over atoms (and the first ``max_frames`` frames) of the nearest-neighbour distance.

    Parameters
    ----------
    x : array, shape (n_frames, n_atoms, 3)
        Positions, any unit; the result has the same unit. Needs ``n_atoms >= 2``.
    """
    x = np.asarray(x, dtype=np.float64)[:max_frames]
    d = np.linalg.norm(x[:, :, None, :] - x[:, None, :, :], axis=-1)
    d[:, np.arange(x.shape[1]), np.arange(x.shape[1])] = np.inf
    return float(np.median(d.min(axis=-1)))


def check_nanometres(x: np.ndarray, name: str = "positions") -> None:
    """Raise a ``ValueError`` unless molecular positions ``x`` (n, N, 3) look like nm.

    The median nearest-neighbour distance must lie in :data:`NEAREST_NEIGHBOUR_RANGE_NM`.
    Systems that are not molecules in nm (lattices, reduced units) skip this check.
    """
    if x.shape[1] < 2:
        return
    r = median_nearest_neighbour_distance(x)
    low, high = NEAREST_NEIGHBOUR_RANGE_NM
    if r > high:
        raise ValueError(
            f"{name} do not look like nanometres: the median nearest-neighbour distance is "
            f"{r:.3g}, expected {low}-{high} nm (bonds are ~0.1-0.15 nm). They are probably in "
            "Å: divide by 10, or rewrite the file in a format whose unit mdtraj knows. Give "
            "check_scale=False if this system really is this sparse.")
    if r < low:
        raise ValueError(
            f"{name} do not look like nanometres: the median nearest-neighbour distance is "
            f"{r:.3g}, expected {low}-{high} nm. The file probably holds nm where its format "
            "expects Å (mdtraj divided by 10): multiply by 10, or rewrite the file with "
            "mdtraj (which converts units). Give check_scale=False to skip this check.")


def _load(path: Path, topology: Any) -> mdtraj.Trajectory:
    top = None if topology is None else as_mdtraj_topology(topology)
    try:
        return mdtraj.load(str(path), top=top) if top is not None else mdtraj.load(str(path))
    except (ValueError, TypeError, OSError) as err:
        hint = (" Check that the file is complete and in the format its extension names, "
                f"and that topology ({top.n_atoms} atoms) describes its atoms in the same "
                "order." if top is not None else " This format stores no topology: give "
                "topology=<PDB file or mdtraj/openmm Topology>.")
        raise ValueError(f"mdtraj could not read '{path}': {str(err).rstrip('.')}.{hint}") from err


def load_trajectory(path: str | os.PathLike, topology: Any = None, *,
                    n_atoms: int | None = None, stride: int | None = None,
                    check_scale: bool = True) -> Tensor:
    """Positions from a trajectory file as a float64 tensor ``(n_frames, n_atoms, 3)`` in nm.

    Parameters
    ----------
    path : str or os.PathLike
        Any file mdtraj reads (``.dcd``, ``.xtc``, ``.nc``, ``.pdb``, ``.h5``, ...); mdtraj
        converts the format's unit (Å for DCD and NetCDF) to nm.
    topology : optional
        Needed by formats without one (DCD, XTC, NetCDF): an mdtraj or openmm topology or a
        topology file (e.g. PDB).
    n_atoms : int, optional
        Expected number of atoms (e.g. ``energy.event_shape[0]``); a mismatch is an error.
    stride : int, optional
        Keep every ``stride``-th frame.
    check_scale : bool
        Check that the positions look like nm (:func:`check_nanometres`).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trajectory file '{path}' does not exist; check the path (relative "
                         f"paths start in {Path.cwd()}).")
    traj = _load(path, topology)
    if n_atoms is not None and traj.n_atoms != n_atoms:
        raise ValueError(
            f"'{path}' has {traj.n_atoms} atoms per frame; the system has {n_atoms}. Give the "
            "topology (and trajectory) of the same system, or select atoms with "
            "mdtraj (traj.atom_slice) first.")
    xyz = traj.xyz[::stride] if stride else traj.xyz
    if check_scale:
        check_nanometres(xyz, f"positions in '{path}'")
    return torch.from_numpy(np.asarray(xyz, dtype=np.float64))


# -- the chunk store of MD runs -----------------------------------------------------------------

@dataclass(frozen=True)
class MDSamples:
    """Frames of one MD run, as stored on disk.

    Attributes
    ----------
    positions : Tensor, (n_frames, n_atoms, 3) float64, nm
    energies : Tensor, (n_frames,) float64, kT; ``+inf`` outside a restricted basin
    scores : Tensor, (n_frames, n_atoms, 3) float64, ``-grad u`` in 1/nm (0 outside)
    steps : Tensor, (n_frames,) int64, production MD step of each frame
    topology : mdtraj.Topology
    settings : dict, the sampler settings of the run
    out_dir : Path, the run's folder
    """

    positions: Tensor = field(repr=False)
    energies: Tensor = field(repr=False)
    scores: Tensor = field(repr=False)
    steps: Tensor = field(repr=False)
    topology: mdtraj.Topology = field(repr=False)
    settings: dict = field(repr=False)
    out_dir: Path

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    def decorrelate(self):
        """:func:`feat.sampling.md.decorrelate` on :attr:`energies`."""
        from feat.sampling.md import decorrelate

        return decorrelate(self.energies)

    def select(self, indices: np.ndarray | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(positions, energies, scores)`` of the given frames."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return self.positions[idx], self.energies[idx], self.scores[idx]


def _chunk(out: Path, i: int, ext: str) -> Path:
    return out / f"chunk_{i:06d}.{ext}"


def _tmp(folder: Path, stem: str, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=suffix)
    os.close(fd)
    return tmp


def _write_npz(tmp: str, arrays: dict) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def write_chunk(out: Path, i: int, positions: np.ndarray, energies: np.ndarray,
                scores: np.ndarray, steps: np.ndarray, checkpoint: bytes, state: str) -> None:
    """Write chunk ``i`` of a run: DCD and .npz to temporary files, renamed (the .npz last).

    ``positions`` (m, N, 3) float32 nm are stored exactly in the .npz and as Å in the DCD;
    ``energies`` (m,) kT and ``scores`` (m, N, 3) 1/nm belong to those float32 positions.
    """
    dcd, npz = _chunk(out, i, "dcd"), _chunk(out, i, "npz")
    tmp_dcd, tmp_npz = _tmp(out, dcd.stem, ".dcd"), _tmp(out, npz.stem, ".npz")
    try:
        with mdtraj.formats.DCDTrajectoryFile(tmp_dcd, "w", force_overwrite=True) as f:
            f.write(10.0 * positions)
        _write_npz(tmp_npz, {
            "format": np.array(_CHUNK_FORMAT), "positions": positions, "energies": energies,
            "scores": scores, "steps": steps,
            "checkpoint": np.frombuffer(checkpoint, dtype=np.uint8), "state": np.array(state)})
        os.replace(tmp_dcd, dcd)
        os.replace(tmp_npz, npz)
    finally:
        for tmp in (tmp_dcd, tmp_npz):
            if os.path.exists(tmp):
                os.unlink(tmp)


def chunks_on_disk(out: Path) -> tuple[int, int]:
    """``(complete chunks, frames in them)`` of the run in ``out``."""
    n_chunks = 0
    while _chunk(out, n_chunks, "npz").is_file() and _chunk(out, n_chunks, "dcd").is_file():
        n_chunks += 1
    n_frames = 0
    for i in range(n_chunks):
        with np.load(_chunk(out, i, "npz"), allow_pickle=False) as f:
            n_frames += len(f["steps"])
    return n_chunks, n_frames


def read_checkpoint(out: Path, i: int) -> tuple[bytes, str]:
    """The OpenMM checkpoint (bytes) and serialised State (XML) at the end of chunk ``i``."""
    with np.load(_chunk(out, i, "npz"), allow_pickle=False) as f:
        return f["checkpoint"].tobytes(), str(f["state"])


def _read_chunk(out: Path, i: int) -> dict:
    with np.load(_chunk(out, i, "npz"), allow_pickle=False) as f:
        if "format" not in f.files or str(f["format"]) != _CHUNK_FORMAT:
            raise ValueError(f"{_chunk(out, i, 'npz')} is not a feat MD chunk; use a fresh "
                             "out_dir.")
        return {k: f[k] for k in ("positions", "energies", "scores", "steps")}


def load_md_samples(out_dir: str | os.PathLike, n_frames: int | None = None) -> MDSamples:
    """Reload the complete chunks of a :class:`LangevinMD` run (the first ``n_frames`` frames)."""
    out = Path(out_dir)
    if not (out / "settings.json").is_file():
        raise ValueError(f"'{out}' holds no feat MD run (no settings.json); run LangevinMD first.")
    top = mdtraj.load_topology(str(out / "topology.pdb"))
    chunks = [_read_chunk(out, i) for i in range(chunks_on_disk(out)[0])]
    if not chunks:
        raise ValueError(f"'{out}' holds no complete chunk yet; run (or resume) LangevinMD.")
    cat = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    n = len(cat["steps"]) if n_frames is None else n_frames
    if n > len(cat["steps"]):
        raise ValueError(f"'{out}' has {len(cat['steps'])} frames; asked for n_frames = {n}.")
    t = {k: torch.from_numpy(v[:n]) for k, v in cat.items()}
    return MDSamples(t["positions"].double(), t["energies"], t["scores"], t["steps"], top,
                     json.loads((out / "settings.json").read_text()), out)
