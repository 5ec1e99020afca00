"""Sharded estimation for clusters: ``feat estimate RUN --shard K/N`` on N machines (or a job
array), then ``feat merge RUN``. With the run's seed, the merged result is identical to an
unsharded run's: every chunk of trajectories draws its noise from its own seeded stream."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, RunConfig, resolve
from ..estimators import load_works, save_works
from ..specs import build_problem
from ..training.checkpoint import CheckpointError, load_checkpoint
from .build import split_holdout
from .device import describe_device, resolve_device
from .reuse import fingerprint, works_settings
from .stages import (
    estimate_from,
    identity,
    new_trainer,
    trained_fingerprint,
    transport_works,
    write_results,
)

__all__ = ["load_run", "estimate_shard", "merge_shards", "parse_shard"]

_SHARD = re.compile(r"works\.shard-(\d+)-of-(\d+)\.npz$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 0 ≤ K < N."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not int(m[1]) < int(m[2]):
        raise ConfigError(f"--shard must be K/N with 0 <= K < N (e.g. 0/4); got {text!r}.")
    return int(m[1]), int(m[2])


def load_run(run_dir: str | Path) -> tuple[RunConfig, dict]:
    """The resolved config of a run directory and its trained state (from the checkpoint)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"'{run_dir}' is not a run directory: {cfg_path.name} is missing. "
                          "Train first with 'feat run' (or give the run's --out folder).")
    import json

    config = resolve(json.loads(cfg_path.read_text())["config"])
    state = load_checkpoint(run_dir / "checkpoint.pt", identity(config))
    if state is None:
        raise CheckpointError(f"'{run_dir}' has no checkpoint.pt: training has not finished "
                              "there. Run 'feat run ... --out' (or --resume) first.")
    return config, state


def _setup(run_dir: Path, device: str | None):
    config, state = load_run(run_dir)
    dev = resolve_device(device if device is not None else config.device)
    if state["trainer"]["step"] < config.training.steps:
        raise CheckpointError(f"training in '{run_dir}' stopped at step "
                              f"{state['trainer']['step']} of {config.training.steps}; finish "
                              "it with 'feat run ... --resume' before estimating.")
    gen = torch.Generator().manual_seed(config.seed)
    problem = build_problem(config.system, gen)
    train_problem, x_a, x_b = split_holdout(problem, config)
    trainer = new_trainer(problem, train_problem, config, gen, dev)
    trainer.load_state_dict(state["trainer"])
    return config, dev, problem, trainer, x_a, x_b


def _settings(config: RunConfig, state: dict) -> dict:
    """The reuse settings of works made from the checkpoint ``state``."""
    ema = {k: v["averaged"] for k, v in state["trainer"]["ema"].items()}
    return works_settings(config, fingerprint(identity(config), state["trainer"]["step"], ema))


def estimate_shard(run_dir: str | Path, shard: tuple[int, int], *, progress: bool = False,
                   device: str | None = None) -> Path:
    """Transport shard ``(K, N)`` of a trained run and write ``works.shard-K-of-N.npz``.

    ``device`` ("auto", "cpu", "cuda", "cuda:N", "mps") overrides the run's ``device``
    setting; the device used is stored in the shard's metadata.
    """
    run_dir = Path(run_dir)
    config, dev, problem, trainer, x_a, x_b = _setup(run_dir, device)
    tc = config.transport
    n_chunks = -(-max(tc.n_forward, tc.n_reverse) // tc.batch_size)
    if shard[1] > n_chunks:
        raise ConfigError(f"--shard {shard[0]}/{shard[1]}: this run has only {n_chunks} "
                          f"chunk(s) of {tc.batch_size} trajectories per direction; use at most "
                          f"{n_chunks} shards, or a smaller transport.batch_size.")
    t0 = time.perf_counter()
    fwd, rev, process = transport_works(problem, x_a, x_b, trainer.velocity_ema,
                                        trainer.score_ema, config, shard=shard,
                                        progress=progress, device=dev)
    k, n = shard
    work = [r.work if r is not None and len(r.work) else None for r in (fwd, rev)]
    index = [r.index.tolist() if r is not None else [] for r in (fwd, rev)]
    return save_works(run_dir / f"works.shard-{k}-of-{n}.npz", work[0], work[1],
                      process=process, index_f=index[0], index_r=index[1],
                      seconds=time.perf_counter() - t0, device=describe_device(dev),
                      settings=works_settings(config, trained_fingerprint(trainer, config)))


def _gather(run_dir: Path, n_f: int, n_r: int, settings: dict):
    found = {}
    for path in sorted(run_dir.glob("works.shard-*-of-*.npz")):
        m = _SHARD.search(path.name)
        found.setdefault(int(m[2]), {})[int(m[1])] = path
    if len(found) != 1:
        raise ConfigError(f"'{run_dir}' holds shards of {sorted(found) or 'no'} splits; merge "
                          "needs all shards of exactly one N (delete the others).")
    (n,), shards = found.keys(), next(iter(found.values()))
    missing = sorted(set(range(n)) - set(shards))
    if missing:
        raise ConfigError(f"shards {missing} of {n} are missing in '{run_dir}'; run "
                          f"'feat estimate {run_dir} --shard K/{n}' for each.")
    parts = [load_works(shards[k]) for k in range(n)]
    stale = [k for k, p in enumerate(parts) if p.metadata.get("settings", settings) != settings]
    if stale:
        raise ConfigError(f"shards {stale} of {n} in '{run_dir}' were made with other settings "
                          "or another checkpoint (the run was retrained or changed since); "
                          f"re-run them with 'feat estimate {run_dir} --shard K/{n}'.")
    works = [_join(parts, d, total) for d, total in (("f", n_f), ("r", n_r))]
    return works[0], works[1], parts[0].metadata.get("process", "")


def _join(parts, d: str, total: int):
    if total == 0:
        return None
    works = np.concatenate([getattr(p, f"work_{d}") for p in parts
                            if getattr(p, f"work_{d}") is not None])
    index = np.concatenate([np.asarray(p.metadata[f"index_{d}"], dtype=np.int64)
                            for p in parts])
    if sorted(index.tolist()) != list(range(total)):
        raise ConfigError(f"the shards' {'forward' if d == 'f' else 'reverse'} trajectories do "
                          f"not cover 0..{total - 1} exactly once; re-run the shards.")
    return works[np.argsort(index)]


def merge_shards(run_dir: str | Path):
    """Combine all shards into ``works.npz`` and ``results.json``; returns the estimate."""
    run_dir = Path(run_dir)
    config, state = load_run(run_dir)
    tc, settings = config.transport, _settings(config, state)
    work_f, work_r, process = _gather(run_dir, tc.n_forward, tc.n_reverse, settings)
    problem = build_problem(config.system, torch.Generator().manual_seed(config.seed))
    est = estimate_from(config, problem, work_f, work_r)
    tr = state["trainer"]
    training = {"steps": tr["step"], "n_skipped": tr["n_skipped"], "history": tr["history"]}
    write_results(run_dir, config, est, work_f, work_r, process, {"merged_shards": True},
                  training, state["monitor"]["records"], settings=settings,
                  stages={"training": "computed", "transport": "merged shards"})
    return est
