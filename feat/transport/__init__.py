"""Transport: processes (SDE, ODE and their reversals), time grids, one integrator, works."""

from .grid import TimeGrid
from .integrator import (
    TransportResult,
    chunk_generator,
    forward_and_reverse,
    n_starts,
    path_work,
    start_labels,
    start_rows,
    transport,
)
from .process import ODEProcess, Process, ReversedField, SDEProcess

__all__ = [
    "ODEProcess",
    "Process",
    "ReversedField",
    "SDEProcess",
    "TimeGrid",
    "TransportResult",
    "chunk_generator",
    "forward_and_reverse",
    "n_starts",
    "path_work",
    "start_labels",
    "start_rows",
    "transport",
]
