"""Validated configuration objects, read from TOML files only at the edge (CLI, pipeline).

A run file has the sections ``[system]`` (what to compute: ``kind`` plus that kind's keys),
``[fields]``, ``[training]``, ``[transport]`` and ``[estimate]``, a top-level ``seed``, and
optional ``[presets.NAME.SECTION]`` tables that override the sections. Unknown keys are errors
with a did-you-mean suggestion; wrong types name the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .training.trainer import TrainingConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "FieldsConfig",
    "TransportConfig",
    "EstimateConfig",
    "ReferenceConfig",
    "RunConfig",
    "from_mapping",
    "load_run_config",
]


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and the fix."""


@dataclass(frozen=True)
class FieldsConfig:
    """Networks for ``b`` and ``s`` and their parameterisations.

    ``network``: "mlp" (any state; ``hidden`` × ``depth``), "egnn" (molecules: equivariant
    graph network, ``hidden`` × ``depth``, ``length_scale`` nm per network unit, atom types by
    "name" or "element"), "frame_mlp" (molecules: an ``hidden`` × ``depth`` MLP evaluated in the
    frame of three atoms, ``frame_atoms`` or the system's default, inputs divided by
    ``length_scale``; rotation-equivariant like the EGNN at an MLP's cost) or "cnn" (lattices:
    periodic convolutions with ``hidden`` channels).

    ``scaled_score`` divides the score network by the interpolated width ``σ_t`` (learned
    from the end-state scores) so it predicts O(1) numbers; ``informed_*`` add the end-state
    scores (exact at t = 0 and 1, but large in the middle when the states barely overlap);
    ``force_cap`` > 0 caps each particle's end-state score at that norm inside them (so a clash
    in an interpolant's middle cannot throw a transport step away; 0 = no cap);
    ``informed_power`` p ≥ 1 weights the informed score's end scores by ``(1 − t)^p`` and
    ``t^p`` (exact at the ends, the network's in the middle).
    ``denoiser_score`` (in place of ``scaled_score``) makes the score network predict a denoised
    point, ``s = (net − x) / σ_t²``: piecewise constant for mixtures of narrow features.
    ``energy_features`` (mlp only) feeds both networks ``σ_a² (−∇u_a(x))`` and
    ``σ_b² (−∇u_b(x))`` as extra inputs (two energy gradients per field evaluation).
    ``tube_prior`` (with ``denoiser_score``) adds to both networks the exact fields of a Gaussian
    tube between the features of a and b a point comes from and goes to
    (:class:`~feat.fields.scaled.Tube`), so they learn only a correction; it costs the two
    shared feature gradients plus two per network evaluation.
    """

    network: str = "mlp"
    hidden: int = 256
    depth: int = 4
    n_frequencies: int = 8
    length_scale: float = 1.0
    atom_types: str = "name"
    frame_atoms: tuple = ()
    scaled_score: bool = True
    informed_score: bool = False
    informed_velocity: bool = False
    denoiser_score: bool = False
    energy_features: bool = False
    tube_prior: bool = False
    force_cap: float = 0.0
    informed_power: float = 1.0

    def __post_init__(self):
        _check_range(self, "hidden", 1)
        _check_range(self, "depth", 1)
        _check_range(self, "n_frequencies", 1)
        _check_choice(self, "network", ("mlp", "egnn", "frame_mlp", "cnn"))
        _check_choice(self, "atom_types", ("name", "element"))
        if not self.length_scale > 0:
            raise ConfigError(f"fields.length_scale must be > 0; got {self.length_scale}.")
        if not self.force_cap >= 0:
            raise ConfigError(f"fields.force_cap must be >= 0 (0 = no cap); got "
                              f"{self.force_cap}.")
        if not self.informed_power >= 1:
            raise ConfigError(f"fields.informed_power must be >= 1; got {self.informed_power}.")
        if self.informed_power != 1 and not self.informed_score:
            raise ConfigError("fields.informed_power weights the informed score's end scores; "
                              "set informed_score = true (scaled_score = false) or "
                              "informed_power = 1.")
        if self.force_cap and not (self.informed_score or self.informed_velocity):
            raise ConfigError("fields.force_cap caps the end-state scores of the informed "
                              "fields; set informed_score or informed_velocity = true, or "
                              "force_cap = 0.")
        if self.frame_atoms and (len(self.frame_atoms) != 3 or len(set(self.frame_atoms)) != 3
                                 or not all(isinstance(a, int) and a >= 0
                                            for a in self.frame_atoms)):
            raise ConfigError(f"fields.frame_atoms must be three distinct atom indices (e.g. "
                              f"[6, 8, 14]); got {list(self.frame_atoms)!r}.")
        if self.scaled_score and self.informed_score:
            raise ConfigError("fields.scaled_score and fields.informed_score are exclusive "
                              "parameterisations of the score; set one of them to false.")
        if self.denoiser_score and self.informed_score:
            raise ConfigError("fields.denoiser_score and fields.informed_score are exclusive "
                              "parameterisations of the score; set one of them to false.")
        if self.tube_prior and not self.denoiser_score:
            raise ConfigError("fields.tube_prior needs fields.denoiser_score = true (the tube's "
                              "mean is a denoised point); set both, with scaled_score = false.")
        if self.tube_prior and self.informed_velocity:
            raise ConfigError("fields.tube_prior and fields.informed_velocity are exclusive "
                              "parameterisations of the velocity; set one of them to false.")
        if self.energy_features and self.network != "mlp":
            raise ConfigError(f"fields.energy_features needs network = 'mlp'; got "
                              f"'{self.network}'. Set energy_features = false for it.")


