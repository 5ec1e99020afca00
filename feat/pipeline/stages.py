"""The stages of a run: train (with checkpoints and resume), transport, and write results."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..estimators import FreeEnergyEstimate, estimate, save_works
from ..interpolants import Interpolant, LinearSchedule
from ..problem import TwoStateProblem
from ..storage import write_json
from ..training import Trainer, distributed
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..transport import TransportResult, transport
from .build import build_fields, make_grid, make_process, noise_projection
from .monitor import Monitor

__all__ = ["train", "transport_works", "gather_works", "write_results", "identity",
           "direction_seed"]


def identity(config: RunConfig) -> dict:
    """What a checkpoint must match to be resumed or reused: everything that shapes training."""
    d = config.to_dict()
    d["training"].pop("checkpoint_every")
    return {k: d[k] for k in ("system", "seed", "fields", "training")}


def provenance(config: RunConfig) -> dict:
    from .. import __version__

    return {"feat": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "host": platform.node(),
            "threads": torch.get_num_threads(), "seed": config.seed}


def write_config(out: Path, config: RunConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"config": config.to_dict(),
                                     "provenance": provenance(config)})


def new_trainer(problem, train_problem, config: RunConfig, gen) -> Trainer:
    schedule = LinearSchedule()
    b, s = build_fields(problem, config.fields, schedule, config.seed)
    interpolant = Interpolant(schedule, noise_projection(problem))
    return Trainer(train_problem, b, s, config.training, interpolant, gen)


def train(problem, train_problem, x_a, x_b, config: RunConfig, gen, out: Path | None,
          progress: bool, resume: bool) -> tuple[Trainer, Monitor]:
    """Build the trainer, restore the run directory's checkpoint if asked, and train.

    Data-parallel under ``torchrun``: every rank restores the checkpoint; only rank 0 monitors
    and writes checkpoints, and the ranks meet at a barrier once the last one is written.
    """
    trainer = new_trainer(problem, train_problem, config, gen)
    monitor = Monitor(problem, x_a, x_b, config)
    ident = identity(config)
    if resume and out is not None:
        state = load_checkpoint(out / "checkpoint.pt", ident)
        if state is not None:
            trainer.load_state_dict(state["trainer"])
            monitor.load_state_dict(state["monitor"])

    def save(tr: Trainer) -> None:
        save_checkpoint(out / "checkpoint.pt", {"trainer": tr.state_dict(),
                                               "monitor": monitor.state_dict()}, ident)

    main = distributed.is_main()
    callbacks = [(config.estimate.monitor_every, monitor)] if main else []
    if out is not None and main:
        callbacks.append((config.training.checkpoint_every, save))
    trainer.train(progress=progress and main, callbacks=callbacks)
    if out is not None and main:
        save(trainer)
    distributed.barrier()
    return trainer, monitor


def direction_seed(seed: int, direction: int) -> int:
    """The transport seed of one direction (0 forward, 1 reverse) of a run with ``seed``."""
    return int(np.random.SeedSequence([int(seed), 7919, direction]).generate_state(1)[0])


def transport_works(problem: TwoStateProblem, x_a, x_b, b, s, config: RunConfig, *,
                    shard: tuple[int, int] | None = None, progress: bool = False
                    ) -> tuple[TransportResult | None, TransportResult | None, str]:
    """Forward works from ``x_a`` and reverse works from ``x_b`` (seeded chunks).

    ``shard = (k, n)`` runs only the chunks ``c`` with ``c % n == k`` of each direction.
    """
    tc = config.transport
    process = make_process(tc, b, s, problem)
    grid = make_grid(tc)
    out = []
    for direction, (proc, x0, gr, desc) in enumerate(
            ((process, x_a, grid, "forward a → b"),
             (process.reversed(), x_b, grid.reversed(), "reverse b → a"))):
        if len(x0) == 0:
            out.append(None)
            continue
        n_chunks = -(-len(x0) // tc.batch_size)
        chunks = None if shard is None else range(shard[0], n_chunks, shard[1])
        out.append(transport(proc, x0, gr, seed=direction_seed(config.seed, direction),
                             chunks=chunks, batch_size=tc.batch_size, progress=progress,
                             desc=desc))
    return out[0], out[1], repr(process)


def gather_works(fwd: TransportResult | None, rev: TransportResult | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The forward and reverse works of every rank's shard, in trajectory order.

    Under ``torchrun`` rank k runs the seeded chunks ``c % world_size == k`` (see
    :func:`transport_works`), so the gathered works equal an unsharded run's.
    """
    mine = [None if r is None else (r.work, r.index) for r in (fwd, rev)]
    parts = distributed.all_gather_object(mine)
    out = []
    for d, own in enumerate(mine):
        if own is None:
            out.append(None)
            continue
        index = torch.cat([p[d][1] for p in parts])
        out.append(torch.cat([p[d][0] for p in parts])[torch.argsort(index)])
    return out[0], out[1]


def write_results(out: Path, config: RunConfig, est: FreeEnergyEstimate, work_f, work_r,
                  process: str, timings: dict, training: dict, monitor: list) -> None:
    """``works.npz`` and ``results.json`` of a run directory."""
    tc = config.transport
    save_works(out / "works.npz", work_f, work_r, process=process, n_points=tc.n_points,
               grid=tc.grid, eps=tc.eps, seed=config.seed)
    write_json(out / "results.json", {"name": config.name, "estimate": est.to_dict(),
                                      "timings_s": timings, "training": training,
                                      "monitor": monitor})


def training_summary(trainer: Trainer) -> dict:
    return {"steps": trainer.step, "n_skipped": trainer.n_skipped,
            "history": [dataclasses.asdict(r) for r in trainer.history]}


def estimate_from(config: RunConfig, problem: TwoStateProblem, work_f, work_r
                  ) -> FreeEnergyEstimate:
    ec = config.estimate
    return estimate(work_f, work_r, reference=problem.reference, n_bootstrap=ec.n_bootstrap,
                    seed=config.seed, nan_policy=ec.nan_policy)
