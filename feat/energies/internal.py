r"""Internal coordinates: a molecule's bonds, angles and dihedrals, whitened, as the state space.

In Cartesian coordinates a learned transport must put every stiff bond and angle back to
within its thermal width (~0.03 network units for alanine dipeptide), which a CPU-length
training does not reach (``systems/aldp_t/README.md``). In internal coordinates each stiff
mode is one coordinate, and whitening (each coordinate minus its mean, over its standard
deviation, from the samples of both states) makes all of them O(1): the network no longer
has to resolve a 1 : 1000 range of stiffnesses.

**The map.** A :class:`ZMatrix` places atom ``order[0]`` at the origin, ``order[1]`` on the x
axis (its bond), ``order[2]`` in the xy plane (bond and angle), and every later atom ``i`` from
three placed atoms ``(j, k, c)`` (NeRF): bond ``|x_i − x_j|``, angle ``(i, j, k)``, dihedral
``(i, j, k, c)``, with ``j`` bonded to ``i`` and ``k`` to ``j``. Where ``j`` already has a placed
neighbour other than ``k`` (a sibling of ``i``), ``c`` is that sibling: the dihedral is then the
stiff offset of ``i`` around the ``j − k`` axis (e.g. a methyl hydrogen against another);
otherwise ``c`` is ``k``'s parent and the dihedral is a proper torsion (φ, ψ, a methyl
rotation). Children are placed largest subtree first, so the backbone torsions of a peptide
are coordinates: for alanine dipeptide φ and ψ are dihedral columns 6 and 9
(:meth:`ZMatrix.dihedral_index`, :meth:`ZMatrix.describe`).

The map forgets the 6 rigid-body degrees of freedom. For an energy invariant under
translations and rotations, ``∫ exp(−u(x)) dx = C ∫ exp(−u(x(q)) + log J(q)) dq`` with
``log J = Σ_i 2 log r_i + Σ_i log sin θ_i`` (each atom's spherical coordinates about its
parent) and ``C`` (volume × rotation group) the same for every state. Whitening multiplies
every ``Z`` by the same ``Π σ_i``. So ``ΔF`` is unchanged (METHOD §1: Jacobians common to both
ends cancel), and :func:`internal_problem` is an exact change of variables.

**Dihedrals are angles.** The energy is periodic in every dihedral column (the map is), and
each column's period in whitened units is recorded (``metadata["periods"]``): the fields see
those columns through ``cos`` and ``sin`` (:class:`~feat.fields.mlp.MLPField` ``periods``), so
the transport is a process on the torus carried by its lift to the real line. Its works are
those of the torus process: the end energies are periodic, and a step's Gaussian kernels on
the line equal the wrapped kernels on the circle up to images a period away, below
``exp(−L² / (16 ε h))`` ≈ 0 for the smallest period ``L`` (≥ 3 whitened units) and a step's
noise (``2 ε h`` ≤ 3e-3 in the runs here). Samples are represented on ``[cut, cut + 2π)`` per
column, the cut at the least-populated angle of the pooled samples, so that whitening sees
each distribution whole.
Where an angle leaves (0, π) or a bond length is not positive, the energy is ``+inf``.

**Basins on one support** (:class:`ArcMap`). When the two states are two basins of one
dihedral (ALDP-T: φ ∈ (0, 2.15) and its complement), a transport between them must carry
every trajectory across the barrier, and those that stay behind end at ``+inf``. With
``arc_map`` :func:`internal_problem` first maps state a's arc of that dihedral affinely onto
state b's (``φ ↦ lo_b + (φ − lo_a) · L_b / L_a``, all other coordinates unchanged) and adds
``log(L_b / L_a)`` to ``u_a``: the mapped density is normalised to the same ``Z_a``, so ``ΔF``
is unchanged, while both states now live on b's arc and the transport only reshapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import Tensor

from ..problem import TwoStateProblem
from .base import Energy
from .states import dihedral

__all__ = ["ArcMap", "InternalCoordinates", "InternalEnergy", "ZMatrix", "internal_problem"]

_N_BINS = 72  # 5° bins for locating the least-populated angle of each dihedral


@dataclass(frozen=True)
class ZMatrix:
    """A placement order and, per atom, the three atoms it is placed from.

    ``rows[p] = (i, j, k, c)`` for the ``p``-th placed atom ``i`` (``-1`` where unused: atoms 0-2).
    Build one with :meth:`from_bonds` or :meth:`from_topology`.
    """

    rows: tuple[tuple[int, int, int, int], ...]

    @property
    def n_atoms(self) -> int:
        return len(self.rows)

    @property
    def n_coordinates(self) -> int:
        return 3 * self.n_atoms - 6

    @property
    def n_dihedrals(self) -> int:
        return self.n_atoms - 3

    @classmethod
    def from_topology(cls, topology, root: int | None = None) -> ZMatrix:
        """From an openmm or mdtraj topology's bonds."""
        bonds = [(a.index, b.index) for a, b in topology.bonds()]
        return cls.from_bonds(topology.getNumAtoms() if hasattr(topology, "getNumAtoms")
                              else topology.n_atoms, bonds, root)

    @classmethod
    def from_bonds(cls, n_atoms: int, bonds: Iterable[Sequence[int]],
                   root: int | None = None) -> ZMatrix:
        """Spanning tree of the bond graph from ``root`` (default: the first atom with two or
        more bonds whose largest branch is also branched), children largest subtree first."""
        if n_atoms < 4:
            raise ValueError(f"internal coordinates need at least 4 atoms; got {n_atoms}.")
        adj = _adjacency(n_atoms, bonds)
        root = _root(adj) if root is None else int(root)
        if not 0 <= root < n_atoms or len(adj[root]) < 1:
            raise ValueError(f"root must be a bonded atom index in [0, {n_atoms}); got {root}.")
        parent, children = _tree(adj, root)
        order = _placement(root, children)
        if len(order) != n_atoms:
            lost = sorted(set(range(n_atoms)) - set(order))[:5]
            raise ValueError(f"the bond graph is not connected: atoms {lost} cannot be reached "
                             f"from atom {root}. Internal coordinates need one molecule.")
        if len(children[order[1]]) == 0:
            raise ValueError(f"root {root}'s first branch (atom {order[1]}) has no further atom; "
                             "choose a root whose largest branch continues (root=...).")
        return cls(tuple(_row(i, p, order, parent, children) for p, i in enumerate(order)))

    def describe(self) -> list[str]:
        """One line per internal coordinate, in the column order of :meth:`to_internal`."""
        rows = self.rows
        bonds = [f"bond {i}-{j}" for i, j, _, _ in rows[1:]]
        angles = [f"angle {i}-{j}-{k}" for i, j, k, _ in rows[2:]]
        dihedrals = [f"dihedral {i}-{j}-{k}-{c}" for i, j, k, c in rows[3:]]
        return bonds + angles + dihedrals

    def dihedral_index(self, atoms: Sequence[int]) -> int:
        """Column (among the dihedrals) of the dihedral on ``atoms`` in either direction, as
        ``mdtraj`` defines it (e.g. φ = (4, 6, 8, 14)); ``ValueError`` if it is not one."""
        want = tuple(int(a) for a in atoms)
        for col, (i, j, k, c) in enumerate(self.rows[3:]):
            if (i, j, k, c) in (want, want[::-1]):
                return col
        raise ValueError(f"the dihedral {list(want)} is not an internal coordinate of this "
                         "Z-matrix; choose another root (root=...).")

    def dihedral_column(self, atoms: Sequence[int]) -> int:
        """Column of that dihedral among all internal coordinates (bonds, angles, dihedrals)."""
        return 2 * self.n_atoms - 3 + self.dihedral_index(atoms)

    # -- the map --------------------------------------------------------------------------------

    def _index(self, device) -> tuple[Tensor, ...]:
        r = torch.as_tensor(self.rows, device=device)
        return r[:, 0], r[:, 1], r[:, 2], r[:, 3]

    def to_internal(self, x: Tensor) -> Tensor:
        """``(batch, n_atoms, 3)`` positions → ``(batch, 3 n − 6)``: bonds (n − 1), angles
        (n − 2) in (0, π), dihedrals (n − 3) in (−π, π] (mdtraj's convention)."""
        i, j, k, c = self._index(x.device)
        bond = torch.linalg.vector_norm(x[:, i[1:]] - x[:, j[1:]], dim=-1)
        angle = _angle(x[:, i[2:]], x[:, j[2:]], x[:, k[2:]])
        dih = dihedral(x, torch.stack([i[3:], j[3:], k[3:], c[3:]], -1))
        return torch.cat([bond, angle, dih.reshape(x.shape[0], -1)], dim=-1)

    def split(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = self.n_atoms
        return q[:, : n - 1], q[:, n - 1: 2 * n - 3], q[:, 2 * n - 3:]

    def to_cartesian(self, q: Tensor) -> Tensor:
        """The inverse of :meth:`to_internal` up to a rigid motion: root at the origin, its
        first child on the x axis, the third atom in the xy plane; then centred (centroid 0)."""
        bond, angle, dih = self.split(q)
        zero = torch.zeros_like(bond[:, 0])
        pos: dict[int, Tensor] = {}
        (i0, *_), (i1, *_), (i2, *_) = self.rows[:3]
        pos[i0] = torch.stack([zero, zero, zero], -1)
        pos[i1] = torch.stack([bond[:, 0], zero, zero], -1)
        r, th = bond[:, 1], angle[:, 0]
        pos[i2] = pos[i1] + torch.stack([-r * torch.cos(th), r * torch.sin(th), zero], -1)
        for p, (i, j, k, c) in enumerate(self.rows[3:]):
            pos[i] = _place(pos[j], pos[k], pos[c], bond[:, p + 2], angle[:, p + 1], dih[:, p])
        x = torch.stack([pos[a] for a in range(self.n_atoms)], dim=1)
        return x - x.mean(dim=1, keepdim=True)

    def log_jacobian(self, q: Tensor) -> Tensor:
        """``log |dx / dq|`` up to the rigid-body constant: ``Σ 2 log r + Σ log sin θ``."""
        bond, angle, _ = self.split(q)
        return 2 * torch.log(bond).sum(-1) + torch.log(torch.sin(angle)).sum(-1)


def _adjacency(n_atoms: int, bonds) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(n_atoms)]
    for pair in bonds:
        a, b = (int(v) for v in pair)
        if not (0 <= a < n_atoms and 0 <= b < n_atoms) or a == b:
            raise ValueError(f"bond {tuple(pair)} is not a pair of distinct atom indices in "
                             f"[0, {n_atoms}).")
        if b not in adj[a]:
            adj[a].append(b)
            adj[b].append(a)
    return [sorted(v) for v in adj]


