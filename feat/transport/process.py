"""Transport processes: the controlled-Crooks SDE and the escorted-Jarzynski ODE (METHOD §4).

A process knows how to take one step from ``(t, x)`` to ``t_next`` and the log-ratio that
step contributes to the work. Its :meth:`Process.reversed` is the same kind of process in
reversed time ``τ = 1 − t``, with ``b̃(τ, x) = −b(1 − τ, x)``, ``s̃(τ, x) = s(1 − τ, x)`` and the
end energies swapped: the reverse transport is the forward code on the reversed process.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..energies.base import Energy
from ..fields.field import Field, as_time

__all__ = ["Process", "SDEProcess", "ODEProcess", "ReversedField"]


class ReversedField(Field):
    """``f̃(τ, x) = sign · f(1 − τ, x)``: a field seen in reversed time."""

    def __init__(self, field: Field, sign: float):
        super().__init__()
        self.inner, self.sign = field, float(sign)

    def field(self, t, x):
        return self.sign * self.inner(1.0 - t, x)


def _reverse(field: Field, sign: float) -> Field:
    if isinstance(field, ReversedField) and field.sign == sign:
        return field.inner
    return ReversedField(field, sign)


def _noise_device(generator: torch.Generator | None) -> torch.device:
    """Where noise is drawn: on the generator's device (the CPU for the run's seeded
    generators), then moved to the state's device, so the random stream of a seeded transport
    does not depend on the device it runs on."""
    return generator.device if generator is not None else torch.device("cpu")


def _flat_sq(v: Tensor) -> Tensor:
    return (v * v).flatten(1).sum(-1)


class Process(abc.ABC):
    """A Markov transport from ``energy_start``'s state at t = 0 to ``energy_end``'s at t = 1."""

    energy_start: Energy
    energy_end: Energy
    velocity: Field

    @abc.abstractmethod
    def init_state(self, t: float, x: Tensor, generator: torch.Generator | None = None) -> Any:
        """Whatever the step needs at the first point (field values), computed once."""

    @abc.abstractmethod
    def propose(
        self, t: float, t_next: float, x: Tensor, state: Any, generator: torch.Generator | None
    ) -> Tensor:
        """Draw ``x_next`` from the forward kernel; shapes (batch, *event), float64."""

    @abc.abstractmethod
    def log_ratio(
        self,
        t: float,
        t_next: float,
        x: Tensor,
        x_next: Tensor,
        state: Any,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Any]:
        """The step's work increment (batch,) float64, and the state at ``(t_next, x_next)``."""

    @abc.abstractmethod
    def reversed(self) -> Process:
        """The same process in reversed time, with the end energies swapped."""

    projection: Callable[[Tensor], Tensor] | None = None

    def _fields(self, t: float, x: Tensor, *fields: Field) -> list[Tensor]:
        with torch.no_grad():
            tt = as_time(t, x)
            return [self._project(f(tt, x).to(torch.float64)) for f in fields]

    def _project(self, v: Tensor) -> Tensor:
        return v if self.projection is None else self.projection(v)


def _stalled(diff: float, previous: float, y: Tensor) -> bool:
    """A fixed-point iteration that stopped contracting at round-off: a float32 network (even
    one returning float64) resolves ``y`` only to ~1e-7 relative, so its iterates can cycle a
    few 1e-9 apart forever; accept them once the steps stop shrinking below 1e-6 relative."""
    return diff >= 0.5 * previous and diff < _STALL * (1.0 + float(y.abs().max()))


_STALL = 1e-6


