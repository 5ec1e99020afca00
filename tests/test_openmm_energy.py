"""OpenMM bridge and thermodynamic states, on alanine dipeptide (vacuum and OBC1 implicit)."""

from __future__ import annotations

import math
import pickle

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools import testsystems

from feat.energies.openmm import OpenMMEnergy, boltzmann_kt
from feat.energies.states import (
    BasinRestrictedEnergy,
    Dihedral,
    Interval,
    dihedral,
    modified_system,
    scale_gb_charges,
)

T = 300.0 * unit.kelvin


@pytest.fixture(scope="module")
def vacuum():
    return testsystems.AlanineDipeptideVacuum(constraints=None)


@pytest.fixture(scope="module")
def implicit():
    return testsystems.AlanineDipeptideImplicit(constraints=None)


@pytest.fixture(params=["vacuum", "implicit"])
def aldp(request):
    return request.getfixturevalue(request.param)


def configurations(testsystem, n: int = 8, sigma: float = 0.005, seed: int = 0) -> torch.Tensor:
    """(n, 22, 3) float64 nm: the test system's positions plus N(0, sigma²) noise."""
    x0 = torch.tensor(testsystem.positions.value_in_unit(unit.nanometer), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return x0 + sigma * torch.randn((n, *x0.shape), generator=g, dtype=torch.float64)


def context_results(system, x, platform="Reference", properties=None):
    """Energies (B,) kJ/mol and forces (B, N, 3) kJ/mol/nm from a bare OpenMM context."""
    ctx = openmm.Context(
        system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName(platform),
        properties or {},
    )
    energies, forces = [], []
    for xi in x.numpy():
        ctx.setPositions(xi)
        state = ctx.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
    return torch.tensor(energies, dtype=torch.float64), torch.tensor(np.array(forces))


def kt_kj_per_mol() -> float:
    r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    return r * 300.0


# ---------------------------------------------------------------------- OpenMMEnergy


def test_energy_and_forces_match_context(aldp):
    energy = OpenMMEnergy(aldp.system, T)
    x = configurations(aldp)
    e_ref, f_ref = context_results(aldp.system, x, energy.platform_name, energy.platform_properties)
    kt = kt_kj_per_mol()
    assert energy.kT == pytest.approx(kt, rel=1e-14)
    assert boltzmann_kt(300.0) == energy.kT
    u, score = energy.energy_and_score(x)
    torch.testing.assert_close(u, e_ref / kt, rtol=1e-10, atol=0)
    torch.testing.assert_close(score, f_ref / kt, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(energy(x), u, rtol=0, atol=0)


def test_platform_choice(vacuum, implicit):
    assert OpenMMEnergy(vacuum.system, T).platform_name == "Reference"
    e = OpenMMEnergy(implicit.system, T)
    assert (e.platform_name, e.platform_properties) == ("CPU", {"Threads": "1"})
    assert OpenMMEnergy(implicit.system, T, platform="Reference").platform_name == "Reference"
    with pytest.raises(ValueError, match="platform must be one of"):
        OpenMMEnergy(vacuum.system, T, platform="Metal")


def test_gradient_is_minus_force_over_kt_and_matches_finite_differences(aldp):
    energy = OpenMMEnergy(aldp.system, T, platform="Reference")
    x = configurations(aldp, n=2)
    _, f_ref = context_results(aldp.system, x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(xg).sum(), xg)
    torch.testing.assert_close(grad, -f_ref / energy.kT, rtol=1e-10, atol=1e-12)
    h = 1e-5
    for b, atom, k in [(0, 0, 0), (0, 8, 1), (1, 14, 2), (1, 21, 0)]:
        dx = torch.zeros_like(x[b : b + 1])
        dx[0, atom, k] = h
        fd = (energy(x[b : b + 1] + dx) - energy(x[b : b + 1] - dx)) / (2 * h)
        assert fd.item() == pytest.approx(grad[b, atom, k].item(), rel=1e-6, abs=1e-4)


def test_batched_equals_looped_and_float32_is_evaluated_in_float64(implicit):
    energy = OpenMMEnergy(implicit.system, T)
    x = configurations(implicit, n=5)
    u, s = energy.energy_and_score(x)
    looped = [energy.energy_and_score(x[i : i + 1]) for i in range(len(x))]
    assert torch.equal(u, torch.cat([ui for ui, _ in looped]))
    assert torch.equal(s, torch.cat([si for _, si in looped]))
    x32 = x.float()
    u32, s32 = energy.energy_and_score(x32)
    u64, s64 = energy.energy_and_score(x32.double())
    assert u32.dtype == s32.dtype == torch.float32
    assert torch.equal(u32, u64.float()) and torch.equal(s32, s64.float())


def test_wrong_shapes_and_arguments_are_rejected(vacuum):
    energy = OpenMMEnergy(vacuum.system, T)
    with pytest.raises(ValueError, match=r"\(batch, 22, 3\).*22 particles.*\(4, 21, 3\)"):
        energy.energy(torch.zeros(4, 21, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'inf'"):
        OpenMMEnergy(vacuum.system, T, on_error="nan")
    with pytest.raises(ValueError, match="temperature"):
        OpenMMEnergy(vacuum.system, -1.0)


@pytest.mark.parametrize("where", ["nan_positions", "overlapping_atoms"])
def test_nonfinite_policy(aldp, where):
    x = configurations(aldp, n=4)
    if where == "nan_positions":
        x[2, 5, 1] = float("nan")
    else:  # two bonded atoms on top of each other: OpenMM gives NaN energy or forces
        x[2, 1] = x[2, 0]
    strict = OpenMMEnergy(aldp.system, T)
    with pytest.raises(ValueError, match="index 2") as info:
        strict.energy_and_score(x)
    assert "on_error='inf'" in str(info.value)
    assert strict.n_nonfinite == 1
    lenient = OpenMMEnergy(aldp.system, T, on_error="inf")
    u, s = lenient.energy_and_score(x)
    assert u[2] == math.inf and torch.isfinite(u[[0, 1, 3]]).all()
    assert torch.all(s[2] == 0) and torch.isfinite(s).all()
    assert lenient.n_nonfinite == 1
    u_ok = lenient.energy_and_score(x[[0, 1, 3]])[0]  # the context recovers afterwards
    assert torch.equal(u_ok, u[[0, 1, 3]])


def test_double_backward_raises_clear_error(vacuum):
    energy = OpenMMEnergy(vacuum.system, T)
    x = configurations(vacuum, n=2).requires_grad_(True)
    (g,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once only"):
        torch.autograd.grad(g.sum(), x)


def test_pickle_round_trip(implicit):
    energy = OpenMMEnergy(implicit.system, T, on_error="inf")
    x = configurations(implicit, n=3)
    u, s = energy.energy_and_score(x)
    clone = pickle.loads(pickle.dumps(energy))
    assert clone._evaluator is None and clone.on_error == "inf"
    u2, s2 = clone.energy_and_score(x)
    assert torch.equal(u, u2) and torch.equal(s, s2)


def test_worker_processes_match_serial(vacuum):
    x = configurations(vacuum, n=5)
    x[3, 0, 0] = float("nan")
    serial = OpenMMEnergy(vacuum.system, T, on_error="inf")
    pooled = OpenMMEnergy(vacuum.system, T, on_error="inf", n_workers=2)
    try:
        u, s = pooled.energy_and_score(x)
    finally:
        pooled.close()
    u_ref, s_ref = serial.energy_and_score(x)
    assert torch.equal(u, u_ref) and torch.equal(s, s_ref)
    assert pooled.n_nonfinite == 1 and u[3] == math.inf


# ---------------------------------------------------------------------- thermodynamic states


def reference_energies(system, x) -> torch.Tensor:
    return context_results(system, x)[0]


def _gb_index(system) -> int:
    return next(
        i
        for i, f in enumerate(system.getForces())
        if isinstance(f, (openmm.CustomGBForce, openmm.GBSAOBCForce))
    )


def _without_gb(system):
    return modified_system(system, lambda s: s.removeForce(_gb_index(s)))


def _charge_free_terms_only(system):
    """The system with its CustomGBForce reduced to the energy terms free of charges."""

    def edit(s):
        old = s.getForce(_gb_index(s))
        new = openmm.CustomGBForce()
        for i in range(old.getNumPerParticleParameters()):
            new.addPerParticleParameter(old.getPerParticleParameterName(i))
        for i in range(old.getNumComputedValues()):
            new.addComputedValue(*old.getComputedValueParameters(i))
        for i in range(old.getNumEnergyTerms()):
            expression, kind = old.getEnergyTermParameters(i)
            if "charge" not in expression:
                new.addEnergyTerm(expression, kind)
        for i in range(old.getNumParticles()):
            new.addParticle(old.getParticleParameters(i))
        for i in range(old.getNumExclusions()):
            new.addExclusion(*old.getExclusionParticles(i))
        new.setNonbondedMethod(old.getNonbondedMethod())
        s.removeForce(_gb_index(s))
        s.addForce(new)

    return modified_system(system, edit)


def _native_obc(vacuum, implicit):
    """Vacuum ALDP plus a native GBSAOBCForce without surface-area term."""
    custom = implicit.system.getForce(_gb_index(implicit.system))
    system = modified_system(vacuum.system, lambda s: None)
    gb = openmm.GBSAOBCForce()
    gb.setSurfaceAreaEnergy(0.0)
    for i in range(custom.getNumParticles()):
        charge, offset_radius, scaled_radius = custom.getParticleParameters(i)
        gb.addParticle(charge, offset_radius + 0.009, scaled_radius / offset_radius)
    system.addForce(gb)
    return system


def test_scale_gb_charges_custom_gb(implicit):
    system = implicit.system
    x = configurations(implicit, n=3)
    e1 = reference_energies(system, x)
    torch.testing.assert_close(
        reference_energies(scale_gb_charges(system, 1.0), x), e1, rtol=1e-12, atol=0
    )
    e0 = reference_energies(scale_gb_charges(system, 0.0), x)
    torch.testing.assert_close(
        e0, reference_energies(_charge_free_terms_only(system), x), rtol=1e-10, atol=0
    )
    e_vac = reference_energies(_without_gb(system), x)
    assert torch.all(e0 - e_vac > 0)  # the OBC1 surface-area term survives λ = 0
    e_half = reference_energies(scale_gb_charges(system, 0.5), x)
    assert torch.all((e_half - e1).abs() > 1.0)
    torch.testing.assert_close(e_half, e0 + 0.25 * (e1 - e0), rtol=1e-10, atol=0)
    half = scale_gb_charges(system, 0.5)  # keep a reference: forces do not own their System
    nb = [f for f in half.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    nb_ref = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    assert all(
        nb.getParticleParameters(i)[0] == nb_ref.getParticleParameters(i)[0]
        for i in range(nb.getNumParticles())
    )
    assert system.getForce(_gb_index(system)).getParticleParameters(0)[0] != 0.0  # untouched


def test_scale_gb_charges_native_obc_zero_is_vacuum(vacuum, implicit):
    system = _native_obc(vacuum, implicit)
    x = configurations(vacuum, n=3)
    e1 = reference_energies(system, x)
    torch.testing.assert_close(
        reference_energies(scale_gb_charges(system, 1.0), x), e1, rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        reference_energies(scale_gb_charges(system, 0.0), x),
        reference_energies(vacuum.system, x),
        rtol=1e-10,
        atol=0,
    )
    assert torch.all((reference_energies(scale_gb_charges(system, 0.5), x) - e1).abs() > 1.0)


def test_scale_gb_charges_errors(vacuum, implicit):
    with pytest.raises(ValueError, match="GBSAOBCForce or CustomGBForce"):
        scale_gb_charges(vacuum.system, 0.5)
    with pytest.raises(ValueError, match="lam must be a finite"):
        scale_gb_charges(implicit.system, float("nan"))


def test_modified_system_leaves_original_alone(implicit):
    n = implicit.system.getNumForces()
    assert _without_gb(implicit.system).getNumForces() == n - 1
    assert implicit.system.getNumForces() == n


# ---------------------------------------------------------------------- dihedral and basins


def test_dihedral_matches_mdtraj(implicit):
    # mdtraj works in float32: give both the same float32 positions, in molecule-like
    # (well-conditioned) geometries; large noise covers the whole circle
    x = configurations(implicit, n=64, sigma=0.05, seed=1).float().double()
    indices = np.array([[4, 6, 8, 14], [6, 8, 14, 16], [0, 1, 4, 6], [21, 3, 9, 12]])
    ref = mdtraj.compute_dihedrals(mdtraj.Trajectory(x.numpy(), implicit.mdtraj_topology), indices)
    ours = dihedral(x, indices)
    assert ours.shape == (64, 4) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6, rtol=0)
    assert torch.all(ours > -math.pi) and torch.all(ours <= math.pi)
    torch.testing.assert_close(Dihedral(tuple(indices[0]))(x), ours[:, 0], rtol=0, atol=0)
    trans = torch.tensor(
        [[[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64
    )  # planar trans: π, not −π
    assert dihedral(trans, [0, 1, 2, 3]).item() == pytest.approx(math.pi, abs=1e-12)


def test_basin_restricted_energy(implicit):
    traj = mdtraj.Trajectory(
        implicit.positions.value_in_unit(unit.nanometer)[None], implicit.mdtraj_topology
    )
    phi_atoms = tuple(int(i) for i in mdtraj.compute_phi(traj)[0][0])
    wrapped = OpenMMEnergy(implicit.system, T)
    x = configurations(implicit, n=12, sigma=0.02)  # φ of the reference is ≈ −π: both signs
    phi = dihedral(x, phi_atoms)
    basin = BasinRestrictedEnergy(wrapped, Dihedral(phi_atoms), (0.0, math.pi + 1.0))
    inside = phi > 0
    assert inside.any() and (~inside).any()
    u_ref, s_ref = wrapped.energy_and_score(x)
    u, s = basin.energy_and_score(x)
    assert torch.all(u[~inside] == math.inf) and torch.all(s[~inside] == 0)
    assert torch.equal(u[inside], u_ref[inside]) and torch.equal(s[inside], s_ref[inside])
    xg = x.clone().requires_grad_(True)
    u_ad = basin(xg)
    (grad,) = torch.autograd.grad(u_ad[inside].sum(), xg)
    assert torch.equal(u_ad.detach(), u)
    torch.testing.assert_close(-grad[inside], s_ref[inside], rtol=1e-12, atol=0)
    a = BasinRestrictedEnergy(wrapped, Dihedral(phi_atoms), Interval(0.0, 2.15))
    b = BasinRestrictedEnergy(wrapped, Dihedral(phi_atoms), Interval(0.0, 2.15, complement=True))
    assert torch.all(a.inside_mask(x) ^ b.inside_mask(x))
    assert torch.equal(pickle.loads(pickle.dumps(b))(x), b(x))
    outside = xg[~inside]  # a batch entirely outside: +inf, zero gradient
    (grad_out,) = torch.autograd.grad(basin(outside).sum(), xg)
    assert torch.all(basin(outside.detach()) == math.inf) and torch.all(grad_out == 0)
