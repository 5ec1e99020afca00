"""MBAR umbrella-ladder reference ΔF for a ``phi4_umbrella`` system.

Reads the ``[system]`` table of a system folder (lattice, couplings, k, the two end centres and
the HMC settings), samples ``--n-windows`` umbrella windows with centres evenly spaced from
``center_a`` to ``center_b`` (same k) by HMC (each chain thinned by 2 tau_int, so samples are
decorrelated as MBAR assumes), and solves MBAR (pymbar 4) for ΔF = F_b - F_a between the end
windows, in kT, with the analytic and bootstrap σ.

    .venv/bin/python systems/phi4_umbrella/reference.py systems/phi4_small --out ref.json

Runs on one torch thread; prints one line per window and the result; writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from feat.config import from_mapping, load_run_config
from feat.reference import mbar_delta_f, umbrella_windows, window_centers
from feat.specs.lattice import HMCSettings, Phi4UmbrellaSpec, hmc_samples


def _spec(folder: Path) -> Phi4UmbrellaSpec:
    system = dict(load_run_config(folder).system)
    if system.pop("kind", None) != "phi4_umbrella":
        sys.exit(f"{folder}: [system] kind must be 'phi4_umbrella'.")
    system.pop("description", None)
    return from_mapping(Phi4UmbrellaSpec, system, "system")


def _sample_windows(spec: Phi4UmbrellaSpec, windows, centers, n_samples: int, seed: int):
    settings = HMCSettings(**{k: getattr(spec, k) for k in HMCSettings.__dataclass_fields__})
    samples, diagnostics = [], []
    for w, (energy, c) in enumerate(zip(windows, centers, strict=True)):
        gen, t0 = torch.Generator().manual_seed(seed + w), time.perf_counter()
        x0 = c + 0.1 * torch.randn((spec.n_chains, *spec.shape), generator=gen,
                                   dtype=torch.float64)
        x, _, _, info = hmc_samples(energy, n_samples, settings, x0, generator=gen)
        m = x.flatten(1).mean(1)
        info.update(center=c, seconds=time.perf_counter() - t0, m_mean=float(m.mean()),
                    m_std=float(m.std()))
        print(f"window {w:2d} c={c:+.3f}: <m>={info['m_mean']:+.3f} ± {info['m_std']:.3f} "
              f"tau={info['tau_int']:.1f} thin={info['thin']} acc={info['acceptance']:.2f} "
              f"{info['seconds']:.0f} s", file=sys.stderr)
        samples.append(x)
        diagnostics.append(info)
    return samples, diagnostics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("system", type=Path, help="system folder with a phi4_umbrella system.toml")
    p.add_argument("--n-windows", type=int, default=13, help="umbrella windows incl. the ends")
    p.add_argument("--n-samples", type=int, default=4000, help="decorrelated samples / window")
    p.add_argument("--n-bootstrap", type=int, default=200)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    spec, t0 = _spec(args.system), time.perf_counter()
    centers = window_centers(spec.center_a, spec.center_b, args.n_windows)
    windows = umbrella_windows(spec.energies()[0].base, spec.k, centers)
    samples, diagnostics = _sample_windows(spec, windows, centers, args.n_samples, args.seed)
    result = mbar_delta_f(windows, samples, n_bootstrap=args.n_bootstrap, seed=args.seed)
    print(result.summary())
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.out:
        record = {"system": str(args.system), "spec": asdict(spec), "centers": centers,
                  "mbar": result.to_dict(), "windows": diagnostics, "seed": args.seed,
                  "seconds": time.perf_counter() - t0, "command": " ".join(sys.argv)}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
