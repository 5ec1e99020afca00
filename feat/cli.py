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


def _threads(args) -> str:
    """torch's thread count and, for one thread, the CPU pin (feat.cpus); a line for the user."""
    from .cpus import configure

    return configure(args.threads, pin=not args.no_pin)


def _device(config):
    """The device ``config.device`` asks for (after --device), checked to exist here."""
    from .pipeline import resolve_device

    return resolve_device(config.device)


def _data_parallel(device) -> bool:
    """Join a ``torchrun`` launch (a no-op otherwise) with the backend of ``device`` (NCCL on
    CUDA, gloo otherwise); rank 0 says so. True on rank 0."""
    from .training import distributed

    if distributed.init(device) and distributed.is_main():
        print(f"data-parallel training: {distributed.world_size()} processes "
              f"({distributed.backend()} backend); rank 0 writes the run directory",
              file=sys.stderr)
    return distributed.is_main()


def _overrides(args) -> dict:
    """``--set``, ``--seed`` and ``--device`` as overrides of the run file."""
    overrides = _parse_set(getattr(args, "set", []))
    for key in ("seed", "device"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return overrides


def _stage_time(result, stage: str) -> str:
    if result.stages.get(stage) == "reused":
        return f"{stage} reused"
    return f"{stage} {result.timings[stage]:.0f} s"


def _cmd_run(args) -> int:
    from .config import load_run_config
    from .pipeline import run

    config = load_run_config(args.system, args.preset, _overrides(args))
    out = Path(args.out) if args.out else Path("runs") / f"{config.name}-{args.preset or 'default'}"
    device = _device(config)
    main = _data_parallel(device)
    threads = _threads(args)
    if main:
        print(f"feat run {config.name} (preset {args.preset or 'default'}) → {out}",
              file=sys.stderr)
        print(f"{threads}; device: {device}", file=sys.stderr)
    result = run(config, out, progress=main and not args.no_progress, resume=args.resume,
                 force=args.force)
    if result is None:  # a data-parallel rank other than 0: training done, nothing to report
        return 0
    print(result.estimate.summary())
    print(f"{_stage_time(result, 'training')}, {_stage_time(result, 'transport')}; "
          f"results in {out / 'results.json'}", file=sys.stderr)
    return 0


def _cmd_sample(args) -> int:
    import time

    import torch

    from .config import load_run_config
    from .specs import build_problem

    config = load_run_config(args.system, args.preset, _overrides(args))
    print(_threads(args), file=sys.stderr)
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


def _cmd_reference(args) -> int:
    from .config import load_run_config
    from .pipeline.reference import run_reference

    config = load_run_config(args.system, args.preset, _overrides(args))
    out = Path(args.out) if args.out else (
        Path("runs") / f"{config.name}-{args.preset or 'default'}-reference.json")
    print(_threads(args), file=sys.stderr)
    r = config.reference
    print(f"feat reference {config.name}: MBAR over {r.n_windows} states, {r.n_samples} "
          f"samples each → {out}", file=sys.stderr)
    result = run_reference(config, out)
    print(result.summary())
    print(f"protocol: {result.protocol}", file=sys.stderr)
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

    config = load_run_config(args.system, args.preset, _overrides(args))
    device = _device(config)
    main = _data_parallel(device)
    threads = _threads(args)
    if main:
        print(f"{threads}; device: {device}", file=sys.stderr)
    step = train_run(config, args.out, progress=main and not args.no_progress,
                     resume=args.resume, force=args.force)
    if not main:
        return 0
    print(f"trained to step {step}; checkpoint in {Path(args.out) / 'checkpoint.pt'}. Next: "
          f"feat estimate {args.out} [--shard K/N]")
    return 0


def _cmd_estimate(args) -> int:
    from .pipeline import estimate_shard, merge_shards
    from .pipeline.shards import parse_shard

    shard = parse_shard(args.shard) if args.shard else (0, 1)
    print(_threads(args), file=sys.stderr)
    path = estimate_shard(args.run_dir, shard, progress=not args.no_progress,
                          device=args.device)
    print(f"works of shard {shard[0]}/{shard[1]} in {path}", file=sys.stderr)
    if args.shard is None:
        print(merge_shards(args.run_dir).summary())
    return 0


def _cmd_merge(args) -> int:
    from .pipeline import merge_shards

    print(merge_shards(args.run_dir).summary())
    print(f"results in {Path(args.run_dir) / 'results.json'}", file=sys.stderr)
    return 0


def _cmd_export(args) -> int:
    from .estimators import save_pymbar_npz, write_works_csv
    from .report import load_run

    record = load_run(args.run_dir)
    run_dir = Path(args.run_dir)
    as_csv = args.format == "csv"
    out = Path(args.out) if args.out else run_dir / ("works.csv" if as_csv else "pymbar.npz")
    if as_csv:
        temperature = record.config.get("system", {}).get("temperature")
        path = write_works_csv(out, record.work_f, record.work_r, temperature=temperature)
    else:
        path = save_pymbar_npz(out, record.work_f, record.work_r, record.results["estimate"])
    print(f"{args.format} export of {run_dir} in {path}", file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    """argparse type of --threads: an integer >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {text!r}")
    return int(text)


def _device_name(text: str) -> str:
    """argparse type of --device: the syntax only (availability is checked before work)."""
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda", "mps") or (head == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps; got {text!r}")


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads torch may use "
                   "(default 1, the fastest for small networks; under torchrun: per process)")
    p.add_argument("--no-pin", action="store_true", help="with one thread, do not pin the "
                   "process to one CPU (pinning makes OpenMM's CPU platform ~4× faster on "
                   "small molecules; see feat.cpus)")


def _device_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--device", type=_device_name, metavar="DEVICE",
                   help=f"where {what} run: auto (a GPU when there is one, else the CPU), "
                   "cpu, cuda, cuda:N or mps; overrides the run file's 'device' (default "
                   "auto). Results agree across devices up to round-off.")


def _set_arg(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"override one setting of the run file, e.g. --set {example} "
                   "(repeatable)")


def _system_args(p: argparse.ArgumentParser, *, training: bool) -> None:
    """The arguments shared by the commands that start from a system's run file."""
    p.add_argument("system", help="a system folder holding system.toml (e.g. systems/gmm40) "
                   "or a .toml run file")
    p.add_argument("--preset", help="a preset defined in the run file (e.g. quick, full)")
    p.add_argument("--seed", type=int, help="override the run file's seed (samples, network "
                   "initialisation, minibatches and transport noise all follow from it)")
    _threads_arg(p)
    if not training:
        return
    _device_arg(p, "the networks and the transports")
    _set_arg(p, "training.steps=500")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from "
                   "its checkpoint (same settings); the result equals an uninterrupted run's")
    p.add_argument("--force", action="store_true", help="recompute every stage, even those "
                   "the run directory already holds with the same settings")
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
    _system_commands(sub)
    _run_dir_commands(sub)
    sub.add_parser("bench", help="run named benchmarks (systems/benchmarks.toml) and write a "
                   "markdown + JSON table; 'feat bench --help' for its options")
    return p


def _system_commands(sub) -> None:
    """The commands that start from a system's run file: run, sample, train."""
    r = sub.add_parser(
        "run",
        help="train → transport → estimate on a system folder",
        description="Train the velocity and score fields on the end-state "
        "samples, run forward and reverse transports, and print ΔF ± σ (kT) with "
        "every estimator; writes config.json, checkpoint.pt, works.npz and "
        "results.json into the run directory. Run again into the same directory, "
        "stages that are finished with the same settings are reused (a note on stderr "
        "says which stage reruns and why); --force recomputes everything.",
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
    ref = sub.add_parser("reference", help="classical reference ΔF: MBAR over intermediate "
                         "states", description="Sample a ladder of intermediate states between "
                         "a and b (MD or HMC in each, decorrelated) and solve MBAR (pymbar) for "
                         "ΔF = F_b − F_a with its analytic and bootstrap σ and the neighbour "
                         "overlaps; the ladder comes from the run file's [reference] table "
                         "(n_windows, n_samples, window_steps, n_bootstrap, seed).")
    _system_args(ref, training=False)
    _set_arg(ref, "reference.n_windows=21")
    ref.add_argument("--out", help="JSON file for the result (default: "
                     "runs/NAME-PRESET-reference.json)")
    ref.set_defaults(func=_cmd_reference)
    t = sub.add_parser("train", help="only train (checkpointed); estimate later",
                       description="Train the velocity and score fields (the neural networks "
                       "that carry samples of state a to state b and back) of a system into a "
                       "run directory, checkpointed and resumable; 'feat estimate' then runs "
                       "the transports. A finished checkpoint with the same settings is kept "
                       "(--force retrains).")
    t.add_argument("--out", required=True, help="the run directory to create")
    _system_args(t, training=True)
    t.set_defaults(func=_cmd_train)


def _run_dir_commands(sub) -> None:
    """The commands that work on a run directory: report, estimate, merge, export."""
    rp = sub.add_parser("report", help="write report.md and plots for a run directory",
                        description="Recompute the estimate from a run directory's works.npz, "
                        "check it equals results.json (exit 1 if not), and write report.md and "
                        "plots/*.png into the directory.")
    rp.add_argument("run_dir", help="a directory written by 'feat run' (e.g. runs/gaussian-quick)")
    rp.set_defaults(func=_cmd_report)
    e = sub.add_parser("estimate", help="transport and estimate with a trained run (shardable)",
                       description="Run the forward and reverse transports of a trained run "
                       "directory and estimate ΔF. With --shard K/N only every N-th chunk of "
                       "trajectories is run (K = 0..N-1, e.g. one per job-array task); "
                       "'feat merge' then combines the shards into a result identical to an "
                       "unsharded run with the same seed.")
    e.add_argument("run_dir", help="a run directory written by 'feat run' (holds checkpoint.pt)")
    e.add_argument("--shard", metavar="K/N", help="run shard K of N, K = 0..N-1 (in a SLURM "
                   "array --array=0-(N-1): --shard $SLURM_ARRAY_TASK_ID/N); the seed is the "
                   "run's, so the shards merge into the unsharded result")
    _threads_arg(e)
    _device_arg(e, "the transports")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_estimate)
    m = sub.add_parser("merge", help="combine the shards of 'feat estimate --shard'",
                       description="Combine works.shard-K-of-N.npz of a run directory into "
                       "works.npz and results.json (checks that every shard is there).")
    m.add_argument("run_dir", help="the run directory holding the shards")
    m.set_defaults(func=_cmd_merge)
    x = sub.add_parser("export", help="write a run's works for pandas/alchemlyb (CSV) or pymbar",
                       description="Export the forward and reverse works (in kT) of a run "
                       "directory. csv: a long table, one trajectory per row (direction, "
                       "trajectory, from_lambda, to_lambda, work, energy_unit, temperature), "
                       "for pandas and alchemlyb. pymbar-npz: arrays w_F and w_R for "
                       "pymbar.other_estimators.bar, with the run's Delta_f and dDelta_f.")
    x.add_argument("run_dir", help="a run directory holding works.npz and results.json")
    x.add_argument("--format", choices=("csv", "pymbar-npz"), default="csv",
                   help="csv (default) or pymbar-npz")
    x.add_argument("--out", metavar="FILE", help="where to write (default: RUN_DIR/works.csv "
                   "or RUN_DIR/pymbar.npz)")
    x.set_defaults(func=_cmd_export)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own parser (feat.bench), listed in build_parser for --help
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    import logging

    logging.getLogger("pymbar").setLevel(logging.ERROR)  # its import banners are not for users
    from .config import ConfigError
    from .training import distributed
    from .training.checkpoint import CheckpointError

    try:
        code = args.func(args)
        distributed.shutdown()
        return code
    except (ConfigError, ValueError, TypeError, CheckpointError, OSError) as err:
        print(f"feat: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("feat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
