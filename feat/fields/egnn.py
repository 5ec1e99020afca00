r"""E(n)-equivariant graph network fields (Satorras, Hoogeboom & Welling 2021) for particles.

:class:`EGNNField` maps ``(t, x)`` with ``x`` of shape (batch, n_atoms, 3) to a vector per atom,
shape (batch, n_atoms, 3), that is

* rotation-equivariant: ``v(t, x Rᵀ) = v(t, x) Rᵀ`` for every rotation (and reflection) ``R``;
* translation-invariant: ``v(t, x + c) = v(t, x)``;
* centre-of-mass free: ``Σ_i v_i = 0`` (the unweighted centroid, as in
  :mod:`feat.interpolants.alignment`);
* permutation-equivariant among atoms of the same type.

On a fully connected graph, layer ``l`` updates node features ``h`` and coordinates ``x``:

    m_ij = φ_e(W h_i + W h_j, |x_i − x_j|², |x⁰_i − x⁰_j|²) · σ(φ_a(m_ij))
    x_i ← x_i + (1/(N−1)) Σ_{j≠i} (x_i − x_j) / (|x_i − x_j| + 1) · φ_x(m_ij)
    h_i ← h_i + φ_h(h_i, (1/(N−1)) Σ_{j≠i} m_ij)

and the field is ``scale · P(x^L − x^0)`` with ``P`` the COM projection. The messages are
symmetric (``m_ij = m_ji``), so each is computed once per unordered pair (half the cost of
Satorras et al.'s ordered pairs on a CPU) and the coordinate updates sum to zero exactly.
Coordinates enter the network as ``x / length_scale`` (the scaling is internal: outputs are in
the field's own units, multiplied by ``scale``). ``h⁰`` embeds the atom type and the time
(:class:`~feat.fields.embedding.FourierTimeEmbedding`, finite at t = 0 and 1). The paper's size
for LJ and alanine dipeptide is 4 layers × 64 hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .embedding import FourierTimeEmbedding
from .field import Field

__all__ = ["EGNNField", "atom_types_from_topology"]


class _EGNNLayer(nn.Module):
    """One E(n) layer on the unordered atom pairs ``i < j`` (tensors (batch, P, ·))."""

    def __init__(self, hidden: int, attention: bool):
        super().__init__()
        self.edge_h = nn.Linear(hidden, hidden)
        self.edge_d = nn.Linear(2, hidden, bias=False)
        self.edge = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.gate = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid()) if attention else None
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=1e-3)  # start near the identity map
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, x: Tensor, d0: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """``h`` (B, N, H), ``x`` (B, N, 3), ``d0`` (B, P, 1), ``pairs`` (2, P) → new h, x."""
        i, j = pairs
        diff = x[:, i] - x[:, j]                                     # x_i − x_j, (B, P, 3)
        d2 = (diff**2).sum(-1, keepdim=True)
        a = self.edge_h(h)
        m = self.edge(a[:, i] + a[:, j] + self.edge_d(torch.cat([d2, d0], dim=-1)))
        if self.gate is not None:
            m = m * self.gate(m)
        n_others = max(x.shape[1] - 1, 1)
        push = diff / (torch.sqrt(d2 + 1e-12) + 1.0) * self.coord(m) / n_others
        x = x + _to_atoms(push, i, j, x.shape, sign=-1.0)
        agg = _to_atoms(m, i, j, h.shape, sign=1.0) / n_others
        h = h + self.node(torch.cat([h, agg], dim=-1))
        return h, x


def _to_atoms(v: Tensor, i: Tensor, j: Tensor, shape: torch.Size, sign: float) -> Tensor:
    """Sum pair values onto atoms: ``out_i += v_ij``, ``out_j += sign · v_ij``; (B, N, ·)."""
    out = torch.zeros(shape, dtype=v.dtype, device=v.device)
    return out.index_add(1, i, v).index_add(1, j, v, alpha=sign)


class EGNNField(Field):
    """E(n)-equivariant, translation-invariant, COM-free vector field on (batch, N, 3).

    Parameters
    ----------
    atom_types : sequence of int, length n_atoms
        Integer type of each atom (e.g. from :func:`atom_types_from_topology`); atoms of one
        type are interchangeable to the network.
    hidden, depth : width of every MLP and number of E(n) layers (paper: 64, 4).
    n_frequencies : Fourier frequencies of the time embedding.
    length_scale : nm per network length unit; the network sees ``x / length_scale``.
    scale : fixed output scale (field units per network length unit).
    n_types : size of the type vocabulary (default ``max(atom_types) + 1``).
    attention : gate each message with ``σ(φ_a(m_ij))``.

    Parameters are float32 by default; inputs of any dtype are cast in and outputs cast back.
    """

    def __init__(self, atom_types: Sequence[int] | Tensor, hidden: int = 64, depth: int = 4,
                 n_frequencies: int = 8, length_scale: float = 1.0, scale: float = 1.0,
                 n_types: int | None = None, attention: bool = True):
        super().__init__()
        types = _check_types(atom_types, n_types)
        self.register_buffer("atom_types", types)
        self.n_atoms = int(types.numel())
        self.event_shape = (self.n_atoms, 3)
        self.type_embedding = nn.Embedding(n_types or int(types.max()) + 1, hidden)
        self.time_embedding = FourierTimeEmbedding(n_frequencies)
        self.embed = nn.Linear(hidden + self.time_embedding.dim, hidden)
        self.layers = nn.ModuleList(_EGNNLayer(hidden, attention) for _ in range(depth))
        if not (length_scale > 0 and scale != 0):
            raise ValueError(f"length_scale must be > 0 and scale nonzero; got length_scale="
                             f"{length_scale}, scale={scale}.")
        self.length_scale, self.scale = float(length_scale), float(scale)
        self.register_buffer("pairs", torch.triu_indices(self.n_atoms, self.n_atoms, 1))

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (batch, {self.n_atoms}, 3); got "
                             f"{tuple(x.shape)}.")
        dtype = self.embed.weight.dtype
        x0 = x.to(dtype) / self.length_scale
        x0 = x0 - x0.mean(dim=1, keepdim=True)
        h = self.type_embedding(self.atom_types).expand(x.shape[0], -1, -1)
        temb = self.time_embedding(t.to(dtype))[:, None].expand(-1, self.n_atoms, -1)
        h = self.embed(torch.cat([h, temb], dim=-1))
        i, j = self.pairs
        d0 = ((x0[:, i] - x0[:, j]) ** 2).sum(-1, keepdim=True)
        xl = x0
        for layer in self.layers:
            h, xl = layer(h, xl, d0, self.pairs)
        v = xl - x0
        v = v - v.mean(dim=1, keepdim=True)
        return (self.scale * v).to(x.dtype)


def _check_types(atom_types: Any, n_types: int | None) -> Tensor:
    types = torch.as_tensor(atom_types)
    if types.dim() != 1 or types.numel() < 2 or types.dtype.is_floating_point:
        raise ValueError(f"atom_types must be a 1-D sequence of >= 2 integers (one per atom); "
                         f"got {atom_types!r}.")
    types = types.long()
    if int(types.min()) < 0 or (n_types is not None and int(types.max()) >= n_types):
        raise ValueError(f"atom_types must lie in [0, n_types = {n_types}); got values "
                         f"{sorted(set(types.tolist()))}.")
    return types


def atom_types_from_topology(topology: Any, by: str = "name") -> tuple[list[int], list[str]]:
    """Integer atom types and their vocabulary from an mdtraj or openmm topology.

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology (or a topology file path)
    by : {"name", "element"}
        ``"name"``: one type per distinct atom name (``CA``, ``HB1``, ...); ``"element"``: one
        per element symbol (H, C, N, O: atoms of one element are interchangeable).

    Returns
    -------
    types : list of int, one per atom, indices into ``vocabulary`` (sorted).
    vocabulary : list of str
    """
    from ..sampling.trajectory import as_mdtraj_topology

    if by not in ("name", "element"):
        raise ValueError(f"by must be 'name' or 'element'; got {by!r}.")
    top = as_mdtraj_topology(topology)
    keys = [a.name if by == "name" else a.element.symbol for a in top.atoms]
    vocabulary = sorted(set(keys))
    return [vocabulary.index(k) for k in keys], vocabulary
