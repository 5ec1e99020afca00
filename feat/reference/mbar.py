r"""Classical reference free energies: MBAR over a ladder of intermediate states (pymbar 4).

Given K states with reduced potentials ``u_k`` (kT) and samples ``x_{k,n} ~ exp(-u_k)`` of each,
MBAR solves for the free energies ``f_k = -log Z_k`` (up to a common constant) from the matrix
``u_kn[k, n] = u_k(x_n)`` of every energy on every pooled sample. The reference ΔF between two
states is ``f_j - f_i`` in kT, the convention of METHOD section 1 (``ΔF = F_b - F_a``).

MBAR's error bars assume **uncorrelated** samples: thin each window's chain by its statistical
inefficiency (``2 tau_int``; :class:`feat.sampling.HMC` does it by default) before calling
:func:`mbar_delta_f`. The bootstrap here resamples samples, not blocks, so it also assumes
independence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..energies.base import Energy, check_batch
from ..energies.bias import Biased, HarmonicUmbrella
from ..energies.lattice import magnetisation

__all__ = ["LadderReference", "MBARResult", "mbar_delta_f", "mbar_from_matrix",
           "reduced_potential_matrix", "umbrella_windows", "window_centers"]


@dataclass(frozen=True)
class MBARResult:
    """An MBAR free-energy difference ``delta_f = f_j - f_i`` (kT) and its diagnostics.

    Attributes
    ----------
    delta_f : float
        ``F_j - F_i = -log(Z_j / Z_i)`` in kT.
    sigma : float
        pymbar's analytic (asymptotic) standard error of ``delta_f``.
    sigma_bootstrap : float or None
        Standard deviation of ``delta_f`` over bootstrap resamples within each window.
    f_k : tuple of float, length K
        Free energies of all states relative to state 0, kT.
    neighbour_overlap : tuple of float, length K - 1
        Overlap-matrix elements ``O[k, k+1]`` between neighbouring states (0: no overlap;
        values above ~0.03 are customary for reliable MBAR).
    n_k : tuple of int, length K
        Samples per state.
    i, j : int
        The two states compared (non-negative indices).
    """

    delta_f: float
    sigma: float
    sigma_bootstrap: float | None
    f_k: tuple[float, ...] = field(repr=False)
    neighbour_overlap: tuple[float, ...] = field(repr=False)
    n_k: tuple[int, ...] = field(repr=False)
    i: int = 0
    j: int = -1

    @property
    def min_overlap(self) -> float:
        """The smallest neighbour overlap: the weakest link of the ladder."""
        return min(self.neighbour_overlap)

    def summary(self) -> str:
        """One line: ΔF ± σ (bootstrap ± σ_b), states, smallest overlap."""
        boot = f" (bootstrap ± {self.sigma_bootstrap:.3f})" if self.sigma_bootstrap else ""
        return (f"MBAR ΔF(state {self.j} - state {self.i}) = {self.delta_f:.4f} ± "
                f"{self.sigma:.4f} kT{boot}; {len(self.n_k)} states, {sum(self.n_k)} samples, "
                f"min neighbour overlap {self.min_overlap:.3f}")

    def to_dict(self) -> dict:
        """Plain-Python dictionary (JSON-serialisable)."""
        return {**asdict(self), "min_overlap": self.min_overlap}


@dataclass(frozen=True)
class LadderReference:
    """A classical reference: MBAR over a ladder of states, the ladder and how it was sampled.

    Attributes
    ----------
    mbar : MBARResult
        ``ΔF`` between the ladder's two ends (state a first, state b last), kT.
    parameter : str
        What changes along the ladder (e.g. ``"lambda"``, ``"center"``, ``"s"``).
    values : tuple of float
        The parameter of each state, in ladder order.
    windows : tuple of dict
        Per-state sampling records (chain lengths, autocorrelation, timings).
    protocol : str
        One sentence on how the states were sampled.
    seconds : float
        Wall time of the whole reference.
    """

    mbar: MBARResult
    parameter: str
    values: tuple[float, ...]
    windows: tuple[dict, ...] = field(repr=False)
    protocol: str = field(repr=False, default="")
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: ΔF ± σ (bootstrap), the ladder, its weakest overlap, the time."""
        m = self.mbar
        boot = f" (bootstrap ± {m.sigma_bootstrap:.4f})" if m.sigma_bootstrap else ""
        return (f"MBAR reference ΔF = {m.delta_f:.4f} ± {m.sigma:.4f} kT{boot}; "
                f"{len(self.values)} states ({self.parameter} {self.values[0]:g} .. "
                f"{self.values[-1]:g}), {sum(m.n_k)} samples, min neighbour overlap "
                f"{m.min_overlap:.3f}; {self.seconds:.0f} s")

    def to_dict(self) -> dict:
        return {"mbar": self.mbar.to_dict(), "parameter": self.parameter,
                "values": list(self.values), "windows": list(self.windows),
                "protocol": self.protocol, "seconds": self.seconds}


