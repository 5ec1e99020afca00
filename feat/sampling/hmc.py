r"""Hybrid (Hamiltonian) Monte Carlo with many chains vectorised in torch, for any Energy.

One iteration, for every chain at once: draw momenta ``p ~ N(0, I)``, run ``n_leapfrog``
leapfrog steps of ``H(x, p) = u(x) + |p|^2 / 2`` (unit masses), accept with probability
``min(1, exp(H_0 - H_1))`` per chain. The step size of each trajectory is
``eps * U[1 - jitter, 1 + jitter]`` per chain (drawn independently of the state, so detailed
balance holds) to avoid resonant trajectory lengths. During warm-up only, ``eps`` is tuned by
dual averaging (Hoffman & Gelman 2014, Alg. 5) toward ``target_accept`` (the mean Metropolis
probability over chains); afterwards it is frozen, so the sampling phase is an exact
Metropolis-Hastings chain. Thinning follows the integrated autocorrelation time of an
observable (default: the mean over sites, i.e. the magnetisation) and of ``u``.

Every random number comes from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from feat.energies.base import Energy, check_batch
from feat.sampling.autocorrelation import AutocorrelationEstimate, integrated_autocorrelation_time
from feat.sampling.io import save_samples

__all__ = ["HMC", "HMCResult"]


def _site_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(1)


class _DualAveraging:
    """Hoffman & Gelman (2014) Alg. 5 on ``log eps``; ``value`` is the averaged iterate."""

    def __init__(self, eps0: float, target: float, gamma: float = 0.05, t0: float = 10.0,
                 kappa: float = 0.75):
        self.mu, self.target = math.log(10.0 * eps0), target
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.m, self.h_bar, self.log_eps, self.log_eps_bar = 0, 0.0, math.log(eps0), 0.0

    def update(self, accept_prob: float) -> float:
        """Feed one mean acceptance probability; returns the next step size to try."""
        self.m += 1
        w = 1.0 / (self.m + self.t0)
        self.h_bar = (1.0 - w) * self.h_bar + w * (self.target - accept_prob)
        self.log_eps = self.mu - math.sqrt(self.m) / self.gamma * self.h_bar
        eta = self.m ** (-self.kappa)
        self.log_eps_bar = eta * self.log_eps + (1.0 - eta) * self.log_eps_bar
        return math.exp(self.log_eps)

    @property
    def value(self) -> float:
        return math.exp(self.log_eps_bar)


@dataclass(frozen=True)
class HMCResult:
    """Output of :meth:`HMC.sample`; tensors keep the energy's dtype and device.

    ``samples``, ``scores`` (= -grad u) and ``energies`` are the thinned sampling-phase states
    of every chain, time-major: row ``i * n_chains + c`` is chain ``c`` at the i-th kept time.
    """

    samples: Tensor = field(repr=False)          # (n_samples, *event_shape)
    scores: Tensor = field(repr=False)           # (n_samples, *event_shape)
    energies: Tensor = field(repr=False)         # (n_samples,)
    step_size: float                             # frozen after warm-up
    n_leapfrog: int
    acceptance: float                            # mean Metropolis probability, sampling phase
    accepted_fraction: float                     # fraction of accepted proposals, sampling phase
    acceptance_warmup: float
    autocorrelation: AutocorrelationEstimate     # of the observable, in iterations
    autocorrelation_energy: AutocorrelationEstimate
    thin: int                                    # in iterations
    n_chains: int
    n_warmup: int
    n_steps: int
    step_size_trace: Tensor = field(repr=False)  # (n_warmup + n_steps,) nominal eps
    acceptance_trace: Tensor = field(repr=False)  # (n_warmup + n_steps,) mean probability
    observable_trace: Tensor = field(repr=False)  # (n_steps, n_chains)
    final_state: Tensor = field(repr=False)      # (n_chains, *event_shape), to continue

    @property
    def cost(self) -> dict[str, int]:
        """What this run paid: MCMC steps (chains × iterations, warm-up included) and gradient
        evaluations (one per chain at the start, then ``n_leapfrog`` per iteration)."""
        iterations = self.n_chains * (self.n_warmup + self.n_steps)
        return {"sampling_steps": iterations,
                "gradient_evals": self.n_chains + iterations * self.n_leapfrog}

    @property
    def tau_int(self) -> float:
        """Integrated autocorrelation time of the observable, in iterations."""
        return self.autocorrelation.tau_int

    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Write samples, scores and energies to ``.npz`` with the run's settings as metadata."""
        meta = {"sampler": "hmc", "step_size": self.step_size, "n_leapfrog": self.n_leapfrog,
                "acceptance": self.acceptance, "tau_int": self.tau_int,
                "tau_int_energy": self.autocorrelation_energy.tau_int, "thin": self.thin,
                "n_chains": self.n_chains, "n_warmup": self.n_warmup, "n_steps": self.n_steps}
        save_samples(path, self.samples, scores=self.scores, energies=self.energies,
                     metadata={**meta, **(metadata or {})})


