"""Run a system's preset for several seeds and record the measured numbers in its folder.

    python systems/benchmark.py systems/gmm40 --preset full --seeds 0 1 2 [--method switching]

A thin wrapper over :mod:`feat.bench` (``python -m feat.bench``, whose named entries live in
``systems/benchmarks.toml``): writes ``systems/gmm40/benchmark-full.json`` (every run's
estimate, counts, timings, memory and provenance; a rerun replaces its own records) and
``benchmark-full.md`` (the table), and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from feat.bench import METHODS, BenchEntry, markdown_table, run_benchmarks
from feat.cli import _parse_set


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("system", type=Path)
    p.add_argument("--preset", default="full")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--method", choices=METHODS, default="feat")
    p.add_argument("--set", action="append", default=[], help="config override, as feat run")
    args = p.parse_args(argv)
    suffix = "" if args.method == "feat" else f"-{args.method}"
    entry = BenchEntry(f"{args.system.name}-{args.preset}{suffix}", args.system, args.method,
                       args.preset, tuple(args.seeds), _parse_set(args.set),
                       {"budget": "feat"} if args.method == "switching" else {})
    stem = args.system / f"benchmark-{args.preset}{suffix}"
    records = run_benchmarks([entry], stem.with_suffix(".json"), stem.with_suffix(".md"))
    print(markdown_table(records), end="")
    print(f"written {stem}.json and {stem}.md", file=sys.stderr)
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
