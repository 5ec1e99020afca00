"""Plots of a run: works (Crooks), convergence, in-training monitor, losses, magnetisation.

Every function takes arrays or dicts and a destination path, writes one PNG there atomically
and returns the path. matplotlib is imported lazily, through its object-oriented API with the
Agg canvas: no pyplot, no global backend change, so the functions are safe in scripts,
threads and notebooks (show a result with ``IPython.display.Image(path)``).

Conventions (README): works in kT, ``W_f`` from samples of a, ``W_r`` from samples of b;
ΔF = F_b − F_a; by Crooks, the densities of ``W_f`` and ``−W_r`` cross at ``W = ΔF``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp

from .storage import atomic_write

__all__ = [
    "convergence_curves",
    "plot_convergence",
    "plot_losses",
    "plot_magnetisation",
    "plot_monitor",
    "plot_work_histograms",
    "umbrella_weights",
]

WIDE_KT = 1e3  # works spread wider than this (kT) are drawn on a symlog axis
COLORS = {"BAR": "black", "forward": "tab:blue", "reverse": "tab:orange", "merged": "black"}


def _figure(n_rows: int = 1, height: float = 3.8, sharex: bool = True) -> tuple[Any, Any]:
    """A matplotlib Figure (Agg canvas, no pyplot) and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, height), dpi=120, layout="constrained")
    axes = fig.subplots(n_rows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, axes if n_rows > 1 else axes[0]


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), ".png")


def _works(work: ArrayLike | None) -> np.ndarray | None:
    """Float64 1-D works with NaN removed (``+inf`` kept); None if absent."""
    if work is None:
        return None
    if hasattr(work, "detach"):
        work = work.detach().cpu().numpy()
    w = np.asarray(work, dtype=np.float64).reshape(-1)
    return w[~np.isnan(w)]


def _mark_delta_f(ax: Any, delta_f: float | None, sigma: float | None,
                  reference: float | None) -> None:
    """Vertical line at ΔF with a ±σ band, and a dashed line at the reference."""
    if delta_f is not None and math.isfinite(delta_f):
        s = sigma if sigma is not None and math.isfinite(sigma) else 0.0
        ax.axvspan(delta_f - s, delta_f + s, color="0.6", alpha=0.35, lw=0)
        k = min(6, max(2, 1 - math.floor(math.log10(s)))) if s > 0 else 3  # σ to 2 digits
        ax.axvline(delta_f, color="black", lw=1.2, label=f"ΔF = {delta_f:.{k}f} ± {s:.{k}f}")
    if reference is not None:
        ax.axvline(reference, color="tab:red", ls="--", lw=1.2, label=f"reference {reference:.4g}")


def _hist_range(values: list[np.ndarray], extra: list[float],
                q: float = 0.5) -> tuple[float, float]:
    """Union of each array's central ``100 - 2q`` % finite values, widened to hold ``extra``."""
    finite = [v[np.isfinite(v)] for v in values]
    ends = [np.percentile(v, [q, 100 - q]) for v in finite if v.size]
    ends += [(x, x) for x in extra if x is not None and math.isfinite(x)]
    lo, hi = (min(e[0] for e in ends), max(e[1] for e in ends)) if ends else (0.0, 1.0)
    pad = 0.05 * (hi - lo) or 0.5
    return float(lo - pad), float(hi + pad)