@dataclass(frozen=True)
class HMC:
    """Hybrid Monte Carlo settings; call :meth:`sample` to run.

    Parameters
    ----------
    step_size : float
        Initial leapfrog step ``eps`` (tuned during warm-up, then frozen).
    n_leapfrog : int
        Leapfrog steps per trajectory.
    target_accept : float
        Target mean Metropolis probability in (0, 1) for warm-up tuning.
    jitter : float
        Relative half-width of the per-trajectory random step size, in [0, 1).
    """

    step_size: float = 0.1
    n_leapfrog: int = 10
    target_accept: float = 0.8
    jitter: float = 0.1

    def __post_init__(self) -> None:
        checks = [("step_size", self.step_size > 0, "a positive float, e.g. 0.1"),
                  ("n_leapfrog", isinstance(self.n_leapfrog, int) and self.n_leapfrog >= 1,
                   "an int >= 1"),
                  ("target_accept", 0 < self.target_accept < 1, "in (0, 1), e.g. 0.8"),
                  ("jitter", 0 <= self.jitter < 1, "in [0, 1), e.g. 0.1")]
        for name, ok, want in checks:
            if not ok or not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be {want}; got {getattr(self, name)!r}.")

    def _trajectory(self, energy: Energy, x: Tensor, u: Tensor, s: Tensor, eps: float,
                    gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One jittered leapfrog trajectory + accept/reject per chain.

        Returns the new ``(x, u, s)``, the accept mask (C,) and Metropolis probabilities (C,).
        """
        n_chains, tail = x.shape[0], (1,) * (x.dim() - 1)
        kw = {"generator": gen, "device": x.device}
        p = torch.randn(x.shape, dtype=x.dtype, **kw)
        jit = 1.0 + self.jitter * (2.0 * torch.rand(n_chains, dtype=x.dtype, **kw) - 1.0)
        e = (eps * jit).reshape(n_chains, *tail)
        h0 = u.double() + 0.5 * p.double().pow(2).flatten(1).sum(1)
        x1, p1 = x, p + 0.5 * e * s
        for i in range(self.n_leapfrog):
            x1 = x1 + e * p1
            u1, s1 = energy.energy_and_score(x1)
            p1 = p1 + (e if i < self.n_leapfrog - 1 else 0.5 * e) * s1
        log_ratio = h0 - (u1.double() + 0.5 * p1.double().pow(2).flatten(1).sum(1))
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        log_unif = torch.rand(n_chains, dtype=torch.float64, **kw).log()
        accept = log_unif < log_ratio
        prob = log_ratio.clamp(max=0.0).exp()
        a = accept.reshape(n_chains, *tail)
        return (torch.where(a, x1, x), torch.where(accept, u1, u), torch.where(a, s1, s),
                accept, prob)

    def sample_rounds(self, energy: Energy, x0: Tensor, n_samples: int, *, n_steps: int,
                      n_warmup: int, thin: int | None, max_rounds: int,
                      generator: torch.Generator, **kwargs: Any) -> list[HMCResult]:
        """Rounds of :meth:`sample` until they hold ``n_samples`` thinned samples in all.

        The first round warms up (``n_warmup``) and measures the thinning (``thin=None``);
        later rounds continue from the last states with that step size and thinning frozen.
        ``kwargs`` go to every :meth:`sample` call (``observable``, ``progress``).
        """
        parts = [self.sample(energy, x0, n_steps, generator=generator, n_warmup=n_warmup,
                             thin=thin, **kwargs)]
        first = parts[0]
        frozen = dataclasses.replace(self, step_size=first.step_size)
        while sum(p.samples.shape[0] for p in parts) < n_samples:
            if len(parts) >= max_rounds:
                raise ValueError(
                    f"HMC gave {sum(p.samples.shape[0] for p in parts)} < n_samples = "
                    f"{n_samples} samples in max_rounds = {max_rounds} rounds (thin "
                    f"{first.thin}); raise n_chains, n_steps or max_rounds.")
            parts.append(frozen.sample(energy, parts[-1].final_state, n_steps,
                                       generator=generator, n_warmup=0, thin=first.thin,
                                       **kwargs))
        return parts

    def sample(self, energy: Energy, x0: Tensor, n_steps: int, *, generator: torch.Generator,
               n_warmup: int = 1000, observable: Callable[[Tensor], Tensor] | None = None,
               thin: int | None = None, store_every: int = 1,
               progress: bool = True) -> HMCResult:
        """Run ``n_warmup`` tuning iterations, then ``n_steps`` frozen-step iterations.

        Parameters
        ----------
        energy : Energy
            Target ``exp(-u)``.
        x0 : Tensor, shape (n_chains, *event_shape)
            Initial states, one per chain (the dtype and device of the run).
        n_steps : int
            Sampling-phase iterations per chain.
        generator : torch.Generator
            Source of every random number (on ``x0``'s device).
        n_warmup : int
            Tuning iterations (discarded).
        observable : callable, optional
            ``(batch, *event_shape) -> (batch,)`` for the autocorrelation time; default the mean
            over sites (the magnetisation of a lattice field).
        thin : int, optional
            Keep every ``thin``-th iteration; default ``ceil(2 max(tau_obs, tau_u))``, rounded
            up to a multiple of ``store_every``.
        store_every : int
            Store states only every ``store_every`` iterations (memory); tau uses all.
        progress : bool
            Show a tqdm progress bar.
        """
        _check_run(energy, x0, n_steps, generator, n_warmup, thin, store_every)
        observable = observable or _site_mean
        with torch.no_grad():
            return self._run(energy, x0.detach().clone(), n_steps, generator, n_warmup,
                             observable, thin, store_every, progress)

    def _run(self, energy, x, n_steps, gen, n_warmup, observable, thin, store_every, progress):
        u, s = energy.energy_and_score(x)
        if not torch.isfinite(u).all():
            raise ValueError(f"x0 has non-finite energies for chains "
                             f"{torch.nonzero(~torch.isfinite(u)).flatten().tolist()}; start "
                             "every chain where u is finite.")
        tuner, eps = _DualAveraging(self.step_size, self.target_accept), self.step_size
        eps_trace, acc_trace, obs, u_trace, stored, n_acc = [], [], [], [], [], 0
        bar = tqdm(total=n_warmup + n_steps, disable=not progress, desc="HMC", leave=False)
        for it in range(n_warmup + n_steps):
            if it == n_warmup and n_warmup > 0:
                eps = tuner.value                       # frozen from here on
            x, u, s, accept, prob = self._trajectory(energy, x, u, s, eps, gen)
            eps_trace.append(eps)
            acc_trace.append(prob.mean())             # stays on the device: no sync per step
            if it < n_warmup:
                eps = tuner.update(float(acc_trace[-1]))
            else:
                n_acc = n_acc + accept.sum()
                obs.append(observable(x).double())
                u_trace.append(u.double())
                if (it - n_warmup + 1) % store_every == 0:
                    stored.append((x, s, u))
            bar.update()
            if progress and it % 50 == 0:
                bar.set_postfix(eps=f"{eps:.3g}", acc=f"{float(acc_trace[-1]):.2f}")
        bar.close()
        return self._result(x, eps, eps_trace, acc_trace, obs, u_trace, stored, n_acc,
                            n_warmup, n_steps, thin, store_every)

    def _result(self, x, eps, eps_trace, acc_trace, obs, u_trace, stored, n_acc, n_warmup,
                n_steps, thin, store_every) -> HMCResult:
        obs_t = torch.stack(obs).cpu()
        ac = integrated_autocorrelation_time(obs_t)
        ac_u = integrated_autocorrelation_time(torch.stack(u_trace))
        stride = _stride(ac, ac_u, thin, store_every, len(stored))
        keep = stored[stride - 1::stride]
        n_chains, n_acc = x.shape[0], int(n_acc)
        acc = torch.stack(acc_trace).double().cpu()
        return HMCResult(
            samples=torch.cat([k[0] for k in keep]), scores=torch.cat([k[1] for k in keep]),
            energies=torch.cat([k[2] for k in keep]), step_size=float(eps),
            n_leapfrog=self.n_leapfrog, acceptance=float(acc[n_warmup:].mean()),
            accepted_fraction=n_acc / (n_steps * n_chains),
            acceptance_warmup=float(acc[:n_warmup].mean()) if n_warmup else math.nan,
            autocorrelation=ac, autocorrelation_energy=ac_u, thin=stride * store_every,
            n_chains=n_chains, n_warmup=n_warmup, n_steps=n_steps,
            step_size_trace=torch.tensor(eps_trace, dtype=torch.float64),
            acceptance_trace=acc, observable_trace=obs_t, final_state=x)


def _stride(ac: AutocorrelationEstimate, ac_u: AutocorrelationEstimate, thin: int | None,
            store_every: int, n_stored: int) -> int:
    """Thinning in units of stored states."""
    if thin is None:
        tau = max(ac.tau_int, ac_u.tau_int)
        if not (ac.reliable and ac_u.reliable):
            warnings.warn(f"HMC autocorrelation estimate is unreliable (tau_obs={ac.tau_int:.3g}"
                          f", tau_u={ac_u.tau_int:.3g} iterations for {n_stored * store_every} "
                          "steps): run longer chains or tune n_leapfrog.", stacklevel=5)
        thin = math.ceil(2.0 * tau) if math.isfinite(tau) else n_stored * store_every
    return int(min(max(1, math.ceil(thin / store_every)), max(n_stored, 1)))


def _check_run(energy, x0, n_steps, generator, n_warmup, thin, store_every) -> None:
    if not isinstance(energy, Energy):
        raise TypeError(f"energy must be a feat Energy; got {type(energy).__name__}.")
    check_batch(x0, energy.event_shape, "x0")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}. "
                        "Use torch.Generator(device=x0.device).manual_seed(seed).")
    if generator.device.type != x0.device.type:
        raise ValueError(f"generator is on {generator.device} but x0 is on {x0.device}; create "
                         "the generator with torch.Generator(device=x0.device).")
    ints = {"n_steps": (n_steps, 1), "n_warmup": (n_warmup, 0), "store_every": (store_every, 1),
            "thin": (thin if thin is not None else 1, 1)}
    for name, (value, low) in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
    if n_steps < store_every:
        raise ValueError(f"n_steps ({n_steps}) must be >= store_every ({store_every}) so that "
                         "at least one state is stored.")
