r"""Lennard-Jones clusters in a harmonic trap: the paper's LJ-n family (METHOD section 7).

For ``n`` particles ``x`` of shape (batch, n, 3), in reduced (LJ) units, and a state parameter
``s >= 0``:

    u_s(x) = Σ_{i≠j} 4 s [(s / r_ij)^12 − (s / r_ij)^6] + ½ Σ_i |x_i − x̄|²,   x̄ = (1/n) Σ_i x_i

summed over **ordered** pairs (each unordered pair counted twice), so the well depth of one pair
is ``2 s`` kT at ``r = 2^{1/6} s``. State a is ``s = 0`` (the trap alone), state b ``s = 1``.

*Centre of mass.* ``u_s`` is invariant under translations: the direction ``x̄`` is flat and
``exp(-u_s)`` is not normalisable on ``R^{3n}``. Every normaliser here is taken on the
COM-free subspace ``{x : Σ_i x_i = 0}`` with its Lebesgue measure in orthonormal coordinates
(the convention of :mod:`feat.interpolants.alignment`, whose ``remove_com`` is the orthogonal
projection onto it). On that subspace the trap is the standard Gaussian of dimension
``d = 3(n − 1)``, so

    log Z_0 = (3(n − 1) / 2) log 2π                                            (exact)

and :meth:`LennardJonesCluster.sample` draws it exactly as ``P z``, ``z ~ N(0, I_{3n})``.
Free-energy differences between two values of ``s`` do not depend on the convention.

*Singular points.* ``s = 0`` drops the pair sum altogether (``0 · (0/r)^k = 0``, also at
``r = 0``). For ``s > 0`` and coincident particles (``r_ij = 0``) or a pair term that overflows
the dtype, ``u = +inf`` (never NaN: the pair term is evaluated as ``a³ (a³ − 1)`` with
``a = s² / r²``, which is ``+inf`` when ``a³`` is). The analytic score ``−∇u`` floors ``r_ij``
at ``r_floor · s`` (default ``1e-2 s``, where one pair already costs ~1e25 kT), so it is finite
for every finite ``x`` and exact wherever all ``r_ij > r_floor · s``; a pair at exactly the same
point contributes zero force (its direction is undefined).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Energy, check_batch

__all__ = ["LennardJonesCluster", "lj_pair"]


class LennardJonesCluster(Energy):
    """``u_s(x)`` of ``n_particles`` LJ particles in a unit harmonic trap on ``x − x̄`` (kT).

    Parameters
    ----------
    n_particles : int, >= 2
    s : float, >= 0
        The state parameter: LJ energy scale and length scale at once (0: trap only).
    r_floor : float, > 0
        Pair distances below ``r_floor · s`` are floored in the score only (module docstring).
    epsilon : float >= 0 or None
        An energy scale apart from ``s`` (``4 ε [(s/r)^12 − (s/r)^6]``); ``None``: ``ε = s``,
        the paper's family. Other values give the intermediate states of a reference path
        (``LJSpec.window_epsilon``); the end states use ``None``.

    Event shape ``(n_particles, 3)``; pure torch, dtype and device follow ``x``.

    Examples
    --------
    >>> import torch
    >>> u = LennardJonesCluster(2, s=1.0)
    >>> x = torch.tensor([[[0.0, 0.0, 0.0], [2 ** (1 / 6), 0.0, 0.0]]], dtype=torch.float64)
    >>> round(float(u(x)), 6)  # two ordered pairs at the minimum (−1 each) + trap r²/4
    -1.68502
    """

    def __init__(self, n_particles: int, s: float = 1.0, r_floor: float = 1e-2, *,
                 epsilon: float | None = None):
        if isinstance(n_particles, bool) or not isinstance(n_particles, int) or n_particles < 2:
            raise ValueError(f"n_particles must be an int >= 2; got {n_particles!r}.")
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (
            math.isfinite(s) and s >= 0
        ):
            raise ValueError(f"s must be a finite float >= 0 (0: the trap alone); got {s!r}.")
        if not (isinstance(r_floor, (int, float)) and 0 < r_floor < 1):
            raise ValueError(f"r_floor must be in (0, 1); got {r_floor!r}.")
        if epsilon is not None and (isinstance(epsilon, bool) or not isinstance(
                epsilon, (int, float)) or not (math.isfinite(epsilon) and epsilon >= 0)):
            raise ValueError(f"epsilon must be a finite float >= 0, or None (epsilon = s); "
                             f"got {epsilon!r}.")
        self.n_particles, self.s, self.r_floor = n_particles, float(s), float(r_floor)
        self.epsilon = self.s if epsilon is None else float(epsilon)
        self.event_shape = (n_particles, 3)

    def __repr__(self) -> str:
        eps = "" if self.epsilon == self.s else f", epsilon={self.epsilon:g}"
        return f"LennardJonesCluster(n_particles={self.n_particles}, s={self.s:g}{eps})"

    @property
    def is_trap(self) -> bool:
        """True for ``s = 0`` or ``ε = 0``: the harmonic trap alone (exact log Z and sampler)."""
        return self.s == 0.0 or self.epsilon == 0.0

    # -- energy and score -------------------------------------------------------------------------
    #
    # Pair distances come from the Gram matrix of the centred positions,
    # r_ij² = |x_i|² + |x_j|² − 2 x_i·x_j (one batched matmul: ~2x faster than gathering the
    # n(n − 1)/2 difference vectors on a CPU, relative error ~1e-13 in float64 for clusters of
    # size O(1)); the diagonal is set to +inf so that it contributes nothing.

    def _r2(self, xc: Tensor) -> Tensor:
        """Squared distances (B, n, n) of centred positions, ``+inf`` on the diagonal."""
        sq = xc.pow(2).sum(-1)
        r2 = (sq[:, :, None] + sq[:, None, :] - 2.0 * (xc @ xc.mT)).clamp(min=0.0)
        eye = torch.eye(self.n_particles, dtype=torch.bool, device=xc.device)
        return r2.masked_fill(eye, math.inf)

    def trap_energy(self, x: Tensor) -> Tensor:
        """``½ Σ_i |x_i − x̄|²``, shape (batch,)."""
        xc = x - x.mean(dim=1, keepdim=True)
        return 0.5 * xc.pow(2).sum((1, 2))

    def pair_energy(self, x: Tensor) -> Tensor:
        """``Σ_{i≠j} 4 s [(s/r)^12 − (s/r)^6]`` over ordered pairs, shape (batch,); 0 at s = 0."""
        if self.is_trap:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        a3 = (self.s * self.s / self._r2(x - x.mean(dim=1, keepdim=True))).pow(3)
        return (4.0 * self.epsilon) * (a3 * (a3 - 1.0)).sum((1, 2))  # (s/r)^6: +inf at r = 0

    def energy(self, x: Tensor) -> Tensor:
        return self.trap_energy(x) + self.pair_energy(x)

    def ds_energy(self, x: Tensor) -> Tensor:
        """``∂u/∂s`` at fixed ``ε/s``: ``(ε/s) Σ_{i≠j} [52 (s/r)^12 − 28 (s/r)^6]`` (batch,).

        The thermodynamic-integration integrand (``ΔF = ∫_0^1 ⟨∂u_s/∂s⟩_s ds``); its spread
        ``std_s(∂u/∂s)`` measures how fast neighbouring s-states lose overlap. 0 at ``s = 0``.
        """
        if self.is_trap:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        a3 = (self.s * self.s / self._r2(x - x.mean(dim=1, keepdim=True))).pow(3)
        return (self.epsilon / self.s) * (a3 * (52.0 * a3 - 28.0)).sum((1, 2))

    def depsilon_energy(self, x: Tensor) -> Tensor:
        """``∂u/∂ε = Σ_{i≠j} 4 [(s/r)^12 − (s/r)^6]`` at fixed ``s``, shape (batch,)."""
        if self.s == 0.0:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        a3 = (self.s * self.s / self._r2(x - x.mean(dim=1, keepdim=True))).pow(3)
        return 4.0 * (a3 * (a3 - 1.0)).sum((1, 2))

    def score(self, x: Tensor) -> Tensor:
        """``−∇u_s(x)``, shape (batch, n, 3), analytic (floored pair distances, see module)."""
        return self.energy_and_score(x)[1]

    def energy_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``u_s(x)`` (batch,) and the analytic ``−∇u_s(x)`` (batch, n, 3) from one pass."""
        x = x.detach()
        check_batch(x, self.event_shape)
        xc = x - x.mean(dim=1, keepdim=True)
        u = 0.5 * xc.pow(2).sum((1, 2))
        if self.is_trap:
            return u, -xc
        r2 = self._r2(xc)
        s2 = self.s * self.s
        a3 = (s2 / r2).pow(3)
        u = u + (4.0 * self.epsilon) * (a3 * (a3 - 1.0)).sum((1, 2))
        # ∇_i Σ_{k≠l} 4 ε (a³² − a³) = Σ_j c_ij (x_i − x_j),  c_ij = −48 ε a³ (2 a³ − 1) / r²
        r2f = r2.clamp(min=(self.r_floor * self.s) ** 2)
        a3f = (s2 / r2f).pow(3)
        c = (-48.0 * self.epsilon) * a3f * (2.0 * a3f - 1.0) / r2f
        grad = xc + c.sum(-1, keepdim=True) * xc - c @ xc
        return u, -grad

    # -- the trap (s = 0): exact normaliser and sampler ------------------------------------------

    def log_z(self) -> float | None:
        """``(3(n − 1)/2) log 2π`` for ``s = 0`` (on the COM-free subspace), else ``None``."""
        if not self.is_trap:
            return None
        return 1.5 * (self.n_particles - 1) * math.log(2.0 * math.pi)

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> Tensor:
        """Exact samples of the trap (``s = 0`` only): ``z − z̄``, ``z ~ N(0, I)``; (n, N, 3).

        Every sample is COM-free (``Σ_i x_i = 0``) and standard normal on that subspace.
        """
        if not self.is_trap:
            raise ValueError(f"exact samples exist only for s = 0 (the trap); this state has "
                             f"s = {self.s:g}. Sample it with feat.sampling.HMC.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}.")
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=dtype)
        return z - z.mean(dim=1, keepdim=True)


def lj_pair(n_particles: int, s_a: float = 0.0, s_b: float = 1.0
            ) -> tuple[LennardJonesCluster, LennardJonesCluster]:
    """``(u_a, u_b)``: the paper's states, ``s = 0`` (trap) and ``s = 1`` by default."""
    return LennardJonesCluster(n_particles, s_a), LennardJonesCluster(n_particles, s_b)
