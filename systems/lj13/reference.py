"""MBAR s-ladder reference ΔF for an ``lj`` system (LJ-n cluster in a harmonic trap).

Reads a system folder's ``[system]`` (kind ``lj``) and ``[reference]`` tables, samples
``n_windows`` states ``s_k = (k/(K-1))^window_power``, or the two-leg path of
``feat.specs.lj`` (window 0: exact trap samples; the others: HMC with the spec's settings,
thinned by 2 tau_int) and solves MBAR (pymbar 4) for
ΔF = F_{s=1} - F_{s=0} in kT, with the analytic and bootstrap σ and the neighbour overlaps:
``LJSpec.mbar_reference``, as ``feat reference`` runs it, plus command-line overrides.

    .venv/bin/python systems/lj13/reference.py systems/lj13 --out systems/lj13/reference.json

Options override the [reference] table (--n-windows, --n-samples, --power, ...). Runs on one
torch thread; prints one line per window and the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from feat.config import load_run_config
from feat.specs import build_spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("system", type=Path, help="system folder with an lj system.toml")
    p.add_argument("--n-windows", type=int, help="windows incl. both ends")
    p.add_argument("--n-samples", type=int, help="decorrelated samples per window")
    p.add_argument("--window-steps", type=int, help="HMC iterations per round (0: n_steps)")
    p.add_argument("--n-bootstrap", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--power", type=float, help="window_power of the s-schedule")
    p.add_argument("--window-epsilon", type=float,
                   help="epsilon/s on the s-leg of a two-leg path (< 1; feat.specs.lj)")
    p.add_argument("--epsilon-windows", type=int, help="windows of the epsilon-leg at s = 1")
    p.add_argument("--n-chains", type=int, help="HMC chains per window")
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = load_run_config(args.system)
    system = dict(config.system)
    if system.get("kind") != "lj":
        sys.exit(f"{args.system}: [system] kind must be 'lj'.")
    system.pop("reference", None)
    for key, value in (("window_power", args.power), ("window_epsilon", args.window_epsilon),
                       ("epsilon_windows", args.epsilon_windows)):
        if value is not None:
            system[key] = value
    if args.n_chains is not None:
        system["n_chains"] = args.n_chains
    spec = build_spec(system)
    ref = dataclasses.replace(config.reference, **{
        k: v for k, v in (("n_windows", args.n_windows), ("n_samples", args.n_samples),
                          ("window_steps", args.window_steps),
                          ("n_bootstrap", args.n_bootstrap), ("seed", args.seed))
        if v is not None})
    t0 = time.perf_counter()
    ladder = spec.mbar_reference(ref)
    result, seconds = ladder.mbar, time.perf_counter() - t0
    print(ladder.summary())
    print("neighbour overlaps: " + " ".join(f"{o:.3f}" for o in result.neighbour_overlap))
    print(f"log Z_b - log Z_a = {-result.delta_f:.4f} (the paper's sign); total {seconds:.0f} s",
          file=sys.stderr)
    if args.out:
        record = {"system": str(args.system), "spec": asdict(spec), "reference": asdict(ref),
                  ladder.parameter: list(ladder.values), "mbar": result.to_dict(),
                  "windows": list(ladder.windows), "protocol": ladder.protocol,
                  "seconds": seconds, "command": " ".join(["python", *sys.argv])}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
