"""ALDP-S switching in internal coordinates: how much of the work variance is per start sample.

    python systems/aldp_s/start_reuse.py STARTS PER_START STEPS [--out FILE.json]

Runs ``STARTS × PER_START`` switching trajectories per direction (MALA, 50-chain pilot, ``STEPS``
λ steps) from the last ``STARTS`` of the bench entry's 560 samples per state, then reports BAR,
its bootstrap σ over trajectories and over start samples, the gap, and the share of each
direction's work variance that is between start samples. ``systems/aldp_s/README.md`` ("Where
the floor is") quotes ``140 4 400`` and ``200 1 1600``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from feat.baselines.switching import SwitchingProtocol, switch, tune_step_sizes
from feat.config import load_run_config
from feat.estimators import bar, bootstrap
from feat.specs import build_problem
from feat.transport import start_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("starts", type=int)
    p.add_argument("per_start", type=int)
    p.add_argument("steps", type=int)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_run_config("systems/aldp_s", overrides={"system": {
        "coordinates": "internal", "n_samples_a": 560, "n_samples_b": 560,
        "production_steps": 520000}})
    prob = build_problem(cfg.system, torch.Generator().manual_seed(0))
    path = SwitchingProtocol.uniform(prob.energy_a, prob.energy_b, args.steps, 1, 1)
    n = args.starts * args.per_start
    rows = start_rows(n, args.per_start)
    works = []
    for d, (proto, x) in enumerate(((path, prob.x_a), (path.reversed(), prob.x_b))):
        eps = tune_step_sizes(proto, x[:50], initial=0.3, target_accept=0.6, n_warmup=20,
                              generator=torch.Generator().manual_seed(d))
        t0 = time.perf_counter()
        r = switch(proto, x[len(x) - args.starts:][rows], step_size=eps, seed=100 + d,
                   batch_size=1000)
        works.append(r.work.numpy())
        print(f"direction {d}: {time.perf_counter() - t0:.0f} s", flush=True)
    wf, wr = works
    labels = rows.numpy()
    fn = lambda f, r: bar(f, r)[0]  # noqa: E731
    df, sigma = bar(wf, wr)
    res = {"starts": args.starts, "per_start": args.per_start, "steps": args.steps,
           "delta_f": df, "sigma": sigma, "gap": float(wf.mean() + wr.mean()),
           "sigma_bootstrap_trajectories": bootstrap(wf, wr, fn, 300),
           "sigma_bootstrap_starts": bootstrap(wf, wr, fn, 300, groups_f=labels,
                                               groups_r=labels)}
    for name, w in (("f", wf), ("r", wr)):
        means = np.array([w[labels == c].mean() for c in range(args.starts)])
        res[f"var_{name}"], res[f"var_between_starts_{name}"] = float(w.var()), float(means.var())
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
