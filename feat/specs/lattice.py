r"""Lattice system kinds: phi^4 umbrella pairs (HMC samples, cached) and free-field pairs (exact).

* ``phi4_umbrella`` -- the paper's phi^4 states (METHOD section 7) on any lattice: one
  :class:`~feat.energies.lattice.Phi4` in the mass form plus umbrellas
  ``(k/2)(m(phi) - c)^2`` on the magnetisation, ``c = center_a`` (state a) and ``center_b``
  (state b). Samples come from vectorised HMC and are cached on disk; no exact ΔF (give a
  ``reference`` from MBAR, see ``systems/phi4_umbrella/README.md``).
* ``free_field_pair`` -- two free (lam = 0) fields, exact Gaussian samples (FFT) and exact ΔF.

Sample cache. Each state's samples are written to ``cache_dir`` as
``phi4_umbrella-{a|b}-{hash}.npz``, ``hash`` being a SHA-256 of everything that determines them:
the state's couplings and umbrella, the HMC settings, the sample count, a cache format version
and a sampling seed. The seed is drawn from the run's generator, so the same run seed reuses
the cache (and consumes the generator identically whether or not it hits the cache: a cached
run reproduces the uncached one), while a new seed or any changed key resamples. Files are
written atomically (:func:`feat.sampling.save_samples`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..accounting import total_cost
from ..config import ReferenceConfig
from ..energies.base import Energy
from ..energies.bias import Biased, HarmonicUmbrella
from ..energies.lattice import Phi4, magnetisation
from ..problem import TwoStateProblem
from ..reference.mbar import LadderReference, mbar_delta_f, umbrella_windows, window_centers
from ..sampling import HMC, load_samples, save_samples

__all__ = [
    "Phi4UmbrellaSpec",
    "FreeFieldPairSpec",
    "HMCSettings",
    "hmc_samples",
    "sample_free_field",
]

CACHE_VERSION = 1


# -- exact free-field samples -------------------------------------------------------------------


def _free_parts(energy: Energy) -> tuple[Phi4, float, float]:
    """``(phi4, k, center)`` of a free Phi4, optionally with a magnetisation umbrella."""
    k, center = 0.0, 0.0
    if (
        isinstance(energy, Biased)
        and isinstance(energy.bias, HarmonicUmbrella)
        and energy.bias.cv is magnetisation
    ):
        k, center, energy = energy.bias.k, energy.bias.center, energy.base
    if not isinstance(energy, Phi4) or not energy.is_free:
        raise ValueError(
            f"energy must be a free Phi4 (lam = 0), optionally Biased by a "
            f"HarmonicUmbrella on magnetisation; got {energy!r}. Sample "
            "interacting fields with hmc_samples."
        )
    return energy, k, center


def sample_free_field(energy: Energy, n: int, generator: torch.Generator) -> Tensor:
    r"""Exact samples of a free field ``exp(-u)``, ``u = 1/2 phi^T A phi - h_eff 1^T phi + C``.

    ``A`` is diagonal in Fourier space with eigenvalues ``lambda_k`` (:meth:`Phi4.spectrum`; an
    umbrella adds ``k/V`` to ``lambda_0``), so ``phi = mu 1 + F^{-1} diag(lambda^{-1/2}) F xi``
    with white noise ``xi`` and mean ``mu = h_eff / lambda_0`` has covariance ``A^{-1}``.

    Parameters
    ----------
    energy : Phi4 with lam = 0, or Biased(Phi4, HarmonicUmbrella(magnetisation, k, c))
    n : int
        Number of samples.
    generator : torch.Generator

    Returns
    -------
    Tensor, shape (n, *lattice_shape), float64
    """
    phi4, k, center = _free_parts(energy)
    if energy.log_z() is None:  # validates normalisability
        raise ValueError(f"{energy!r} has no exact log Z; cannot sample it exactly.")
    lam = torch.as_tensor(phi4.spectrum(), dtype=torch.float64).clone()
    lam.view(-1)[0] += k / phi4.volume
    mean = (phi4.canonical.h + k * center / phi4.volume) / float(lam.view(-1)[0])
    xi = torch.randn((n, *phi4.event_shape), generator=generator, dtype=torch.float64)
    dims = tuple(range(1, phi4.ndim + 1))
    phi = torch.fft.ifftn(torch.fft.fftn(xi, dim=dims) / lam.sqrt(), dim=dims).real
    return phi + mean


# -- HMC sampling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HMCSettings:
    """HMC settings of a lattice state: chains, warm-up, iterations per round, leapfrog, thin.

    ``thin = 0`` thins by ``2 max(tau_int)`` measured on the first round; rounds of ``n_steps``
    iterations are repeated (from the last states, frozen step size) until enough samples.
    """

    n_chains: int = 64
    n_warmup: int = 500
    n_steps: int = 2000
    n_leapfrog: int = 10
    step_size: float = 0.05
    target_accept: float = 0.8
    thin: int = 0
    max_rounds: int = 50


def hmc_samples(
    energy: Energy,
    n_samples: int,
    settings: HMCSettings,
    x0: Tensor,
    *,
    generator: torch.Generator,
    progress: bool = False,
) -> tuple[Tensor, ...]:
    """``n_samples`` thinned HMC samples of ``exp(-u)`` with their scores and energies.

    Parameters
    ----------
    energy : Energy
    n_samples : int
    settings : HMCSettings
    x0 : Tensor, shape (n_chains, *event_shape)
        Initial states (their dtype is the run's).
    generator : torch.Generator

    Returns
    -------
    samples : (n_samples, *event_shape); scores : same shape (``-grad u``); energies :
    (n_samples,); and a dict of diagnostics (step size, acceptance, tau_int, thin, rounds).
    """
    hmc = HMC(settings.step_size, settings.n_leapfrog, settings.target_accept)
    parts = hmc.sample_rounds(energy, x0, n_samples, n_steps=settings.n_steps,
                              n_warmup=settings.n_warmup, thin=settings.thin or None,
                              max_rounds=settings.max_rounds, generator=generator,
                              progress=progress)
    info = _diagnostics(parts[0])
    info["rounds"] = len(parts)
    info["acceptance"] = float(sum(p.acceptance for p in parts) / len(parts))
    info["cost"] = total_cost(*(p.cost for p in parts))
    cat = [
        torch.cat([getattr(p, k) for p in parts])[:n_samples]
        for k in ("samples", "scores", "energies")
    ]
    return (*cat, info)


def _diagnostics(res) -> dict:
    return {
        "step_size": res.step_size,
        "acceptance_warmup": res.acceptance_warmup,
        "tau_int": res.tau_int,
        "tau_int_energy": res.autocorrelation_energy.tau_int,
        "tau_reliable": res.autocorrelation.reliable,
        "thin": res.thin,
    }


# -- the phi^4 umbrella kind ----------------------------------------------------------------------


@dataclass(frozen=True)
class Phi4UmbrellaSpec(HMCSettings):
    """phi^4 ``u(phi) + (k/2)(m(phi) - c)^2``, ``c = center_a`` (a) / ``center_b`` (b); HMC samples.

    Keys: lattice ``shape``; couplings ``m2``, ``lam``, ``h`` of the paper's mass form; umbrella
    ``k``, ``center_a``, ``center_b``; sample counts; the :class:`HMCSettings` keys it inherits;
    ``cache_dir``
    (relative to the current directory); ``reference``: a known ΔF in kT (e.g. from MBAR), or
    absent.
    """

    shape: list = field(default_factory=lambda: [16, 16])
    m2: float = -1.0
    lam: float = 0.8
    h: float = 0.0
    k: float = 10.0
    center_a: float = -0.3
    center_b: float = 0.6
    n_samples_a: int = 10000
    n_samples_b: int = 10000
    cache_dir: str = "data"
    reference: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _lattice_shape(self.shape))
        for name in ("m2", "lam", "h", "k", "center_a", "center_b", "step_size",
                     "target_accept"):   # 10 and 10.0 must hash alike
            object.__setattr__(self, name, _real(name, getattr(self, name)))
        for name in (
            "n_samples_a",
            "n_samples_b",
            "n_chains",
            "n_steps",
            "n_leapfrog",
            "max_rounds",
        ):
            _positive_int(name, getattr(self, name))
        _positive_int("n_warmup", self.n_warmup, low=0)
        _positive_int("thin", self.thin, low=0)
        HMC(self.step_size, self.n_leapfrog, self.target_accept)  # validates these three

    def _hmc_dict(self) -> dict:
        return {f: getattr(self, f) for f in HMCSettings.__dataclass_fields__}

    def energies(self) -> tuple[Biased, Biased]:
        """``(u_a, u_b)`` on one shared Phi4."""
        base = Phi4.from_mass(self.shape, self.m2, self.lam, self.h)
        return tuple(
            Biased(base, HarmonicUmbrella(magnetisation, self.k, c))
            for c in (self.center_a, self.center_b)
        )

    def cache_key(self, state: str, seed: int) -> dict:
        """Everything that determines the samples of ``state`` ('a' or 'b')."""
        return {
            "kind": "phi4_umbrella",
            "version": CACHE_VERSION,
            "state": state,
            "shape": list(self.shape),
            "m2": self.m2,
            "lam": self.lam,
            "h": self.h,
            "k": self.k,
            "center": getattr(self, f"center_{state}"),
            "n_samples": getattr(self, f"n_samples_{state}"),
            "hmc": self._hmc_dict(),
            "seed": seed,
        }

    def cache_path(self, state: str, seed: int) -> Path:
        """``cache_dir/phi4_umbrella-{state}-{sha256[:16]}.npz``."""
        blob = json.dumps(self.cache_key(state, seed), sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()[:16]
        return Path(self.cache_dir) / f"phi4_umbrella-{state}-{digest}.npz"

    def build(self, generator: torch.Generator) -> TwoStateProblem:
        """Both states' energies and HMC samples (from the cache when present)."""
        seeds = [int(s) for s in torch.randint(0, 2**62, (2,), generator=generator)]
        energies, data, meta = self.energies(), {}, {}
        for state, energy, seed in zip("ab", energies, seeds, strict=True):
            data[state], meta[state] = self._samples(state, energy, seed)
        (xa, sa, _), (xb, sb, _) = data["a"], data["b"]
        return TwoStateProblem(
            *energies,
            xa,
            xb,
            sa,
            sb,
            reference=self.reference,
            name="phi4_umbrella",
            metadata={"lattice": True, "hmc": meta, "sampling_cost": total_cost(
                *(meta[s]["hmc"].get("cost") for s in "ab"))},
        )

    def mbar_reference(self, config: ReferenceConfig) -> LadderReference:
        """MBAR over ``config.n_windows`` umbrellas, centres evenly from ``center_a`` to
        ``center_b``.

        Every window (same ``k``) is sampled by HMC with this spec's settings, thinned by
        ``2 tau_int`` (decorrelated, as MBAR assumes), ``config.n_samples`` samples each; the
        window seeds are ``config.seed + w``. ΔF = F_b − F_a between the end windows, kT.
        """
        t0 = time.perf_counter()
        centers = window_centers(self.center_a, self.center_b, config.n_windows)
        windows = umbrella_windows(self.energies()[0].base, self.k, centers)
        settings = HMCSettings(**self._hmc_dict())
        samples, records = [], []
        for w, (energy, c) in enumerate(tqdm(list(zip(windows, centers, strict=True)),
                                             desc="umbrella windows", leave=False)):
            gen, t1 = torch.Generator().manual_seed(config.seed + w), time.perf_counter()
            x0 = c + 0.1 * torch.randn((self.n_chains, *self.shape), generator=gen,
                                       dtype=torch.float64)
            x, _, _, info = hmc_samples(energy, config.n_samples, settings, x0, generator=gen)
            m = x.flatten(1).mean(1)
            info.update(center=c, seconds=time.perf_counter() - t1, m_mean=float(m.mean()),
                        m_std=float(m.std()))
            samples.append(x)
            records.append(info)
        mbar = mbar_delta_f(windows, samples, n_bootstrap=config.n_bootstrap, seed=config.seed)
        protocol = (f"HMC per umbrella window (k = {self.k:g}, {self.n_chains} chains, "
                    f"{self.n_leapfrog} leapfrog steps, step size tuned in warm-up only), "
                    f"thinned by 2 tau_int of the magnetisation, {config.n_samples} samples "
                    "per window, MBAR (pymbar)")
        return LadderReference(mbar, "center", tuple(centers), tuple(records), protocol,
                               time.perf_counter() - t0)

    def _samples(self, state: str, energy: Energy, seed: int) -> tuple[tuple, dict]:
        path, key = self.cache_path(state, seed), self.cache_key(state, seed)
        if path.is_file():
            cached = load_samples(path)
            if cached.metadata.get("key") == key:
                return (cached.samples, cached.scores, cached.energies), cached.metadata
            warnings.warn(f"ignoring {path}: its key does not match this spec.", stacklevel=4)
        gen = torch.Generator().manual_seed(seed)
        center = getattr(self, f"center_{state}")
        x0 = center + 0.1 * torch.randn(
            (self.n_chains, *self.shape), generator=gen, dtype=torch.float64
        )
        *arrays, info = hmc_samples(
            energy, key["n_samples"], HMCSettings(**self._hmc_dict()), x0, generator=gen
        )
        meta = {"key": key, "hmc": info}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(path, arrays[0], scores=arrays[1], energies=arrays[2], metadata=meta)
        return tuple(arrays), meta


# -- the free-field pair kind ---------------------------------------------------------------------


@dataclass(frozen=True)
class FreeFieldPairSpec:
    """Two free fields (paper's mass form, lam = 0) on one lattice: exact samples, exact ΔF.

    ``u_s = sum_x [sum_mu (phi_{x+mu} - phi_x)^2 + m2_s phi_x^2 - h_s phi_x]``, s = a, b, with
    ``ΔF = -(log Z_b - log Z_a)`` from :meth:`Phi4.log_z`; needs ``m2_a, m2_b > 0``.
    """

    shape: list = field(default_factory=lambda: [8, 8])
    m2_a: float = 1.0
    m2_b: float = 0.5
    h_a: float = 0.0
    h_b: float = 0.0
    n_samples_a: int = 10000
    n_samples_b: int = 10000

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _lattice_shape(self.shape))
        for name in ("m2_a", "m2_b"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"{name} must be > 0 for a normalisable free field; got "
                    f"{getattr(self, name)!r}."
                )
        _positive_int("n_samples_a", self.n_samples_a)
        _positive_int("n_samples_b", self.n_samples_b)

    def energies(self) -> tuple[Phi4, Phi4]:
        return (
            Phi4.from_mass(self.shape, self.m2_a, 0.0, self.h_a),
            Phi4.from_mass(self.shape, self.m2_b, 0.0, self.h_b),
        )

    def build(self, generator: torch.Generator) -> TwoStateProblem:
        ea, eb = self.energies()
        xa = sample_free_field(ea, self.n_samples_a, generator)
        xb = sample_free_field(eb, self.n_samples_b, generator)
        return TwoStateProblem(
            ea,
            eb,
            xa,
            xb,
            reference=-(eb.log_z() - ea.log_z()), reference_exact=True,
            name="free_field_pair",
            metadata={"lattice": True, "spec": asdict(self)},
        )


# -- validation -----------------------------------------------------------------------------------


def _lattice_shape(shape) -> tuple[int, ...]:
    ok = (
        isinstance(shape, (list, tuple))
        and 1 <= len(shape) <= 3
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    )
    if not ok:
        raise ValueError(
            f"shape must be a list of 1 to 3 positive ints, e.g. [16, 16]; got {shape!r}."
        )
    return tuple(shape)


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name} must be a real number; got {value!r}.")
    return float(value)


def _positive_int(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
