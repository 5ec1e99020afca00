"""ΔF of a :class:`~feat.problem.TwoStateProblem` by non-equilibrium switching, end to end.

Start samples: the **last** ``⌈n_forward / k⌉`` rows of ``x_a`` and ``⌈n_reverse / k⌉`` rows of
``x_b`` (``k = trajectories_per_start`` trajectories from each; the rows the FEAT pipeline
holds out of training for its transports), pilots: the **first** ``n_pilot`` rows of each,
disjoint from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ConfigError, from_mapping
from ..estimators import FreeEnergyEstimate, estimate
from ..problem import TwoStateProblem
from ..transport import n_starts, start_labels, start_rows
from .switching import SwitchingProtocol, SwitchingResult, switch, tune_step_sizes

__all__ = ["SwitchingRun", "SwitchingSettings", "evaluations_per_trajectory", "run_switching",
           "steps_for_budget"]


@dataclass(frozen=True)
class SwitchingSettings:
    """Settings of a switching estimate (see :mod:`feat.baselines.switching`).

    ``n_steps`` λ steps of ``n_moves`` HMC moves of ``n_leapfrog`` leapfrog steps (1: MALA).
    ``adapt``: tune ε per λ step on a pilot of ``n_pilot`` chains per direction (``n_warmup``
    moves at the start state first) toward ``target_accept``, starting from ``step_size``;
    otherwise ε = ``step_size`` throughout. ``trajectories_per_start`` > 1 starts that many
    trajectories from each start sample (σ then from the bootstrap over start samples).
    """

    n_steps: int = 100
    n_moves: int = 1
    n_leapfrog: int = 1
    step_size: float = 0.1
    adapt: bool = True
    n_pilot: int = 100
    n_warmup: int = 20
    target_accept: float = 0.6
    n_forward: int = 1000
    n_reverse: int = 1000
    batch_size: int = 1000
    n_bootstrap: int = 200
    nan_policy: str = "raise"
    trajectories_per_start: int = 1

    def __post_init__(self):
        for key, low in (("n_steps", 1), ("n_moves", 0), ("n_leapfrog", 1), ("n_pilot", 1),
                         ("n_warmup", 0), ("n_forward", 0), ("n_reverse", 0), ("batch_size", 1),
                         ("n_bootstrap", 0), ("trajectories_per_start", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"switching.{key} must be >= {low}; got {getattr(self, key)}.")
        if not self.step_size > 0:
            raise ConfigError(f"switching.step_size must be > 0; got {self.step_size}.")
        if not 0 < self.target_accept < 1:
            raise ConfigError(f"switching.target_accept must lie in (0, 1); got "
                              f"{self.target_accept}.")
        if self.n_forward + self.n_reverse == 0:
            raise ConfigError("switching.n_forward and n_reverse are both 0.")
        if self.nan_policy not in ("raise", "drop"):
            raise ConfigError(f"switching.nan_policy must be 'raise' or 'drop'; got "
                              f"{self.nan_policy!r}.")

    @classmethod
    def from_mapping(cls, data: dict) -> SwitchingSettings:
        return from_mapping(cls, data, "switching")


@dataclass(frozen=True)
class SwitchingRun:
    """The estimate, the forward and reverse results (None for an absent direction), the
    settings and the seed."""

    estimate: FreeEnergyEstimate
    forward: SwitchingResult | None
    reverse: SwitchingResult | None
    settings: SwitchingSettings
    seed: int


def evaluations_per_trajectory(settings: SwitchingSettings) -> int:
    """Energy evaluations (each with its gradient) of one production trajectory: ``u_a`` and
    ``u_b`` at the start and at every leapfrog position, ``2 (1 + S K L)``."""
    s = settings
    return 2 * (1 + s.n_steps * s.n_moves * s.n_leapfrog)


def steps_for_budget(budget: int, settings: SwitchingSettings) -> int:
    """The largest ``n_steps`` whose total energy evaluations, pilots (with their warm-up)
    included, do not exceed ``budget`` (at least 1).

    Total = ``2 (n_f + n_r + 2 n_pilot) (1 + S K L) + 2 · 2 n_pilot · n_warmup · L`` (no pilot
    when not adapting, or with 0 moves).
    """
    s = settings
    pilots = 2 * s.n_pilot if s.adapt and s.n_moves > 0 else 0
    chains = s.n_forward + s.n_reverse + pilots
    per_step = 2 * chains * s.n_moves * s.n_leapfrog
    fixed = 2 * chains + 2 * pilots * s.n_warmup * s.n_leapfrog
    if per_step == 0:
        return s.n_steps
    return max(1, (int(budget) - fixed) // per_step)


def _direction(protocol: SwitchingProtocol, x, n: int, s: SwitchingSettings, seed: int,
               direction: int) -> SwitchingResult | None:
    if n == 0:
        return None
    m = n_starts(n, s.trajectories_per_start)
    if m + (s.n_pilot if s.adapt else 0) > x.shape[0]:
        raise ValueError(f"switching needs {m} start samples plus {s.n_pilot} pilot samples "
                         f"of the start state; the problem has {x.shape[0]}. Lower "
                         "n_forward/n_reverse or n_pilot, or raise trajectories_per_start.")
    seeds = np.random.SeedSequence([int(seed), 104729, direction]).generate_state(2)
    eps = s.step_size
    if s.adapt and s.n_moves > 0:
        gen = torch.Generator().manual_seed(int(seeds[0]))
        eps = tune_step_sizes(protocol, x[: s.n_pilot], initial=s.step_size,
                              target_accept=s.target_accept, n_warmup=s.n_warmup,
                              generator=gen)
    x0 = x[x.shape[0] - m:][start_rows(n, s.trajectories_per_start)]
    return switch(protocol, x0, step_size=eps, seed=int(seeds[1]), batch_size=s.batch_size)


def run_switching(problem: TwoStateProblem, settings: SwitchingSettings | None = None, *,
                  seed: int = 0) -> SwitchingRun:
    """Forward (a → b) and reverse (b → a) switching, then BAR / Jarzynski on the works."""
    s = settings if settings is not None else SwitchingSettings()
    fwd = SwitchingProtocol.uniform(problem.energy_a, problem.energy_b, s.n_steps, s.n_moves,
                                    s.n_leapfrog)
    res_f = _direction(fwd, problem.x_a, s.n_forward, s, seed, 0)
    res_r = _direction(fwd.reversed(), problem.x_b, s.n_reverse, s, seed, 1)
    work_f, work_r = (None if res is None else res.work for res in (res_f, res_r))
    est = estimate(work_f, work_r, reference=problem.reference,
                   reference_exact=problem.reference_exact, n_bootstrap=s.n_bootstrap,
                   seed=seed, nan_policy=s.nan_policy,
                   **start_labels(s.trajectories_per_start, work_f, work_r))
    return SwitchingRun(est, res_f, res_r, s, int(seed))
