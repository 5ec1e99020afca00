"""Interpolants: schedules, antithetic interpolant samples, couplings of the end states."""

from .alignment import (
    align_to_reference,
    com_free_randn,
    hungarian_permutation,
    kabsch_align,
    kabsch_rotation,
    perm_kabsch,
    perm_kabsch_align,
    random_rotation,
    remove_com,
    rmsd,
)
from .couplings import Coupling, IndependentCoupling, MinibatchOTCoupling, PermKabschOTCoupling
from .interpolant import Interpolant, InterpolantSample
from .schedules import Coefficients, LinearSchedule, Schedule, TrigonometricSchedule

__all__ = [
    "align_to_reference",
    "com_free_randn",
    "hungarian_permutation",
    "kabsch_align",
    "kabsch_rotation",
    "perm_kabsch",
    "perm_kabsch_align",
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
    "PermKabschOTCoupling",
    "Schedule",
    "TrigonometricSchedule",
]
