"""Generate (or reuse) the cached end-state MD samples of this system and summarise them.

    .venv/bin/python systems/aldp_s/make_data.py [--preset quick|full]

Runs exactly what ``feat run systems/aldp_s`` runs before training (the [system] table of
system.toml, with the preset applied), so a later ``feat run`` finds the samples cached.
"""

import argparse
import time
from pathlib import Path

import torch

from feat.config import load_run_config
from feat.specs import build_problem

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="a preset of system.toml (quick, full)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_run_config(HERE, args.preset)
    t0 = time.perf_counter()
    problem = build_problem(config.system, torch.Generator().manual_seed(config.seed))
    print(f"{problem.name}: x_a {tuple(problem.x_a.shape)}, x_b {tuple(problem.x_b.shape)} "
          f"in {time.perf_counter() - t0:.0f} s")
    for state in ("a", "b"):
        md = problem.metadata[f"md_{state}"]
        print(f"  state {state}: {md['n_decorrelated']} decorrelated of {md['n_inside']} frames "
              f"inside ({md['n_frames']} saved), g = {md['statistical_inefficiency']:.1f} "
              f"frames; MD in {md['md_dir']}")
