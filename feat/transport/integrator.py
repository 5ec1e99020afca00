"""One integrator for every process and direction: transport samples and accumulate works.

``W = u_end(X_M) − u_start(X_0) + Σ_i log_ratio_i`` in float64 (METHOD §4). The reverse
direction is this same code on ``process.reversed()`` with ``grid.reversed()``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..energies.base import check_batch
from .grid import TimeGrid
from .process import Process

__all__ = ["TransportResult", "chunk_generator", "forward_and_reverse", "n_starts", "path_work",
           "start_labels", "start_rows", "transport"]


def n_starts(n: int, per_start: int = 1) -> int:
    """Start samples needed for ``n`` trajectories, ``per_start`` from each: ``⌈n / per_start⌉``."""
    if isinstance(per_start, bool) or int(per_start) != per_start or per_start < 1:
        raise ValueError(f"trajectories per start sample must be an int >= 1; got {per_start!r}.")
    return -(-int(n) // int(per_start))


def start_rows(n: int, per_start: int = 1) -> Tensor:
    """Which start sample each of ``n`` trajectories begins from, ``(n,)``: trajectory ``i``
    from row ``i mod ⌈n / per_start⌉``, so every start sample begins ``per_start`` of them (the
    last ones one fewer when ``per_start`` does not divide ``n``); ``arange(n)`` for 1."""
    return torch.arange(int(n)) % max(n_starts(n, per_start), 1)


def start_labels(per_start: int, work_f, work_r) -> dict:
    """``starts_f`` / ``starts_r`` (:func:`start_rows` of each direction's works) for
    :func:`feat.estimators.estimate` when trajectories share start samples (``per_start`` >
    1); empty for independent trajectories."""
    if per_start == 1:
        return {}
    return {f"starts_{d}": None if w is None else start_rows(len(w), per_start).numpy()
            for d, w in (("f", work_f), ("r", work_r))}


@dataclass(frozen=True)
class TransportResult:
    """Works and end points of a batch of trajectories.

    Attributes
    ----------
    work : (n,) float64, in kT.
    x_start, x_end : (n, *event_shape) float64.
    path : (n, M + 1, *event_shape) float64 when stored, else None.
    process : a short description (e.g. ``SDEProcess(eps=0.01)``).
    n_steps : M. seconds : wall time.
    index : (n,) rows of the input ``x0`` these trajectories started from.
    """

    work: Tensor
    x_start: Tensor
    x_end: Tensor
    path: Tensor | None
    process: str
    n_steps: int
    seconds: float
    index: Tensor | None = None

    @property
    def n_nonfinite(self) -> int:
        return int((~torch.isfinite(self.work)).sum())


def _run_chunk(process: Process, x: Tensor, times: list[float], generator, store_path: bool,
               bar=None):
    work = -process.energy_start(x).to(torch.float64)
    path = [x] if store_path else None
    state = process.init_state(times[0], x, generator)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x_next = process.propose(t, t_next, x, state, generator)
        dw, state = process.log_ratio(t, t_next, x, x_next, state, generator)
        work = work + dw
        x = x_next
        if store_path:
            path.append(x)
        if bar is not None:
            bar.update(1)
    work = work + process.energy_end(x).to(torch.float64)
    return work, x, (torch.stack(path, dim=1) if store_path else None)


def chunk_generator(seed: int, chunk: int) -> torch.Generator:
    """The generator of chunk ``chunk`` of a seeded transport: independent streams per chunk,
    so any subset of chunks (a shard) reproduces exactly the works of the full run."""
    state = np.random.SeedSequence([int(seed), int(chunk)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def transport(process: Process, x0: Tensor, grid: TimeGrid, *, generator=None,
              seed: int | None = None, chunks: Sequence[int] | None = None,
              batch_size: int = 1024, store_path: bool = False, progress: bool = False,
              desc: str = "transport") -> TransportResult:
    """Transport samples ``x0`` of the start state along ``grid`` and accumulate works.

    Parameters
    ----------
    process : an :class:`SDEProcess` or :class:`ODEProcess` (or its ``.reversed()``).
    x0 : (n, *event_shape) samples of the start state; the state is kept in float64 on
        ``x0``'s device (put it on the fields' device); the noise is drawn on the generator's
        device (the CPU for ``seed``) and moved there, so the works of a seed do not depend on
        the device beyond round-off. The result's tensors are on ``x0``'s device.
    grid : the time grid, in the process's own time.
    generator : ``torch.Generator`` for the noise, used by the chunks in turn; or
    seed : an integer from which every chunk draws its own stream (:func:`chunk_generator`),
        which makes sharding exact; then
    chunks : the indices of the chunks to run (a shard; default all). ``result.index`` says
        which rows of ``x0`` they were.
    batch_size : trajectories per chunk, bounding memory (and defining the chunks).
    store_path : keep every point (memory n × (M + 1) × d × 8 bytes).
    progress, desc : show a progress bar over steps, with this label.
    """
    grid = grid if isinstance(grid, TimeGrid) else TimeGrid(grid)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if seed is not None and generator is not None:
        raise ValueError("give either generator or seed, not both.")
    if chunks is not None and seed is None:
        raise ValueError("chunks (a shard) needs seed, so that each chunk's noise does not "
                         "depend on which other chunks run.")
    check_batch(x0, tuple(process.energy_start.event_shape), "x0")
    x0 = x0.to(torch.float64)
    n_chunks = -(-x0.shape[0] // int(batch_size))
    selected = range(n_chunks) if chunks is None else sorted(set(int(c) for c in chunks))
    if any(not 0 <= c < n_chunks for c in selected):
        raise ValueError(f"chunks must lie in [0, {n_chunks}); got {list(selected)}.")
    times, start = grid.times.tolist(), time.perf_counter()
    works, ends, paths, index = [], [], [], []
    with tqdm(total=len(selected) * grid.n_steps, disable=not progress, desc=desc, unit="step",
              leave=False) as bar:
        for c in selected:
            rows = torch.arange(c * batch_size, min((c + 1) * batch_size, x0.shape[0]))
            gen = chunk_generator(seed, c) if seed is not None else generator
            w, xe, p = _run_chunk(process, x0[rows], times, gen, store_path, bar)
            works.append(w), ends.append(xe), paths.append(p), index.append(rows)
    index = torch.cat(index) if index else torch.zeros(0, dtype=torch.long)
    return TransportResult(torch.cat(works) if works else torch.zeros(0, dtype=torch.float64),
                           x0[index], torch.cat(ends) if ends else x0[index],
                           torch.cat(paths) if store_path and paths else None, repr(process),
                           grid.n_steps, time.perf_counter() - start, index)


def path_work(process: Process, path: Tensor, grid: TimeGrid) -> Tensor:
    """Recompute the works of stored paths (n, M + 1, *event_shape); returns (n,) float64."""
    if not isinstance(grid, TimeGrid):
        grid = TimeGrid(grid)
    times = grid.times.tolist()
    if path.shape[1] != len(times):
        raise ValueError(f"path has {path.shape[1]} points but the grid has {len(times)}.")
    x = path[:, 0].to(torch.float64)
    work = -process.energy_start(x).to(torch.float64)
    state = process.init_state(times[0], x)
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        x_next = path[:, i + 1].to(torch.float64)
        dw, state = process.log_ratio(t, t_next, x, x_next, state)
        work, x = work + dw, x_next
    return work + process.energy_end(x).to(torch.float64)


def forward_and_reverse(
    process: Process,
    x_a: Tensor,
    x_b: Tensor,
    grid: TimeGrid,
    *,
    generator=None,
    batch_size: int = 1024,
    store_path: bool = False,
    progress: bool = False,
) -> tuple[TransportResult, TransportResult]:
    """Forward works from ``x_a`` and reverse works from ``x_b`` (the reversed process)."""
    if not isinstance(grid, TimeGrid):
        grid = TimeGrid(grid)
    kw = dict(generator=generator, batch_size=batch_size, store_path=store_path, progress=progress)
    fwd = transport(process, x_a, grid, desc="forward a → b", **kw)
    rev = transport(process.reversed(), x_b, grid.reversed(), desc="reverse b → a", **kw)
    return fwd, rev
