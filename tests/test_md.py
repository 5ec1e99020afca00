"""OpenMM Langevin end-state sampler: equipartition, storage, resume, HMR, restraints, I/O."""

from __future__ import annotations

import math

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools import testsystems

import feat.sampling.md as md_module
from feat.energies.openmm import OpenMMEnergy
from feat.sampling.md import (
    LangevinMD,
    decorrelate,
    flat_bottom_dihedral_restraint,
    load_md_samples,
    repartition_hydrogen_mass,
)
from feat.sampling.trajectory import load_trajectory

T_HOT = 500.0  # K


@pytest.fixture(scope="module")
def oscillators():
    """Five independent 3-D harmonic oscillators: <U>/kT = 3N/2 = 7.5 exactly."""
    return testsystems.HarmonicOscillatorArray()


def _sampler(**kw) -> LangevinMD:
    base = dict(temperature=T_HOT, timestep=1.0, friction=20.0, n_equilibration=500,
                save_every=20, chunk_size=700, platform="Reference")
    return LangevinMD(**{**base, **kw})


def _run(ts, out, n_frames, sampler=None, **kw):
    sampler = sampler or _sampler()
    return sampler.run(ts.system, ts.positions, ts.topology, n_frames, out, progress=False, **kw)


def test_equipartition(oscillators, tmp_path):
    """Mean reduced potential = 3N/2 within 4 autocorrelation-corrected standard errors.

    LangevinMiddleIntegrator samples a harmonic potential's configurations exactly at any
    stable step, so this is a test of the sampler's plumbing and of the reduced units.
    """
    from pymbar import timeseries

    run = _run(oscillators, tmp_path / "eq", 8000)
    u = run.energies.numpy()
    g = timeseries.statistical_inefficiency(u)
    sigma = u.std() * math.sqrt(g / len(u))
    expected = 1.5 * oscillators.system.getNumParticles()
    assert abs(u.mean() - expected) < 4 * sigma, (u.mean(), sigma, g)
    assert sigma < 0.1  # the test has power: ~1 % of <u>
    assert run.energies.dtype == torch.float64 and run.scores.shape == run.positions.shape


def test_saved_samples_reload_bit_identically(oscillators, tmp_path):
    run = _run(oscillators, tmp_path / "r", 50)
    back = load_md_samples(tmp_path / "r")
    for name in ("positions", "energies", "scores", "steps"):
        assert torch.equal(getattr(run, name), getattr(back, name)), name
    # the stored energies are those of the stored positions, from the same energy function
    energy = OpenMMEnergy(oscillators.system, T_HOT, platform="Reference")
    u, s = energy.energy_and_score(back.positions)
    assert torch.equal(u, back.energies) and torch.equal(s, back.scores)
    # the DCD copy for mdtraj agrees to float32 rounding of Å
    dcd = load_trajectory(tmp_path / "r" / "chunk_000000.dcd", tmp_path / "r" / "topology.pdb",
                          n_atoms=5, check_scale=False)
    assert torch.allclose(dcd, back.positions, atol=1e-6, rtol=0)
    assert back.steps.tolist() == [20 * (i + 1) for i in range(50)]


def test_resume_after_interruption_continues_the_chain(oscillators, tmp_path, monkeypatch):
    sampler = _sampler(chunk_size=15)
    full = _run(oscillators, tmp_path / "full", 50, sampler)
    real, calls = md_module._write_chunk, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # dies while writing the third chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(md_module, "_write_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(oscillators, tmp_path / "cut", 50, sampler)
    monkeypatch.setattr(md_module, "_write_chunk", real)
    assert load_md_samples(tmp_path / "cut").n_frames == 30
    resumed = _run(oscillators, tmp_path / "cut", 50, sampler)
    assert resumed.n_frames == 50
    assert torch.equal(resumed.steps, full.steps)
    assert torch.equal(resumed.positions, full.positions)  # same chain, continued exactly
    longer = _run(oscillators, tmp_path / "cut", 60, sampler)  # extending works too
    assert torch.equal(longer.positions[:50], full.positions)


def test_resume_refuses_other_settings(oscillators, tmp_path):
    _run(oscillators, tmp_path / "s", 10)
    with pytest.raises(ValueError, match="different settings.*friction"):
        _run(oscillators, tmp_path / "s", 10, _sampler(friction=5.0))


