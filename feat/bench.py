"""Benchmarks: named (system, preset, method, seeds) entries, run with accounting, tabulated.

    python -m feat.bench quick                       # a set from systems/benchmarks.toml
    python -m feat.bench gmm40-quick-feat gmm40-quick-switching --seeds 0 1 2
    python -m feat.bench --list

Methods:

- ``feat``: the pipeline (train, SDE transport, BAR) on the system's run file and preset;
- ``ode``: flow-matching targeted FEP, the same pipeline with ``transport.method = "ode"`` and
  the exact divergence (escorted Jarzynski with the exact log-determinant per Euler step);
- ``switching``: non-equilibrium switching without learning (:mod:`feat.baselines`), on the
  same problem, start samples and trajectory counts; ``budget = "feat"`` picks its number of
  λ steps so that its energy evaluations (pilots included) match FEAT's transport
  evaluations, ``(n_f + n_r)(2 n_points + 2)`` network and energy calls (both are reported).

Each (entry, seed) runs in a fresh process (``isolate``), so its peak resident memory is its
own; torch uses ``threads`` threads there (default 1, as the CLI). Every record holds ΔF, σ,
the reference, the error, counts per phase (:mod:`feat.accounting`), wall time, peak memory,
date, machine and git revision; the JSON keeps the records of other entries (a rerun replaces
its own), and the markdown table is written from all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, tomllib

__all__ = ["BenchEntry", "feat_transport_evaluations", "load_catalog", "main",
           "markdown_table", "run_benchmarks", "run_entry"]

METHODS = ("feat", "switching", "ode")
DEFAULT_CATALOG = Path("systems") / "benchmarks.toml"
ODE_OVERRIDES = {"transport": {"method": "ode", "divergence": "exact"}}


@dataclass(frozen=True)
class BenchEntry:
    """One benchmark: ``method`` on the run file ``system`` (a folder with system.toml) with
    ``preset`` and config ``overrides``; ``switching`` holds the baseline's settings
    (:class:`~feat.baselines.SwitchingSettings` keys, plus ``budget = "feat"``)."""

    name: str
    system: Path
    method: str
    preset: str | None = None
    seeds: tuple[int, ...] = (0,)
    overrides: dict = field(default_factory=dict)
    switching: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"benchmark '{self.name}': method must be one of "
                              f"{', '.join(METHODS)}; got {self.method!r}.")
        if not self.seeds:
            raise ConfigError(f"benchmark '{self.name}': give at least one seed.")


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> tuple[dict[str, BenchEntry], dict]:
    """Entries (``[entries.NAME]``) and sets (``[sets] NAME = [entries]``) of a catalog file;
    system folders are relative to the catalog's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no benchmark catalog at '{path}'; give --catalog "
                          "systems/benchmarks.toml.")
    data = tomllib.loads(path.read_text())
    unknown = set(data) - {"entries", "sets", "description"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)} in '{path}'; allowed: "
                          "entries, sets, description.")
    entries = {}
    for name, e in data.get("entries", {}).items():
        bad = set(e) - {"system", "method", "preset", "seeds", "set", "switching", "description"}
        if bad or "system" not in e or "method" not in e:
            raise ConfigError(f"[entries.{name}] needs 'system' and 'method' (optional: preset, "
                              f"seeds, set, switching); unknown: {sorted(bad)}.")
        entries[name] = BenchEntry(name, path.parent / e["system"], e["method"], e.get("preset"),
                                   tuple(int(s) for s in e.get("seeds", [0])),
                                   dict(e.get("set", {})), dict(e.get("switching", {})))
    sets = {k: list(v) for k, v in data.get("sets", {}).items()}
    for k, members in sets.items():
        missing = [m for m in members if m not in entries]
        if missing:
            raise ConfigError(f"set '{k}' names unknown entries {missing}.")
    return entries, sets


def _select(names, catalog: str | Path) -> list[BenchEntry]:
    out: list[BenchEntry] = []
    loaded = None
    for n in names:
        if isinstance(n, BenchEntry):
            out.append(n)
            continue
        loaded = loaded or load_catalog(catalog)
        entries, sets = loaded
        if n in sets:
            out += [entries[m] for m in sets[n]]
        elif n in entries:
            out.append(entries[n])
        else:
            import difflib

            close = difflib.get_close_matches(n, [*entries, *sets], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"no benchmark entry or set named '{n}'.{hint} See --list.")
    return out


# one run ------------------------------------------------------------------------------------


def _config(entry: BenchEntry, seed: int):
    from .config import _merge, load_run_config

    over = _merge(entry.overrides, ODE_OVERRIDES) if entry.method == "ode" else entry.overrides
    return load_run_config(entry.system, entry.preset, _merge(over, {"seed": int(seed)}))


