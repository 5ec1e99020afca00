"""The ``feat`` command line. ``feat run SYSTEM`` trains, transports and estimates ΔF."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parse_set(items: list[str]) -> dict:
    """``--set training.steps=500`` → {"training": {"steps": 500}} (TOML value syntax)."""
    from .config import ConfigError, tomllib

    out: dict = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(
                f"--set expects SECTION.KEY=VALUE (e.g. training.steps=500); got {item!r}."
            )
        key, value = item.split("=", 1)
        section, name = key.rsplit(".", 1)
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        node = out
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[name] = parsed
    return out


def _threads(requested: int | None) -> str:
    import torch

    n = requested if requested else 1
    torch.set_num_threads(n)
    why = "as asked" if requested else "default: fastest for small networks on CPU; --threads N"
    return f"torch threads: {n} ({why})"


def _data_parallel() -> bool:
    """Join a ``torchrun`` launch (a no-op otherwise); rank 0 says so. True on rank 0."""
    from .training import distributed

    if distributed.init() and distributed.is_main():
        print(f"data-parallel training: {distributed.world_size()} processes "
              f"({distributed.backend()} backend); rank 0 writes the run directory",
              file=sys.stderr)
    return distributed.is_main()


def _cmd_run(args) -> int:
    from .config import load_run_config
    from .pipeline import run

    overrides = _parse_set(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_run_config(args.system, args.preset, overrides)
    out = Path(args.out) if args.out else Path("runs") / f"{config.name}-{args.preset or 'default'}"
    main = _data_parallel()
    if main:
        print(f"feat run {config.name} (preset {args.preset or 'default'}) → {out}",
              file=sys.stderr)
    threads = _threads(args.threads)
    if main:
        print(threads, file=sys.stderr)
    result = run(config, out, progress=main and not args.no_progress, resume=args.resume)
    if result is None:  # a data-parallel rank other than 0: training done, nothing to report
        return 0
    print(result.estimate.summary())
    t = result.timings
    print(
        f"training {t['training']:.0f} s, transport {t['transport']:.0f} s; "
        f"results in {out / 'results.json'}",
        file=sys.stderr,
    )
    return 0


def _cmd_sample(args) -> int:
    import time

    import torch

    from .config import load_run_config
    from .specs import build_problem

    config = load_run_config(args.system, args.preset)
    print(_threads(args.threads), file=sys.stderr)
    start = time.perf_counter()
    problem = build_problem(config.system, torch.Generator().manual_seed(config.seed))
    print(f"{problem.name}: x_a {tuple(problem.x_a.shape)}, x_b {tuple(problem.x_b.shape)} "
          f"ready in {time.perf_counter() - start:.0f} s")
    for state in ("a", "b"):
        md = problem.metadata.get(f"md_{state}")
        if md:
            print(f"  state {state}: {md['n_decorrelated']} decorrelated of {md['n_inside']} "
                  f"frames inside ({md['n_frames']} saved), statistical inefficiency "
                  f"{md['statistical_inefficiency']:.1f} frames; MD in {md['md_dir']}")
    return 0


def _cmd_report(args) -> int:
    from .report import load_run, write_report

    record = load_run(args.run_dir)
    path = write_report(record)
    print(record.estimate.summary())
    print(f"report in {path} (plots in {path.parent / 'plots'})", file=sys.stderr)
    if not record.reproduced:
        print(f"feat report: the estimate recomputed from works.npz differs from results.json "
              f"in {', '.join(record.mismatches)}; the report shows the recomputed numbers.",
              file=sys.stderr)
        return 1
    return 0


def _cmd_train(args) -> int:
    from .config import load_run_config
    from .pipeline import train_run

    overrides = _parse_set(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_run_config(args.system, args.preset, overrides)
    main = _data_parallel()
    threads = _threads(args.threads)
    if main:
        print(threads, file=sys.stderr)
    step = train_run(config, args.out, progress=main and not args.no_progress,
                     resume=args.resume)
    if not main:
        return 0
    print(f"trained to step {step}; checkpoint in {Path(args.out) / 'checkpoint.pt'}. Next: "
          f"feat estimate {args.out} [--shard K/N]")
    return 0


def _cmd_estimate(args) -> int:
    from .pipeline import estimate_shard, merge_shards
    from .pipeline.shards import parse_shard

    print(_threads(args.threads), file=sys.stderr)
    shard = parse_shard(args.shard) if args.shard else (0, 1)
    path = estimate_shard(args.run_dir, shard, progress=not args.no_progress)
    print(f"works of shard {shard[0]}/{shard[1]} in {path}", file=sys.stderr)
    if args.shard is None:
        print(merge_shards(args.run_dir).summary())
    return 0


def _cmd_merge(args) -> int:
    from .pipeline import merge_shards

    print(merge_shards(args.run_dir).summary())
    print(f"results in {Path(args.run_dir) / 'results.json'}", file=sys.stderr)
    return 0


def _system_args(p: argparse.ArgumentParser, *, training: bool) -> None:
    """The arguments shared by the commands that start from a system's run file."""
    p.add_argument("system", help="a system folder holding system.toml (e.g. systems/gmm40) "
                   "or a .toml run file")
    p.add_argument("--preset", help="a preset defined in the run file (e.g. quick, full)")
    p.add_argument("--threads", type=int, help="torch threads (default 1)")
    if not training:
        return
    p.add_argument("--seed", type=int, help="override the run file's seed")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set training.steps=500 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from "
                   "its checkpoint (same settings); the result equals an uninterrupted run's")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feat",
        description=(
            "Free-energy differences ΔF = F_b − F_a (in kT) between two thermodynamic states from "
            "learned stochastic-interpolant transports (FEAT)."
        ),
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "run",
        help="train → transport → estimate on a system folder",
        description="Train the velocity and score fields on the end-state "
        "samples, run forward and reverse transports, and print ΔF ± σ with "
        "every estimator; writes config.json, checkpoint.pt, works.npz and "
        "results.json into the run directory.",
    )
    _system_args(r, training=True)
    r.add_argument("--out", help="run directory (default: runs/NAME-PRESET)")
    r.set_defaults(func=_cmd_run)
    sm = sub.add_parser("sample", help="draw (or reuse cached) end-state samples of a system",
                        description="Build the system's end states and their samples exactly as "
                        "'feat run' would (MD, HMC or exact sampling), caching them on disk so a "
                        "later 'feat run' reuses them; prints a summary.")
    _system_args(sm, training=False)
    sm.set_defaults(func=_cmd_sample)
    rp = sub.add_parser("report", help="write report.md and plots for a run directory",
                        description="Recompute the estimate from a run directory's works.npz, "
                        "check it equals results.json (exit 1 if not), and write report.md and "
                        "plots/*.png into the directory.")
    rp.add_argument("run_dir", help="a directory written by 'feat run' (e.g. runs/gaussian-quick)")
    rp.set_defaults(func=_cmd_report)
    t = sub.add_parser("train", help="only train (checkpointed); estimate later",
                       description="Train the fields of a system into a run directory "
                       "(checkpointed, resumable); 'feat estimate' then runs the transports.")
    t.add_argument("--out", required=True, help="the run directory to create")
    _system_args(t, training=True)
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("estimate", help="transport and estimate with a trained run (shardable)",
                       description="Run the forward and reverse transports of a trained run "
                       "directory and estimate ΔF. With --shard K/N only every N-th chunk of "
                       "trajectories is run (K = 0..N-1, e.g. one per job-array task); "
                       "'feat merge' then combines the shards into a result identical to an "
                       "unsharded run with the same seed.")
    e.add_argument("run_dir", help="a run directory written by 'feat run' (holds checkpoint.pt)")
    e.add_argument("--shard", metavar="K/N", help="run shard K of N (0-based)")
    e.add_argument("--threads", type=int, help="torch threads (default 1)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_estimate)
    m = sub.add_parser("merge", help="combine the shards of 'feat estimate --shard'",
                       description="Combine works.shard-K-of-N.npz of a run directory into "
                       "works.npz and results.json (checks that every shard is there).")
    m.add_argument("run_dir", help="the run directory holding the shards")
    m.set_defaults(func=_cmd_merge)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    logging.getLogger("pymbar").setLevel(logging.ERROR)  # its import banners are not for users
    from .config import ConfigError
    from .training.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (ConfigError, ValueError, TypeError, CheckpointError) as err:
        print(f"feat: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("feat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
