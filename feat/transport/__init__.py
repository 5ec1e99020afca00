"""Transport: processes (SDE, ODE and their reversals), time grids, one integrator, works."""

from .grid import TimeGrid
from .integrator import (
    TransportResult,
    chunk_generator,
    forward_and_reverse,
    path_work,
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
    "path_work",
    "transport",
]
