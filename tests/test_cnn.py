"""Periodic CNN field: translation equivariance, shapes, dtypes, finiteness at t = 0 and 1."""

import pytest
import torch

from feat.fields import CNNField

SHAPES = [(7,), (4, 6), (3, 4, 5)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _net(shape, **kw):
    torch.manual_seed(0)
    return CNNField(shape, channels=8, depth=3, **kw)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("global_features", [True, False])
def test_translation_equivariance(shape, global_features):
    net = _net(shape, global_features=global_features)
    x = torch.randn((5, *shape), generator=_gen(1), dtype=torch.float64)
    t = torch.rand(5, generator=_gen(2), dtype=torch.float64)
    shifts = tuple(range(1, len(shape) + 1))             # a lattice vector (1, 2, 3)[:d]
    dims = tuple(range(1, len(shape) + 1))
    with torch.no_grad():
        out_shifted_in = net(t, torch.roll(x, shifts, dims))
        shifted_out = torch.roll(net(t, x), shifts, dims)
    torch.testing.assert_close(out_shifted_in, shifted_out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_dtypes_and_ends(shape):
    net = _net(shape)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn((4, *shape), generator=_gen(3), dtype=dtype)
        for t in (0.0, 1.0, torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=dtype)):
            v = net(t, x)
            assert v.shape == x.shape and v.dtype == dtype
            assert torch.isfinite(v).all()
    assert next(net.parameters()).dtype == torch.float32


def test_time_dependence_and_gradients():
    net = _net((6, 6))
    x = torch.randn(3, 6, 6, generator=_gen(4))
    assert not torch.allclose(net(0.0, x), net(1.0, x))
    net(0.3, x).pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_global_features_see_the_magnetisation():
    """A uniform shift of x changes the output even far beyond the receptive field."""
    net = _net((32,), global_features=True)
    x = torch.zeros(1, 32)
    y = x.clone()
    y[0, 0] = 5.0                                         # local change at site 0
    with torch.no_grad():
        d = (net(0.5, y) - net(0.5, x)).abs()[0]
    assert d[16] > 0                                      # site 16 is > 8 sites away
    local = _net((32,), global_features=False)
    with torch.no_grad():
        d_local = (local(0.5, y) - local(0.5, x)).abs()[0]
    assert d_local[16] == 0                               # receptive field 9 sites


def test_validation():
    with pytest.raises(ValueError, match="event_shape must be a lattice shape"):
        CNNField((2, 2, 2, 2))
    with pytest.raises(ValueError, match="kernel_size must be an odd int"):
        CNNField((4, 4), kernel_size=4)
    with pytest.raises(ValueError, match="channels must be an int >= 1"):
        CNNField((4, 4), channels=0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4, 4\)"):
        CNNField((4, 4))(0.0, torch.zeros(2, 16))
