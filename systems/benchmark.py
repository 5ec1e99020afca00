"""Run a system's preset for several seeds and record the measured numbers in its folder.

    python systems/benchmark.py systems/gmm40 --preset full --seeds 0 1 2

writes ``systems/gmm40/benchmark-full.json`` (every run's estimate, timings and command) and
prints a markdown table for the system README and the project README.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def _run(system: Path, preset: str, seed: int, extra: list[str]) -> dict:
    out = Path("runs") / f"bench-{system.name}-{preset}-seed{seed}"
    cmd = [sys.executable, "-m", "feat.cli", "run", str(system), "--preset", preset,
           "--seed", str(seed), "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    result = json.loads((out / "results.json").read_text())
    result.update(seed=seed, wall_s=wall, command=" ".join(["feat", *cmd[3:]]))
    return result


def _row(r: dict) -> str:
    e = r["estimate"]
    b = e["bounds"]
    ess = f"{e['forward']['ess']:.0%} / {e['reverse']['ess']:.0%}"
    return (f"| {r['seed']} | {e['delta_f']:.3f} ± {e['sigma']:.3f} | {e['reference']} | "
            f"{(e['delta_f'] - e['reference']) / e['sigma']:+.2f} | [{b['lower']:.2f}, "
            f"{b['upper']:.2f}] | {b['gap']:.2f} | {ess} | {r['timings_s']['training']:.0f} | "
            f"{r['wall_s']:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("system", type=Path)
    p.add_argument("--preset", default="full")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], help="passed to feat run")
    args = p.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    runs = [_run(args.system, args.preset, seed, extra) for seed in args.seeds]
    record = {"system": args.system.name, "preset": args.preset, "date": str(date.today()),
              "machine": f"{platform.node()} ({platform.processor() or platform.machine()}), "
                         "2 cores, no GPU", "runs": runs}
    path = args.system / f"benchmark-{args.preset}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print("| seed | ΔF (kT) | exact | z | bounds | gap | ESS f / r | train (s) | total (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(_row(r))
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
