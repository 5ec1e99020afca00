"""Throughput of the OpenMM bridge against a bare OpenMM loop, same system, same run.

Energies and forces of ``--n`` alanine-dipeptide configurations (ALDP-S state b, the CustomGB
OBC1 system on its default platform: CPU, one thread) by

* the bare loop: one ``openmm.Context``, ``setPositions`` + ``getState(energy, forces)`` per
  configuration, forces read with ``getForces(asNumpy=True)``;
* the bridge: ``OpenMMEnergy.energy_and_score`` on torch batches of ``--batch``.

Both are timed ``--repeats`` times, interleaved, and the ratio of the median rates is reported
(the issue's target: bridge / bare >= 0.8). Writes JSON with ``--out``.

    .venv/bin/python systems/aldp_s/bridge_throughput.py --out systems/aldp_s/bridge.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools.testsystems import AlanineDipeptideImplicit

from feat.energies.openmm import OpenMMEnergy, default_platform


def _configurations(n: int, seed: int) -> np.ndarray:
    ts = AlanineDipeptideImplicit(constraints=None)
    x0 = np.asarray(ts.positions.value_in_unit(unit.nanometer))
    rng = np.random.default_rng(seed)
    return x0[None] + 0.002 * rng.standard_normal((n, *x0.shape))


def _bare(system: openmm.System, pos: np.ndarray) -> float:
    name, props = default_platform(system)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName(name), props)
    t0 = time.perf_counter()
    for x in pos:
        ctx.setPositions(x)
        state = ctx.getState(energy=True, forces=True)
        state.getPotentialEnergy()
        state.getForces(asNumpy=True)
    return len(pos) / (time.perf_counter() - t0)


def _bridge(energy: OpenMMEnergy, pos: np.ndarray, batch: int) -> float:
    x = torch.from_numpy(pos)
    t0 = time.perf_counter()
    for chunk in torch.split(x, batch):
        energy.energy_and_score(chunk)
    return len(pos) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="configurations per timing")
    p.add_argument("--batch", type=int, default=500, help="bridge batch size")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    system = AlanineDipeptideImplicit(constraints=None).system
    energy = OpenMMEnergy(system, 300.0)
    pos = _configurations(args.n, args.seed)
    energy.energy_and_score(torch.from_numpy(pos[:10]))  # build the context once, outside
    bare, bridge = [], []
    for _ in range(args.repeats):
        bare.append(_bare(system, pos))
        bridge.append(_bridge(energy, pos, args.batch))
    record = {"configs_per_s_bare": bare, "configs_per_s_bridge": bridge,
              "ratio_of_medians": statistics.median(bridge) / statistics.median(bare),
              "platform": default_platform(system)[0], "n": args.n, "batch": args.batch,
              "host": platform.node(), "cpus": os.cpu_count(),
              "command": " ".join(sys.argv)}
    print(f"bare {statistics.median(bare):.0f} configs/s, bridge "
          f"{statistics.median(bridge):.0f} configs/s, ratio {record['ratio_of_medians']:.3f} "
          f"(medians of {args.repeats})")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(record, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
