"""The one place that knows every stage: problem → fields → training → transport → estimate.

``run(config, out_dir)`` writes a run directory:

    config.json          the fully resolved configuration and provenance
    checkpoint.pt        trainer state (weights, EMA, optimisers, RNG states, step, history),
                         written atomically every training.checkpoint_every steps;
    checkpoint.prev.pt   the one before it (the fallback if the newest is unreadable)
    works.npz            forward and reverse works, float64, with the transport settings
    results.json         ΔF, σ, every estimator, bounds, gap, ESS, non-finite counts, timings,
                         the training history and the in-training estimates
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import RunConfig
from .estimators import FreeEnergyEstimate, estimate, save_works
from .fields import (
    CNNField,
    EGNNField,
    EnergyInformedScore,
    EnergyInformedVelocity,
    MLPField,
    ScaledScore,
    characteristic_width,
)
from .interpolants import Interpolant, LinearSchedule
from .interpolants.alignment import remove_com
from .problem import TwoStateProblem
from .specs import build_problem
from .storage import write_json
from .training import Trainer
from .training.checkpoint import load_checkpoint, save_checkpoint
from .transport import ODEProcess, SDEProcess, TimeGrid, transport

__all__ = ["RunResult", "build_fields", "run", "run_problem", "split_holdout"]


@dataclass(frozen=True)
class RunResult:
    """The estimate of a run, its configuration, its directory and stage timings (s)."""

    estimate: FreeEnergyEstimate
    config: RunConfig
    out_dir: Path | None
    timings: dict = field(default_factory=dict)
    n_skipped_steps: int = 0
    monitor: list = field(default_factory=list)


def build_fields(
    problem: TwoStateProblem, cfg, schedule, seed: int = 0
) -> tuple[torch.nn.Module, ...]:
    """The velocity and score networks a :class:`FieldsConfig` asks for.

    Weights are initialised from ``seed`` inside ``torch.random.fork_rng``: reproducible, and
    the caller's global RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = [
            MLPField(problem.event_shape, cfg.hidden, cfg.depth, cfg.n_frequencies)
            for _ in range(2)
        ]
    ea, eb = problem.energy_a, problem.energy_b
    b = EnergyInformedVelocity(nets[0], ea, eb, schedule.a) if cfg.informed_velocity else nets[0]
    s = nets[1]
    if cfg.informed_score:
        s = EnergyInformedScore(s, ea, eb)
    elif cfg.scaled_score:
        s_a, s_b = problem.scores()
        s = ScaledScore(s, schedule, characteristic_width(s_a), characteristic_width(s_b))
    return b, s


def _network(problem: TwoStateProblem, cfg) -> torch.nn.Module:
    if cfg.network == "egnn":
        key = "atom_types" if cfg.atom_types == "name" else "element_types"
        if key not in problem.metadata:
            raise ValueError(f"fields.network 'egnn' needs per-atom types in the problem's "
                             f"metadata['{key}']; this system ({problem.name}) has none.")
        return EGNNField(problem.metadata[key], cfg.hidden, cfg.depth, cfg.n_frequencies,
                         length_scale=cfg.length_scale)
    if cfg.network == "cnn":
        return CNNField(problem.event_shape, cfg.hidden, cfg.depth, n_frequencies=cfg.n_frequencies)
    return MLPField(problem.event_shape, cfg.hidden, cfg.depth, cfg.n_frequencies)


def noise_projection(problem: TwoStateProblem):
    """``remove_com`` for molecules (metadata ``com_free``), else None."""
    return remove_com if problem.metadata.get("com_free", False) else None


def split_holdout(problem: TwoStateProblem, n_a: int, n_b: int) -> tuple:
    """Hold the last ``n_a`` / ``n_b`` samples out of training, for transport starts."""
    for name, n, x in (("n_forward", n_a, problem.x_a), ("n_reverse", n_b, problem.x_b)):
        if n >= x.shape[0]:
            raise ValueError(
                f"transport.{name} = {n} leaves no training samples: the state has "
                f"{x.shape[0]} samples. Lower it or give more samples."
            )
    keep_a, keep_b = len(problem.x_a) - n_a, len(problem.x_b) - n_b
    cut = lambda v, k: None if v is None else v[:k]  # noqa: E731
    train = TwoStateProblem(problem.energy_a, problem.energy_b, problem.x_a[:keep_a],
                            problem.x_b[:keep_b], cut(problem.score_a, keep_a),
                            cut(problem.score_b, keep_b), problem.reference, problem.name,
                            problem.metadata)
    return train, problem.x_a[keep_a:], problem.x_b[keep_b:]


def _process(cfg, b, s, problem):
    proj = noise_projection(problem)
    if cfg.method == "ode":
        return ODEProcess(b, problem.energy_a, problem.energy_b, cfg.divergence, proj)
    return SDEProcess(b, s, cfg.eps, problem.energy_a, problem.energy_b, proj)


def _grid(cfg) -> TimeGrid:
    return getattr(TimeGrid, cfg.grid)(cfg.n_points)


def _provenance(config: RunConfig) -> dict:
    from . import __version__

    return {
        "feat": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "threads": torch.get_num_threads(),
        "seed": config.seed,
    }


def run(config: RunConfig, out_dir: str | Path | None = None, *, progress: bool = True,
        resume: bool = False) -> RunResult:
    """Build the problem of ``config.system`` and run every stage (see :func:`run_problem`)."""
    gen = torch.Generator().manual_seed(config.seed)
    t0 = time.perf_counter()
    problem = build_problem(config.system, gen)
    result = run_problem(problem, config, out_dir, progress=progress, generator=gen,
                         resume=resume)
    result.timings["problem"] = time.perf_counter() - t0 - sum(result.timings.values())
    return result