class SDEProcess(Process):
    """Controlled-Crooks transport with the kernels of METHOD §4, noise ``eps > 0``.

    ``K+_i(y | x) = N(y; x + h[b(t_i, x) + eps s(t_i, x)], 2 eps h I)`` forward and
    ``K−_i(x | y) = N(x; y − h[b(t_{i+1}, y) − eps s(t_{i+1}, y)], 2 eps h I)`` backward; each step
    adds ``log K+_i(x_{i+1} | x_i) − log K−_i(x_i | x_{i+1})`` to the work (normalisers cancel).

    ``projection`` (e.g. ``remove_com`` for molecules) is applied to the noise and to both
    fields, so paths stay in its subspace; both kernels are Gaussians of equal variance there,
    so the work formula is unchanged.
    """

    def __init__(self, velocity: Field, score: Field, eps: float, energy_start: Energy,
                 energy_end: Energy, projection: Callable[[Tensor], Tensor] | None = None):
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(
                f"eps must be a finite number > 0 for SDE transport; got {eps!r}. "
                "For eps = 0 use ODEProcess (escorted Jarzynski)."
            )
        self.velocity, self.score, self.eps = velocity, score, float(eps)
        self.energy_start, self.energy_end = energy_start, energy_end
        self.projection = projection
        self._reverse_of: SDEProcess | None = None

    def init_state(self, t, x, generator=None):
        return self._fields(t, x, self.velocity, self.score)

    def propose(self, t, t_next, x, state, generator):
        b, s = state
        h = t_next - t
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                            device=_noise_device(generator)).to(x.device)
        noise = self._project(noise)
        return x + h * (b + self.eps * s) + math.sqrt(2 * self.eps * h) * noise

    def log_ratio(self, t, t_next, x, x_next, state, generator=None):
        b, s = state
        b_next, s_next = nxt = self.init_state(t_next, x_next)
        h = t_next - t
        r_fwd = x_next - (x + h * (b + self.eps * s))
        r_bwd = x - (x_next - h * (b_next - self.eps * s_next))
        return (_flat_sq(r_bwd) - _flat_sq(r_fwd)) / (4 * self.eps * h), nxt

    def reversed(self) -> SDEProcess:
        if self._reverse_of is not None:
            return self._reverse_of
        rev = SDEProcess(
            _reverse(self.velocity, -1.0),
            _reverse(self.score, 1.0),
            self.eps,
            self.energy_end,
            self.energy_start,
        )
        rev._reverse_of = self
        return rev

    def __repr__(self) -> str:
        return f"SDEProcess(eps={self.eps})"


