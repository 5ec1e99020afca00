"""Frame fields: an MLP in a three-atom frame is rotation-equivariant, translation-invariant,
COM-free, and the pipeline builds it from a run file."""

from __future__ import annotations

import pytest
import torch

from feat import FunctionEnergy, TwoStateProblem
from feat.config import ConfigError, resolve
from feat.fields import FrameField, MLPField, local_frame
from feat.interpolants import LinearSchedule
from feat.interpolants.alignment import random_rotation
from feat.pipeline import build_fields

N = 7


def _net(dtype=torch.float64, frame=(1, 2, 4)) -> FrameField:
    torch.manual_seed(0)
    return FrameField(MLPField((N, 3), hidden=32, depth=2), N, frame, length_scale=2.0).to(dtype)


def _data(dtype, batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, generator=g, dtype=dtype),
            torch.randn(batch, N, 3, generator=g, dtype=dtype))


def test_local_frame_is_a_proper_rotation_that_follows_the_molecule():
    _, x = _data(torch.float64)
    r = local_frame(x, 1, 2, 4)
    eye = torch.eye(3, dtype=x.dtype).expand(len(x), 3, 3)
    assert torch.allclose(r @ r.mT, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(x), dtype=x.dtype), atol=1e-12)
    q = random_rotation(len(x), generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    assert torch.allclose(local_frame(x @ q.mT, 1, 2, 4), r @ q.mT, atol=1e-12)
    # e1 points from atom 1 to atom 2; atom 4 lies in the (e1, e2) half-plane with e2 > 0
    y = (x - x[:, 2:3]) @ r.mT
    assert torch.allclose(y[:, 1, 1:], torch.zeros(len(x), 2, dtype=x.dtype), atol=1e-12)
    assert (y[:, 1, 0] < 0).all() and (y[:, 4, 1] > 0).all()
    assert torch.allclose(y[:, 4, 2], torch.zeros(len(x), dtype=x.dtype), atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_rotation_equivariant_translation_invariant_and_com_free(dtype, tol):
    net = _net(dtype).requires_grad_(False)
    t, x = _data(dtype)
    v = net(t, x)
    assert v.shape == x.shape and v.dtype == dtype and v.abs().mean() > 1e-2
    assert v.sum(1).abs().max() < tol * v.abs().max()
    q = random_rotation(len(x), generator=torch.Generator().manual_seed(2), dtype=dtype)
    shift = 5.0 * torch.randn(len(x), 1, 3, generator=torch.Generator().manual_seed(3),
                              dtype=dtype)
    assert torch.allclose(net(t, x @ q.mT + shift), v @ q.mT, atol=tol * float(v.abs().max()),
                          rtol=0)


def test_float32_parameters_take_float64_input_and_gradients_are_finite():
    net = FrameField(MLPField((N, 3), hidden=16, depth=2), N, (0, 1, 2))
    t, x = _data(torch.float64, batch=3)
    x.requires_grad_(True)
    v = net(t, x)
    assert v.dtype == torch.float64
    v.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("frame", [(0, 1), (0, 1, 1), (0, 1, N)])
def test_bad_frame_atoms_raise_a_clear_error(frame):
    with pytest.raises(ValueError, match="frame_atoms must be three distinct atom indices"):
        FrameField(MLPField((N, 3)), N, frame)


def _problem(metadata: dict, shape=(N, 3)) -> TwoStateProblem:
    u = FunctionEnergy(lambda x: 0.5 * x.flatten(1).square().sum(-1), event_shape=shape)
    x = torch.randn(20, *shape, dtype=torch.float64)
    return TwoStateProblem(u, u, x, x.clone(), name="toy", metadata=metadata)


def test_pipeline_builds_frame_fields_from_the_run_file_or_the_system_default():
    cfg = resolve({"system": {"kind": "gaussian"}, "fields": {
        "network": "frame_mlp", "frame_atoms": [3, 1, 0], "hidden": 16, "depth": 2}})
    assert cfg.fields.frame_atoms == (3, 1, 0)
    b, s = build_fields(_problem({}), cfg.fields, LinearSchedule())
    assert isinstance(b, FrameField) and b.frame_atoms == (3, 1, 0)
    default = resolve({"system": {"kind": "gaussian"}, "fields": {"network": "frame_mlp"}})
    b, _ = build_fields(_problem({"frame_atoms": [0, 2, 5]}), default.fields, LinearSchedule())
    assert b.frame_atoms == (0, 2, 5)
    with pytest.raises(ValueError, match="needs states of shape \\(n_atoms, 3\\) and three "):
        build_fields(_problem({}), default.fields, LinearSchedule())
    with pytest.raises(ValueError, match="needs states of shape"):
        build_fields(_problem({"frame_atoms": [0, 1, 2]}, shape=(12,)), default.fields,
                     LinearSchedule())


@pytest.mark.parametrize("atoms, match", [
    ([1, 2], "three distinct atom indices"), ([1, 1, 2], "three distinct atom indices"),
    ([0, -1, 2], "three distinct atom indices"), (7, "must be of type array"),
])
def test_bad_frame_atoms_in_the_run_file(atoms, match):
    with pytest.raises(ConfigError, match=match):
        resolve({"system": {"kind": "gaussian"}, "fields": {"frame_atoms": atoms}})
