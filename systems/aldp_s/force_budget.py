"""ALDP-S: force evaluations of a FEAT run against 11-window MBAR at the same σ (issue #6).

    python systems/aldp_s/force_budget.py RUN_DIR [--reference systems/aldp_s/reference.json]
                                                 [--out systems/aldp_s/force_budget.json]
    python systems/aldp_s/force_budget.py BENCH.json --entry NAME [...]

The second form reads the newest record of a ``feat bench`` entry (any method, e.g. the
switching baseline, whose record also holds the end-state MD) from a bench JSON file.

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


def _source(path: Path, entry: str | None) -> tuple[dict, dict, str | None, str]:
    """(accounting, estimate, command, method) of a run folder or a bench entry's newest
    record."""
    if path.is_dir():
        res = json.loads((path / "results.json").read_text())
        return (res["accounting"], res["estimate"], res.get("provenance", {}).get("command"),
                "feat")
    records = [r for r in json.loads(path.read_text())["records"] if r["entry"] == entry]
    if not records:
        raise SystemExit(f"{path} holds no record of bench entry {entry!r}: give --entry NAME "
                         "of an entry it holds, or a run folder.")
    r = max(records, key=lambda r: r.get("date", ""))
    return r["counts"], r["estimate"], f"feat bench {entry} --seeds {r['seed']}", r["method"]


def budget(run_dir: Path, reference: Path, entry: str | None = None) -> dict:
    acc, est, command, method = _source(run_dir, entry)
    if "end-state sampling" not in acc["phases"]:
        raise SystemExit(f"{run_dir} has no 'end-state sampling' phase: rerun it "
                         "with this feat (it records the MD that made the samples).")
    feat_forces = acc["total"]["gradient_evals"]
    ref = json.loads(reference.read_text())
    mbar, windows = ref["reference"]["mbar"], ref["reference"]["windows"]
    eq = ref["spec"]["equilibration_steps"]
    mbar_forces = sum(w["md_steps"] for w in windows)
    scale = (mbar["sigma"] / est["sigma"]) ** 2
    mbar_equal = sum(eq + (w["md_steps"] - eq) * scale for w in windows)
    return {
        "feat": {"run": str(run_dir), "method": method, "delta_f": est["delta_f"],
                 "sigma": est["sigma"],
                 "force_evals": feat_forces,
                 "by_phase": {k: v["gradient_evals"] for k, v in acc["phases"].items()},
                 "command": command},
        "mbar": {"delta_f": mbar["delta_f"], "sigma": mbar["sigma"], "windows": len(windows),
                 "force_evals": mbar_forces, "force_evals_at_feat_sigma": round(mbar_equal)},
        "ratio_feat_over_mbar_at_equal_sigma": feat_forces / mbar_equal,
        "target": "<= 1/3",
    }


def main() -> None:
    here = Path(__file__).parent
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a run folder, or a bench JSON with --entry")
    p.add_argument("--entry", help="the bench entry whose newest record to read")
    p.add_argument("--reference", type=Path, default=here / "reference.json")
    p.add_argument("--out", type=Path, default=here / "force_budget.json")
    a = p.parse_args()
    out = budget(a.run_dir, a.reference, a.entry)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    f, m = out["feat"], out["mbar"]
    ratio = out["ratio_feat_over_mbar_at_equal_sigma"]
    print(f"{f['method']}  {f['delta_f']:.3f} ± {f['sigma']:.3f} kT with {f['force_evals']:,} "
          f"force evaluations {f['by_phase']}")
    print(f"MBAR  {m['delta_f']:.3f} ± {m['sigma']:.3f} kT with {m['force_evals']:,}; "
          f"at σ = {f['sigma']:.3f}: {m['force_evals_at_feat_sigma']:,}")
    print(f"ratio {f['method']} / MBAR at equal σ = {ratio:.2f} (target ≤ 1/3); written to "
          f"{a.out}")


if __name__ == "__main__":
    main()
