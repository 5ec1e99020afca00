"""Baselines without learning, on the same estimators as FEAT (for equal-budget comparisons).

Non-equilibrium switching (Jarzynski's annealed protocol with Metropolised MALA/HMC moves):
:class:`SwitchingProtocol` and :func:`switch` for trajectories, :func:`run_switching` for ΔF
of a :class:`~feat.problem.TwoStateProblem`.
"""

from .estimate import (
    SwitchingRun,
    SwitchingSettings,
    evaluations_per_trajectory,
    run_switching,
    steps_for_budget,
)
from .switching import SwitchingProtocol, SwitchingResult, switch, tune_step_sizes

__all__ = ["SwitchingProtocol", "SwitchingResult", "SwitchingRun", "SwitchingSettings",
           "evaluations_per_trajectory", "run_switching", "steps_for_budget", "switch",
           "tune_step_sizes"]
