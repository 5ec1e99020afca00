"""Internal coordinates (feat.energies.internal): the Z-matrix map, its Jacobian, the energy on
whitened coordinates, periodic fields, and the alanine-dipeptide problem built in them."""

from __future__ import annotations

import math

import mdtraj as md
import numpy as np
import pytest
import torch
from openmmtools import testsystems

from feat.energies.analytic import Gaussian
from feat.energies.internal import InternalCoordinates, InternalEnergy, ZMatrix, internal_problem
from feat.energies.openmm import OpenMMEnergy
from feat.energies.states import dihedral, scale_gb_charges
from feat.fields import MLPField
from feat.problem import TwoStateProblem
from feat.sampling.trajectory import as_mdtraj_topology
from feat.specs import build_problem

PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)


@pytest.fixture(scope="module")
def aldp():
    ts = testsystems.AlanineDipeptideImplicit(constraints=None)
    x0 = torch.as_tensor(np.asarray(ts.positions.value_in_unit(ts.positions.unit)),
                         dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = x0 + 0.005 * torch.randn(16, 22, 3, generator=gen, dtype=torch.float64)
    return ts, ZMatrix.from_topology(ts.topology), x - x.mean(1, keepdim=True)


def test_round_trip_is_exact_up_to_a_rigid_motion(aldp):
    _, zm, x = aldp
    q = zm.to_internal(x)
    assert q.shape == (16, 60) and zm.n_coordinates == 60 and zm.n_dihedrals == 19
    y = zm.to_cartesian(q)
    assert torch.allclose(zm.to_internal(y), q, atol=1e-12)
    assert torch.allclose(torch.cdist(y, y), torch.cdist(x, x), atol=1e-12)  # no mirror image
    assert y.mean(1).abs().max() < 1e-12


def test_backbone_torsions_are_coordinates_with_mdtraj_signs(aldp):
    ts, zm, x = aldp
    nd = zm.n_dihedrals
    traj = md.Trajectory(x.numpy(), as_mdtraj_topology(ts.topology))
    for atoms, compute in ((PHI, md.compute_phi), (PSI, md.compute_psi)):
        col = zm.dihedral_index(atoms)
        _, ref = compute(traj)
        assert np.allclose(zm.to_internal(x)[:, -nd + col].numpy(), ref[:, 0], atol=1e-10)
    names = zm.describe()
    assert len(names) == 60 and names[-nd + zm.dihedral_index(PHI)] == "dihedral 14-8-6-4"
    with pytest.raises(ValueError, match="not an internal coordinate"):
        zm.dihedral_index((0, 1, 2, 3))


def test_log_jacobian_is_the_volume_element_up_to_a_constant():
    """log |det ∂x/∂(translation, rotation, q)| − log J(q) is the same at every configuration."""
    zm = ZMatrix.from_bonds(6, [(0, 1), (1, 2), (2, 3), (1, 4), (2, 5)])
    gen = torch.Generator().manual_seed(1)

    def full(v):
        x = zm.to_cartesian(v[6:][None])[0]
        w = v[3:6]
        k = torch.zeros(3, 3, dtype=v.dtype)
        k[0, 1], k[0, 2], k[1, 2] = -w[2], w[1], -w[0]
        return (x @ torch.linalg.matrix_exp(k - k.T).T + v[:3]).reshape(-1)

    gaps = []
    for _ in range(4):
        q = zm.to_internal(torch.randn(1, 6, 3, generator=gen, dtype=torch.float64))[0]
        jac = torch.autograd.functional.jacobian(full, torch.cat([torch.zeros(6).double(), q]))
        gaps.append(float(torch.linalg.slogdet(jac)[1] - zm.log_jacobian(q[None])[0]))
    assert max(gaps) - min(gaps) < 1e-10


def test_zmatrix_rejects_bad_graphs():
    with pytest.raises(ValueError, match="not connected"):
        ZMatrix.from_bonds(6, [(0, 1), (1, 2), (2, 3), (4, 5)])
    with pytest.raises(ValueError, match="distinct atom indices"):
        ZMatrix.from_bonds(4, [(0, 1), (1, 2), (2, 7)])
    with pytest.raises(ValueError, match="at least 4 atoms"):
        ZMatrix.from_bonds(3, [(0, 1), (1, 2)])


@pytest.fixture(scope="module")
def aldp_energy(aldp):
    ts, zm, x = aldp
    energy = OpenMMEnergy(ts.system, 300.0, platform="Reference")  # double precision
    coords = InternalCoordinates.fit(zm, x)
    return energy, coords, InternalEnergy(energy, coords), coords.forward(x)


def test_internal_energy_is_the_cartesian_energy_minus_log_jacobian(aldp, aldp_energy):
    _, zm, x = aldp
    energy, coords, ie, z = aldp_energy
    assert ie.event_shape == (60,)
    u = ie(z)
    expected = energy(x) - zm.log_jacobian(zm.to_internal(x))
    assert torch.allclose(u, expected, atol=1e-8)
    # periodic in every dihedral column: a shift by its period changes nothing
    periods = torch.tensor(coords.periods)
    assert (periods[:41] == 0).all() and (periods[41:] > 0).all()
    shifted = z + periods * torch.randint(-2, 3, (60,), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(ie(shifted), u, atol=1e-8)
    # an angle at or beyond π is outside the state: +inf, zero score
    bad = z.clone()
    bad[0, 21] = (math.pi - coords.mean[21]) / coords.std[21] + 1.0
    ub, sb = ie.energy_and_score(bad)
    assert torch.isinf(ub[0]) and ub[0] > 0 and (sb[0] == 0).all() and torch.isfinite(ub[1:]).all()


def test_internal_score_matches_finite_differences(aldp_energy):
    _, _, ie, z = aldp_energy
    z = z[:2]
    _, s = ie.energy_and_score(z)
    h = 1e-4
    for col in (0, 25, 47, 59):
        e = torch.zeros_like(z)
        e[:, col] = h
        fd = -(ie(z + e) - ie(z - e)) / (2 * h)
        assert torch.allclose(s[:, col], fd, rtol=1e-4, atol=1e-4)


def test_whitening_and_cuts_follow_the_samples(aldp, aldp_energy):
    _, zm, x = aldp
    _, coords, _, z = aldp_energy
    assert torch.allclose(z.mean(0), torch.zeros(60, dtype=z.dtype), atol=1e-10)
    assert torch.allclose(z.std(0), torch.ones(60, dtype=z.dtype), atol=1e-10)
    assert torch.allclose(coords.inverse(z), x, atol=1e-6) or torch.allclose(
        torch.cdist(coords.inverse(z), coords.inverse(z)), torch.cdist(x, x), atol=1e-10)
    # the unrolled dihedrals lie in [cut, cut + 2π), the cut away from every sample
    dih = coords.unwhiten(z)[:, -zm.n_dihedrals:]
    assert ((dih >= coords.cuts) & (dih < coords.cuts + 2 * math.pi)).all()


def test_internal_problem_keeps_delta_f_and_drops_per_atom_metadata(aldp):
    ts, zm, x = aldp
    ea = OpenMMEnergy(scale_gb_charges(ts.system, 0.0), 300.0)
    eb = OpenMMEnergy(ts.system, 300.0)
    p = TwoStateProblem(ea, eb, x[:8], x[8:], reference=-29.4, name="aldp",
                        metadata={"com_free": True, "atom_types": [0] * 22, "spec": {}})
    ip = internal_problem(p, zm)
    assert ip.event_shape == (60,) and ip.reference == -29.4 and ip.x_a.shape == (8, 60)
    assert "com_free" not in ip.metadata and "atom_types" not in ip.metadata
    assert len(ip.metadata["periods"]) == 60 and "internal_coordinates" in ip.metadata
    # the log-Jacobian is common to both states: works (energy differences) are unchanged
    w_cart = eb(x[:8]) - ea(x[:8])
    w_int = ip.energy_b(ip.x_a) - ip.energy_a(ip.x_a)
    assert torch.allclose(w_int, w_cart, atol=1e-8)


def test_internal_energy_needs_positions_of_the_zmatrix_atoms(aldp):
    _, zm, x = aldp
    coords = InternalCoordinates.fit(zm, x)
    with pytest.raises(ValueError, match=r"\(22, 3\) positions"):
        InternalEnergy(Gaussian(torch.zeros(3), torch.eye(3)), coords)
    with pytest.raises(ValueError, match="do not vary"):
        InternalCoordinates.fit(zm, x[:1])


def test_mlp_field_is_periodic_in_its_periodic_columns():
    torch.manual_seed(0)
    periods = [0.0, 2.0, 0.0, 5.0]
    f = MLPField((4,), hidden=16, depth=2, periods=periods)
    t, x = torch.rand(8), torch.randn(8, 4)
    shift = torch.tensor([0.0, 2.0, 0.0, -5.0])
    assert torch.allclose(f(t, x + shift), f(t, x), atol=1e-5)
    assert not torch.allclose(f(t, x + torch.tensor([0.5, 0, 0, 0])), f(t, x), atol=1e-5)
    with pytest.raises(ValueError, match="periods"):
        MLPField((4,), periods=[0.0, -1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="periods"):
        MLPField((4,), periods=[0.0, 1.0])


def test_aldp_spec_builds_internal_coordinates(tmp_path):
    spec = {"kind": "aldp_s", "n_samples_a": 5, "n_samples_b": 5, "equilibration_steps": 500,
            "production_steps": 2000, "save_every": 20, "chunk_frames": 60,
            "cache_dir": str(tmp_path), "progress": False, "coordinates": "internal"}
    p = build_problem(spec, torch.Generator())
    assert p.x_a.shape == (5, 60) and torch.isfinite(p.energy_a(p.x_a)).all()
    phi = dihedral(p.energy_a.coordinates.inverse(p.x_a), PHI)
    assert phi.shape == (5,)
    with pytest.raises(ValueError, match="system.coordinates"):
        build_problem({**spec, "coordinates": "polar"}, torch.Generator())


def test_periodic_coordinates_pair_along_the_shorter_arc():
    from feat.interpolants.couplings import MinibatchOTCoupling, lift_periodic, minimal_image

    periods = torch.tensor([0.0, 1.0])
    d = torch.tensor([[0.7, 0.7], [-0.7, -0.7], [2.3, 0.2]])
    assert torch.allclose(minimal_image(d, periods),
                          torch.tensor([[0.7, -0.3], [-0.7, 0.3], [2.3, 0.2]]))
    x_a = torch.tensor([[0.0, 0.1], [0.0, 0.45]])
    x_b = torch.tensor([[0.0, 0.95], [0.0, 0.5]])
    assert MinibatchOTCoupling()(x_a, x_b).tolist() == [1, 0]  # Euclidean: 0.1 ↔ 0.5
    assert MinibatchOTCoupling(periods)(x_a, x_b).tolist() == [0, 1]  # torus: 0.1 ↔ 0.95
    lifted = lift_periodic(x_a, x_b, periods)
    assert torch.allclose(lifted, torch.tensor([[0.0, -0.05], [0.0, 0.5]]))
    assert torch.allclose(torch.cos(2 * math.pi * (lifted - x_b)[:, 1]), torch.ones(2))


def test_arc_map_moves_state_a_onto_state_b_arc_keeping_z_a(aldp):
    """State a's arc of φ mapped affinely onto another arc: the mapped energy is the internal
    energy at the mapped-back coordinates plus log(L_b / L_a) (so Z_a, hence ΔF, is unchanged),
    +inf off the target arc, with a consistent score; samples off arc a are refused."""
    from feat.energies.internal import ArcMap

    ts, zm, x = aldp
    energy = OpenMMEnergy(ts.system, 300.0, platform="Reference")
    col = zm.dihedral_column(PHI)
    assert col == 2 * zm.n_atoms - 3 + zm.dihedral_index(PHI)
    phi = zm.to_internal(x)[:, col]
    arc = ArcMap(col, lo_a=float(phi.min()) - 0.1, length_a=0.5, lo_b=1.0, length_b=1.5)
    assert arc.log_scale == pytest.approx(math.log(3.0))
    q, inside = arc.forward(zm.to_internal(x))
    assert inside.all() and ((q[:, col] > 1.0) & (q[:, col] < 2.5)).all()
    back, on_b = arc.inverse(q)
    assert on_b.all() and torch.allclose(torch.remainder(back - zm.to_internal(x) + math.pi,
                                                         2 * math.pi) - math.pi,
                                         torch.zeros_like(back), atol=1e-12)
    p = TwoStateProblem(energy, energy, x[:8], x[8:], reference=0.0, name="aldp")
    ip = internal_problem(p, zm, arc)
    expected = energy(x[:8]) - zm.log_jacobian(zm.to_internal(x[:8])) + math.log(3.0)
    assert torch.allclose(ip.energy_a(ip.x_a), expected, atol=1e-8)
    assert torch.allclose(ip.energy_b(ip.x_b), energy(x[8:]) - zm.log_jacobian(
        zm.to_internal(x[8:])), atol=1e-8)
    assert ip.metadata["internal_coordinates"]["arc_map_a"]["length_b"] == 1.5
    # off the target arc (φ moved to 3.0 rad): +inf, zero score
    coords_a = ip.energy_a.coordinates
    off = ip.x_a[:2].clone()
    off[0, col] = (3.0 - coords_a.mean[col]) / coords_a.std[col]
    u, s = ip.energy_a.energy_and_score(off)
    assert torch.isinf(u[0]) and (s[0] == 0).all() and torch.isfinite(u[1])
    # the score (through the map) against central differences
    z = ip.x_a[:2]
    _, s = ip.energy_a.energy_and_score(z)
    for c in (col, 3, 50):
        e = torch.zeros_like(z)
        e[:, c] = 1e-4
        fd = -(ip.energy_a(z + e) - ip.energy_a(z - e)) / 2e-4
        assert torch.allclose(s[:, c], fd, rtol=1e-4, atol=1e-4)
    turned = zm.to_internal(x[:8])
    turned[:, col] += 1.5
    with pytest.raises(ValueError, match="not on the arc"):
        coords_a.forward(zm.to_cartesian(turned))
    with pytest.raises(ValueError, match="length_a"):
        ArcMap(col, 0.0, 7.0, 1.0, 1.0)
