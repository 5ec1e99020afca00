"""E(n)-equivariant field: symmetries, COM-free output, finiteness, types from a topology."""

from __future__ import annotations

import pytest
import torch
from openmmtools.testsystems import AlanineDipeptideVacuum

from feat.fields import EGNNField, atom_types_from_topology
from feat.interpolants.alignment import random_rotation

TYPES = [0, 1, 1, 2, 0, 1, 3, 1]


def _net(dtype=torch.float32, seed=0) -> EGNNField:
    torch.manual_seed(seed)
    net = EGNNField(TYPES, hidden=32, depth=3).to(dtype)
    for layer in net.layers:  # O(1) coordinate updates, so the checks are not trivially small
        torch.nn.init.normal_(layer.coord[-1].weight, std=0.3)
    return net


def _data(dtype, batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, len(TYPES), 3, generator=g, dtype=dtype)
    t = torch.rand(batch, generator=g, dtype=dtype)
    return t, x


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_rotation_equivariant_and_translation_invariant(dtype, tol):
    net = _net(dtype).requires_grad_(False)
    t, x = _data(dtype)
    v = net(t, x)
    assert v.abs().mean() > 1e-2
    r = random_rotation(len(x), generator=torch.Generator().manual_seed(2), dtype=dtype)
    shift = 5.0 * torch.randn(len(x), 1, 3, generator=torch.Generator().manual_seed(3),
                              dtype=dtype)
    v_moved = net(t, x @ r.mT + shift)
    assert torch.allclose(v_moved, v @ r.mT, atol=tol * float(v.abs().max()), rtol=0)


def test_output_is_com_free_and_in_input_dtype():
    net = _net()
    t, x = _data(torch.float64)
    v = net(t, x)
    assert v.dtype == torch.float64 and v.shape == x.shape
    assert v.sum(1).abs().max() < 1e-5 * v.abs().max()


def test_permutation_equivariant_for_identical_types():
    net = _net(torch.float64)
    t, x = _data(torch.float64)
    perm = torch.arange(len(TYPES))
    perm[[1, 2, 5, 7]] = torch.tensor([7, 5, 1, 2])  # shuffle the four atoms of type 1
    perm[[0, 4]] = torch.tensor([4, 0])                # swap the two atoms of type 0
    assert [TYPES[i] for i in perm] == TYPES
    assert torch.allclose(net(t, x[:, perm]), net(t, x)[:, perm], atol=1e-12)


def test_finite_at_the_ends_and_for_coincident_atoms():
    net = _net()
    _, x = _data(torch.float32, batch=2)
    x[1, 3] = x[1, 2]  # two atoms at one point: the (|r| + 1) normalisation keeps it finite
    for t in (0.0, 1.0):
        v = net(t, x)
        assert torch.isfinite(v).all()
    loss = net(torch.tensor([0.0, 1.0]), x.requires_grad_(True)).square().sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert torch.isfinite(x.grad).all()


def test_paper_size_and_float32_default():
    net = EGNNField(list(range(22)))
    assert len(net.layers) == 4 and net.embed.out_features == 64
    assert next(net.parameters()).dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="atom_types"):
        EGNNField([0.5, 1.0])
    net = EGNNField(TYPES, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"\(batch, 8, 3\)"):
        net(0.5, torch.zeros(2, 7, 3))


def test_atom_types_from_topology():
    top = AlanineDipeptideVacuum(constraints=None).topology
    types, vocab = atom_types_from_topology(top, by="element")
    assert vocab == ["C", "H", "N", "O"] and len(types) == 22
    assert sum(v == vocab.index("H") for v in types) == 12
    types, vocab = atom_types_from_topology(top, by="name")
    assert len(types) == 22 and "CA" in vocab
