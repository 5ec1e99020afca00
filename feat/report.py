"""``feat report RUN_DIR``: a human report of a run directory, from its files alone.

:func:`report` reads ``config.json``, ``works.npz`` and ``results.json``, recomputes the
estimate from the stored works with :func:`feat.estimators.estimate` (same ``n_bootstrap``,
seed and NaN policy as the run), checks that it equals ``results.json`` field by field, and
writes ``report.md`` with ``plots/*.png`` beside them (atomically, via :mod:`feat.storage`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import plotting
from .estimators import FreeEnergyEstimate, estimate, load_works
from .storage import atomic_write
from .transport import start_labels

__all__ = ["RunDirectoryError", "RunRecord", "load_run", "report", "write_report"]

REQUIRED = ("config.json", "works.npz", "results.json")


class RunDirectoryError(ValueError):
    """The path is not a complete run directory; the message names what is missing."""


@dataclass(frozen=True)
class RunRecord:
    """A run directory read back, with the estimate recomputed from its works.

    Attributes
    ----------
    run_dir : Path
    config, provenance : dict
        ``config.json``'s resolved configuration and provenance.
    results : dict
        ``results.json`` as written by the pipeline.
    work_f, work_r : np.ndarray or None
        Shapes ``(n_f,)``, ``(n_r,)``: the raw float64 works in kT (non-finite included).
    works_metadata : dict
        The transport settings saved with the works.
    estimate : FreeEnergyEstimate
        Recomputed from the works.
    mismatches : tuple of str
        Dotted keys where the recomputed estimate differs from ``results.json`` (empty: equal);
        every field but the ``warnings`` text, which the current version regenerates.
    """

    run_dir: Path
    config: dict
    provenance: dict
    results: dict
    work_f: np.ndarray | None
    work_r: np.ndarray | None
    works_metadata: dict
    estimate: FreeEnergyEstimate
    mismatches: tuple[str, ...]

    @property
    def reproduced(self) -> bool:
        """Whether the recomputed estimate equals ``results.json`` exactly."""
        return not self.mismatches

    @property
    def estimate_settings(self) -> dict:
        """``n_bootstrap``, ``seed`` and ``nan_policy`` the run (and the recomputation) used."""
        return _estimate_settings(self.config)


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise RunDirectoryError(
            f"'{run_dir}' is not a directory. Give a run directory written by "
            "'feat run SYSTEM --out DIR' (it holds config.json, works.npz and results.json)."
        )
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise RunDirectoryError(
            f"'{run_dir}' is not a complete run directory: {', '.join(missing)} missing. "
            "A run directory is written by 'feat run SYSTEM --out DIR' (config.json, "
            "works.npz, results.json); run it (or let an interrupted run finish with "
            "'feat run ... --resume') and report that directory."
        )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirectoryError(f"'{path}' is not valid JSON ({err}); rerun 'feat run'.") from None
    if not isinstance(data, dict):
        raise RunDirectoryError(f"'{path}' must hold a JSON object; got {type(data).__name__}.")
    return data


def _normalise(data: Any) -> Any:
    """The value as results.json would store it (JSON round trip)."""
    return json.loads(json.dumps(data, default=str))


def _differences(new: Any, old: Any, prefix: str = "") -> list[str]:
    """Dotted keys where ``new`` and ``old`` (JSON values) differ."""
    if isinstance(new, dict) and isinstance(old, dict):
        keys = sorted(set(new) | set(old))
        return [d for k in keys for d in _differences(new.get(k), old.get(k), f"{prefix}{k}.")]
    return [] if new == old else [prefix.rstrip(".") or "estimate"]


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run directory and recompute its estimate from ``works.npz``.

    Raises
    ------
    RunDirectoryError
        If a required file is missing or unreadable; the message names it and the fix.
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    cfg, results = _read_json(run_dir / "config.json"), _read_json(run_dir / "results.json")
    if "estimate" not in results:
        raise RunDirectoryError(f"'{run_dir / 'results.json'}' has no 'estimate'; it was not "
                                "written by 'feat run'. Rerun the run.")
    try:
        work_f, work_r, meta = load_works(run_dir / "works.npz")
    except (OSError, ValueError) as err:
        raise RunDirectoryError(f"cannot read '{run_dir / 'works.npz'}': {err}") from None
    config, stored = cfg.get("config", cfg), results["estimate"]
    per_start = config.get("transport", {}).get("trajectories_per_start", 1)
    new = estimate(work_f, work_r, reference=stored.get("reference"),
                   reference_exact=stored.get("reference_exact", False),
                   **_estimate_settings(config), **start_labels(per_start, work_f, work_r))
    numbers = {k: v for k, v in _normalise(new.to_dict()).items()
               if k != "warnings" and k in stored}  # results from before a field existed
    mismatches = tuple(_differences(numbers, {k: stored.get(k) for k in numbers}))
    return RunRecord(run_dir, config, cfg.get("provenance", {}), results, work_f, work_r, meta,
                     new, mismatches)


def _estimate_settings(config: dict) -> dict:
    """``n_bootstrap``, ``seed`` and ``nan_policy`` of a run's resolved configuration."""
    ec = config.get("estimate", {})
    return {"n_bootstrap": ec.get("n_bootstrap", 200), "seed": config.get("seed", 0),
            "nan_policy": ec.get("nan_policy", "raise")}