@dataclass(frozen=True)
class TransportConfig:
    """How the works are made: SDE (controlled Crooks) or ODE (escorted Jarzynski).

    ``trajectories_per_start`` > 1 starts that many trajectories (independent noise) from each
    held-out sample, so ``⌈n_forward / k⌉`` samples of a (and of b) are held out of training
    instead of ``n_forward``: more trajectories for the same end-state sampling. Their works
    are then correlated, and σ comes from a bootstrap over start samples
    (:func:`feat.estimators.estimate`, ``starts_f``/``starts_r``). Useful for the SDE, whose
    noise makes trajectories from one start differ; pointless for the deterministic ODE.
    """

    method: str = "sde"
    eps: float = 0.01
    n_points: int = 500
    grid: str = "uniform"
    n_forward: int = 2000
    n_reverse: int = 2000
    batch_size: int = 1000
    divergence: str = "exact"
    trajectories_per_start: int = 1

    def __post_init__(self):
        _check_choice(self, "method", ("sde", "ode"))
        _check_choice(self, "grid", ("uniform", "ends_refined"))
        _check_choice(self, "divergence", ("exact", "hutchinson"))
        if self.method == "sde" and not self.eps > 0:
            raise ConfigError(
                f"transport.eps must be > 0 for method 'sde'; got {self.eps}. "
                "Use method = 'ode' for deterministic transport."
            )
        _check_range(self, "n_points", 2)
        _check_range(self, "n_forward", 0)
        _check_range(self, "n_reverse", 0)
        _check_range(self, "batch_size", 1)
        _check_range(self, "trajectories_per_start", 1)
        if self.n_forward + self.n_reverse == 0:
            raise ConfigError(
                "transport.n_forward and transport.n_reverse are both 0; "
                "ask for at least one trajectory."
            )


@dataclass(frozen=True)
class EstimateConfig:
    """Estimator settings: bootstrap resamples and the NaN policy ('raise' or 'drop').

    ``monitor_every`` > 0 estimates ΔF, the bounds and the gap every that many training steps
    from ``monitor_trajectories`` trajectories per direction (EMA fields, a separate random
    stream, so monitoring never changes the final result).
    """

    n_bootstrap: int = 200
    nan_policy: str = "raise"
    monitor_every: int = 0
    monitor_trajectories: int = 200

    def __post_init__(self):
        _check_range(self, "n_bootstrap", 0)
        _check_range(self, "monitor_every", 0)
        _check_range(self, "monitor_trajectories", 1)
        _check_choice(self, "nan_policy", ("raise", "drop"))


