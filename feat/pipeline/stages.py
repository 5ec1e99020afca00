"""The stages of a run: train (with checkpoints and resume), transport, and write results."""

from __future__ import annotations

import dataclasses
import platform
import sys
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
from ..transport import TransportResult, n_starts, start_labels, start_rows, transport
from .build import build_fields, make_grid, make_process, noise_projection
from .device import describe_device
from .monitor import Monitor
from .reuse import fingerprint, finished_checkpoint, say

__all__ = ["train", "transport_works", "gather_works", "write_results", "identity",
           "direction_seed", "trained_fingerprint"]


def identity(config: RunConfig) -> dict:
    """What a checkpoint must match to be resumed or reused: everything that shapes training,
    including how many samples of each state were held out of it for transport starts (a
    checkpoint trained on samples that now start transports is never reused). The system's
    ``reference`` only grades the estimate, so editing it reuses both stages."""
    d, tc = config.to_dict(), config.transport
    d["training"].pop("checkpoint_every")
    d["system"].pop("reference", None)
    held = {s: n_starts(n, tc.trajectories_per_start)
            for s, n in (("a", tc.n_forward), ("b", tc.n_reverse))}
    return {**{k: d[k] for k in ("system", "seed", "fields", "training")}, "held_out": held}


def provenance(config: RunConfig, device: torch.device | None = None) -> dict:
    """Versions, the git revision of the feat source, host, threads, seed, device, command."""
    from .. import __version__

    out = {"feat": __version__, "git_revision": _git_revision(),
           **{name: _version(name) for name in ("torch", "numpy", "scipy", "pymbar", "openmm")},
           "python": platform.python_version(), "platform": platform.platform(),
           "host": platform.node(), "threads": torch.get_num_threads(), "seed": config.seed,
           "command": " ".join(sys.argv)}
    if device is not None:
        out["device"] = describe_device(device)
    return out


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    """``git describe --always --dirty`` of the checkout holding the feat package, if any."""
    import subprocess

    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                              cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def write_config(out: Path, config: RunConfig, device: torch.device | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"config": config.to_dict(),
                                     "provenance": provenance(config, device)})


def new_trainer(problem, train_problem, config: RunConfig, gen,
                device: torch.device | None = None) -> Trainer:
    """A fresh trainer; the fields are initialised from the seed on the CPU, then moved to
    ``device`` (so their initial weights do not depend on it)."""
    schedule = LinearSchedule(config.training.noise_a, config.training.noise_g0)
    b, s = build_fields(problem, config.fields, schedule, config.seed)
    if device is not None:
        b, s = b.to(device), s.to(device)
    interpolant = Interpolant(schedule, noise_projection(problem))
    if config.training.coupling == "perm_kabsch_ot":   # minutes for large clusters: say so
        say(f"aligning {len(train_problem.x_a)} + {len(train_problem.x_b)} samples onto one "
            f"state-b sample (Hungarian relabelling + Kabsch rotation) for the OT coupling")
    return Trainer(train_problem, b, s, config.training, interpolant, gen)


def trained_fingerprint(trainer: Trainer, config: RunConfig) -> str:
    """The :func:`~feat.pipeline.reuse.fingerprint` of a trainer's current fields."""
    ema = {k: e.averaged.state_dict() for k, e in trainer.emas.items()}
    return fingerprint(identity(config), trainer.step, ema)


def _restore(trainer: Trainer, monitor: Monitor, out: Path | None, ident: dict,
             resume: bool, reuse: bool) -> bool:
    """Load the checkpoint asked for (``resume``) or reusable (``reuse``); True when the
    loaded training is finished and reused as it is."""
    state = None
    if resume and out is not None:
        state = load_checkpoint(out / "checkpoint.pt", ident)
    elif reuse and out is not None:
        state, note = finished_checkpoint(out, monitor.config, ident)
        say(note)
    if state is None:
        return False
    trainer.load_state_dict(state["trainer"])
    monitor.load_state_dict(state["monitor"])
    return not resume


