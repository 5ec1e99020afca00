"""The one place that knows every stage: problem → fields → training → transport → estimate.

A run directory holds:

    config.json                 the fully resolved configuration and provenance
    checkpoint.pt               trainer state (weights, EMA, optimisers, RNG states, step,
                                history), written atomically every training.checkpoint_every
    checkpoint.prev.pt          the one before it (the fallback if the newest is unreadable)
    works.npz                   forward and reverse works, float64, with the transport settings
                                (and the checkpoint fingerprint they were made with)
    works.shard-K-of-N.npz      one shard's works (``feat estimate --shard K/N``)
    results.json                ΔF, σ, every estimator, bounds, gap, ESS, non-finite counts,
                                timings, the training history and the in-training estimates

``run`` into a directory that already holds finished stages reuses them when they match the
settings (a finished matching checkpoint skips training; matching works skip the transports)
and reruns, with a note on stderr, whatever does not; ``force=True`` reruns everything.
(``run_problem`` on a problem built elsewhere reuses nothing unless asked: ``reuse=True``.) See
:mod:`feat.pipeline.reuse`. ``config.device`` (see :mod:`feat.pipeline.device`) places the
fields, the training minibatches and the transports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..accounting import Counter, counted_problem, peak_memory
from ..config import RunConfig
from ..estimators import FreeEnergyEstimate
from ..problem import TwoStateProblem
from ..specs import build_problem
from ..training import distributed
from .build import build_fields, make_grid, make_process, noise_projection, split_holdout
from .device import describe_device, resolve_device
from .monitor import Monitor
from .reuse import reusable_works, say, works_settings
from .shards import estimate_shard, load_run, merge_shards
from .stages import (
    estimate_from,
    gather_works,
    train,
    trained_fingerprint,
    training_summary,
    transport_works,
    write_config,
    write_results,
)

__all__ = ["Monitor", "RunResult", "build_fields", "describe_device", "estimate_shard",
           "load_run", "make_grid", "make_process", "merge_shards", "noise_projection",
           "resolve_device", "run", "run_problem", "split_holdout", "train_run"]


@dataclass(frozen=True)
class RunResult:
    """The estimate of a run, its configuration, its directory, stage timings (s), the count
    of skipped (non-finite) training steps, the in-training estimates, and which stages were
    computed or reused (``stages``, e.g. ``{"training": "reused", "transport": "computed"}``)."""

    estimate: FreeEnergyEstimate
    config: RunConfig
    out_dir: Path | None
    timings: dict = field(default_factory=dict)
    n_skipped_steps: int = 0
    monitor: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)


def run(config: RunConfig, out_dir: str | Path | None = None, *, progress: bool = True,
        resume: bool = False, force: bool = False) -> RunResult | None:
    """Build the problem of ``config.system`` and run every stage (see :func:`run_problem`).

    Finished stages already in ``out_dir`` are reused when they match the settings (see
    :mod:`feat.pipeline.reuse`); ``force=True`` reruns every stage.
    """
    resolve_device(config.device)  # fail before building the problem
    gen = torch.Generator().manual_seed(config.seed)
    t0 = time.perf_counter()
    problem = build_problem(config.system, gen, progress=progress)
    result = run_problem(problem, config, out_dir, progress=progress, generator=gen,
                         resume=resume, reuse=not force)
    if result is None:  # a data-parallel rank other than 0
        return None
    result.timings["problem"] = time.perf_counter() - t0 - sum(result.timings.values())
    return result


def train_run(config: RunConfig, out_dir: str | Path, *, progress: bool = True,
              resume: bool = False, force: bool = False) -> int:
    """Only train (and checkpoint) into ``out_dir``; returns the step reached.

    A finished checkpoint with the same settings is kept as it is unless ``force``. Then
    ``feat estimate OUT [--shard K/N]`` (and ``feat merge``) finish the run.
    """
    out = Path(out_dir)
    device = resolve_device(config.device)
    distributed.init(device)
    if distributed.is_main():
        write_config(out, config, device)
    gen = torch.Generator().manual_seed(config.seed)
    problem = build_problem(config.system, gen, progress=progress)
    train_problem, x_a, x_b = split_holdout(problem, config)
    trainer, _, _ = train(problem, train_problem, x_a, x_b, config, gen, out, progress,
                          resume, device=device, reuse=not (force or resume))
    return trainer.step


def _works(problem, x_a, x_b, trainer, config: RunConfig, out: Path | None, reuse: bool,
           progress: bool, device: torch.device):
    """The works of the run: reused from ``out/works.npz`` when they match, else transported
    (sharded over the ``torchrun`` processes). Returns ``(work_f, work_r, process, settings,
    reused)``."""
    settings = works_settings(config, trained_fingerprint(trainer, config))
    saved, note = reusable_works(out, settings) if reuse and out is not None else (None, None)
    say(note)
    if saved is not None:
        return saved.work_f, saved.work_r, saved.metadata.get("process", ""), settings, True
    world = distributed.world_size()
    shard = (distributed.rank(), world) if world > 1 else None
    fwd, rev, process = transport_works(problem, x_a, x_b, trainer.velocity_ema,
                                        trainer.score_ema, config, shard=shard,
                                        progress=progress and distributed.is_main(),
                                        device=device)
    work_f, work_r = gather_works(fwd, rev)
    return work_f, work_r, process, settings, False


def _accounting(counter: Counter) -> dict:
    """Evaluations per stage (configurations through u, −∇u and the networks; see
    :mod:`feat.accounting`) and the process's peak memory, for ``results.json``."""
    return {**counter.to_dict(), "peak_memory": peak_memory()}


