"""Building blocks the stages share: networks, fields, noise projection, processes, grids."""

from __future__ import annotations

import dataclasses

import torch

from ..config import FieldsConfig, RunConfig, TransportConfig
from ..fields import (
    CNNField,
    DenoiserScore,
    EGNNField,
    EnergyFeatures,
    EnergyInformedScore,
    EnergyInformedVelocity,
    FrameField,
    MLPField,
    ScaledScore,
    Tube,
    characteristic_width,
)
from ..interpolants.alignment import remove_com
from ..problem import TwoStateProblem
from ..transport import ODEProcess, Process, SDEProcess, TimeGrid, n_starts

__all__ = ["build_fields", "make_grid", "make_process", "needs_scores", "needs_widths", "network",
           "noise_projection", "split_holdout"]


def network(problem: TwoStateProblem, cfg: FieldsConfig, features=None) -> torch.nn.Module:
    """One network of the kind ``cfg.network`` asks for (mlp, egnn, frame_mlp or cnn);
    ``features`` (mlp only) are extra inputs."""
    if cfg.network == "egnn":
        key = "atom_types" if cfg.atom_types == "name" else "element_types"
        if key not in problem.metadata:
            raise ValueError(f"fields.network 'egnn' needs per-atom types in the problem's "
                             f"metadata['{key}']; this system ({problem.name}) has none. Use "
                             "network = 'mlp'.")
        return EGNNField(problem.metadata[key], cfg.hidden, cfg.depth, cfg.n_frequencies,
                         length_scale=cfg.length_scale)
    if cfg.network == "frame_mlp":
        return _frame_mlp(problem, cfg)
    if cfg.network == "cnn":
        return CNNField(problem.event_shape, cfg.hidden, cfg.depth,
                        n_frequencies=cfg.n_frequencies)
    return MLPField(problem.event_shape, cfg.hidden, cfg.depth, cfg.n_frequencies,
                    features=features, periods=problem.metadata.get("periods"))


def _frame_mlp(problem: TwoStateProblem, cfg: FieldsConfig) -> FrameField:
    atoms = cfg.frame_atoms or problem.metadata.get("frame_atoms")
    if len(problem.event_shape) != 2 or problem.event_shape[1] != 3 or not atoms:
        raise ValueError(f"fields.network 'frame_mlp' needs states of shape (n_atoms, 3) and "
                         f"three frame atoms (fields.frame_atoms or the system's "
                         f"metadata['frame_atoms']); {problem.name} has shape "
                         f"{tuple(problem.event_shape)} and frame atoms {atoms!r}. Set "
                         "fields.frame_atoms = [i, j, k] (three bonded atoms) or use "
                         "network = 'egnn'.")
    inner = MLPField(problem.event_shape, cfg.hidden, cfg.depth, cfg.n_frequencies)
    return FrameField(inner, problem.event_shape[0], atoms, cfg.length_scale)


def build_fields(problem: TwoStateProblem, cfg: FieldsConfig, schedule,
                 seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The velocity and score fields a :class:`FieldsConfig` asks for.

    Weights are initialised from ``seed`` inside ``torch.random.fork_rng``: reproducible, and
    the caller's global RNG state is left as it was.
    """
    ea, eb = problem.energy_a, problem.energy_b
    widths = [characteristic_width(v) for v in problem.scores()] if needs_widths(cfg) else None
    features = (EnergyFeatures(ea, eb, *widths) if cfg.energy_features or cfg.tube_prior
                else None)
    inputs = features if cfg.energy_features else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        b, s = network(problem, cfg, inputs), network(problem, cfg, inputs)
    if cfg.tube_prior:
        b = Tube(b, schedule, *widths, features, "velocity")
        s = Tube(s, schedule, *widths, features, "mean")
    if cfg.informed_velocity:
        b = EnergyInformedVelocity(b, ea, eb, schedule.a, cfg.force_cap or None)
    if cfg.informed_score:
        s = EnergyInformedScore(s, ea, eb, cfg.force_cap or None, cfg.informed_power)
    elif cfg.denoiser_score:
        s = DenoiserScore(s, schedule, *widths)
    elif cfg.scaled_score:
        s = ScaledScore(s, schedule, *widths)
    return b, s


def needs_widths(cfg: FieldsConfig) -> bool:
    """Whether the fields use the end states' widths (read off their scores)."""
    return cfg.energy_features or cfg.tube_prior or cfg.denoiser_score or (cfg.scaled_score
                                                          and not cfg.informed_score)


def noise_projection(problem: TwoStateProblem):
    """``remove_com`` for molecules (metadata ``com_free``), else None."""
    return remove_com if problem.metadata.get("com_free", False) else None


def needs_scores(config: RunConfig) -> bool:
    """Whether training uses the end-state scores at the samples (target score matching, or
    the widths of the scaled score)."""
    return config.training.tsm_weight > 0 or needs_widths(config.fields)


def split_holdout(problem: TwoStateProblem, config: RunConfig) -> tuple:
    """Hold the last ``⌈transport.n_forward / k⌉`` / ``⌈n_reverse / k⌉`` samples out of
    training, for transport starts (``k = transport.trajectories_per_start``). Scores, when
    training needs them, are computed once on all samples.

    Returns ``(training problem, x_a held out, x_b held out)``.
    """
    tc = config.transport
    n_a, n_b = (n_starts(n, tc.trajectories_per_start) for n in (tc.n_forward, tc.n_reverse))
    if needs_scores(config):
        problem.scores()
    for name, n, x in (("n_forward", n_a, problem.x_a), ("n_reverse", n_b, problem.x_b)):
        if n >= x.shape[0]:
            raise ValueError(f"transport.{name} needs {n} held-out start samples, which leaves "
                             f"no training samples: the state has {x.shape[0]} samples. Lower "
                             "it, raise transport.trajectories_per_start or give more samples.")
    keep_a, keep_b = len(problem.x_a) - n_a, len(problem.x_b) - n_b
    cut = lambda v, k: None if v is None else v[:k]  # noqa: E731
    train = dataclasses.replace(problem, x_a=problem.x_a[:keep_a], x_b=problem.x_b[:keep_b],
                                score_a=cut(problem.score_a, keep_a),
                                score_b=cut(problem.score_b, keep_b))
    return train, problem.x_a[keep_a:], problem.x_b[keep_b:]


def make_process(cfg: TransportConfig, b, s, problem: TwoStateProblem) -> Process:
    """The SDE (controlled Crooks) or ODE (escorted Jarzynski) process of ``cfg``."""
    proj = noise_projection(problem)
    if cfg.method == "ode":
        return ODEProcess(b, problem.energy_a, problem.energy_b, cfg.divergence, proj)
    return SDEProcess(b, s, cfg.eps, problem.energy_a, problem.energy_b, proj)


def make_grid(cfg: TransportConfig) -> TimeGrid:
    return getattr(TimeGrid, cfg.grid)(cfg.n_points)