def run_problem(problem: TwoStateProblem, config: RunConfig | None = None,
                out_dir: str | Path | None = None, *, progress: bool = True,
                generator: torch.Generator | None = None, resume: bool = False) -> RunResult:
    """Train, transport and estimate on ``problem``; write the run directory when given.

    ``config`` defaults to ``RunConfig()``; its ``system`` table is not used here. The last
    ``transport.n_forward`` / ``n_reverse`` samples of each state are held out of training
    and start the transports. With ``resume``, training continues from the run directory's
    checkpoint, and the result equals that of an uninterrupted run with the same seed.
    """
    config = config if config is not None else RunConfig()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {"config": config.to_dict(),
                                         "provenance": _provenance(config)})
    gen = generator if generator is not None else torch.Generator().manual_seed(config.seed)
    tc = config.transport
    train_problem, x_a, x_b = split_holdout(problem, tc.n_forward, tc.n_reverse)
    t0 = time.perf_counter()
    trainer, monitor = _train(problem, train_problem, x_a, x_b, config, gen, out, progress,
                              resume)
    timings = {"training": time.perf_counter() - t0}
    process = _process(tc, trainer.velocity_ema, trainer.score_ema, problem)
    t0 = time.perf_counter()
    grid, kw = _grid(tc), dict(generator=gen, batch_size=tc.batch_size, progress=progress)
    work_f = transport(process, x_a, grid, desc="forward a → b", **kw).work \
        if tc.n_forward else None
    work_r = transport(process.reversed(), x_b, grid.reversed(), desc="reverse b → a",
                       **kw).work if tc.n_reverse else None
    timings["transport"] = time.perf_counter() - t0
    ec = config.estimate
    est = estimate(work_f, work_r, reference=problem.reference, n_bootstrap=ec.n_bootstrap,
                   seed=config.seed, nan_policy=ec.nan_policy)
    if out is not None:
        save_works(out / "works.npz", work_f, work_r, process=repr(process),
                   n_points=tc.n_points, grid=tc.grid, eps=tc.eps, seed=config.seed)
        write_json(out / "results.json", {
            "name": config.name, "estimate": est.to_dict(), "timings_s": timings,
            "training": {"steps": trainer.step, "n_skipped": trainer.n_skipped,
                         "history": [dataclasses.asdict(r) for r in trainer.history]},
            "monitor": monitor.records})
    return RunResult(est, config, out, timings, trainer.n_skipped, monitor.records)


def _train(problem, train_problem, x_a, x_b, config: RunConfig, gen, out: Path | None,
           progress: bool, resume: bool) -> tuple[Trainer, Monitor]:
    """Build the fields and the trainer, restore a checkpoint if asked, and train."""
    schedule = LinearSchedule()
    b, s = build_fields(problem, config.fields, schedule, config.seed)
    interpolant = Interpolant(schedule, noise_projection(problem))
    trainer = Trainer(train_problem, b, s, config.training, interpolant, gen)
    monitor = Monitor(problem, x_a, x_b, config)
    identity = _identity(config)
    if resume and out is not None:
        state = load_checkpoint(out / "checkpoint.pt", identity)
        if state is not None:
            trainer.load_state_dict(state["trainer"])
            monitor.load_state_dict(state["monitor"])

    def save(tr: Trainer) -> None:
        save_checkpoint(out / "checkpoint.pt", {"trainer": tr.state_dict(),
                                               "monitor": monitor.state_dict()}, identity)

    callbacks = [(config.estimate.monitor_every, monitor)]
    if out is not None:
        callbacks.append((config.training.checkpoint_every, save))
    trainer.train(progress=progress, callbacks=callbacks)
    if out is not None:
        save(trainer)
    return trainer, monitor


def _identity(config: RunConfig) -> dict:
    """What a checkpoint must match to be resumed: everything that shapes training."""
    d = config.to_dict()
    d["training"].pop("checkpoint_every")
    return {k: d[k] for k in ("system", "seed", "fields", "training")}


class Monitor:
    """A training callback: a quick estimate (ΔF, σ, bounds, gap, loss) every call.

    Uses its own random stream, so monitoring never changes the final result.
    """

    def __init__(self, problem, x_a, x_b, config: RunConfig):
        self.problem, self.config = problem, config
        n = config.estimate.monitor_trajectories
        self.x_a, self.x_b = x_a[:n], x_b[:n]
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.records: list[dict] = []

    def __call__(self, trainer: Trainer) -> None:
        tc = self.config.transport
        process = _process(tc, trainer.velocity_ema, trainer.score_ema, self.problem)
        grid, kw = _grid(tc), dict(generator=self.generator, batch_size=tc.batch_size)
        w_f = transport(process, self.x_a, grid, **kw).work if len(self.x_a) else None
        w_r = transport(process.reversed(), self.x_b, grid.reversed(), **kw).work \
            if len(self.x_b) else None
        est = estimate(w_f, w_r, n_bootstrap=0, nan_policy="drop")
        self.records.append({"step": trainer.step, "delta_f": est.delta_f, "sigma": est.sigma,
                             "lower": est.bounds.lower, "upper": est.bounds.upper,
                             "gap": est.bounds.gap,
                             "loss": trainer.history[-1].losses if trainer.history else None})

    def state_dict(self) -> dict:
        return {"records": list(self.records), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        self.generator.set_state(state["generator"])
