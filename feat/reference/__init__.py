"""Classical reference free energies (MBAR over intermediate states) to check FEAT against."""

from .mbar import (
    LadderReference,
    MBARResult,
    mbar_delta_f,
    mbar_from_matrix,
    reduced_potential_matrix,
    umbrella_windows,
    window_centers,
)

__all__ = ["LadderReference", "MBARResult", "mbar_delta_f", "mbar_from_matrix",
           "reduced_potential_matrix",
           "umbrella_windows", "window_centers"]
