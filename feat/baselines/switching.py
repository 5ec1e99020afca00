r"""Non-equilibrium switching without learning: Jarzynski's annealed protocol with MALA/HMC.

Along the linear interpolation of the reduced potentials

    u_λ(x) = (1 − λ) u_a(x) + λ u_b(x),      λ_0, λ_1, …, λ_S  (0 → 1 forward, 1 → 0 reverse)

a trajectory starts from ``x_0 ~ exp(−u_{λ_0})`` and, for k = 0 … S − 1, first switches λ and
then equilibrates partly:

    W += u_{λ_{k+1}}(x) − u_{λ_k}(x)                          (protocol work, float64)
    x ← K moves of a Metropolis-adjusted kernel that leaves exp(−u_{λ_{k+1}}) invariant.

Jarzynski's equality E[exp(−W)] = Z_{λ_S} / Z_{λ_0} holds for any number of moves (0 moves is
plain free-energy perturbation, W = u_b(x_0) − u_a(x_0)) and any step sizes, because every
kernel is Metropolised. The reverse protocol is this same code on the reversed λ grid,
started from b's samples (:meth:`SwitchingProtocol.reversed`), so its works follow the
convention of METHOD §4 (E[exp(−W_r)] = exp(+ΔF)) and the estimators of
:mod:`feat.estimators` (Jarzynski forward/reverse, BAR) apply as they are.

Kernel: HMC with ``n_leapfrog`` leapfrog steps of size ε and unit masses, a fresh momentum at
every move; ``n_leapfrog = 1`` is exactly MALA (Langevin step ε²/2). Energies may be
``+inf`` (basin-restricted states): a proposal of infinite energy is rejected, and a
trajectory that reaches infinite ``u_{λ_{k+1}}`` has work ``+inf`` (zero weight) for good.

Step sizes. Choosing ε_k from the production trajectories' own acceptances would make each
kernel depend on the trajectories it moves (and couple them), which breaks the exactness of
E[exp(−W)] at finite N. So ε is either fixed, or tuned on a **separate pilot**: independent
start samples run through the same protocol while log ε follows a Robbins–Monro recursion
toward a target acceptance; the production run then uses the pilot's schedule ε_k, a fixed
function of λ_k independent of the production trajectories, so every estimate stays exact.
The pilot's evaluations are part of the method's cost and are counted as such.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..accounting import record
from ..energies.base import Energy, check_batch
from ..transport.integrator import chunk_generator

__all__ = ["SwitchingProtocol", "SwitchingResult", "switch", "tune_step_sizes"]


@dataclass
class _State:
    """A batch of chains with the end-state energies and scores (−∇u) at their positions."""

    x: Tensor
    u_a: Tensor
    u_b: Tensor
    s_a: Tensor
    s_b: Tensor

    def where(self, keep_new: Tensor, new: _State) -> _State:
        col = keep_new.reshape(keep_new.shape + (1,) * (self.x.dim() - 1))
        return _State(torch.where(col, new.x, self.x), torch.where(keep_new, new.u_a, self.u_a),
                      torch.where(keep_new, new.u_b, self.u_b), torch.where(col, new.s_a, self.s_a),
                      torch.where(col, new.s_b, self.s_b))


def _mix(lam: float, v_a: Tensor, v_b: Tensor) -> Tensor:
    """``(1 − λ) v_a + λ v_b`` with the ends exact (``0 · inf`` never appears at λ = 0 or 1)."""
    if lam == 0.0:
        return v_a
    if lam == 1.0:
        return v_b
    return (1.0 - lam) * v_a + lam * v_b


class SwitchingProtocol:
    """The annealing path ``u_λ = (1 − λ) u_a + λ u_b`` over the λ grid ``lambdas``.

    Parameters
    ----------
    energy_a, energy_b : the end states' reduced potentials (kT), one event shape.
    lambdas : (S + 1,) float64, from 0 to 1 (forward) or 1 to 0 (reverse), monotone.
    n_moves : K >= 0 kernel moves after each λ switch (0: free-energy perturbation).
    n_leapfrog : leapfrog steps per HMC move (1: MALA).
    """

    def __init__(self, energy_a: Energy, energy_b: Energy, lambdas: Tensor | Sequence[float],
                 n_moves: int = 1, n_leapfrog: int = 1):
        if tuple(energy_a.event_shape) != tuple(energy_b.event_shape):
            raise ValueError(f"energy_a and energy_b must share one event shape; got "
                             f"{energy_a.event_shape} and {energy_b.event_shape}.")
        lam = torch.as_tensor(lambdas, dtype=torch.float64).flatten().clone()
        ends = (lam[0].item(), lam[-1].item()) if lam.numel() else ()
        if lam.numel() < 2 or sorted(ends) != [0.0, 1.0]:
            raise ValueError(f"lambdas must run from 0 to 1 (or 1 to 0) with at least 2 points; "
                             f"got {lam.numel()} point(s) from {ends}.")
        steps = (lam[1:] - lam[:-1]) * (1.0 if ends[1] == 1.0 else -1.0)
        if bool((steps <= 0).any()):
            raise ValueError("lambdas must be strictly monotone; sort them and drop duplicates.")
        if int(n_moves) < 0 or int(n_leapfrog) < 1:
            raise ValueError(f"n_moves must be >= 0 and n_leapfrog >= 1; got {n_moves} and "
                             f"{n_leapfrog}.")
        self.energy_a, self.energy_b, self.lambdas = energy_a, energy_b, lam
        self.n_moves, self.n_leapfrog = int(n_moves), int(n_leapfrog)

    @classmethod
    def uniform(cls, energy_a: Energy, energy_b: Energy, n_steps: int, n_moves: int = 1,
                n_leapfrog: int = 1) -> SwitchingProtocol:
        """The forward protocol on ``n_steps`` equal λ steps from 0 to 1."""
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1; got {n_steps}.")
        lam = torch.linspace(0.0, 1.0, int(n_steps) + 1, dtype=torch.float64)
        return cls(energy_a, energy_b, lam, n_moves, n_leapfrog)

    def reversed(self) -> SwitchingProtocol:
        """The same path walked backwards (start from the other state's samples)."""
        return SwitchingProtocol(self.energy_a, self.energy_b, self.lambdas.flip(0),
                                 self.n_moves, self.n_leapfrog)

    @property
    def n_steps(self) -> int:
        return self.lambdas.numel() - 1

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.energy_a.event_shape)

    def __eq__(self, other) -> bool:
        return (isinstance(other, SwitchingProtocol) and self.energy_a is other.energy_a
                and self.energy_b is other.energy_b and torch.equal(self.lambdas, other.lambdas)
                and (self.n_moves, self.n_leapfrog) == (other.n_moves, other.n_leapfrog))

    def __repr__(self) -> str:
        direction = "a → b" if self.lambdas[0].item() == 0.0 else "b → a"
        return (f"SwitchingProtocol({direction}, n_steps={self.n_steps}, "
                f"n_moves={self.n_moves}, n_leapfrog={self.n_leapfrog})")

    # one chain step -------------------------------------------------------------------------

    def evaluate(self, x: Tensor) -> _State:
        """End-state energies and scores at ``x`` (float64); one ``energy_and_score`` each."""
        u_a, s_a = self.energy_a.energy_and_score(x)
        u_b, s_b = self.energy_b.energy_and_score(x)
        f64 = torch.float64
        return _State(x, u_a.detach().to(f64), u_b.detach().to(f64), s_a.to(f64), s_b.to(f64))

    def move(self, lam: float, state: _State, eps: float, generator) -> tuple[_State, Tensor]:
        """One HMC move (MALA for one leapfrog step) invariant for ``exp(−u_λ)``.

        Returns the new state and the Metropolis acceptance probabilities (batch,).
        """
        p = torch.randn(state.x.shape, generator=generator, dtype=torch.float64,
                        device=state.x.device)
        kinetic0 = 0.5 * (p * p).flatten(1).sum(-1)
        new = state
        p = p + 0.5 * eps * _mix(lam, new.s_a, new.s_b)
        for i in range(self.n_leapfrog):
            new = self.evaluate(new.x + eps * p)
            p = p + (0.5 if i == self.n_leapfrog - 1 else 1.0) * eps * _mix(lam, new.s_a, new.s_b)
        kinetic1 = 0.5 * (p * p).flatten(1).sum(-1)
        log_alpha = (_mix(lam, state.u_a, state.u_b) + kinetic0
                     - _mix(lam, new.u_a, new.u_b) - kinetic1)
        log_alpha = torch.where(torch.isnan(log_alpha), -math.inf, log_alpha)
        prob = log_alpha.clamp(max=0.0).exp()
        u = torch.rand(prob.shape, generator=generator, dtype=torch.float64, device=prob.device)
        record(sampling=state.x.shape[0])
        return state.where(u < prob, new), prob

    # a batch of trajectories ----------------------------------------------------------------

    def run_chunk(self, x0: Tensor, step_sizes: Tensor, generator, adapt: _Adaptation | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
        """Works (B,), end points and the mean acceptance per λ step (S,) of one batch."""
        lam = self.lambdas.tolist()
        state = self.evaluate(x0)
        u = _mix(lam[0], state.u_a, state.u_b)
        if not bool(torch.isfinite(u).all()):
            bad = torch.nonzero(~torch.isfinite(u))[:5, 0].tolist()
            raise ValueError(f"start samples must have finite energy u_{{λ={lam[0]:g}}}; rows "
                             f"{bad} do not. Give samples of the start state.")
        eps = float(step_sizes[0])
        if adapt is not None:
            state, eps = adapt.warm_up(self, lam[0], state, eps, generator)
        work = torch.zeros_like(u)
        acceptance = torch.full((self.n_steps,), math.nan, dtype=torch.float64)
        for k in range(self.n_steps):
            u_next = _mix(lam[k + 1], state.u_a, state.u_b)
            dw = torch.where(torch.isposinf(u), math.inf, u_next - u)
            work = torch.where(torch.isposinf(work), work, work + dw)
            eps = eps if adapt is not None else float(step_sizes[k])
            probs = []
            for _ in range(self.n_moves):
                state, prob = self.move(lam[k + 1], state, eps, generator)
                probs.append(prob.mean().item())
                if adapt is not None:
                    eps = adapt.update(eps, probs[-1])
            if adapt is not None:
                step_sizes[k] = eps
            if probs:
                acceptance[k] = sum(probs) / len(probs)
            u = _mix(lam[k + 1], state.u_a, state.u_b)
        return work, state.x, acceptance


class _Adaptation:
    """Robbins–Monro on log ε toward ``target`` mean acceptance; used by pilot runs only."""

    def __init__(self, target: float, rate: float = 1.0, n_warmup: int = 20):
        self.target, self.rate, self.n_warmup = float(target), float(rate), int(n_warmup)

    def update(self, eps: float, accept: float) -> float:
        return eps * math.exp(self.rate * (accept - self.target))

    def warm_up(self, protocol: SwitchingProtocol, lam: float, state: _State, eps: float,
                generator) -> tuple[_State, float]:
        """Tune the first ε on the start state (at equilibrium, so the moves change nothing)."""
        for _ in range(self.n_warmup):
            state, prob = protocol.move(lam, state, eps, generator)
            eps = self.update(eps, prob.mean().item())
        return state, eps


@dataclass(frozen=True)
class SwitchingResult:
    """Works and end points of switching trajectories.

    Attributes
    ----------
    work : (n,) float64, kT; ``+inf`` for trajectories that reached infinite energy.
    x_start, x_end : (n, *event_shape) float64.
    step_sizes : (S,) the ε of each λ step (fixed or from the pilot).
    acceptance : (S,) mean Metropolis acceptance probability per λ step (NaN with 0 moves).
    protocol : a short description. n_moves_total : kernel moves made (chains × moves).
    seconds : wall time.
    """

    work: Tensor
    x_start: Tensor
    x_end: Tensor
    step_sizes: Tensor
    acceptance: Tensor
    protocol: str
    n_moves_total: int
    seconds: float

    @property
    def n_nonfinite(self) -> int:
        return int((~torch.isfinite(self.work)).sum())


def _step_sizes(step_size: float | Tensor, n_steps: int) -> Tensor:
    eps = torch.as_tensor(step_size, dtype=torch.float64).flatten()
    if eps.numel() == 1:
        eps = eps.expand(n_steps)
    if eps.numel() != n_steps or not bool((torch.isfinite(eps) & (eps > 0)).all()):
        raise ValueError(f"step_size must be a positive float or {n_steps} positive floats (one "
                         f"per λ step); got {eps.numel()} value(s).")
    return eps.clone()


def switch(protocol: SwitchingProtocol, x0: Tensor, *, step_size: float | Tensor = 0.1,
           generator: torch.Generator | None = None, seed: int | None = None,
           batch_size: int = 1024) -> SwitchingResult:
    """Run switching trajectories from ``x0`` (samples of the protocol's start state).

    Parameters
    ----------
    protocol : the path (forward, or ``.reversed()`` from b's samples).
    x0 : (n, *event_shape) start samples; the chains are kept in float64.
    step_size : ε, one float or (S,) per λ step (e.g. from :func:`tune_step_sizes`).
    generator : ``torch.Generator`` for all chunks in turn; or
    seed : an integer from which each chunk draws its own stream (reproducible by chunk).
    batch_size : chains per chunk (memory bound).
    """
    if seed is not None and generator is not None:
        raise ValueError("give either generator or seed, not both.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    check_batch(x0, protocol.event_shape, "x0")
    eps = _step_sizes(step_size, protocol.n_steps)
    x0, start = x0.to(torch.float64), time.perf_counter()
    works, ends, accs = [], [], []
    for c, rows in enumerate(torch.split(torch.arange(x0.shape[0]), int(batch_size))):
        gen = chunk_generator(seed, c) if seed is not None else generator
        w, xe, acc = protocol.run_chunk(x0[rows], eps, gen)
        works.append(w), ends.append(xe), accs.append(acc * len(rows))
    acceptance = torch.stack(accs).sum(0) / x0.shape[0]
    return SwitchingResult(torch.cat(works), x0, torch.cat(ends), eps, acceptance,
                           repr(protocol), x0.shape[0] * protocol.n_steps * protocol.n_moves,
                           time.perf_counter() - start)


def tune_step_sizes(protocol: SwitchingProtocol, x_pilot: Tensor, *, initial: float = 0.1,
                    target_accept: float = 0.6, rate: float = 1.0, n_warmup: int = 20,
                    generator: torch.Generator | None = None) -> Tensor:
    """A step-size schedule (S,) from a pilot run on ``x_pilot``, independent start samples.

    The pilot first adapts ε for ``n_warmup`` moves at ``λ_0`` (its samples are at equilibrium
    there), then runs the protocol, updating ``log ε += rate · (acceptance − target_accept)``
    after every move; ε_k is the value reached at the end of λ step k. Give the production
    run samples disjoint from ``x_pilot`` so that its kernels do not depend on its own chains.
    Its works are discarded. With ``n_moves = 0`` there is nothing to tune: returns ``initial``.
    """
    eps = _step_sizes(initial, protocol.n_steps)
    if protocol.n_moves == 0:
        return eps
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1); got {target_accept}.")
    check_batch(x_pilot, protocol.event_shape, "x_pilot")
    protocol.run_chunk(x_pilot.to(torch.float64), eps, generator,
                       _Adaptation(target_accept, rate, n_warmup))
    return eps
