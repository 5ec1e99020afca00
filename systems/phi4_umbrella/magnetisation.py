"""Merged magnetisation histogram of a phi4_umbrella run against a long direct run.

Reads a run directory written by ``feat run`` on a ``phi4_umbrella`` system (its config.json
and results.json), rebuilds the two umbrella windows' samples (from the cache), reweights the
pooled samples to the unbiased theory with the run's ΔF (two-window WHAM/MBAR with known
free energies, :func:`feat.plotting.umbrella_weights`), and compares the resulting density of
``m`` with a direct HMC run of the unbiased theory (``--n-direct`` samples; chains started
half at ``+m0`` and half at ``-m0`` and the histogram symmetrised under ``m -> -m``, an exact
symmetry at h = 0, because tunnelling between the wells is rare). Both densities are
normalised on the range the windows cover; the L1 distance between them is reported.
Writes ``RUN/plots/magnetisation.png`` and ``RUN/magnetisation.json``.

    .venv/bin/python systems/phi4_umbrella/magnetisation.py runs/phi4_small-default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from feat.energies.lattice import Phi4, magnetisation
from feat.plotting import plot_magnetisation, umbrella_weights
from feat.specs import build_problem, build_spec
from feat.specs.lattice import HMCSettings, hmc_samples


def _direct(spec, n: int, seed: int) -> np.ndarray:
    """Magnetisations of ``n`` thinned HMC samples of the unbiased theory, symmetrised."""
    energy = Phi4.from_mass(spec.shape, spec.m2, spec.lam, spec.h)
    gen = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.arange(spec.n_chains) % 2 == 0, 1.0, -1.0).double()
    x0 = 0.5 * sign.view(-1, *([1] * len(spec.shape))) + 0.1 * torch.randn(
        (spec.n_chains, *spec.shape), generator=gen, dtype=torch.float64)
    settings = HMCSettings(**{k: getattr(spec, k) for k in HMCSettings.__dataclass_fields__})
    x, *_ = hmc_samples(energy, n, settings, x0, generator=gen)
    m = magnetisation(x).numpy()
    return np.concatenate([m, -m]) if spec.h == 0 else m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n-direct", type=int, default=20000, help="direct-run samples")
    p.add_argument("--seed", type=int, default=4321)
    p.add_argument("--bins", type=int, default=40)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = json.loads((args.run_dir / "config.json").read_text())["config"]
    delta_f = json.loads((args.run_dir / "results.json").read_text())["estimate"]["delta_f"]
    spec = build_spec(cfg["system"])
    problem = build_problem(cfg["system"], torch.Generator().manual_seed(cfg["seed"]))
    x = torch.cat([problem.x_a, problem.x_b])
    bias_kn = np.stack([(e(x) - e.base(x)).numpy() for e in (problem.energy_a, problem.energy_b)])
    m_a, m_b = magnetisation(problem.x_a).numpy(), magnetisation(problem.x_b).numpy()
    t0 = time.perf_counter()
    direct = _direct(spec, args.n_direct, args.seed)
    seconds = time.perf_counter() - t0
    pooled = np.concatenate([m_a, m_b])
    weights = umbrella_weights(bias_kn, [len(m_a), len(m_b)], [0.0, delta_f])
    lo, hi = np.quantile(pooled, [0.005, 0.995])
    edges = np.linspace(lo, hi, args.bins + 1)
    merged, _ = np.histogram(pooled, edges, weights=weights, density=True)
    ref, _ = np.histogram(direct[(direct >= lo) & (direct <= hi)], edges, density=True)
    l1 = float(np.sum(np.abs(merged - ref)) * (edges[1] - edges[0]))
    (args.run_dir / "plots").mkdir(exist_ok=True)
    plot_magnetisation(m_a, m_b, bias_kn, delta_f, args.run_dir / "plots" / "magnetisation.png",
                       exact=direct[(direct >= lo) & (direct <= hi)], bins=args.bins)
    record = {"delta_f": delta_f, "range": [float(lo), float(hi)], "l1_distance": l1,
              "n_direct": int(direct.size), "direct_seconds": seconds,
              "edges": edges.tolist(), "merged_density": merged.tolist(),
              "direct_density": ref.tolist(), "command": " ".join(sys.argv)}
    (args.run_dir / "magnetisation.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"merged vs direct on m in [{lo:.3f}, {hi:.3f}]: L1 distance {l1:.3f} "
          f"({direct.size} direct samples, {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
