"""Where a trained run's works come from, and what transport settings would change.

    python systems/diagnose.py RUN_DIR [--n 300] [--scan eps=0.1 eps=0.3,n_points=1000 ...]

Transports ``--n`` held-out starts in each direction with the run's EMA fields and splits each
work into its path part (the kernel log-ratios, summed over windows of t) and its end part
(the end-state energy; "end excess" is its mean over the same energy's mean on true samples:
trajectories that miss the target's modes show up there). ``--scan`` reruns the transport with
other ``[transport]`` settings (comma-separated ``key=value``) and prints gap, σ and the works'
spread. Nothing is written; the works of every variant are exact, so this only ranks them.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from feat.estimators import estimate
from feat.pipeline.build import make_grid, make_process
from feat.pipeline.shards import _setup
from feat.pipeline.stages import transport_works
from feat.transport.integrator import transport

EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0)


def decompose(process, grid, x0, x_ref, label, reverse=False) -> dict:
    """Transport ``x0`` and split every work into ``path`` (n, windows) and ``end`` (n,) parts:
    ``work = path.sum(1) + end`` with ``end = u_end(x_M) − u_start(x_0)``."""
    with torch.no_grad():
        res = transport(process, x0, grid, seed=1, store_path=True, batch_size=len(x0))
        path, times = res.path, grid.times.tolist()
        x, state, steps = path[:, 0], process.init_state(times[0], path[:, 0]), []
        for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
            dw, state = process.log_ratio(t, t_next, x, path[:, i + 1], state)
            steps.append(dw)
            x = path[:, i + 1]
        u_end = process.energy_end(path[:, -1]).double()
        end = u_end - process.energy_start(path[:, 0]).double()
        u_ref = process.energy_end(x_ref).double()
    steps = torch.stack(steps, 1)
    # physical time of each step's earlier end (a reversed grid runs in τ = 1 − t)
    t = 1 - torch.tensor(times[1:]).double() if reverse else torch.tensor(times[:-1]).double()
    windows = torch.stack([steps[:, (t >= lo) & (t < hi)].sum(1)
                           for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True)], 1)
    print(f"{label}: work {res.work.mean():.1f} ± {res.work.std():.1f} (mean ± sd); end excess "
          f"{(u_end.mean() - u_ref.mean()):.1f} (sd {u_end.std():.1f}, true samples "
          f"{u_ref.std():.1f}); path part {windows.sum(1).mean():.1f} ± "
          f"{windows.sum(1).std():.1f}")
    for k, (lo, hi) in enumerate(zip(EDGES[:-1], EDGES[1:], strict=True)):
        w = windows[:, k]
        print(f"    t in [{lo:.2f}, {hi:.2f}): path work {w.mean():7.2f} ± {w.std():6.2f}")
    return {"work": res.work, "path": windows, "end": end}


def scan(problem, config, trainer, x_a, x_b, n, spec):
    kw = {}
    for item in spec.split(","):
        key, value = item.split("=")
        field = {f.name: f for f in dataclasses.fields(config.transport)}[key]
        kw[key] = value if field.type in (str, "str") else type(getattr(config.transport, key))(
            float(value))
    tc = dataclasses.replace(config.transport, n_forward=n, n_reverse=n, **kw)
    with torch.no_grad():
        f, r, _ = transport_works(problem, x_a[:n], x_b[:n], trainer.velocity_ema,
                                  trainer.score_ema, dataclasses.replace(config, transport=tc))
    e = estimate(f.work, r.work, reference=problem.reference)
    print(f"{spec}: ΔF {e.delta_f:.3f} ± {e.sigma:.3f}, gap {e.bounds.gap:.1f}, W_f "
          f"{f.work.mean():.1f} ± {f.work.std():.1f}, W_r {r.work.mean():.1f} ± "
          f"{r.work.std():.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=300, help="trajectories per direction")
    p.add_argument("--scan", nargs="*", default=[], help="transport settings to compare")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config, _, problem, trainer, x_a, x_b = _setup(args.run_dir, "cpu")
    n = min(args.n, len(x_a), len(x_b))
    process = make_process(config.transport, trainer.velocity_ema, trainer.score_ema, problem)
    grid = make_grid(config.transport)
    decompose(process, grid, x_a[:n], x_b, "forward a → b")
    decompose(process.reversed(), grid.reversed(), x_b[:n], x_a, "reverse b → a", reverse=True)
    for spec in args.scan:
        scan(problem, config, trainer, x_a, x_b, n, spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