def feat_transport_evaluations(config) -> int:
    """Network and energy calls of FEAT's SDE transport: at each of the ``n_points`` points
    ``b`` and ``s`` (plus ``−∇u_a``, ``−∇u_b`` per informed field, once for the energy
    features the two networks share, and at the tube prior's two projected points per
    network pair, shared), and ``u`` at both ends."""
    tc, fc = config.transport, config.fields
    per_point = 2 + 2 * (int(fc.informed_score) + int(fc.informed_velocity)
                         + int(fc.energy_features or fc.tube_prior)) + 2 * int(fc.tube_prior)
    return (tc.n_forward + tc.n_reverse) * (per_point * tc.n_points + 2)


def _switching_settings(entry: BenchEntry, config):
    from .baselines import SwitchingSettings, steps_for_budget

    opts = dict(entry.switching)
    budget = opts.pop("budget", None)
    opts.setdefault("n_forward", config.transport.n_forward)
    opts.setdefault("n_reverse", config.transport.n_reverse)
    opts.setdefault("trajectories_per_start", config.transport.trajectories_per_start)
    opts.setdefault("n_bootstrap", config.estimate.n_bootstrap)
    opts.setdefault("nan_policy", config.estimate.nan_policy)
    s = SwitchingSettings.from_mapping(opts)
    if budget == "feat":
        s = dataclasses.replace(s, n_steps=steps_for_budget(feat_transport_evaluations(config), s))
    elif budget is not None:
        raise ConfigError(f"switching.budget must be 'feat' or absent; got {budget!r}.")
    return s


def _feat(problem, config, out: Path, gen, counter) -> tuple:
    """:func:`feat.pipeline.run_problem` (as :func:`feat.pipeline.run` calls it), counted.

    The transport's own counts: its phase when the pipeline marks one
    (``accounting.phase("transport")``), else what was counted in its last
    ``timings["transport"]`` seconds (it is the last stage that evaluates anything).
    """
    from .pipeline import run_problem

    result = run_problem(problem, config, out, progress=False, generator=gen)
    if "transport" in counter.phases:
        transport, source = counter.counts("transport"), "phase"
    else:
        transport, source = counter.last_seconds(result.timings["transport"]), "timeline"
    info = {"transport": config.to_dict()["transport"], "fields": config.to_dict()["fields"],
            "timings_s": dict(result.timings), "stages": dict(getattr(result, "stages", {})),
            "run_dir": str(out), "transport_counts": transport.to_dict(),
            "transport_counts_from": source}
    return result.estimate, transport, info


def run_entry(entry: BenchEntry, seed: int, run_root: str | Path = "runs/bench",
              threads: int | None = 1) -> dict:
    """Run one (entry, seed) in this process and return its record (see module docstring)."""
    import torch

    from .accounting import Counter, counted_problem, peak_memory
    from .specs import build_problem

    if threads:
        torch.set_num_threads(int(threads))
    config = _config(entry, seed)
    counter, start = Counter(), time.perf_counter()
    out = Path(run_root) / entry.name / f"seed{seed}"
    with counter.networks():
        with counter.phase("problem"):
            gen = torch.Generator().manual_seed(config.seed)
            problem = counted_problem(build_problem(config.system, gen), counter)
        cost = problem.metadata.get("sampling_cost")
        if cost:  # the MD that made the end-state samples (also from a cache), as `feat run`
            counter.add(gradient=cost["gradient_evals"], sampling=cost["sampling_steps"],
                        phase="end-state sampling")
        with counter.phase(entry.method):
            if entry.method == "switching":
                from .baselines import run_switching

                settings = _switching_settings(entry, config)
                est = run_switching(problem, settings, seed=config.seed).estimate
                c = counter.counts("switching")
                info = {"switching": dataclasses.asdict(settings)}
            else:
                est, c, info = _feat(problem, config, out, gen, counter)
    info["feat_transport_budget"] = feat_transport_evaluations(config)
    return {"entry": entry.name, "system": entry.system.name, "preset": entry.preset,
            "method": entry.method, "seed": int(seed), "estimate": est.to_dict(),
            "counts": counter.to_dict(),
            "estimator_evals": c.network_evals + max(c.energy_evals, c.gradient_evals),
            "wall_s": time.perf_counter() - start, "memory_mib": peak_memory(),
            "threads": torch.get_num_threads(), "settings": info, **provenance()}


def _child(entry: BenchEntry, seed: int, run_root: str, threads: int | None) -> dict:
    import logging

    logging.getLogger("pymbar").setLevel(logging.ERROR)  # as in the CLI: no import banners
    try:
        return run_entry(entry, seed, run_root, threads)
    except Exception as err:  # recorded, so one failing entry does not stop the others
        return {"entry": entry.name, "system": entry.system.name, "preset": entry.preset,
                "method": entry.method, "seed": int(seed), "error": f"{type(err).__name__}: "
                f"{err}", "traceback": traceback.format_exc(), **provenance()}


