"""System specifications: the ``[system]`` table of a run file → a :class:`TwoStateProblem`.

Each kind is a frozen dataclass whose fields are the table's keys and whose
``build(generator)`` returns the problem; add a kind by listing it in ``KINDS``.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import ConfigError, from_mapping
from ..problem import TwoStateProblem
from .analytic import GaussianSpec, GMMSpec
from .lattice import FreeFieldPairSpec, Phi4UmbrellaSpec
from .lj import LJSpec
from .molecules import ALDPBasinSpec, ALDPSolvationSpec

__all__ = ["GaussianSpec", "GMMSpec", "KINDS", "build_problem", "build_spec"]

KINDS = {
    "gaussian": GaussianSpec,
    "gmm": GMMSpec,
    "phi4_umbrella": Phi4UmbrellaSpec,
    "free_field_pair": FreeFieldPairSpec,
    "aldp_s": ALDPSolvationSpec,
    "aldp_t": ALDPBasinSpec,
    "lj": LJSpec,
}


def build_problem(system: dict, generator: torch.Generator, *,
                  progress: bool = True) -> TwoStateProblem:
    """Validate a ``[system]`` table and build its problem (samples from ``generator``).

    ``progress=False`` turns off the sampler's progress bar of kinds that have one (a
    ``progress`` key the table leaves unset), as ``--no-progress`` asks.
    """
    spec = build_spec(system)
    if not progress and "progress" not in system and hasattr(spec, "progress"):
        spec = dataclasses.replace(spec, progress=False)
    return spec.build(generator)


def build_spec(system: dict):
    """Validate a ``[system]`` table into its kind's frozen spec dataclass."""
    system = dict(system)
    kind = system.pop("kind", None)
    system.pop("description", None)
    if kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"system.kind {kind!r} is not a known kind.{hint} "
            f"Known kinds: {', '.join(sorted(KINDS))}."
        )
    return from_mapping(KINDS[kind], system, "system")
