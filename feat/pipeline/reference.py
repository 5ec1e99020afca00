"""The classical-reference stage: MBAR over a system's ladder of intermediate states.

``feat reference SYSTEM`` builds the system's spec and calls its ``mbar_reference`` with the
run file's ``[reference]`` table; the JSON record holds the result, the ladder, per-window
sampling records, the protocol, the resolved settings and provenance.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..reference.mbar import LadderReference
from ..specs import KINDS, build_spec
from ..storage import write_json
from .stages import provenance

__all__ = ["run_reference"]


def run_reference(config: RunConfig, out: str | Path | None = None) -> LadderReference:
    """Compute the MBAR reference of ``config.system`` and write it to ``out`` (JSON) if given."""
    spec = build_spec(config.system)
    if not hasattr(spec, "mbar_reference"):
        with_ladder = sorted(k for k, cls in KINDS.items() if hasattr(cls, "mbar_reference"))
        raise ConfigError(f"system kind {config.system.get('kind')!r} has no classical (MBAR) "
                          f"reference: its ΔF is exact or given (results.json 'reference'). "
                          f"Kinds with one: {', '.join(with_ladder)}.")
    result = spec.mbar_reference(config.reference)
    if out is not None:
        write_json(out, {"name": config.name, "reference": result.to_dict(),
                         "settings": asdict(config.reference), "spec": asdict(spec),
                         "provenance": provenance(config)})
    return result