def test_decorrelate_drops_infinite_frames_and_thins():
    rng = np.random.default_rng(0)
    u = np.zeros(4000)
    for i in range(1, len(u)):  # AR(1), rho = 0.9: g = (1 + rho) / (1 - rho) = 19
        u[i] = 0.9 * u[i - 1] + rng.normal()
    u[::7] = np.inf
    dec = decorrelate(u)
    assert dec.n_finite == len(u) - len(u[::7]) and np.isfinite(u[dec.indices]).all()
    assert 10 < dec.statistical_inefficiency < 30
    assert abs(dec.n_kept - dec.n_finite / dec.statistical_inefficiency) <= 2


def test_constraints_are_refused_with_the_fix(tmp_path):
    ts = testsystems.AlanineDipeptideVacuum()  # HBonds constraints by default
    with pytest.raises(ValueError, match="constraints=None"):
        LangevinMD().run(ts.system, ts.positions, ts.topology, 1, tmp_path, progress=False)


def test_hydrogen_mass_repartitioning_keeps_total_mass():
    system = testsystems.AlanineDipeptideVacuum(constraints=None).system
    new = repartition_hydrogen_mass(system, 3.0)

    def masses(s):
        return np.array([s.getParticleMass(i).value_in_unit(unit.dalton)
                         for i in range(s.getNumParticles())])

    old, m = masses(system), masses(new)
    assert math.isclose(old.sum(), m.sum(), rel_tol=1e-12)
    assert np.allclose(m[old < 1.5], 3.0) and (m[old > 1.5] > 3.0).all()
    assert masses(system)[0] == old[0]  # the original is untouched


def test_flat_bottom_restraint_is_zero_inside_and_positive_outside():
    ts = testsystems.AlanineDipeptideVacuum(constraints=None)
    phi = (4, 6, 8, 14)  # phi ~ -pi at the openmmtools start structure
    for complement, zero in ((False, False), (True, True)):
        system = openmm.System()
        for _ in range(ts.system.getNumParticles()):
            system.addParticle(1.0)
        system.addForce(flat_bottom_dihedral_restraint(phi, 0.0, 2.15, complement=complement,
                                                       k=100.0))
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(ts.positions)
        e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            unit.kilojoule_per_mole)
        # outside (0, 2.15): the nearer end of the arc is 2.15, at 2 pi + phi - 2.15
        phi0 = float(mdtraj.compute_phi(mdtraj.Trajectory(
            ts.positions.value_in_unit(unit.nanometer), ts.mdtraj_topology))[1][0, 0])
        expected = 0.0 if zero else 100.0 * (2 * math.pi + phi0 - 2.15) ** 2
        assert math.isclose(e, expected, rel_tol=1e-6, abs_tol=1e-12), (e, expected)


def test_load_trajectory_checks_atoms_and_units(tmp_path):
    ts = testsystems.AlanineDipeptideVacuum(constraints=None)
    top = mdtraj.Topology.from_openmm(ts.topology)
    xyz = np.asarray(ts.positions.value_in_unit(unit.nanometer), dtype=np.float32)[None]
    traj = mdtraj.Trajectory(np.repeat(xyz, 3, axis=0), top)
    traj.save_dcd(str(tmp_path / "ok.dcd"))
    traj.save_pdb(str(tmp_path / "top.pdb"))
    x = load_trajectory(tmp_path / "ok.dcd", tmp_path / "top.pdb", n_atoms=22)
    assert x.shape == (3, 22, 3) and x.dtype == torch.float64
    with pytest.raises(ValueError, match="22 atoms per frame; the system has 23"):
        load_trajectory(tmp_path / "ok.dcd", top, n_atoms=23)
    with pytest.raises(ValueError, match="topology"):
        load_trajectory(tmp_path / "ok.dcd")
    mdtraj.Trajectory(10 * traj.xyz, top).save_dcd(str(tmp_path / "angstrom.dcd"))
    with pytest.raises(ValueError, match="probably in Å"):
        load_trajectory(tmp_path / "angstrom.dcd", top)
    mdtraj.Trajectory(traj.xyz / 10, top).save_dcd(str(tmp_path / "tiny.dcd"))
    with pytest.raises(ValueError, match="multiply by 10"):
        load_trajectory(tmp_path / "tiny.dcd", top)