def write_plots(record: RunRecord, plot_dir: str | os.PathLike) -> dict[str, Path]:
    """Every plot the run's files allow, as ``{caption: path}`` (PNG files in ``plot_dir``)."""
    plot_dir, est = Path(plot_dir), record.estimate
    plots = {
        "Works (Crooks)": plotting.plot_work_histograms(
            record.work_f, record.work_r, plot_dir / "works.png", delta_f=est.delta_f,
            sigma=est.sigma, reference=est.reference, title=f"{record.results.get('name', '')}"
            ": $W_f$ and $-W_r$ cross at ΔF"),
        "Convergence with the number of trajectories": plotting.plot_convergence(
            record.work_f, record.work_r, plot_dir / "convergence.png",
            reference=est.reference),
    }
    monitor = record.results.get("monitor") or []
    if monitor:
        plots["In-training estimates, bounds and gap"] = plotting.plot_monitor(
            monitor, plot_dir / "monitor.png", reference=est.reference)
    history = record.results.get("training", {}).get("history") or monitor
    if any(h.get("losses") or h.get("loss") for h in history):
        plots["Training losses"] = plotting.plot_losses(history, plot_dir / "losses.png")
    return plots


def _f(x: float | None, k: int = 3) -> str:
    if x is None:
        return "—"
    return f"{x:.{k}f}" if math.isfinite(x) else str(x)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _headline(record: RunRecord) -> list[str]:
    est, name = record.estimate, record.results.get("name", record.config.get("name", "run"))
    boot = "" if est.sigma_bootstrap is None else f", bootstrap ± {_f(est.sigma_bootstrap)}"
    lines = [f"# Run report: {name}", "",
             f"**ΔF = F_b − F_a = {_f(est.delta_f, 4)} ± {_f(est.sigma, 4)} {est.units}** "
             f"({est.method}{boot})", "", f"    {est.summary()}", ""]
    lines += [f"> **Warning.** {w}" for w in est.warnings]
    return lines + ([""] if est.warnings else [])


def _estimators(est: FreeEnergyEstimate) -> list[str]:
    rows = [] if est.method != "BAR" else [["BAR (headline)", _f(est.delta_f, 4),
                                            _f(est.sigma, 4), "", f"{est.n_f} + {est.n_r}",
                                            str(est.n_posinf)]]
    for name, d in (("Jarzynski forward", est.forward), ("Jarzynski reverse", est.reverse)):
        if d is not None:
            label = name + (" (headline)" if name == est.method else "")
            rows.append([label, _f(d.delta_f, 4), _f(d.sigma, 4), f"{d.ess:.1%}", str(d.n),
                         str(d.n_posinf)])
    lines = ["## Estimators", ""] + _table(
        ["estimator", "ΔF (kT)", "σ (kT)", "ESS (Kish)", "N", "+inf works"], rows)
    return lines + ["", _bounds_text(est), ""]


def _bounds_text(est: FreeEnergyEstimate) -> str:
    b = est.bounds
    where = "inside" if b.contains(est.delta_f) else "OUTSIDE"
    if b.gap is None:
        side = f"ΔF ≤ ⟨W_f⟩ = {_f(b.upper)}" if b.upper is not None else \
            f"ΔF ≥ −⟨W_r⟩ = {_f(b.lower)}"
        return f"Jensen bound (one direction only, no gap): {side} kT; the estimate is {where}."
    return (f"Jensen bounds −⟨W_r⟩ ≤ ΔF ≤ ⟨W_f⟩: [{_f(b.lower)}, {_f(b.upper)}] kT; gap "
            f"⟨W_f⟩ + ⟨W_r⟩ = {_f(b.gap)} kT (0 for a perfect transport); the estimate is "
            f"{where} the bounds.")


def _works_section(record: RunRecord) -> list[str]:
    rows = []
    for name, w in (("forward W_f", record.work_f), ("reverse W_r", record.work_r)):
        if w is None:
            continue
        fin = w[np.isfinite(w)]
        stats = [_f(float(f(fin))) if fin.size else "—" for f in (np.mean, np.std, np.min,
                                                                   np.max)]
        rows.append([name, str(w.size), *stats, str(int(np.isposinf(w).sum())),
                     str(int(np.isnan(w).sum())), str(int(np.isneginf(w).sum()))])
    est = record.estimate
    lines = ["## Works", ""] + _table(["direction", "N", "mean", "std", "min", "max", "+inf",
                                       "NaN", "−inf"], rows)
    return lines + ["", f"Non-finite works: {est.n_nonfinite} in all (+inf: {est.n_posinf}, "
                    f"NaN dropped: {sum(est.n_nan_dropped)}); statistics above are over the "
                    "finite works (kT).", ""]