def plot_work_histograms(
    work_f: ArrayLike | None,
    work_r: ArrayLike | None,
    path: str | os.PathLike,
    *,
    delta_f: float | None = None,
    sigma: float | None = None,
    reference: float | None = None,
    bins: int = 60,
    title: str | None = None,
) -> Path:
    """Histograms of ``W_f`` and ``−W_r`` (Crooks: they cross at ΔF), with ΔF ± σ marked.

    Parameters
    ----------
    work_f, work_r : array_like or None
        Shapes ``(n_f,)`` and ``(n_r,)``: forward and reverse works in kT. NaN works are left
        out; ``+inf`` works cannot be drawn and are counted in the legend.
    path : str or os.PathLike
        Destination PNG.
    delta_f, sigma : float, optional
        The estimate and its standard error, drawn as a line and a grey band.
    reference : float, optional
        The exact or reference ΔF, drawn dashed.
    bins : int
        Bins over the union of each direction's central 99 % of works (the legend counts
        the works left off). Works spread over more than ``WIDE_KT`` kT are drawn as counts
        in bins even in ``asinh(W)`` on a symlog axis.
    title : str, optional

    Returns
    -------
    pathlib.Path
    """
    wf, wr = _works(work_f), _works(work_r)
    sides = [(w, lbl, c) for w, lbl, c in ((wf, "$W_f$ (a → b)", COLORS["forward"]),
                                            (None if wr is None else -wr, "$-W_r$ (b → a)",
                                             COLORS["reverse"])) if w is not None]
    if not sides:
        raise ValueError("plot_work_histograms needs work_f, work_r or both; got neither.")
    lo, hi = _hist_range([w for w, _, _ in sides], [delta_f, reference])
    wide = hi - lo > WIDE_KT  # far from converged: bins even in asinh(W), counts on symlog
    edges = np.sinh(np.linspace(np.arcsinh(lo), np.arcsinh(hi), bins + 1)) if wide \
        else np.linspace(lo, hi, bins + 1)
    fig, ax = _figure()
    for w, label, color in sides:
        finite = w[np.isfinite(w)]
        label += f", n = {w.size}" + _left_off(w, finite, edges)
        if finite.size:
            for style in ({"histtype": "stepfilled", "alpha": 0.35, "label": label},
                          {"histtype": "step", "lw": 1.2}):
                ax.hist(finite, bins=edges, density=not wide, color=color, **style)
    _mark_delta_f(ax, delta_f, sigma, reference)
    ax.set_ylim(top=1.3 * ax.get_ylim()[1])  # room for the legend
    if wide:
        _symlog(ax, max(abs(lo), abs(hi)))
    ax.set(xlabel="work (kT)" + (", symlog axis" if wide else ""),
           ylabel="count" if wide else "density",
           title=title or "Works: $W_f$ and $-W_r$ cross at ΔF (Crooks)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _left_off(w: np.ndarray, finite: np.ndarray, edges: np.ndarray) -> str:
    """Legend note on works not drawn: off the plotted range, or non-finite."""
    n_off = finite.size - np.count_nonzero((finite >= edges[0]) & (finite <= edges[-1]))
    parts = [f"{n} {what}" for n, what in ((n_off, "off-range"),
                                          (w.size - finite.size, "non-finite")) if n]
    return f" ({', '.join(parts)})" if parts else ""


def _symlog(ax: Any, extent: float) -> None:
    """Symlog x axis (linear within ±1 kT) with about five decades labelled per side."""
    from matplotlib.ticker import SymmetricalLogLocator

    ax.set_xscale("symlog", linthresh=1.0)
    step = max(1, math.ceil(math.log10(max(extent, 10.0)) / 5))
    ax.xaxis.set_major_locator(SymmetricalLogLocator(base=10.0**step, linthresh=1.0))


def _prefix_sizes(n: int, n_points: int, first: int = 10) -> np.ndarray:
    """Geometrically spaced prefix lengths from ``min(first, n)`` to ``n``."""
    sizes = np.geomspace(min(first, n), n, n_points).round().astype(int)
    return np.unique(sizes)


def _safe(fn: Any, *args: np.ndarray) -> tuple[float, float]:
    """``(delta_f, sigma)`` of an estimator, NaN where it cannot be computed."""
    with np.errstate(all="ignore"):
        try:
            out = fn(*args)
        except (ValueError, RuntimeError, FloatingPointError, ZeroDivisionError):
            return math.nan, math.nan
    return (out.delta_f, out.sigma) if hasattr(out, "delta_f") else out


def convergence_curves(
    work_f: ArrayLike | None, work_r: ArrayLike | None, n_points: int = 12
) -> dict[str, np.ndarray]:
    """ΔF and σ of BAR and both Jarzynski estimators on growing prefixes of the works.

    Prefix ``k`` takes the first ``k`` works of each direction (all of a shorter direction).
    NaN works are left out first.

    Returns
    -------
    dict
        ``"n"``: shape ``(p,)`` prefix lengths; ``"{name}"`` and ``"{name}_sigma"`` for
        ``name`` in ``BAR``, ``forward``, ``reverse`` (those the given directions allow),
        shape ``(p,)`` in kT, NaN where an estimator failed.
    """
    from .estimators import bar, jarzynski_forward, jarzynski_reverse

    wf, wr = _works(work_f), _works(work_r)
    sizes = [w.size for w in (wf, wr) if w is not None and w.size]
    if not sizes:
        raise ValueError("convergence_curves needs non-empty work_f or work_r; got neither.")
    ns = _prefix_sizes(max(sizes), n_points)
    est = {"forward": (jarzynski_forward, wf), "reverse": (jarzynski_reverse, wr)}
    out: dict[str, np.ndarray] = {"n": ns}
    for name, (fn, w) in est.items():
        if w is not None and w.size:
            out[name], out[f"{name}_sigma"] = np.array([_safe(fn, w[:k]) for k in ns]).T
    if "forward" in out and "reverse" in out:
        out["BAR"], out["BAR_sigma"] = np.array([_safe(bar, wf[:k], wr[:k]) for k in ns]).T
    return out


def plot_convergence(
    work_f: ArrayLike | None,
    work_r: ArrayLike | None,
    path: str | os.PathLike,
    *,
    reference: float | None = None,
    n_points: int = 12,
) -> Path:
    """ΔF ± σ of BAR, forward and reverse Jarzynski against the number of trajectories.

    Parameters
    ----------
    work_f, work_r : array_like or None
        Shapes ``(n_f,)`` and ``(n_r,)``, works in kT, in the order they were drawn.
    path : str or os.PathLike
        Destination PNG.
    reference : float, optional
        The exact or reference ΔF, drawn dashed.
    n_points : int
        Prefix lengths, geometrically spaced (see :func:`convergence_curves`).

    Returns
    -------
    pathlib.Path
    """
    curves = convergence_curves(work_f, work_r, n_points)
    fig, ax = _figure()
    n = curves["n"]
    for name in ("forward", "reverse", "BAR"):
        if name not in curves:
            continue
        f, s = curves[name], curves[f"{name}_sigma"]
        label = name if name == "BAR" else f"Jarzynski {name}"
        ax.fill_between(n, f - s, f + s, color=COLORS[name], alpha=0.2, lw=0)
        ax.plot(n, f, "o-", ms=3, color=COLORS[name], label=label)
    if reference is not None:
        ax.axhline(reference, color="tab:red", ls="--", lw=1.2, label=f"reference {reference:.4g}")
    ax.set_xscale("log")
    ax.set(xlabel="trajectories per direction (first k)", ylabel="ΔF (kT)",
           title="Convergence: estimate ± σ on growing prefixes of the works")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _float(value: Any) -> float:
    """JSON number, "inf"-style string or None → float (None → NaN)."""
    return math.nan if value is None else float(value)


def plot_monitor(
    monitor: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    reference: float | None = None,
) -> Path:
    """In-training estimates: ΔF ± σ inside the bounds (top) and the gap (bottom) vs step.

    Parameters
    ----------
    monitor : sequence of dict
        ``results["monitor"]``: one dict per check with ``step``, ``delta_f``, ``sigma``,
        ``lower``, ``upper`` and ``gap`` (kT; None or "inf" allowed).
    path : str or os.PathLike
        Destination PNG.
    reference : float, optional
        The exact or reference ΔF, drawn dashed.

    Returns
    -------
    pathlib.Path
    """
    if not monitor:
        raise ValueError("plot_monitor needs at least one monitor record; got none.")
    step = np.array([m["step"] for m in monitor], dtype=float)
    get = {k: np.array([_float(m.get(k)) for m in monitor]) for k in
           ("delta_f", "sigma", "lower", "upper", "gap")}
    fig, (top, bottom) = _figure(2, height=5.2)
    top.fill_between(step, get["lower"], get["upper"], color="0.85", label="bounds "
                     "$[-\\langle W_r\\rangle, \\langle W_f\\rangle]$")
    top.errorbar(step, get["delta_f"], get["sigma"], fmt="o-", ms=3, color="black",
                 capsize=2, label="ΔF ± σ (BAR)")
    if reference is not None:
        top.axhline(reference, color="tab:red", ls="--", lw=1.2, label=f"reference {reference:.4g}")
    top.set(ylabel="ΔF (kT)", title="In-training estimates (EMA fields)")
    top.legend(fontsize=8)
    gap = get["gap"]
    bottom.plot(step, gap, "o-", ms=3, color="tab:purple")
    finite = gap[np.isfinite(gap)]
    if finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
        bottom.set_yscale("log")
    bottom.set(xlabel="training step", ylabel="gap (kT)")
    return _save(fig, path)


def plot_losses(history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Training loss terms against the step.

    Parameters
    ----------
    history : sequence of dict
        One dict per logged step with ``step`` and the loss terms in ``losses`` (a
        ``TrainingRecord`` as a dict, ``results["training"]["history"]``) or ``loss`` (a
        monitor record); records without losses are skipped.
    path : str or os.PathLike
        Destination PNG.

    Returns
    -------
    pathlib.Path
    """
    rows = [(r["step"], r.get("losses") or r.get("loss")) for r in history]
    rows = [(s, terms) for s, terms in rows if terms]
    if not rows:
        raise ValueError("plot_losses needs records with 'losses' (or 'loss'); got none.")
    names = sorted({k for _, terms in rows for k in terms}, key=lambda k: k != "total")
    fig, ax = _figure()
    steps = np.array([s for s, _ in rows], dtype=float)
    for name in names:
        y = np.array([_float(terms.get(name)) for _, terms in rows])
        ax.plot(steps, y, "o-" if len(rows) < 30 else "-", ms=3, lw=1.6 if name == "total"
                else 1.0, color="black" if name == "total" else None, label=name)
    ax.set(xlabel="training step", ylabel="loss", title="Training losses (live networks)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def umbrella_weights(bias_kn: ArrayLike, n_k: ArrayLike, f_k: ArrayLike) -> np.ndarray:
    r"""Weights of pooled umbrella samples for the unbiased state (WHAM/MBAR with known f_k).

    Window ``k`` samples ``exp(-u_0 - w_k)``; with its free energy ``f_k = F_k - F_0`` (any
    common offset), the pooled samples reweight to the unbiased density with

        weight_n ∝ 1 / Σ_k N_k exp(f_k - w_k(x_n)).

    Parameters
    ----------
    bias_kn : array_like, shape (K, N)
        Reduced bias ``w_k`` (kT) of window ``k`` at pooled sample ``n``.
    n_k : array_like, shape (K,)
        Samples drawn from each window (``Σ n_k = N``).
    f_k : array_like, shape (K,)
        Window free energies in kT up to a constant; two windows: ``(0, ΔF)``.

    Returns
    -------
    np.ndarray, shape (N,)
        Non-negative weights summing to one.
    """
    bias_kn = np.asarray(bias_kn, dtype=np.float64)
    n_k, f_k = np.asarray(n_k, dtype=np.float64), np.asarray(f_k, dtype=np.float64)
    if bias_kn.ndim != 2 or n_k.shape != (bias_kn.shape[0],) or f_k.shape != n_k.shape:
        raise ValueError(f"bias_kn must be (K, N) with n_k and f_k of shape (K,); got "
                         f"{bias_kn.shape}, {n_k.shape}, {f_k.shape}.")
    if n_k.sum() != bias_kn.shape[1]:
        raise ValueError(f"n_k must sum to the N = {bias_kn.shape[1]} pooled samples; "
                         f"got {n_k.tolist()}.")
    log_w = -logsumexp(np.log(n_k)[:, None] + f_k[:, None] - bias_kn, axis=0)
    return np.exp(log_w - logsumexp(log_w))


def plot_magnetisation(
    m_a: ArrayLike,
    m_b: ArrayLike,
    bias_kn: ArrayLike,
    delta_f: float,
    path: str | os.PathLike,
    *,
    exact: ArrayLike | None = None,
    bins: int = 50,
) -> Path:
    """Magnetisation histograms of two umbrella windows and their merged, unbiased estimate.

    Parameters
    ----------
    m_a, m_b : array_like
        Shapes ``(n_a,)`` and ``(n_b,)``: magnetisations of the samples of windows a and b.
    bias_kn : array_like, shape (2, n_a + n_b)
        The bias of window a (row 0) and b (row 1), kT, at the pooled samples ``[m_a, m_b]``.
    delta_f : float
        ``F_b - F_a`` of the two windows in kT (e.g. the FEAT estimate).
    path : str or os.PathLike
        Destination PNG.
    exact : array_like, optional
        Magnetisations of unbiased samples, drawn as a reference histogram.
    bins : int

    Returns
    -------
    pathlib.Path
    """
    m_a, m_b = np.asarray(m_a, dtype=np.float64), np.asarray(m_b, dtype=np.float64)
    pooled = np.concatenate([m_a, m_b])
    weights = umbrella_weights(bias_kn, [m_a.size, m_b.size], [0.0, delta_f])
    lo, hi = _hist_range([pooled] + ([] if exact is None else [np.asarray(exact)]), [])
    edges = np.linspace(lo, hi, bins + 1)
    fig, ax = _figure()
    for m, name, color in ((m_a, "window a", COLORS["forward"]),
                           (m_b, "window b", COLORS["reverse"])):
        ax.hist(m, bins=edges, density=True, alpha=0.35, color=color, label=name)
    if exact is not None:
        ax.hist(np.asarray(exact, dtype=np.float64), bins=edges, density=True,
                histtype="step", color="tab:red", ls="--", lw=1.2, label="direct unbiased run")
    ax.hist(pooled, bins=edges, weights=weights, density=True, histtype="step",
            color=COLORS["merged"], lw=1.6, label=f"merged, reweighted (ΔF = {delta_f:.3g})")
    ax.set(xlabel="magnetisation m", ylabel="density",
           title="Umbrella windows and the unbiased magnetisation")
    ax.legend(fontsize=8)
    return _save(fig, path)