def _tree(adj: list[list[int]], root: int) -> tuple[list[int], list[list[int]]]:
    """BFS parents, then each atom's children sorted by subtree size (largest first)."""
    parent, seen, queue = [-1] * len(adj), {root}, [root]
    for a in queue:
        for b in adj[a]:
            if b not in seen:
                seen.add(b)
                parent[b] = a
                queue.append(b)
    size = [1] * len(adj)
    for a in reversed(queue[1:]):
        size[parent[a]] += size[a]
    children = [sorted((b for b in adj[a] if parent[b] == a and b != root),
                       key=lambda b: (-size[b], b)) for a in range(len(adj))]
    return parent, children


def _root(adj: list[list[int]]) -> int:
    for a in range(len(adj)):
        if len(adj[a]) >= 2:
            _, children = _tree(adj, a)
            if children[a] and children[children[a][0]]:
                return a
    raise ValueError("no atom with two bonds whose largest branch continues: internal "
                     "coordinates need a molecule of at least 4 bonded atoms in a chain.")


def _placement(root: int, children: list[list[int]]) -> list[int]:
    """Breadth first from the root, children in their sorted order; the root's first child's
    first child comes third so that atoms 0-2 form a bonded chain."""
    c1 = children[root][0]
    order = [root, c1, children[c1][0]] if children[c1] else [root, c1]
    placed = set(order)
    for a in order:  # grows while it is walked: breadth first
        for b in children[a]:
            if b not in placed:
                placed.add(b)
                order.append(b)
    return order


