"""Interpolants: schedules, antithetic interpolant samples, couplings of the end states."""

from .couplings import Coupling, IndependentCoupling, MinibatchOTCoupling
from .interpolant import Interpolant, InterpolantSample
from .schedules import Coefficients, LinearSchedule, Schedule, TrigonometricSchedule

__all__ = [
    "Coefficients",
    "Coupling",
    "IndependentCoupling",
    "Interpolant",
    "InterpolantSample",
    "LinearSchedule",
    "MinibatchOTCoupling",
    "Schedule",
    "TrigonometricSchedule",
]
