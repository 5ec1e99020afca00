"""Interpolants: schedules, antithetic interpolant samples, couplings of the end states."""

from .alignment import (
    align_to_reference,
    com_free_randn,
    kabsch_align,
    kabsch_rotation,
    random_rotation,
    remove_com,
    rmsd,
)
from .couplings import Coupling, IndependentCoupling, MinibatchOTCoupling
from .interpolant import Interpolant, InterpolantSample
from .schedules import Coefficients, LinearSchedule, Schedule, TrigonometricSchedule

__all__ = [
    "align_to_reference",
    "com_free_randn",
    "kabsch_align",
    "kabsch_rotation",
    "random_rotation",
    "remove_com",
    "rmsd",
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