def reduced_potential_matrix(energies: Sequence[Energy], samples: Sequence[Tensor], *,
                             batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``u_kn[k, n] = u_k(x_n)`` over the pooled samples, and ``N_k``.

    Parameters
    ----------
    energies : K energies on one event shape.
    samples : K tensors, ``samples[k]`` of shape ``(N_k, *event_shape)`` drawn from state k.
    batch_size : samples per energy call.

    Returns
    -------
    u_kn : float64 array, shape (K, sum N_k)
    n_k : int64 array, shape (K,)
    """
    _check_inputs(energies, samples)
    x = torch.cat([s.detach().to(torch.float64) for s in samples])
    with torch.no_grad():
        u_kn = np.stack([torch.cat([e(c) for c in torch.split(x, batch_size)]).cpu().numpy()
                         for e in energies]).astype(np.float64)
    if np.isnan(u_kn).any():
        k, n = np.argwhere(np.isnan(u_kn))[0]
        raise ValueError(f"energy {k} is NaN on pooled sample {n}; every energy must be "
                         "defined (finite or +inf) on every window's samples.")
    return u_kn, np.array([s.shape[0] for s in samples], dtype=np.int64)


def mbar_delta_f(energies: Sequence[Energy], samples: Sequence[Tensor], *, i: int = 0,
                 j: int = -1, n_bootstrap: int = 0, seed: int = 0,
                 batch_size: int = 4096) -> MBARResult:
    """MBAR estimate of ``ΔF = F_j - F_i`` (kT) from samples of K states.

    Parameters
    ----------
    energies : sequence of Energy, length K >= 2
        Reduced potentials ``u_k`` in kT, all on one event shape; order them along the ladder
        so that neighbours overlap (the reported overlaps are between neighbours).
    samples : sequence of Tensor, length K
        ``samples[k]``, shape ``(N_k, *event_shape)``, **decorrelated** draws from
        ``exp(-u_k)`` (thin correlated chains first; MBAR's errors assume independence).
        ``N_k = 0`` is not allowed.
    i, j : int
        The two states compared; negative indices count from the end.
    n_bootstrap : int
        Bootstrap resamples (within each state) for ``sigma_bootstrap``; 0 skips it.
    seed : int
        Seed of the bootstrap's numpy generator.
    batch_size : int
        Samples per energy call when building ``u_kn``.

    Returns
    -------
    MBARResult
    """
    i, j = _index(i, len(energies), "i"), _index(j, len(energies), "j")
    u_kn, n_k = reduced_potential_matrix(energies, samples, batch_size=batch_size)
    return mbar_from_matrix(u_kn, n_k, i=i, j=j, n_bootstrap=n_bootstrap, seed=seed)


def mbar_from_matrix(u_kn: np.ndarray, n_k: np.ndarray, *, i: int = 0, j: int = -1,
                     u_ln: np.ndarray | None = None, n_bootstrap: int = 0,
                     seed: int = 0) -> MBARResult:
    """MBAR on a precomputed ``u_kn`` (K, N) with ``n_k`` samples per state (pymbar 4).

    Without ``u_ln``, ``ΔF = f_j - f_i`` between sampled states ``i`` and ``j``. With ``u_ln``
    (2, N): ``ΔF = F_1 - F_0`` between two *unsampled* target states whose reduced potentials
    on the pooled samples are its rows (``+inf`` allowed, e.g. a state restricted to a region),
    and ``i``, ``j`` are ignored. Adding one constant per sample (column) to ``u_kn`` and
    ``u_ln`` alike changes nothing, so biases alone suffice for umbrella windows.
    """
    import pymbar

    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an int >= 0; got {n_bootstrap!r}.")
    n_k = np.asarray(n_k, dtype=np.int64)
    i, j = (0, 1) if u_ln is not None else (_index(i, len(n_k), "i"), _index(j, len(n_k), "j"))
    # Ladders span hundreds of kT (LJ-55: 235); starting from neighbour BAR estimates instead of
    # zeros spares pymbar's fallback solvers (the result is the same fixed point).
    mbar = pymbar.MBAR(u_kn, n_k, initialize="BAR" if (n_k > 0).all() else "zeros")
    delta_f, sigma = _difference(mbar, i, j, u_ln, uncertainty=True)
    f_k = np.asarray(mbar.compute_free_energy_differences(compute_uncertainty=False)
                     ["Delta_f"][0], dtype=np.float64)
    overlap = np.asarray(mbar.compute_overlap()["matrix"])
    return MBARResult(
        delta_f=delta_f, sigma=sigma,
        sigma_bootstrap=_bootstrap(u_kn, n_k, f_k, i, j, u_ln, n_bootstrap, seed),
        f_k=tuple(float(f) for f in f_k),
        neighbour_overlap=tuple(float(overlap[k, k + 1]) for k in range(len(n_k) - 1)),
        n_k=tuple(int(n) for n in n_k), i=i, j=j)


def _difference(mbar, i: int, j: int, u_ln: np.ndarray | None, uncertainty: bool):
    """``(ΔF, σ)`` between states i and j of ``mbar``, or between the rows of ``u_ln``."""
    if u_ln is None:
        d = mbar.compute_free_energy_differences(compute_uncertainty=uncertainty)
    else:
        d = mbar.compute_perturbed_free_energies(np.asarray(u_ln, dtype=np.float64),
                                                 compute_uncertainty=uncertainty)
    sigma = float(d["dDelta_f"][i, j]) if uncertainty else math.nan
    return float(d["Delta_f"][i, j]), sigma


def _bootstrap(u_kn: np.ndarray, n_k: np.ndarray, f_k: np.ndarray, i: int, j: int,
               u_ln: np.ndarray | None, n_bootstrap: int, seed: int) -> float | None:
    """Std of ΔF over resamples drawn with replacement within each state."""
    if n_bootstrap == 0:
        return None
    import pymbar

    rng, starts = np.random.default_rng(seed), np.concatenate([[0], np.cumsum(n_k)[:-1]])
    values = []
    for _ in range(n_bootstrap):
        idx = np.concatenate([s + rng.integers(0, n, n) for s, n in zip(starts, n_k,
                                                                          strict=True)])
        boot = pymbar.MBAR(u_kn[:, idx], n_k, initial_f_k=f_k)
        sub = None if u_ln is None else np.asarray(u_ln)[:, idx]
        values.append(_difference(boot, i, j, sub, uncertainty=False)[0])
    return float(np.std(values, ddof=1)) if n_bootstrap > 1 else math.nan


def _index(value: int, k: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -k <= value < k:
        raise ValueError(f"{name} must be a state index in [-{k}, {k - 1}]; got {value!r}.")
    return value % k


def _check_inputs(energies: Sequence[Energy], samples: Sequence[Tensor]) -> None:
    if len(energies) < 2 or len(energies) != len(samples):
        raise ValueError(f"energies and samples must be sequences of equal length K >= 2 (one "
                         f"sample set per state); got {len(energies)} energies and "
                         f"{len(samples)} sample sets.")
    shape = tuple(energies[0].event_shape)
    for k, (e, s) in enumerate(zip(energies, samples, strict=True)):
        if not isinstance(e, Energy):
            raise TypeError(f"energies[{k}] must be a feat Energy; got {type(e).__name__}.")
        if tuple(e.event_shape) != shape:
            raise ValueError(f"energies[{k}] has event shape {tuple(e.event_shape)}; all must "
                             f"share {shape}.")
        check_batch(s, shape, f"samples[{k}]")


def window_centers(start: float, stop: float, n_windows: int) -> list[float]:
    """``n_windows`` evenly spaced umbrella centres from ``start`` to ``stop`` inclusive."""
    if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 2:
        raise ValueError(f"n_windows must be an int >= 2 (the two end states at least); got "
                         f"{n_windows!r}.")
    return [float(c) for c in np.linspace(start, stop, n_windows)]


def umbrella_windows(energy: Energy, k: float, centers: Sequence[float],
                     cv: Callable[[Tensor], Tensor] = magnetisation) -> list[Biased]:
    """States ``u(x) + (k/2)(cv(x) - c)^2`` for each centre ``c``, in the given order.

    With ``cv`` the magnetisation and a free :class:`~feat.energies.lattice.Phi4`, every
    window's ``log_z()`` is exact (a test case for MBAR).
    """
    if len(centers) < 2:
        raise ValueError(f"centers must hold at least 2 umbrella centres; got {list(centers)}. "
                         "Use window_centers(start, stop, n_windows).")
    return [Biased(energy, HarmonicUmbrella(cv, k, float(c))) for c in centers]