def run_problem(problem: TwoStateProblem, config: RunConfig | None = None,
                out_dir: str | Path | None = None, *, progress: bool = True,
                generator: torch.Generator | None = None, resume: bool = False,
                reuse: bool = False) -> RunResult | None:
    """Train, transport and estimate on ``problem``; write the run directory when given.

    ``config`` defaults to ``RunConfig()``; its ``system`` table is not used here. The last
    ``transport.n_forward`` / ``n_reverse`` samples of each state are held out of training
    and start the transports. With ``resume``, training continues from the run directory's
    checkpoint, and the result equals that of an uninterrupted run with the same seed.
    With ``reuse``, finished stages already in the run directory are reused when they match
    the settings (see :mod:`feat.pipeline.reuse`); the estimate is always recomputed. Off by
    default here: the settings identify a problem only when it was built from
    ``config.system`` (as :func:`run` does), not a problem passed in.
    Fields, minibatches and transports live on ``config.device``.

    Under ``torchrun`` training is data-parallel over the processes (the weights equal a single
    process's up to round-off), the transports are sharded over the processes by seeded
    chunks (the works equal an unsharded run's), and rank 0 alone estimates and writes files;
    the other ranks return None.
    """
    config = config if config is not None else RunConfig()
    out = Path(out_dir) if out_dir is not None else None
    device = resolve_device(config.device)
    distributed.init(device)
    if out is not None and distributed.is_main():
        write_config(out, config, device)
    gen = generator if generator is not None else torch.Generator().manual_seed(config.seed)
    counter = Counter()
    cost = problem.metadata.get("sampling_cost")
    if cost:  # what making the end-state samples took (also when they came from a cache)
        counter.add(gradient=cost["gradient_evals"], sampling=cost["sampling_steps"],
                    phase="end-state sampling")
    problem = counted_problem(problem, counter)
    with counter.phase("end-state scores"):
        train_problem, x_a, x_b = split_holdout(problem, config)
    reuse = reuse and out is not None
    with counter.networks():
        with counter.phase("training"):
            trainer, monitor, trained_before = train(problem, train_problem, x_a, x_b, config,
                                                     gen, out, progress, resume, device=device,
                                                     reuse=reuse and not resume)
        with counter.phase("transport"):
            work_f, work_r, process, settings, reused = _works(problem, x_a, x_b, trainer,
                                                               config, out, reuse, progress,
                                                               device)
    timings = {k: counter.seconds[k] for k in ("training", "transport")}
    if not distributed.is_main():
        return None
    stages = {"training": "reused" if trained_before else "computed",
              "transport": "reused" if reused else "computed"}
    est = estimate_from(config, problem, work_f, work_r)
    if out is not None:
        write_results(out, config, est, work_f, work_r, process, timings,
                      training_summary(trainer), monitor.records, settings=settings,
                      stages=stages, accounting=_accounting(counter))
    return RunResult(est, config, out, timings, trainer.n_skipped, monitor.records, stages)
