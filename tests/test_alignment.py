"""Centre-of-mass projection and Kabsch alignment (feat.interpolants.alignment)."""

from __future__ import annotations

import pytest
import torch

from feat.interpolants.alignment import (
    align_to_reference,
    com_free_randn,
    hungarian_permutation,
    kabsch_align,
    kabsch_rotation,
    perm_kabsch,
    perm_kabsch_align,
    random_rotation,
    remove_com,
    rmsd,
)
from feat.interpolants.couplings import PermKabschOTCoupling


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_remove_com_is_an_idempotent_projection():
    x = torch.randn(7, 22, 3, generator=_gen(), dtype=torch.float64) + 3.0
    p = remove_com(x)
    assert torch.allclose(p.sum(1), torch.zeros(7, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(remove_com(p), p, atol=1e-14)
    y = torch.randn_like(x)  # orthogonal projection: <Px, y> = <x, Py>
    assert torch.allclose((p * y).sum(), (x * remove_com(y)).sum(), rtol=1e-12)


def test_com_free_noise_is_isotropic_in_the_subspace():
    n_atoms = 4
    z = com_free_randn((200_000, n_atoms, 3), generator=_gen(1), dtype=torch.float64)
    assert z.sum(1).abs().max() < 1e-12
    flat = z.reshape(len(z), -1)
    cov = flat.T @ flat / len(z)
    proj = torch.kron(torch.eye(n_atoms) - 1.0 / n_atoms, torch.eye(3)).double()
    assert torch.allclose(cov, proj, atol=0.01)  # N(0, P): P = I - (1/N) 11ᵀ ⊗ I_3


def test_random_rotations_are_proper_and_orthogonal():
    r = random_rotation(1000, generator=_gen(2))
    eye = torch.eye(3, dtype=torch.float64).expand(1000, 3, 3)
    assert torch.allclose(r @ r.mT, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(1000, dtype=torch.float64))


def test_kabsch_recovers_a_known_rotation():
    ref = torch.randn(10, 3, generator=_gen(3), dtype=torch.float64)
    r = random_rotation(5, generator=_gen(4))
    x = (ref - ref.mean(0)) @ r + torch.randn(5, 1, 3, generator=_gen(5), dtype=torch.float64)
    aligned = kabsch_align(x, ref)
    assert torch.allclose(aligned, (ref - ref.mean(0)).expand(5, -1, -1), atol=1e-10)


def test_kabsch_beats_brute_force_and_is_a_local_minimum():
    g = _gen(6)
    ref = torch.randn(8, 3, generator=g, dtype=torch.float64)
    x = torch.randn(3, 8, 3, generator=g, dtype=torch.float64)
    refc = remove_com(ref[None])[0]
    best = rmsd(kabsch_align(x, ref), refc)
    rots = random_rotation(20_000, generator=g)
    for b in range(3):
        brute = rmsd(remove_com(x[b : b + 1]) @ rots.mT, refc).min()
        assert best[b] <= brute + 1e-12
        assert brute - best[b] < 0.05  # the brute-force search gets close
    # small perturbations of the optimum never lower the RMSD
    r = kabsch_rotation(x, ref)
    for b in range(3):
        small = torch.linalg.matrix_exp(1e-3 * _skew(torch.randn(50, 3, generator=g,
                                                                 dtype=torch.float64)))
        pert = rmsd(remove_com(x[b : b + 1]) @ (small @ r[b]).mT, refc)
        assert (pert >= best[b] - 1e-12).all()


def _skew(a: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(a[:, 0])
    return torch.stack([torch.stack([z, -a[:, 2], a[:, 1]], -1),
                        torch.stack([a[:, 2], z, -a[:, 0]], -1),
                        torch.stack([-a[:, 1], a[:, 0], z], -1)], 1)


def test_kabsch_never_reflects():
    g = _gen(7)
    ref = torch.randn(6, 3, generator=g, dtype=torch.float64)
    mirror = ref * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    x = torch.cat([mirror[None], torch.randn(200, 6, 3, generator=g, dtype=torch.float64)])
    r = kabsch_rotation(x, ref)
    assert torch.allclose(torch.linalg.det(r), torch.ones(201, dtype=torch.float64),
                          atol=1e-12)
    assert rmsd(kabsch_align(mirror[None], ref), remove_com(ref[None]))[0] > 1e-3


def test_align_to_reference_rotates_scores_with_samples():
    g = _gen(8)
    ref = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)

    def score(y):  # -grad u for u = sum_ij |y_i - y_j|^4: rotation and translation invariant
        y = y.detach().requires_grad_(True)
        u = (((y[:, :, None] - y[:, None]) ** 2).sum(-1) ** 2).sum()
        return -torch.autograd.grad(u, y)[0]

    aligned, s = align_to_reference(x, ref, score(x))
    assert torch.allclose(s, score(aligned), atol=1e-10)


@pytest.mark.parametrize("bad", [torch.zeros(3, 4), torch.zeros(2, 4, 2)])
def test_shape_errors_name_the_argument(bad):
    with pytest.raises(ValueError, match=r"\(batch, n_atoms, 3\)"):
        remove_com(bad)
    with pytest.raises(ValueError, match="reference"):
        kabsch_rotation(torch.zeros(2, 4, 3), torch.zeros(5, 3))


# -- identical particles: Hungarian + Kabsch ------------------------------------------------------


def _shuffled(ref: torch.Tensor, n: int, seed: int):
    """``n`` copies of ``ref`` with known permutations, rotations and shifts."""
    g = _gen(seed)
    perms = torch.stack([torch.randperm(ref.shape[0], generator=g) for _ in range(n)])
    r = random_rotation(n, generator=g)
    shift = 3.0 * torch.randn(n, 1, 3, generator=g, dtype=torch.float64)
    return remove_com(ref[None])[0][perms] @ r.mT + shift, perms, r


def test_hungarian_recovers_a_known_permutation():
    ref = torch.randn(11, 3, generator=_gen(20), dtype=torch.float64)
    perms = torch.stack([torch.randperm(11, generator=_gen(21 + k)) for k in range(4)])
    x = ref[perms] + 1e-3 * torch.randn(4, 11, 3, generator=_gen(25), dtype=torch.float64)
    p = hungarian_permutation(x, ref)
    assert torch.equal(torch.gather(perms, 1, p), torch.arange(11).expand(4, -1))


@pytest.mark.parametrize("n_atoms", [4, 13, 30])
def test_perm_kabsch_recovers_a_known_permutation_and_rotation_exactly(n_atoms):
    ref = torch.randn(n_atoms, 3, generator=_gen(n_atoms), dtype=torch.float64)
    x, perms, r = _shuffled(ref, 20, seed=100 + n_atoms)
    perm, rot = perm_kabsch(x, ref)
    assert torch.equal(torch.gather(perms, 1, perm), torch.arange(n_atoms).expand(20, -1))
    assert torch.allclose(rot, r.mT, atol=1e-10)       # undoes the rotation
    assert torch.allclose(torch.linalg.det(rot), torch.ones(20, dtype=torch.float64))
    aligned, _ = perm_kabsch_align(x, ref)
    assert torch.allclose(aligned, remove_com(ref[None]).expand(20, -1, -1), atol=1e-10)


def test_perm_kabsch_is_no_worse_than_kabsch_alone_and_never_reflects():
    g = _gen(30)
    ref = torch.randn(13, 3, generator=g, dtype=torch.float64)
    x = torch.randn(50, 13, 3, generator=g, dtype=torch.float64)
    refc = remove_com(ref[None])
    aligned, _ = perm_kabsch_align(x, ref)
    assert (rmsd(aligned, refc) <= rmsd(kabsch_align(x, ref), refc) + 1e-12).all()
    assert torch.allclose(aligned.sum(1), torch.zeros(50, 3, dtype=torch.float64), atol=1e-12)
    _, rot = perm_kabsch(x, ref)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(50, dtype=torch.float64))
    # the aligned set is x up to a relabelling and a rotation: sorted pair distances agree
    torch.testing.assert_close(torch.sort(torch.cdist(aligned, aligned).flatten(1))[0],
                               torch.sort(torch.cdist(x, x).flatten(1))[0])


def test_perm_kabsch_align_carries_scores_of_an_invariant_energy():
    g = _gen(31)
    ref = torch.randn(6, 3, generator=g, dtype=torch.float64)
    x = torch.randn(5, 6, 3, generator=g, dtype=torch.float64)

    def score(y):  # -grad u for u = sum_ij |y_i - y_j|^4 + sum_i |y_i|^2 ... (permutation inv.)
        y = y.detach().requires_grad_(True)
        c = y - y.mean(1, keepdim=True)
        u = (((y[:, :, None] - y[:, None]) ** 2).sum(-1) ** 2).sum() + (c**2).sum()
        return -torch.autograd.grad(u, y)[0]

    aligned, s = perm_kabsch_align(x, ref, score(x))
    assert torch.allclose(s, score(aligned), atol=1e-10)


def test_perm_kabsch_ot_coupling_aligns_both_states_to_one_reference():
    g = _gen(32)
    x_b = torch.randn(12, 7, 3, generator=g, dtype=torch.float64)
    x_a, _, _ = _shuffled(x_b[0], 12, seed=33)   # every a sample is a copy of x_b[0]
    s_a, s_b = torch.randn_like(x_a), torch.randn_like(x_b)
    coupling = PermKabschOTCoupling()
    ya, yb, ta, tb = coupling.align(x_a, x_b, s_a, s_b)
    ref = remove_com(x_b[:1])
    assert torch.allclose(ya, ref.expand(12, -1, -1), atol=1e-10)
    assert torch.allclose(yb[0], ref[0], atol=1e-10)
    assert ta.shape == s_a.shape and tb.shape == s_b.shape
    assert torch.allclose(ta.norm(dim=(1, 2)), s_a.norm(dim=(1, 2)))  # permuted + rotated
    perm = coupling(ya, yb)
    assert sorted(perm.tolist()) == list(range(12))
    with pytest.raises(ValueError, match="perm_kabsch_ot"):
        coupling.align(torch.zeros(3, 6), torch.zeros(3, 6))
