r"""Lennard-Jones cluster kind ``lj``: the paper's LJ-n pair (METHOD section 7).

State a is ``u_0``, the harmonic trap ``½ Σ_i |x_i − x̄|²`` alone, sampled exactly; state b is
``u_1``, LJ particles (ordered-pair sum, ``ε = σ = 1``) in that trap, sampled by vectorised HMC
(:class:`feat.sampling.HMC`, step size tuned in warm-up only, thinned by ``⌈2 τ_int⌉`` of ``u``
and of the trap energy) and cached on disk like the lattice kinds
(``cache_dir/lj{n}-b-{hash}.npz``; the hash covers n, s, the HMC settings, the sample count,
a format version and a seed drawn from the run's generator). ``ΔF = F_b − F_a`` in kT; the
paper prints ``log Z_b − log Z_a = −ΔF`` (LJ-55: 234.77 ± 0.09, i.e. ``ΔF ≈ −234.77``).

*Centre of mass.* Both energies are translation-invariant (the trap acts on ``x − x̄``), so the
states, the samples and the transport live in the COM-free subspace ``Σ_i x_i = 0``: every
sample is centred (HMC lets the centroid diffuse; it is removed afterwards, which leaves the
marginal on the subspace exact), ``metadata["com_free"] = True`` makes the pipeline project
the interpolant and transport noise with ``remove_com``, and ``metadata["atom_types"]`` (all
zeros) gives an EGNN that is permutation-equivariant over the identical particles.

*Reference.* :meth:`LJSpec.mbar_reference` (``feat reference``) runs MBAR over
``K = n_windows`` states ``s_k = (k / (K − 1))^window_power``, k = 0 … K − 1: window 0 is the
trap (exact samples), the others are HMC-sampled with the spec's HMC settings. The spread of
``∂u/∂s`` grows about linearly in ``s``, so ``window_power = 0.5`` spaces the states evenly in
thermodynamic length (flat neighbour overlaps; ``systems/lj13/README.md``).

*Two-leg path* (``window_epsilon = ε₀ < 1``, ``epsilon_windows = K₂ > 0``). In a large cluster
the spread of ``∂u/∂s`` near ``s = 1`` is dominated by the stiff ``r^-12`` core (LJ-55: std
≈ 175 from s = 0.6 to 1, against ≈ 14 for ``∂u/∂ε``, the LJ energy itself). The ladder then
goes (1) along ``s`` with a weak energy scale ``ε = ε₀ s`` to ``(s, ε) = (1, ε₀)``, and (2)
along ``ε`` at ``s = 1`` from ``ε₀`` to 1 in ``K₂`` steps uniform in ``√ε``. The intermediate
states are any states; only the two ends matter, so ΔF is the same, and the thermodynamic
length is about half (``systems/lj55/README.md``). The ladder's parameter is then ``path``:
``t ∈ [0, 1]`` on leg 1 (``s = t``) and ``t ∈ (1, 2]`` on leg 2 (``√ε`` linear in ``t − 1``).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..accounting import total_cost
from ..config import ReferenceConfig
from ..energies.lj import LennardJonesCluster
from ..interpolants.alignment import random_rotation
from ..problem import TwoStateProblem
from ..reference.mbar import LadderReference
from ..sampling import HMC, load_samples, save_samples
from .lattice import HMCSettings, _positive_int, _real

__all__ = ["LJSpec", "lj_hmc_samples", "reference_path", "window_schedule"]

CACHE_VERSION = 1


# -- sampling ------------------------------------------------------------------------------------


def _compact_cluster(n: int, spacing: float) -> Tensor:
    """The ``n`` fcc sites nearest the origin, nearest-neighbour distance ``spacing``; (n, 3)."""
    m = math.ceil(n ** (1 / 3)) + 2
    r = torch.arange(-m, m + 1, dtype=torch.float64)
    g = torch.cartesian_prod(r, r, r)
    g = g[g.sum(-1).remainder(2) == 0]                     # fcc: even coordinate sum
    g = g[torch.argsort(g.pow(2).sum(-1) + 1e-6 * g @ torch.tensor([1.0, 1e-2, 1e-4],
                                                                    dtype=torch.float64))]
    x = g[:n] * (spacing / math.sqrt(2.0))
    return x - x.mean(0)


def initial_states(n_particles: int, s: float, n_chains: int,
                   generator: torch.Generator) -> Tensor:
    """Starting configurations (n_chains, n, 3) for HMC at ``s``: randomly rotated compact
    fcc clusters (nearest neighbours at ``max(2^{1/6} s, 1)``) with a small jitter, centred."""
    base = _compact_cluster(n_particles, max(2 ** (1 / 6) * s, 1.0))
    rot = random_rotation(n_chains, generator=generator)
    jitter = 0.05 * torch.randn((n_chains, n_particles, 3), generator=generator,
                                dtype=torch.float64)
    x = base @ rot.mT + jitter
    return x - x.mean(1, keepdim=True)


def _trap_observable(x: Tensor) -> Tensor:
    """``Σ_i |x_i − x̄|²`` (batch,): a COM-free observable for the autocorrelation time."""
    return (x - x.mean(1, keepdim=True)).pow(2).sum((1, 2))


def lj_hmc_samples(energy: LennardJonesCluster, n_samples: int, settings: HMCSettings,
                   x0: Tensor, *, generator: torch.Generator, trajectory_length: float = 0.0,
                   progress: bool = False) -> tuple[Tensor, Tensor, Tensor, dict]:
    """``n_samples`` thinned, centred HMC samples of ``exp(−u_s)``, their scores and energies.

    Warm-up: ``n_warmup`` iterations tune the step size ``eps`` (dual averaging, discarded).
    With ``trajectory_length > 0`` the number of leapfrog steps is then reset to
    ``⌈trajectory_length / eps⌉`` and a second warm-up of ``n_warmup`` iterations retunes
    ``eps`` for it (long trajectories decorrelate the O(1) cluster while the stiff LJ core
    sets a small ``eps``, which matters most at small ``s``); otherwise ``n_leapfrog`` is kept.
    Sampling: rounds of ``n_steps`` iterations with ``eps`` frozen (the first right after
    warm-up, later ones from the last states) until enough samples; each round keeps every
    ``thin``-th state (``thin = 0``: ``⌈2 max(τ_u, τ_trap)⌉`` measured on the first round).

    Returns
    -------
    samples (n_samples, n, 3), COM-free; scores (same shape, ``−∇u``); energies (n_samples,);
    a dict of diagnostics (step size, leapfrog steps, acceptance, τ_int of u and of the trap
    energy in iterations, thin, rounds, mean u over the first and second half of the samples).
    """
    kw = {"generator": generator, "observable": _trap_observable, "progress": progress}
    n_leapfrog, paid = settings.n_leapfrog, []
    if trajectory_length > 0:
        pre = HMC(settings.step_size, n_leapfrog, settings.target_accept).sample(
            energy, x0, 2, n_warmup=settings.n_warmup, thin=1, **kw)
        x0, n_leapfrog = pre.final_state, max(1, math.ceil(trajectory_length / pre.step_size))
        paid.append(pre.cost)
        hmc = HMC(pre.step_size, n_leapfrog, settings.target_accept)
    else:
        hmc = HMC(settings.step_size, n_leapfrog, settings.target_accept)
    parts = hmc.sample_rounds(energy, x0, n_samples, n_steps=settings.n_steps,
                              n_warmup=settings.n_warmup, thin=settings.thin or None,
                              max_rounds=settings.max_rounds, **kw)
    first = parts[0]
    x, s, u = (torch.cat([getattr(p, k) for p in parts])[:n_samples]
               for k in ("samples", "scores", "energies"))
    half = n_samples // 2
    info = {"s": energy.s, "step_size": first.step_size, "n_leapfrog": n_leapfrog,
            "acceptance_warmup": first.acceptance_warmup,
            "acceptance": float(sum(p.acceptance for p in parts) / len(parts)),
            "tau_int_energy": first.autocorrelation_energy.tau_int,
            "tau_int_trap": first.tau_int,
            "tau_reliable": bool(first.autocorrelation.reliable
                                 and first.autocorrelation_energy.reliable),
            "thin": first.thin, "rounds": len(parts), "n_chains": x0.shape[0],
            "u_mean": float(u.mean()), "u_std": float(u.std()),
            "u_mean_halves": [float(u[:half].mean()), float(u[half:].mean())],
            "cost": total_cost(*paid, *(p.cost for p in parts))}
    return x - x.mean(1, keepdim=True), s, u, info


def window_schedule(n_windows: int, power: float = 1.0) -> list[float]:
    """``s_k = (k / (n_windows − 1))^power``, k = 0 … n_windows − 1 (0 and 1 included)."""
    if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 2:
        raise ValueError(f"n_windows must be an int >= 2 (the two end states); got "
                         f"{n_windows!r}.")
    if not (isinstance(power, (int, float)) and power > 0 and math.isfinite(power)):
        raise ValueError(f"power must be a finite float > 0; got {power!r}.")
    return [(k / (n_windows - 1)) ** power for k in range(n_windows)]


def reference_path(n_windows: int, power: float = 1.0, epsilon0: float = 1.0,
                   epsilon_windows: int = 0) -> list[tuple[float, float, float]]:
    """The reference ladder as ``(t, s, ε)`` per state, from the trap to ``s = ε = 1``.

    ``epsilon_windows = 0``: the paper's family, ``s = ε = t`` on :func:`window_schedule`.
    Otherwise ``n_windows − epsilon_windows`` states along ``s`` (that schedule) at
    ``ε = epsilon0 · s``, then ``epsilon_windows`` states at ``s = 1`` with ``√ε`` uniform from
    ``√epsilon0`` to 1, path coordinate ``t = 1 + j / epsilon_windows`` (module docstring).
    """
    if not (isinstance(epsilon0, (int, float)) and 0 < epsilon0 <= 1):
        raise ValueError(f"window_epsilon must be in (0, 1] (1: the paper's s-path); got "
                         f"{epsilon0!r}.")
    two_legs = epsilon0 < 1
    if isinstance(epsilon_windows, bool) or not isinstance(epsilon_windows, int) or (
            epsilon_windows < 0 or (epsilon_windows > 0) != two_legs):
        raise ValueError(f"epsilon_windows must be an int >= 1 when window_epsilon < 1 and 0 "
                         f"when it is 1; got {epsilon_windows!r} with window_epsilon = "
                         f"{epsilon0!r}.")
    n_s = n_windows - epsilon_windows
    if n_s < 2:
        raise ValueError(f"n_windows ({n_windows}) must exceed epsilon_windows "
                         f"({epsilon_windows}) by at least 2 (the s-leg's two ends).")
    leg1 = [(s, s, epsilon0 * s) for s in window_schedule(n_s, power)]
    r0 = math.sqrt(epsilon0)
    leg2 = [(1.0 + j / epsilon_windows, 1.0, (r0 + (1.0 - r0) * j / epsilon_windows) ** 2)
            for j in range(1, epsilon_windows + 1)]
    return leg1 + leg2[:-1] + [(2.0, 1.0, 1.0)] if leg2 else leg1     # the end state exactly


# -- the kind ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LJSpec(HMCSettings):
    """LJ-``n_particles`` cluster: a = trap (``s = 0``, exact samples), b = ``s = 1`` (HMC).

    Keys: ``n_particles``; ``n_samples_a``, ``n_samples_b``; the :class:`HMCSettings` keys
    (HMC of state b and of the reference windows) and ``trajectory_length`` (> 0: leapfrog
    steps set to ``⌈trajectory_length / eps⌉`` after warm-up, see :func:`lj_hmc_samples`);
    ``cache_dir`` (relative to the current
    directory); ``window_power``: shape of the s-schedule of :meth:`mbar_reference`;
    ``window_epsilon`` and ``epsilon_windows``: its two-leg path (module docstring);
    ``reference``: a known ``ΔF`` in kT (e.g. from :meth:`mbar_reference`), or absent;
    ``progress``: a progress bar while HMC samples state b (the reference prints a line per
    window instead).
    """

    n_particles: int = 13
    n_samples_a: int = 10000
    n_samples_b: int = 10000
    cache_dir: str = "data"
    window_power: float = 1.0
    window_epsilon: float = 1.0
    epsilon_windows: int = 0
    trajectory_length: float = 1.0
    reference: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("step_size", "target_accept", "window_power", "window_epsilon",
                     "trajectory_length"):
            object.__setattr__(self, name, _real(name, getattr(self, name)))
        if self.reference is not None:
            object.__setattr__(self, "reference", _real("reference", self.reference))
        _positive_int("n_particles", self.n_particles, low=2)
        for name in ("n_samples_a", "n_samples_b", "n_chains", "n_steps", "n_leapfrog",
                     "max_rounds"):
            _positive_int(name, getattr(self, name))
        _positive_int("n_warmup", self.n_warmup, low=0)
        _positive_int("thin", self.thin, low=0)
        reference_path(2 + self.epsilon_windows, self.window_power, self.window_epsilon,
                       self.epsilon_windows)  # validates the path keys
        if self.trajectory_length < 0:
            raise ValueError(f"trajectory_length must be >= 0 (0: keep n_leapfrog); got "
                             f"{self.trajectory_length!r}.")
        HMC(self.step_size, self.n_leapfrog, self.target_accept)  # validates these three

    def _hmc_settings(self, n_steps: int = 0) -> HMCSettings:
        keys = {f: getattr(self, f) for f in HMCSettings.__dataclass_fields__}
        if n_steps:
            keys["n_steps"] = n_steps
        return HMCSettings(**keys)

    def energies(self) -> tuple[LennardJonesCluster, LennardJonesCluster]:
        """``(u_a, u_b)``: ``s = 0`` and ``s = 1``."""
        return LennardJonesCluster(self.n_particles, 0.0), LennardJonesCluster(self.n_particles)

    def metadata(self) -> dict:
        """``com_free`` and uniform atom types (for the EGNN), and the spec."""
        types = [0] * self.n_particles
        return {"com_free": True, "atom_types": types, "atom_type_names": ["LJ"],
                "element_types": types, "elements": ["LJ"], "n_particles": self.n_particles,
                "spec": asdict(self)}

    # -- samples ---------------------------------------------------------------------------------

    def cache_key(self, seed: int, state: str = "b", energy: LennardJonesCluster | None = None,
                  n_samples: int | None = None, settings: HMCSettings | None = None) -> dict:
        """Everything that determines HMC samples: of state b by default, or of ``energy``
        (a reference window: ``state = "window"``) with its sample count and settings."""
        energy = energy or LennardJonesCluster(self.n_particles)
        key = {"kind": "lj", "version": CACHE_VERSION, "state": state, "s": energy.s,
               "n_particles": self.n_particles, "n_samples": n_samples or self.n_samples_b,
               "hmc": asdict(settings or self._hmc_settings()),
               "trajectory_length": self.trajectory_length, "seed": seed}
        if energy.epsilon != energy.s:
            key["epsilon"] = energy.epsilon
        return key

    def cache_path(self, seed: int, **window) -> Path:
        """``cache_dir/lj{n}-{state}-{sha256[:16]}.npz`` (``window``: as :meth:`cache_key`)."""
        key = self.cache_key(seed, **window)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.cache_dir) / f"lj{self.n_particles}-{key['state']}-{digest}.npz"

    def build(self, generator: torch.Generator) -> TwoStateProblem:
        """Exact trap samples (a), cached HMC samples (b), both centred, with their scores."""
        seed_a, seed_b = (int(v) for v in torch.randint(0, 2**62, (2,), generator=generator))
        ea, eb = self.energies()
        xa = ea.sample(self.n_samples_a, torch.Generator().manual_seed(seed_a))
        xb, sb, hmc = self._cached_hmc(seed_b)
        return TwoStateProblem(ea, eb, xa, xb, ea.score(xa), sb, reference=self.reference,
                               name=f"lj{self.n_particles}",
                               metadata={**self.metadata(), "hmc": hmc,
                                         "sampling_cost": hmc["hmc"].get("cost")})

    def _cached_hmc(self, seed: int, **window) -> tuple[Tensor, Tensor, dict]:
        """HMC samples, scores and metadata of state b (or a window), read back from the cache
        when it holds them, else sampled from compact clusters and written there."""
        path, key = self.cache_path(seed, **window), self.cache_key(seed, **window)
        if path.is_file():
            cached = load_samples(path)
            if cached.metadata.get("key") == key:
                return cached.samples, cached.scores, cached.metadata
            warnings.warn(f"ignoring {path}: its key does not match this spec.", stacklevel=4)
        energy = window.get("energy") or LennardJonesCluster(self.n_particles)
        gen = torch.Generator().manual_seed(seed)
        x0 = initial_states(self.n_particles, energy.s, self.n_chains, gen)
        x, s, u, info = lj_hmc_samples(energy, window.get("n_samples") or self.n_samples_b,
                                       window.get("settings") or self._hmc_settings(), x0,
                                       generator=gen, trajectory_length=self.trajectory_length,
                                       progress=self.progress and not window)
        meta = {"key": key, "hmc": info}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(path, x, scores=s, energies=u, metadata=meta)
        return x, s, meta

    # -- the MBAR reference ----------------------------------------------------------------------

    def reference_windows(self, config, *, progress: bool = True) -> dict:
        """Samples of every window of the reference ladder (see :meth:`mbar_reference`).

        Returns a dict with ``t`` (K path coordinates: ``s`` on a one-leg path), ``energies``
        (K :class:`LennardJonesCluster`), ``samples`` (K tensors (n_samples, n, 3)) and
        ``windows`` (K diagnostic dicts, with ``s`` and ``epsilon``).
        """
        path = reference_path(config.n_windows, self.window_power, self.window_epsilon,
                              self.epsilon_windows)
        settings = self._hmc_settings(config.window_steps)
        energies = [LennardJonesCluster(self.n_particles, s, epsilon=None if eps == s else eps)
                    for _, s, eps in path]
        samples, windows = [], []
        for k, ((_, s, eps), energy) in enumerate(zip(path, energies, strict=True)):
            t0 = time.perf_counter()
            if energy.is_trap:
                x = energy.sample(config.n_samples, torch.Generator().manual_seed(config.seed + k))
                info = {"s": s, "exact": True}
            else:   # cached: a rerun (more bootstraps, a failed solve) samples nothing again
                x, _, meta = self._cached_hmc(config.seed + k, state="window", energy=energy,
                                              n_samples=config.n_samples, settings=settings)
                info = dict(meta["hmc"])
            info["seconds"], info["epsilon"] = time.perf_counter() - t0, eps
            if progress:
                print(_window_line(k, info), file=sys.stderr, flush=True)
            samples.append(x)
            windows.append(info)
        return {"t": [t for t, _, _ in path], "energies": energies, "samples": samples,
                "windows": windows}

    def mbar_reference(self, config: ReferenceConfig, *, progress: bool = True
                       ) -> LadderReference:
        """MBAR ``ΔF = F_{s=1} − F_{s=0}`` (kT) over ``config.n_windows`` states.

        Parameters
        ----------
        config : feat.config.ReferenceConfig
            ``n_windows`` states on :func:`reference_path` (``s_k = (k/(K−1))^window_power``,
            or the two-leg path when ``window_epsilon < 1``); ``n_samples`` decorrelated
            samples per window (exact for s = 0, HMC with this spec's settings otherwise,
            cached under ``cache_dir``); ``window_steps > 0`` replaces ``n_steps`` (HMC
            iterations per round); ``n_bootstrap`` resamples; ``seed`` (window k uses
            ``seed + k``).
        progress : print one line per window to stderr.

        Returns
        -------
        feat.reference.LadderReference: the MBARResult (``neighbour_overlap`` shows the weakest
        link), the path coordinates (``parameter`` ``"s"`` or ``"path"``) and every window's
        HMC diagnostics.
        """
        from ..reference import mbar_delta_f

        t0 = time.perf_counter()
        run = self.reference_windows(config, progress=progress)
        mbar = mbar_delta_f(run["energies"], run["samples"], n_bootstrap=config.n_bootstrap,
                            seed=config.seed)
        n_s = config.n_windows - self.epsilon_windows
        ladder = f"s_k = (k/{n_s - 1})^{self.window_power:g}"
        if self.epsilon_windows:
            ladder += (f" at epsilon = {self.window_epsilon:g} s, then {self.epsilon_windows} "
                       f"states at s = 1 with sqrt(epsilon) uniform up to 1")
        protocol = (f"exact trap samples at s = 0; HMC per window ({self.n_chains} chains, "
                    f"float64, step size tuned in warm-up only, trajectory length "
                    f"{self.trajectory_length:g}), thinned by 2 tau_int of u and of the trap "
                    f"energy; {ladder}; {config.n_samples} samples per window; MBAR (pymbar)")
        return LadderReference(mbar, "path" if self.epsilon_windows else "s", tuple(run["t"]),
                               tuple(run["windows"]), protocol, time.perf_counter() - t0)


def _window_line(k: int, info: dict) -> str:
    if info.get("exact"):
        return f"window {k:2d} s={info['s']:.4f}: exact trap samples"
    state = f"s={info['s']:.4f}"
    if info.get("epsilon", info["s"]) != info["s"]:
        state += f" epsilon={info['epsilon']:.4f}"
    return (f"window {k:2d} {state}: <u>={info['u_mean']:.2f} ± {info['u_std']:.2f} "
            f"step={info['step_size']:.3g} L={info['n_leapfrog']} acc={info['acceptance']:.2f} "
            f"tau_u={info['tau_int_energy']:.1f} tau_trap={info['tau_int_trap']:.1f} "
            f"thin={info['thin']} rounds={info['rounds']} {info['seconds']:.0f} s")