@dataclass(frozen=True)
class ReferenceConfig:
    """Classical reference (``feat reference``): MBAR over ``n_windows`` intermediate states.

    ``n_samples`` decorrelated samples per window go into MBAR; ``window_steps`` > 0 sets the
    MD steps per window for molecular systems (0: the system's own production length).
    ``n_bootstrap`` resamples give the bootstrap σ next to MBAR's analytic one.
    """

    n_windows: int = 11
    n_samples: int = 1000
    window_steps: int = 0
    n_bootstrap: int = 200
    seed: int = 1234

    def __post_init__(self):
        _check_range(self, "n_windows", 2)
        _check_range(self, "n_samples", 2)
        _check_range(self, "window_steps", 0)
        _check_range(self, "n_bootstrap", 0)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``system`` is a kind-specific mapping validated by its builder."""

    system: dict = field(default_factory=dict)
    name: str = "run"
    seed: int = 0
    fields: FieldsConfig = field(default_factory=FieldsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    device: str = "auto"

    def __post_init__(self):
        if not isinstance(self.device, str) or not _valid_device(self.device):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got "
                              f"{self.device!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {
    "fields": FieldsConfig,
    "training": TrainingConfig,
    "transport": TransportConfig,
    "estimate": EstimateConfig,
    "reference": ReferenceConfig,
}


def _valid_device(name: str) -> bool:
    if name in ("auto", "cpu", "cuda", "mps"):
        return True
    head, _, index = name.partition(":")
    return head == "cuda" and index.isdigit()


def _check_range(obj, key: str, low: float) -> None:
    value = getattr(obj, key)
    if value < low:
        raise ConfigError(f"{_section(obj)}.{key} must be >= {low}; got {value!r}.")


def _check_choice(obj, key: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, key)
    if value not in choices:
        raise ConfigError(
            f"{_section(obj)}.{key} must be one of {', '.join(map(repr, choices))}; got {value!r}."
        )


def _section(obj) -> str:
    for name, cls in _SECTIONS.items():
        if isinstance(obj, cls):
            return name
    return type(obj).__name__


def unknown_key_error(key: str, allowed: typing.Iterable[str], where: str) -> ConfigError:
    """A ConfigError for an unknown key, with a did-you-mean suggestion."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown key '{key}' in [{where}].{hint} Allowed: {', '.join(allowed)}.")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if type(None) in args:  # an optional key, e.g. float | None
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is tuple and isinstance(value, list):  # a TOML array
        return tuple(value)
    ok = isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))
    if not ok:
        example = {int: "10", float: "0.01", bool: "true", str: '"text"',
                   tuple: "[6, 8, 14]"}.get(tp, "")
        fix = f" Write it as a TOML {tp.__name__}, e.g. {example}." if example else ""
        raise ConfigError(
            f"{where} must be of type {'array' if tp is tuple else tp.__name__}; got "
            f"{value!r} ({type(value).__name__})."
            + fix
        )
    return value


def from_mapping(cls, data: dict, where: str):
    """Build dataclass ``cls`` from a mapping, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table; got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise unknown_key_error(key, names, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve(data: dict, preset: str | None = None, overrides: dict | None = None) -> RunConfig:
    """Apply a preset and overrides to a parsed run file and validate every section."""
    data = dict(data)
    presets = data.pop("presets", {})
    if preset is not None:
        if preset not in presets:
            raise unknown_key_error(preset, presets or ["(none defined)"], "presets")
        data = _merge(data, presets[preset])
    data = _merge(data, overrides or {})
    top = {"system", "name", "seed", "device", "description", *_SECTIONS}
    for key in data:
        if key not in top:
            raise unknown_key_error(key, top, "top level")
    if "system" not in data or "kind" not in data["system"]:
        raise ConfigError("the run file needs a [system] table with a 'kind' key.")
    sections = {k: from_mapping(cls, data.get(k, {}), k) for k, cls in _SECTIONS.items()}
    return RunConfig(
        system=dict(data["system"]),
        name=str(data.get("name", "run")),
        seed=_coerce(data.get("seed", 0), int, "seed"),
        device=_coerce(data.get("device", "auto"), str, "device"),
        **sections,
    )


def load_run_config(
    path: str | Path, preset: str | None = None, overrides: dict | None = None
) -> RunConfig:
    """Read a TOML run file (or a folder holding ``system.toml``) and resolve it."""
    path = Path(path)
    if path.is_dir():
        path = path / "system.toml"
    if not path.is_file():
        raise ConfigError(
            f"no run file at '{path}'. Give a system folder (with system.toml) or "
            "a .toml file, e.g. systems/gmm40."
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"'{path}' is not valid TOML: {err}") from None
    return resolve(data, preset, overrides)
