"""Spread of the path derivatives of LJ-n states: how the reference ladder was chosen.

For each state ``S,E`` (length scale s, energy scale ε) it runs a short HMC (64 chains, the
system's HMC settings, 60 + 60 warm-up and 120 iterations) and prints the mean ± std of
``∂u/∂s`` at fixed ``ε/s`` (the paper's s-path when ε = s) and of ``∂u/∂ε`` at fixed s, with
the step size, leapfrog steps and autocorrelation times. Neighbouring states along a path keep
their overlap while ``Δ(parameter) × std ≲ 1–2``; ``∫ std`` is the path's thermodynamic length.

    .venv/bin/python systems/lj55/path_spread.py systems/lj55 1,1 0.6,0.6 1,0.1 1,0.3

(The numbers quoted in README.md; ~20–45 s per state on this CPU.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from feat.config import load_run_config
from feat.energies.lj import LennardJonesCluster
from feat.specs import build_spec
from feat.specs.lj import initial_states, lj_hmc_samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("system", type=Path, help="system folder with an lj system.toml")
    p.add_argument("states", nargs="+", help="S,E pairs: length scale s and energy scale ε")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    system = {k: v for k, v in load_run_config(args.system).system.items() if k != "reference"}
    spec = build_spec(system)
    settings = dataclasses.replace(spec._hmc_settings(), n_chains=64, n_warmup=60, n_steps=120,
                                   thin=1)
    for state in args.states:
        s, eps = (float(v) for v in state.split(","))
        energy = LennardJonesCluster(spec.n_particles, s, epsilon=eps)
        gen, t0 = torch.Generator().manual_seed(args.seed), time.perf_counter()
        x0 = initial_states(spec.n_particles, s, settings.n_chains, gen)
        x, _, u, info = lj_hmc_samples(energy, settings.n_chains * settings.n_steps, settings,
                                       x0, generator=gen, trajectory_length=1.0)
        ds, de = energy.ds_energy(x), energy.depsilon_energy(x)
        print(f"s={s:g} epsilon={eps:g}: u={u.mean():.1f}±{u.std():.1f} "
              f"du/ds={ds.mean():.1f}±{ds.std():.1f} du/deps={de.mean():.1f}±{de.std():.1f} "
              f"step={info['step_size']:.4f} L={info['n_leapfrog']} "
              f"tau_u={info['tau_int_energy']:.2f} {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