def _row(i: int, p: int, order: list[int], parent: list[int], children: list[list[int]]):
    if p == 0:
        return (i, -1, -1, -1)
    j = parent[i]
    if p == 1:
        return (i, j, -1, -1)
    k = parent[j] if parent[j] >= 0 else order[1]
    if p == 2:
        return (i, j, k, -1)
    placed = set(order[:p])
    siblings = [s for s in children[j] if s in placed and s not in (i, k)]
    if siblings:  # an improper offset about the j-k axis: stiff
        return (i, j, k, siblings[0])
    if parent[k] >= 0 and parent[k] != j:  # a proper torsion
        return (i, j, k, parent[k])
    return (i, j, k, next(s for s in children[k] if s in placed and s != j))


def _angle(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Angle at ``b`` between ``a − b`` and ``c − b`` (radians), stable near 0 and π."""
    u, v = a - b, c - b
    return torch.atan2(torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1),
                       (u * v).sum(-1))


def _place(j: Tensor, k: Tensor, c: Tensor, r: Tensor, theta: Tensor, phi: Tensor) -> Tensor:
    """NeRF: the point ``i`` with ``|i − j| = r``, angle ``(i, j, k) = θ``, dihedral
    ``(i, j, k, c) = φ`` (mdtraj's sign)."""
    bc = j - k
    bc = bc / torch.linalg.vector_norm(bc, dim=-1, keepdim=True)
    n = torch.linalg.cross(k - c, bc)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc)
    d = (-r * torch.cos(theta))[:, None] * bc + (r * torch.sin(theta))[:, None] * (
        torch.cos(phi)[:, None] * m + torch.sin(phi)[:, None] * n)
    return j + d


@dataclass(frozen=True)
class ArcMap:
    """The affine bijection of internal coordinate ``column`` (a dihedral, radians) from the
    arc ``(lo_a, lo_a + length_a)`` onto ``(lo_b, lo_b + length_b)``, both counter-clockwise
    and taken mod 2π; every other coordinate is unchanged. ``log_scale = log(L_b / L_a)`` is
    ``log |det|`` of the map."""

    column: int
    lo_a: float
    length_a: float
    lo_b: float
    length_b: float

    def __post_init__(self):
        for name in ("length_a", "length_b"):
            if not 0 < getattr(self, name) < 2 * math.pi:
                raise ValueError(f"ArcMap.{name} must lie in (0, 2π); got {getattr(self, name)}.")

    @classmethod
    def onto_complement(cls, column: int, low: float, high: float) -> ArcMap:
        """State a on the arc ``(low, high)``, state b on its complement ``(high, low + 2π)``."""
        length = (high - low) % (2 * math.pi)
        return cls(column, low, length, high, 2 * math.pi - length)

    @property
    def log_scale(self) -> float:
        return math.log(self.length_b / self.length_a)

    def _apply(self, q: Tensor, lo: float, length: float, lo_new: float, length_new: float
               ) -> tuple[Tensor, Tensor]:
        t = torch.remainder(q[:, self.column] - lo, 2 * math.pi)
        inside = (t > 0) & (t < length)
        q = q.clone()
        q[:, self.column] = lo_new + t * (length_new / length)
        return q, inside

    def forward(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """``(mapped q, inside)``: ``inside`` marks the rows on arc a (the others are not
        mapped to anything meaningful)."""
        return self._apply(q, self.lo_a, self.length_a, self.lo_b, self.length_b)

    def inverse(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """``(q on arc a, inside)``: ``inside`` marks the rows on arc b."""
        return self._apply(q, self.lo_b, self.length_b, self.lo_a, self.length_a)


class InternalCoordinates:
    """Whitened internal coordinates ``z = (unroll(q) − μ) / σ`` of a :class:`ZMatrix`.

    Fit with :meth:`fit` on samples of both states: each dihedral's cut is its least-populated
    5° bin (pooled samples), and ``μ``, ``σ`` are the pooled means and standard deviations of
    the unrolled coordinates.
    """

    def __init__(self, zmatrix: ZMatrix, cuts: Tensor, mean: Tensor, std: Tensor,
                 arc_map: ArcMap | None = None):
        self.zmatrix = zmatrix
        self.cuts = cuts.double()
        self.mean, self.std = mean.double(), std.double()
        self.arc_map = arc_map

    def mapped(self, arc_map: ArcMap) -> InternalCoordinates:
        """The same whitening, composed with ``arc_map`` on the internal coordinates (for the
        state whose arc it maps: :meth:`forward` maps, :meth:`unwhiten` maps back)."""
        return InternalCoordinates(self.zmatrix, self.cuts, self.mean, self.std, arc_map)

    @property
    def log_scale(self) -> float:
        """``log |det|`` of the arc map (0 without one): added to the state's energy."""
        return 0.0 if self.arc_map is None else self.arc_map.log_scale

    @classmethod
    def fit(cls, zmatrix: ZMatrix, *samples: Tensor) -> InternalCoordinates:
        return cls.fit_internal(zmatrix, torch.cat([zmatrix.to_internal(x.double())
                                                    for x in samples]))

    @classmethod
    def fit_internal(cls, zmatrix: ZMatrix, q: Tensor) -> InternalCoordinates:
        """Cuts and whitening from internal coordinates ``q`` (n, 3 n_atoms − 6) of samples."""
        nd = zmatrix.n_dihedrals
        cuts = torch.as_tensor([_emptiest_angle(q[:, -nd + col].numpy()) for col in range(nd)],
                               dtype=torch.float64)
        q = _unroll(q, cuts)
        std = q.std(0) if len(q) > 1 else torch.zeros(q.shape[1], dtype=q.dtype)
        if not bool((std > 0).all()):
            flat = torch.nonzero(std <= 0).squeeze(-1)[:5].tolist()
            raise ValueError(f"internal coordinates {flat} do not vary over the samples: give "
                             "more than one distinct configuration.")
        return cls(zmatrix, cuts, q.mean(0), std)

    @property
    def dim(self) -> int:
        return self.zmatrix.n_coordinates

    def forward(self, x: Tensor) -> Tensor:
        """Positions (batch, n, 3) → whitened coordinates (batch, 3n − 6), in ``x``'s dtype
        (through the arc map, if any: positions off its arc raise)."""
        q = self.zmatrix.to_internal(x.double())
        if self.arc_map is not None:
            q, inside = self.arc_map.forward(q)
            if not bool(inside.all()):
                bad = torch.nonzero(~inside).squeeze(-1)[:5].tolist()
                raise ValueError(f"rows {bad} are not on the arc the map starts from "
                                 f"({self.arc_map}): give samples of that state only.")
        q = _unroll(q, self.cuts.to(x.device))
        return ((q - self.mean.to(x.device)) / self.std.to(x.device)).to(x.dtype)

    def unwhiten(self, z: Tensor) -> Tensor:
        """Internal coordinates of ``z`` (float64), mapped back through the arc map, if any."""
        q = self._unscaled(z)
        return q if self.arc_map is None else self.arc_map.inverse(q)[0]

    def _unscaled(self, z: Tensor) -> Tensor:
        """``μ + σ z`` in float64: internal coordinates before any arc map is undone."""
        return z.double() * self.std.to(z.device) + self.mean.to(z.device)

    def inverse(self, z: Tensor) -> Tensor:
        """Whitened coordinates → centred positions (batch, n, 3) in float64."""
        return self.zmatrix.to_cartesian(self.unwhiten(z))

    @property
    def periods(self) -> list[float]:
        """Each whitened coordinate's period: ``2π / σ`` for dihedrals, 0 for the others."""
        nd = self.zmatrix.n_dihedrals
        return [0.0] * (self.dim - nd) + (2 * math.pi / self.std[-nd:]).tolist()

    def inside(self, z: Tensor) -> Tensor:
        """Bool (batch,): every bond length > 0, every angle in (0, π) and, with an arc map,
        the mapped dihedral on its target arc."""
        q = self._unscaled(z)
        bond, angle, _ = self.zmatrix.split(q)
        ok = (bond > 0).all(-1) & ((angle > 0) & (angle < math.pi)).all(-1)
        return ok if self.arc_map is None else ok & self.arc_map.inverse(q)[1]

    def describe(self) -> dict:
        names = self.zmatrix.describe()
        out = {"rows": [list(r) for r in self.zmatrix.rows], "coordinates": names,
               "dihedral_cuts": self.cuts.tolist(), "mean": self.mean.tolist(),
               "std": self.std.tolist()}
        if self.arc_map is not None:
            out["arc_map_a"] = {**asdict(self.arc_map), "log_scale": self.log_scale}
        return out


def _emptiest_angle(theta: np.ndarray) -> float:
    """The centre of the least-populated 5° bin (three-bin running sum, periodic) in (−π, π]."""
    counts, edges = np.histogram(theta, bins=_N_BINS, range=(-math.pi, math.pi))
    smooth = counts + np.roll(counts, 1) + np.roll(counts, -1)
    b = int(np.argmin(smooth))
    return float(0.5 * (edges[b] + edges[b + 1]))


def _unroll(q: Tensor, cuts: Tensor) -> Tensor:
    """Dihedral columns mapped into ``[cut, cut + 2π)``; bonds and angles unchanged."""
    nd = cuts.shape[0]
    dih = cuts + torch.remainder(q[:, -nd:] - cuts, 2 * math.pi)
    return torch.cat([q[:, :-nd], dih], dim=-1)


class InternalEnergy(Energy):
    """``u_z(z) = u(x(z)) − log J(q(z))`` on whitened internal coordinates: periodic in the
    dihedral columns, ``+inf`` where an angle leaves (0, π) or a bond length is not positive.
    With an arc map (:meth:`InternalCoordinates.mapped`), ``q(z)`` maps back through it,
    ``u_z`` gains its ``log_scale`` and is ``+inf`` off its target arc.

    The partition function differs from ``u``'s by a factor common to every state (rigid-body
    volume and rotations, whitening), so ``ΔF`` between two such energies equals ``ΔF``
    between their Cartesian energies. Outputs are in the input's dtype; the map and the
    wrapped energy run in float64.
    """

    def __init__(self, energy: Energy, coordinates: InternalCoordinates):
        if not isinstance(energy, Energy):
            raise TypeError(f"energy must be a feat Energy; got {type(energy).__name__}.")
        n = coordinates.zmatrix.n_atoms
        if tuple(energy.event_shape) != (n, 3):
            raise ValueError(f"energy must act on ({n}, 3) positions, the Z-matrix's atoms; "
                             f"got event shape {tuple(energy.event_shape)}.")
        self.base, self.coordinates = energy, coordinates
        self.event_shape = (coordinates.dim,)

    def __repr__(self) -> str:
        return f"InternalEnergy({self.base!r}, dim={self.coordinates.dim})"

    def _inside(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Rows inside the state, and ``u`` (float64) set to ``+inf`` everywhere."""
        idx = torch.nonzero(self.coordinates.inside(z)).squeeze(-1)
        return idx, torch.full((z.shape[0],), math.inf, dtype=torch.float64, device=z.device)

    def energy(self, z: Tensor) -> Tensor:
        idx, u = self._inside(z)
        if idx.numel():
            q = self.coordinates.unwhiten(z[idx].detach())
            x = self.coordinates.zmatrix.to_cartesian(q)
            log_j = self.coordinates.zmatrix.log_jacobian(q) - self.coordinates.log_scale
            u = u.index_put((idx,), self.base(x).double() - log_j)
        return u.to(z.dtype)

    def energy_and_score(self, z: Tensor) -> tuple[Tensor, Tensor]:
        idx, u = self._inside(z)
        s = torch.zeros(z.shape, dtype=torch.float64, device=z.device)
        if idx.numel():
            with torch.enable_grad():
                zg = z[idx].detach().double().requires_grad_(True)
                q = self.coordinates.unwhiten(zg)
                x = self.coordinates.zmatrix.to_cartesian(q)
                u_x, s_x = self.base.energy_and_score(x.detach())
                u_x, s_x = u_x.double(), s_x.double()
                good = torch.isfinite(u_x)
                s_x = torch.where(good[:, None, None], s_x, 0.0)
                log_j = self.coordinates.zmatrix.log_jacobian(q) - self.coordinates.log_scale
                (g,) = torch.autograd.grad((x * -s_x).sum() - log_j.sum(), zg)
            g = torch.where(good[:, None], g, 0.0)
            u = u.index_put((idx,), u_x - log_j.detach())
            s = s.index_put((idx,), -g)
        return u.to(z.dtype), s.to(z.dtype)

    def score(self, z: Tensor) -> Tensor:
        return self.energy_and_score(z)[1]


def internal_problem(problem: TwoStateProblem, zmatrix: ZMatrix,
                     arc_map: ArcMap | None = None) -> TwoStateProblem:
    """The same two states in whitened internal coordinates (same ΔF and reference).

    ``problem`` holds positions ``(n, n_atoms, 3)`` with translation- and rotation-invariant
    energies (e.g. alanine dipeptide in nm). The coordinates are fitted on both states'
    samples; scores are recomputed on demand. ``metadata["internal_coordinates"]`` records the
    Z-matrix, cuts and whitening, ``metadata["periods"]`` each column's period (0: none) for
    the fields; the per-atom keys (atom types, frame atoms, COM freedom) are
    dropped, since the state is now a flat vector. ``arc_map`` (state a's arc of a dihedral
    onto state b's, :class:`ArcMap`) puts both states on b's arc first; the whitening is
    fitted on the mapped samples.
    """
    qa, qb = (zmatrix.to_internal(x.double()) for x in (problem.x_a, problem.x_b))
    if arc_map is not None:
        qa = arc_map.forward(qa)[0]
    coords = InternalCoordinates.fit_internal(zmatrix, torch.cat([qa, qb]))
    coords_a = coords if arc_map is None else coords.mapped(arc_map)
    ea, eb = InternalEnergy(problem.energy_a, coords_a), InternalEnergy(problem.energy_b, coords)
    za, zb = coords_a.forward(problem.x_a), coords.forward(problem.x_b)
    drop = ("atom_types", "atom_type_names", "element_types", "elements", "frame_atoms",
            "com_free", "coordinate_scale")
    metadata = {k: v for k, v in problem.metadata.items() if k not in drop}
    metadata["internal_coordinates"] = coords_a.describe()
    metadata["periods"] = coords.periods
    return replace(problem, energy_a=ea, energy_b=eb, x_a=za, x_b=zb, score_a=None,
                   score_b=None, metadata=metadata)