def train(problem, train_problem, x_a, x_b, config: RunConfig, gen, out: Path | None,
          progress: bool, resume: bool, *, device: torch.device | None = None,
          reuse: bool = False) -> tuple[Trainer, Monitor, bool]:
    """Build the trainer on ``device``, restore the run directory's checkpoint if asked
    (``resume``) or reusable (``reuse``: finished and matching, then no step is taken), and
    train. Returns the trainer, the monitor and whether a finished checkpoint was reused.

    Data-parallel under ``torchrun``: every rank restores the checkpoint; only rank 0 monitors
    and writes checkpoints, and the ranks meet at a barrier once the last one is written.
    """
    trainer = new_trainer(problem, train_problem, config, gen, device)
    monitor = Monitor(problem, x_a, x_b, config, device)
    ident = identity(config)
    if _restore(trainer, monitor, out, ident, resume, reuse):
        return trainer, monitor, True

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
    return trainer, monitor, False


def direction_seed(seed: int, direction: int) -> int:
    """The transport seed of one direction (0 forward, 1 reverse) of a run with ``seed``."""
    return int(np.random.SeedSequence([int(seed), 7919, direction]).generate_state(1)[0])


def transport_works(problem: TwoStateProblem, x_a, x_b, b, s, config: RunConfig, *,
                    shard: tuple[int, int] | None = None, progress: bool = False,
                    device: torch.device | None = None
                    ) -> tuple[TransportResult | None, TransportResult | None, str]:
    """``transport.n_forward`` works from ``x_a`` and ``n_reverse`` from ``x_b`` (seeded
    chunks; ``trajectories_per_start`` from each row, :func:`~feat.transport.start_rows`), on
    ``device`` (that of the fields ``b`` and ``s``; default: where ``x_a`` and ``x_b`` are).

    ``shard = (k, n)`` runs only the chunks ``c`` with ``c % n == k`` of each direction.
    """
    tc = config.transport
    if device is not None:
        x_a, x_b = x_a.to(device), x_b.to(device)
    process = make_process(tc, b, s, problem)
    grid = make_grid(tc)
    out = []
    for direction, (proc, x0, n, gr, desc) in enumerate(
            ((process, x_a, tc.n_forward, grid, "forward a → b"),
             (process.reversed(), x_b, tc.n_reverse, grid.reversed(), "reverse b → a"))):
        if n == 0:
            out.append(None)
            continue
        x0 = x0[start_rows(n, tc.trajectories_per_start).to(x0.device)]
        n_chunks = -(-len(x0) // tc.batch_size)
        chunks = None if shard is None else range(shard[0], n_chunks, shard[1])
        out.append(transport(proc, x0, gr, seed=direction_seed(config.seed, direction),
                             chunks=chunks, batch_size=tc.batch_size, progress=progress,
                             desc=desc))
    return out[0], out[1], repr(process)


def gather_works(fwd: TransportResult | None, rev: TransportResult | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The forward and reverse works of every rank's shard, in trajectory order, on
    the CPU.

    Under ``torchrun`` rank k runs the seeded chunks ``c % world_size == k`` (see
    :func:`transport_works`), so the gathered works equal an unsharded run's.
    """
    mine = [None if r is None else (r.work.cpu(), r.index.cpu()) for r in (fwd, rev)]
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
                  process: str, timings: dict, training: dict, monitor: list, *,
                  settings: dict | None = None, stages: dict | None = None,
                  accounting: dict | None = None) -> None:
    """``works.npz`` and ``results.json`` of a run directory.

    ``settings`` (:func:`~feat.pipeline.reuse.works_settings`) are stored with the works so
    that a later run can tell whether they can be reused; ``stages`` says which stages were
    computed and which reused; ``accounting`` holds the evaluation counts and peak memory.
    """
    tc = config.transport
    save_works(out / "works.npz", work_f, work_r, process=process, n_points=tc.n_points,
               grid=tc.grid, eps=tc.eps, seed=config.seed, settings=settings)
    record = {"name": config.name, "estimate": est.to_dict(), "timings_s": timings,
              "training": training, "monitor": monitor}
    if stages:
        record["stages"] = stages
    if accounting:
        record["accounting"] = accounting
    write_json(out / "results.json", record)


def training_summary(trainer: Trainer) -> dict:
    return {"steps": trainer.step, "n_skipped": trainer.n_skipped,
            "history": [dataclasses.asdict(r) for r in trainer.history]}


def estimate_from(config: RunConfig, problem: TwoStateProblem, work_f, work_r
                  ) -> FreeEnergyEstimate:
    ec, tc = config.estimate, config.transport
    return estimate(work_f, work_r, reference=problem.reference,
                    reference_exact=problem.reference_exact, n_bootstrap=ec.n_bootstrap,
                    seed=config.seed, nan_policy=ec.nan_policy,
                    **start_labels(tc.trajectories_per_start, work_f, work_r))