class ODEProcess(Process):
    """Escorted Jarzynski with Euler steps of ``dx/dt = b(t, x)`` (eps = 0).

    The forward process takes explicit steps ``y = x + h b(t_i, x)`` and adds
    ``−log|det(I + h J_b(t_i, x))|`` to the work. Its :meth:`reversed` process takes the exact
    inverse of those maps, implicit steps ``x = y + h b̃(τ_{j+1}, x)`` on ``b̃(τ, x) =
    −b(1 − τ, x)`` solved by fixed-point iteration (to ``tol``), adding
    ``+log|det(I − h J_b̃(τ_{j+1}, x))|``. Forward and reverse maps are therefore inverses, so
    Crooks' relation and BAR hold exactly, not only as the grid is refined.

    ``divergence="exact"`` uses the full Jacobian (fine for small dimensions);
    ``"hutchinson"`` replaces ``log|det(I + h J)|`` by a one-probe estimate of ``h tr J``,
    first order in h and stochastic, so ``exp(−W)`` is then biased: say so when reporting.
    """

    def __init__(self, velocity: Field, energy_start: Energy, energy_end: Energy,
                 divergence: str = "exact", projection: Callable[[Tensor], Tensor] | None = None,
                 implicit: bool = False, tol: float = 1e-10, max_iter: int = 200):
        if divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson'; got {divergence!r}.")
        self.velocity, self.divergence, self.projection = velocity, divergence, projection
        self.energy_start, self.energy_end = energy_start, energy_end
        self.implicit, self.tol, self.max_iter = bool(implicit), float(tol), int(max_iter)
        self._reverse_of: ODEProcess | None = None

    def init_state(self, t, x, generator=None):
        """``b(t, x)`` and the Jacobian ``J_b`` (exact) or a probe ``vᵀ J_b v`` (Hutchinson)."""
        if self.divergence == "exact":
            return self._velocity_and_jacobian(t, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            b = self._project(self.velocity(as_time(t, xg), xg).to(torch.float64)).flatten(1)
            q = self._probe(b, xg, generator)
        return b.detach().reshape(x.shape), q.detach()

    def _velocity_and_jacobian(self, t, x) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            b = self._project(self.velocity(as_time(t, xg), xg).to(torch.float64)).flatten(1)
            jac = self._jacobian(b, xg)
        return b.detach().reshape(x.shape), jac.detach()

    def propose(self, t, t_next, x, state, generator):
        h = t_next - t
        y = x + h * state[0]
        if not self.implicit:
            return y
        previous = math.inf
        for _ in range(self.max_iter):
            (b,) = self._fields(t_next, y, self.velocity)
            y_new = x + h * b
            diff = float((y_new - y).abs().max())
            if diff < self.tol or _stalled(diff, previous, y_new):
                return y_new
            if diff > previous:  # h·Lip(b) > 1 here: fixed points repel; Newton's method
                break
            y, previous = y_new, diff
        return self._newton(t, t_next, x, x + h * state[0])

    def _newton(self, t, t_next, x, y):
        """Solve ``y = x + h b(t_next, y)`` by Newton's method with the exact Jacobian: for
        stiff fields (``h·Lip(b) > 1``) where fixed-point iteration diverges though the
        forward Euler map is still invertible (``I − h J_b`` nonsingular)."""
        h = t_next - t
        eye = torch.eye(y[0].numel(), dtype=torch.float64, device=y.device)
        previous = math.inf
        for _ in range(self.max_iter):
            b, jac = self._velocity_and_jacobian(t_next, y)
            residual = (y - x - h * b).flatten(1)
            diff = float(residual.abs().max())
            if diff < self.tol or _stalled(diff, previous, y):
                return y
            step = torch.linalg.solve(eye - h * jac, residual.unsqueeze(-1)).squeeze(-1)
            y, previous = (y.flatten(1) - step).reshape(y.shape), diff
        raise RuntimeError(f"an implicit (reverse) ODE step from t = {t:.6g} did not converge "
                           f"(fixed-point iteration, then Newton's method, {self.max_iter} "
                           f"iterations each): h = {h:.3g} is too large for this velocity "
                           "field. Use more grid points (transport.n_points).")

    def log_ratio(self, t, t_next, x, x_next, state, generator=None):
        h, nxt = t_next - t, self.init_state(t_next, x_next, generator)
        sign, q = (1.0, nxt[1]) if self.implicit else (-1.0, state[1])
        if self.divergence == "exact":
            eye = torch.eye(q.shape[-1], dtype=torch.float64, device=q.device)
            logdet = torch.linalg.slogdet(eye - sign * h * q)[1]
        else:
            logdet = -sign * h * q
        return sign * logdet, nxt

    @staticmethod
    def _jacobian(b: Tensor, xg: Tensor) -> Tensor:
        d = b.shape[1]
        rows = [torch.autograd.grad(b[:, k].sum(), xg, retain_graph=k < d - 1)[0].flatten(1)
                for k in range(d)]
        return torch.stack(rows, dim=1).to(torch.float64)

    @staticmethod
    def _probe(b: Tensor, xg: Tensor, generator: torch.Generator | None) -> Tensor:
        v = torch.randint(0, 2, b.shape, generator=generator, device=_noise_device(generator))
        v = v.to(b) * 2 - 1
        (vj,) = torch.autograd.grad(b, xg, grad_outputs=v)
        return (vj.flatten(1).to(torch.float64) * v).sum(-1)

    def reversed(self) -> ODEProcess:
        if self._reverse_of is not None:
            return self._reverse_of
        rev = ODEProcess(_reverse(self.velocity, -1.0), self.energy_end, self.energy_start,
                         self.divergence, self.projection, not self.implicit, self.tol,
                         self.max_iter)
        rev._reverse_of = self
        return rev

    def __repr__(self) -> str:
        kind = "implicit" if self.implicit else "explicit"
        return f"ODEProcess(divergence={self.divergence!r}, {kind} Euler)"