def provenance() -> dict:
    """Date, machine (platform, CPUs, GPU) and git revision (read-only git calls)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor()
                        or platform.machine(), "cpu_count": os.cpu_count(), "gpu": gpu,
                        "python": platform.python_version(), "torch": torch.__version__},
            "git": _git()}


def _git() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain",
                                "--untracked-files=no"], cwd=root, text=True,
                               capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


# many runs and the table ------------------------------------------------------------------


def run_benchmarks(names, out_json: str | Path | None = None, out_md: str | Path | None = None,
                   *, catalog: str | Path = DEFAULT_CATALOG, seeds=None, isolate: bool = True,
                   run_root: str | Path = "runs/bench", threads: int | None = 1,
                   merge: bool = True) -> list[dict]:
    """Run the entries (or sets) ``names`` for their seeds (or ``seeds``); return the records.

    Writes ``out_json`` (all records, this run's replacing earlier ones of the same entry and
    seed when ``merge``) and ``out_md`` (the table of all of them). ``isolate`` runs each
    (entry, seed) in a fresh process.
    """
    records = []
    for entry in _select(names, catalog):
        for seed in (seeds if seeds is not None else entry.seeds):
            print(f"bench: {entry.name} seed {seed} ...", file=sys.stderr, flush=True)
            rec = (_isolated(entry, seed, str(run_root), threads) if isolate
                   else _child(entry, seed, str(run_root), threads))
            print(f"bench: {_summary(rec)}", file=sys.stderr, flush=True)
            records.append(rec)
            if out_json is not None:  # after every run, so a long batch keeps what it has
                _save(out_json, out_md, records, merge)
    return records


def _save(out_json: str | Path, out_md: str | Path | None, records: list[dict],
          merge: bool) -> None:
    """Write ``records`` (merged into the file's current ones when ``merge``) and the table.

    The file is read again under an exclusive lock (``out_json`` + ".lock", POSIX) at every
    write, so two ``feat bench`` processes sharing one results file keep each other's records.
    """
    from .storage import write_json

    with _locked(Path(str(out_json) + ".lock")):
        data = _merged(_load(out_json), records) if merge else {"records": records}
        write_json(out_json, data)
        if out_md is not None:
            Path(out_md).write_text(markdown_table(data["records"]))


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` for the block (no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _isolated(entry: BenchEntry, seed: int, run_root: str, threads: int | None) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(_child, entry, seed, run_root, threads).result()
    except Exception as err:  # the child died (out of memory, a signal): record it
        return {"entry": entry.name, "system": entry.system.name, "preset": entry.preset,
                "method": entry.method, "seed": int(seed),
                "error": f"the run's process died: {type(err).__name__}: {err}", **provenance()}


def _load(path: str | Path) -> dict:
    """An existing results file; one in another format is kept under ``previous_format``."""
    import json

    path = Path(path)
    if not path.is_file():
        return {"records": []}
    data = json.loads(path.read_text())
    if "records" not in data:
        return {"records": [], "previous_format": data}
    return data


def recorded(names, out_json: str | Path, catalog: str | Path = DEFAULT_CATALOG
             ) -> tuple[list[dict], list[str]]:
    """The records of ``out_json`` that belong to the entries (or sets) ``names``, in the
    catalog's order (all of them when ``names`` is empty), and the entries never run."""
    records = _load(out_json)["records"]
    if not names:
        return records, []
    out, missing = [], []
    for entry in _select(names, catalog):
        mine = sorted((r for r in records if r["entry"] == entry.name), key=lambda r: r["seed"])
        out += mine
        missing += [] if mine else [entry.name]
    return out, missing


def _merged(data: dict, new: list[dict]) -> dict:
    keys = {(r["entry"], r["seed"]) for r in new}
    old = [r for r in data["records"] if (r["entry"], r["seed"]) not in keys]
    return {**data, "records": old + new}


def _num(x, fmt: str = ".3f") -> str:
    if x is None:
        return "–"
    x = float(x)
    return format(x, fmt) if math.isfinite(x) else str(x)


def _summary(r: dict) -> str:
    if "error" in r:
        return f"{r['entry']} seed {r['seed']}: FAILED {r['error']}"
    e = r["estimate"]
    return (f"{r['entry']} seed {r['seed']}: ΔF = {_num(e['delta_f'])} ± {_num(e['sigma'])} "
            f"(reference {e['reference']}), {r['wall_s']:.0f} s")


def _row(r: dict) -> str:
    e = r.get("estimate") or {}
    one_sided = {"Jarzynski forward": " (forward only)", "Jarzynski reverse": " (reverse only)"}
    method = r["method"] + one_sided.get(e.get("method"), "")
    head = (f"| {r['entry']} | {r['system']} | {r.get('preset') or '–'} | {method} "
            f"| {r['seed']} ")
    if "error" in r:
        return head + f"| failed: {r['error'][:80]} |" + " |" * 13
    tot, ref = r["counts"]["total"], e["reference"]
    err = None if ref is None else abs(float(e["delta_f"]) - ref)
    ratio = None if err is None or not float(e["sigma"]) > 0 else err / float(e["sigma"])
    gap, flag = e["bounds"]["gap"], " ⚠" if e.get("warnings") else ""
    ess = " / ".join("–" if d is None else f"{float(d['ess']):.1%}"
                     for d in (e["forward"], e["reverse"]))
    return head + (f"| {_num(e['delta_f'])} ± {_num(e['sigma'])}{flag} | {_num(ref, 'g')} | "
                   f"{_num(err)} | {_num(ratio, '.2f')} | {_num(gap, '.3g')} | {ess} | "
                   f"{tot['energy_evals']:,} / {tot['gradient_evals']:,} | "
                   f"{tot['network_evals']:,} | {r['estimator_evals']:,} | "
                   f"{tot['sampling_steps']:,} | {r['wall_s']:.0f} | "
                   f"{r['memory_mib']['rss_mib']:.0f} | {r['date'][:10]} | {r['git']} |")


def markdown_table(records: list[dict]) -> str:
    """The records as a markdown table, with the machines they ran on."""
    lines = ["| entry | system | preset | method | seed | ΔF ± σ (kT) | reference | \\|error\\| | "
             "\\|error\\|/σ | gap | ESS f / r | u / ∇u evals | network evals | estimator evals | "
             "sampling steps | wall (s) | peak RSS (MiB) | date | git |",
             "|" + "---|" * 19]
    lines += [_row(r) for r in records]
    machines = sorted({f"{m['platform']}, {m['processor']}, {m['cpu_count']} CPUs"
                       + (f", {m['gpu']}" if m.get("gpu") else ", no GPU")
                       for m in (r["machine"] for r in records)})
    lines += ["", "Machine(s): " + "; ".join(machines) + ".", "",
              "Counts are configurations (a batch of B adds B), over the whole run (problem "
              "set-up, training, transport). *Estimator evals*: network forward passes plus "
              "energy calls of the estimation stage alone (FEAT/ODE: the transport; switching: "
              "all of it, pilots included), an energy-and-gradient call counting once; the ODE "
              "also does d backward passes per point for its exact divergence, not counted. "
              "*Gap*: mean(W_f) + mean(W_r), the bound gap; *ESS*: Kish effective sample fraction "
              "per direction; ⚠: the estimate's own warnings (e.g. ESS too low for σ to be "
              "trusted), listed in the JSON."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="feat bench", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="benchmark entries or sets (see --list)")
    p.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    p.add_argument("--json", type=Path, default=Path("systems/benchmarks.json"))
    p.add_argument("--md", type=Path, default=Path("systems/benchmarks.md"))
    p.add_argument("--seeds", type=int, nargs="+", help="override the entries' seeds")
    p.add_argument("--run-root", type=Path, default=Path("runs/bench"))
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--no-pin", action="store_true",
                   help="with one thread, do not pin to one CPU (see feat.cpus)")
    p.add_argument("--no-isolate", action="store_true",
                   help="run in this process (peak memory is then the process's)")
    p.add_argument("--list", action="store_true", help="list entries and sets, then exit")
    p.add_argument("--show", action="store_true",
                   help="print the table of the named entries' recorded runs (from --json) "
                        "without running anything")
    args = p.parse_args(argv)
    try:
        if args.show:
            records, missing = recorded(args.names, args.json, args.catalog)
            print(markdown_table(records), end="")
            if missing:
                print(f"not run yet (no record in {args.json}): {', '.join(missing)}",
                      file=sys.stderr)
            return 0
        if args.list or not args.names:
            entries, sets = load_catalog(args.catalog)
            for k, v in sets.items():
                print(f"set {k}: {' '.join(v)}")
            for e in entries.values():
                print(f"{e.name}: {e.system} preset={e.preset} method={e.method} "
                      f"seeds={list(e.seeds)}")
            return 0
        from .cpus import configure

        print(configure(args.threads, pin=not args.no_pin), file=sys.stderr)
        records = run_benchmarks(args.names, args.json, args.md, catalog=args.catalog,
                                 seeds=args.seeds, isolate=not args.no_isolate,
                                 run_root=args.run_root, threads=args.threads)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(records), end="")
    print(f"written {args.json} and {args.md}", file=sys.stderr)
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