def _reference(est: FreeEnergyEstimate) -> list[str]:
    if est.reference is None:
        return ["## Reference", "", "No exact or reference ΔF is known for this system.", ""]
    diff = est.delta_f - est.reference
    z = "n/a" if est.z is None else f"{est.z:+.2f}"
    return ["## Reference", "", f"Reference ΔF = {est.reference:.6g} kT; ΔF − reference = "
            f"{diff:+.4f} kT; z = (ΔF − reference) / σ = {z}.", ""]


def _reproduction(record: RunRecord) -> list[str]:
    s = record.estimate_settings
    how = (f"Recomputed from `works.npz` with `feat.estimators.estimate` (n_bootstrap = "
           f"{s['n_bootstrap']}, seed = {s['seed']}, nan_policy = {s['nan_policy']!r}, "
           f"reference = {record.estimate.reference!r}): ")
    if record.reproduced:
        return ["## Reproducibility", "", how + "**identical to `results.json`** in every "
                "number (exact float equality).", ""]
    return ["## Reproducibility", "", how + "**DIFFERS from `results.json`** in: "
            + ", ".join(f"`{k}`" for k in record.mismatches) + ". The numbers above are the "
            "recomputed ones; `results.json` may have been edited or written by another "
            "version.", ""]


def _training(record: RunRecord) -> list[str]:
    tr = record.results.get("training", {})
    lines = ["## Training", "", f"Steps: {tr.get('steps', '—')}; skipped (non-finite loss): "
             f"{tr.get('n_skipped', '—')}."]
    history = tr.get("history") or []
    if history and history[-1].get("losses"):
        last = history[-1]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in last["losses"].items())
        lines.append(f"Last logged losses (step {last['step']}): {terms}.")
    monitor = record.results.get("monitor") or []
    if monitor:
        pick = sorted({round(i) for i in np.linspace(0, len(monitor) - 1, min(8, len(monitor)))})
        rows = [[str(m["step"]), *(_f(_num(m.get(k))) for k in
                                   ("delta_f", "sigma", "lower", "upper", "gap"))]
                for m in (monitor[i] for i in pick)]
        lines += ["", "In-training estimates (EMA fields, separate random stream):", ""]
        lines += _table(["step", "ΔF", "σ", "lower", "upper", "gap"], rows)
    return lines + [""]


def _settings(record: RunRecord) -> list[str]:
    cfg, meta = record.config, record.works_metadata
    timings = record.results.get("timings_s", {})
    lines = ["## Timings", ""] + _table(["stage", "seconds"],
                                        [[k, f"{v:.1f}"] for k, v in timings.items()])
    lines += ["", "## System and settings", "", f"System: `{json.dumps(cfg.get('system', {}))}`",
              ""]
    for section in ("fields", "training", "transport", "estimate"):
        if section in cfg:
            lines.append(f"- {section}: `{json.dumps(cfg[section])}`")
    lines += [f"- works: `{json.dumps(meta)}`", "", "## Provenance", ""]
    prov = {**record.provenance, "report": f"feat report, "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}"}
    return lines + [f"- {k}: {v}" for k, v in prov.items()] + [""]


def render(record: RunRecord, plots: dict[str, Path]) -> str:
    """``report.md`` text for ``record``, embedding ``plots`` (paths relative to the run)."""
    est = record.estimate
    lines = _headline(record) + _reproduction(record) + _estimators(est)
    lines += _reference(est) + _works_section(record) + _training(record) + _settings(record)
    lines += ["## Plots", ""]
    for caption, path in plots.items():
        rel = Path(path).relative_to(record.run_dir).as_posix()
        lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    return "\n".join(lines)


def write_report(record: RunRecord) -> Path:
    """Write ``plots/*.png`` and ``report.md`` into the record's run directory."""
    plots = write_plots(record, record.run_dir / "plots")
    text = render(record, plots)
    return atomic_write(record.run_dir / "report.md", lambda tmp: Path(tmp).write_text(text),
                        ".md")


def report(run_dir: str | os.PathLike) -> Path:
    """Regenerate the estimate, ``report.md`` and ``plots/*.png`` of a run directory.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A directory written by ``feat run`` (``config.json``, ``works.npz``, ``results.json``).

    Returns
    -------
    pathlib.Path
        The path of ``report.md``.

    Raises
    ------
    RunDirectoryError
        If ``run_dir`` is not a complete run directory (the message names the missing file).
    """
    return write_report(load_run(run_dir))
