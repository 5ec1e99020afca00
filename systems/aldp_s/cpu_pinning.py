"""What pinning a one-thread process to one CPU (feat.cpus, the CLI's default) buys OpenMM.

Times, in fresh child processes, alternately unpinned and pinned (``feat.cpus.pin_one_cpu``):

* MD: ``--steps`` LangevinMiddle steps (2 fs) of alanine dipeptide, Amber ff96 + OBC1 (the
  CustomGB system of ALDP-S/ALDP-T), CPU platform with one thread, after minimisation;
* the bridge: ``OpenMMEnergy.energy_and_score`` on ``--n`` configurations in batches of 500.

Run it on an otherwise idle machine: another busy process hides the effect (an idle CPU is
what makes the unpinned hand-offs slow). Writes JSON with ``--out``.

    .venv/bin/python systems/aldp_s/cpu_pinning.py --out systems/aldp_s/cpu_pinning.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
import numpy as np, openmm, torch
from openmm import unit
from openmmtools.testsystems import AlanineDipeptideImplicit
from feat import cpus
from feat.energies.openmm import OpenMMEnergy
pin, steps, n = sys.argv[1] == "pin", int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
cpu = cpus.pin_one_cpu() if pin else None
ts = AlanineDipeptideImplicit(constraints=None)
integ = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                        0.002 * unit.picoseconds)
ctx = openmm.Context(ts.system, integ, openmm.Platform.getPlatformByName("CPU"),
                     {"Threads": "1"})
ctx.setPositions(ts.positions)
openmm.LocalEnergyMinimizer.minimize(ctx)
integ.step(200)
t0 = time.perf_counter(); integ.step(steps); md = steps / (time.perf_counter() - t0)
x0 = np.asarray(ts.positions.value_in_unit(unit.nanometer))
x = torch.from_numpy(x0[None] + 0.002 * np.random.default_rng(0).standard_normal((n, 22, 3)))
energy = OpenMMEnergy(ts.system, 300.0)
energy.energy_and_score(x[:10])
t0 = time.perf_counter()
for chunk in torch.split(x, 500):
    energy.energy_and_score(chunk)
print(json.dumps({"cpu": cpu, "md_steps_per_s": md,
                  "bridge_configs_per_s": n / (time.perf_counter() - t0)}))
"""


def _measure(mode: str, steps: int, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(steps), str(n)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20000, help="MD steps per timing")
    p.add_argument("--n", type=int, default=4000, help="bridge configurations per timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {"unpinned": [], "pinned": []}
    for _ in range(args.repeats):
        runs["unpinned"].append(_measure("free", args.steps, args.n))
        runs["pinned"].append(_measure("pin", args.steps, args.n))
    med = {mode: {k: statistics.median(r[k] for r in rs)
                  for k in ("md_steps_per_s", "bridge_configs_per_s")}
           for mode, rs in runs.items()}
    record = {
        "runs": runs, "median": med,
        "ratio_pinned_over_unpinned": {
            k: med["pinned"][k] / med["unpinned"][k] for k in med["pinned"]},
        "steps": args.steps, "n": args.n, "repeats": args.repeats,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "load_average_at_end": os.getloadavg(),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
