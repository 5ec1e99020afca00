"""ALDP-S: force evaluations of a FEAT run against 11-window MBAR at the same σ (issue #6).

    python systems/aldp_s/force_budget.py RUN_DIR [--reference systems/aldp_s/reference.json]
                                                 [--out systems/aldp_s/force_budget.json]

FEAT's cost is what the run's ``results.json`` accounted: the gradient (force) evaluations of
its end-state MD (the ``end-state sampling`` phase: every MD step of both end states,
equilibration included) plus those of training and transport. MBAR's cost is the MD of its
windows (``reference.json``); its σ falls as 1/√(production steps), so the MBAR cost for FEAT's
σ keeps each window's equilibration and scales its production by ``(σ_MBAR / σ_FEAT)²``.
The ratio FEAT / MBAR-at-equal-σ is the number the issue asks for (target ≤ 1/3).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def budget(run_dir: Path, reference: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    acc, est = res["accounting"], res["estimate"]
    if "end-state sampling" not in acc["phases"]:
        raise SystemExit(f"{run_dir}/results.json has no 'end-state sampling' phase: rerun it "
                         "with this feat (it records the MD that made the samples).")
    feat_forces = acc["total"]["gradient_evals"]
    ref = json.loads(reference.read_text())
    mbar, windows = ref["reference"]["mbar"], ref["reference"]["windows"]
    eq = ref["spec"]["equilibration_steps"]
    mbar_forces = sum(w["md_steps"] for w in windows)
    scale = (mbar["sigma"] / est["sigma"]) ** 2
    mbar_equal = sum(eq + (w["md_steps"] - eq) * scale for w in windows)
    return {
        "feat": {"run": str(run_dir), "delta_f": est["delta_f"], "sigma": est["sigma"],
                 "force_evals": feat_forces,
                 "by_phase": {k: v["gradient_evals"] for k, v in acc["phases"].items()},
                 "command": res.get("provenance", {}).get("command")},
        "mbar": {"delta_f": mbar["delta_f"], "sigma": mbar["sigma"], "windows": len(windows),
                 "force_evals": mbar_forces, "force_evals_at_feat_sigma": round(mbar_equal)},
        "ratio_feat_over_mbar_at_equal_sigma": feat_forces / mbar_equal,
        "target": "<= 1/3",
    }


def main() -> None:
    here = Path(__file__).parent
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--reference", type=Path, default=here / "reference.json")
    p.add_argument("--out", type=Path, default=here / "force_budget.json")
    a = p.parse_args()
    out = budget(a.run_dir, a.reference)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    f, m = out["feat"], out["mbar"]
    print(f"FEAT  {f['delta_f']:.3f} ± {f['sigma']:.3f} kT with {f['force_evals']:,} force "
          f"evaluations {f['by_phase']}")
    print(f"MBAR  {m['delta_f']:.3f} ± {m['sigma']:.3f} kT with {m['force_evals']:,}; at σ = "
          f"{f['sigma']:.3f}: {m['force_evals_at_feat_sigma']:,}")
    print(f"ratio FEAT / MBAR at equal σ = {out['ratio_feat_over_mbar_at_equal_sigma']:.2f} "
          f"(target ≤ 1/3); written to {a.out}")


if __name__ == "__main__":
    main()
