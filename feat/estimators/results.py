"""The result object of :func:`feat.estimators.estimate`.

JSON encoding (``to_dict``): plain Python floats and ints; non-finite floats are written as the
strings ``"inf"``, ``"-inf"`` and ``"nan"`` (JSON has no infinity, and ``None`` is reserved for
"absent", e.g. a missing direction); ``from_dict`` turns them back into floats.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .bounds import Bounds
from .jarzynski import OneSidedEstimate

__all__ = ["FreeEnergyEstimate"]

METHODS = ("BAR", "Jarzynski forward", "Jarzynski reverse")


def _encode(value: Any) -> Any:
    """Floats -> float or "inf"/"-inf"/"nan"; containers recursively; the rest unchanged."""
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _decode_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _fmt(x: float | None) -> str:
    """Short human-readable number: 2 decimals, or 4 significant digits when large."""
    if x is None:
        return "n/a"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.2f}" if abs(x) < 1e4 else f"{x:.4g}"


def _decimals(sigma: float | None) -> int:
    """Decimals that show ``sigma`` to two significant digits (2 to 6)."""
    if sigma is None or not math.isfinite(sigma) or sigma <= 0:
        return 2
    return int(min(6, max(2, 1 - math.floor(math.log10(sigma)))))


LOW_ESS = 0.01  # below this Kish fraction in a direction, σ is flagged as unreliable
MIN_EFFECTIVE = 10  # ... or below this many effective trajectories (ESS × N)


@dataclass(frozen=True)
class FreeEnergyEstimate:
    """A free-energy difference ΔF = F_b - F_a with its diagnostics (all in ``units``).

    Attributes
    ----------
    delta_f : float
        The headline estimate: BAR if both directions were given, else one-sided Jarzynski.
    sigma : float
        Asymptotic standard error of ``delta_f``.
    sigma_bootstrap : float or None
        Bootstrap standard deviation over trajectories, if computed.
    method : str
        ``"BAR"``, ``"Jarzynski forward"`` or ``"Jarzynski reverse"``.
    forward, reverse : OneSidedEstimate or None
        The one-sided estimates (with ESS and ``+inf`` counts) of each given direction.
    bounds : Bounds
        Jensen bounds ``-mean(W_r) <= ΔF <= mean(W_f)`` and their gap.
    n_f, n_r : int
        Numbers of works used per direction (``+inf`` included, dropped NaN excluded; 0 if absent).
    n_nan_dropped : tuple of int
        ``(forward, reverse)`` numbers of NaN works dropped (``nan_policy="drop"``).
    reference : float or None
        An exact or reference ΔF to compare with.
    reference_exact : bool
        Whether ``reference`` is exact (analytic) rather than an estimate such as MBAR's.
    units : str
        ``"kT"``.
    n_starts : tuple of int or None
        ``(forward, reverse)`` distinct start samples when trajectories shared them; ``sigma``
        is then the larger of the asymptotic and the bootstrap-over-starts σ. None: one
        trajectory per start sample.
    """

    delta_f: float
    sigma: float
    sigma_bootstrap: float | None
    method: str
    forward: OneSidedEstimate | None
    reverse: OneSidedEstimate | None
    bounds: Bounds
    n_f: int
    n_r: int
    n_nan_dropped: tuple[int, int] = (0, 0)
    reference: float | None = None
    units: str = "kT"
    n_starts: tuple[int, int] | None = None
    reference_exact: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}.")

    @property
    def n_posinf(self) -> int:
        """Total number of ``+inf`` (zero-weight) works over both directions."""
        return sum(d.n_posinf for d in (self.forward, self.reverse) if d is not None)

    @property
    def n_nonfinite(self) -> int:
        """``+inf`` works plus dropped NaN works, over both directions."""
        return self.n_posinf + sum(self.n_nan_dropped)

    @property
    def z(self) -> float | None:
        """``(delta_f - reference) / sigma``; ``None`` without a reference or if ``sigma == 0``."""
        if self.reference is None or not self.sigma > 0:
            return None
        return (self.delta_f - self.reference) / self.sigma

    def _headline(self) -> str:
        k = _decimals(self.sigma)
        if abs(self.delta_f) < 1e4 and math.isfinite(self.sigma):
            text = f"ΔF = {self.delta_f:.{k}f} ± {self.sigma:.{k}f} {self.units}"
        else:
            text = f"ΔF = {_fmt(self.delta_f)} ± {_fmt(self.sigma)} {self.units}"
        if self.sigma_bootstrap is not None and math.isfinite(self.sigma_bootstrap):
            text += f" (bootstrap ± {self.sigma_bootstrap:.{k}f})"
        elif self.sigma_bootstrap is not None:
            text += f" (bootstrap ± {self.sigma_bootstrap})"
        if self.reference is not None:
            z = "" if self.z is None else f", z = {self.z:+.2f}"
            label = "exact" if self.reference_exact else "reference"
            text += f"   ({label}: {self.reference:g}{z})"
        return text

    def _bounds_text(self) -> list[str]:
        b = self.bounds
        if b.lower is not None and b.upper is not None:
            return [f"bounds [{_fmt(b.lower)}, {_fmt(b.upper)}]", f"gap {_fmt(b.gap)}"]
        if b.upper is not None:
            return [f"bound ≤ {_fmt(b.upper)}"]
        return [f"bound ≥ {_fmt(b.lower)}"]

    def _nonfinite_text(self) -> str:
        kinds = [(self.n_posinf, "+inf"), (sum(self.n_nan_dropped), "NaN dropped")]
        detail = ", ".join(f"{n} {kind}" for n, kind in kinds if n)
        return f"{self.n_nonfinite} non-finite" + (f" ({detail})" if detail else "")

    def summary(self) -> str:
        """One readable line, e.g.
        ``ΔF = 0.01 ± 0.03 kT   (exact: 0, z = +0.33)   BAR | fwd -0.02 | rev 0.04 |
        bounds [-0.90, 1.10] | gap 2.00 | ESS 61% / 58% | 0 non-finite``."""
        parts = [self.method]
        if self.method == "BAR":
            parts += [f"fwd {_fmt(self.forward.delta_f)}", f"rev {_fmt(self.reverse.delta_f)}"]
        parts += self._bounds_text()
        ess = [f"{d.ess:.0%}" for d in (self.forward, self.reverse) if d is not None]
        parts += ["ESS " + " / ".join(ess), self._nonfinite_text()]
        if self.n_starts is not None:
            parts.append(f"{self.n_f} / {self.n_r} trajectories from {self.n_starts[0]} / "
                         f"{self.n_starts[1]} start samples (σ ≥ bootstrap over starts)")
        parts += [f"WARNING: {w}" for w in self.warnings]
        return f"{self._headline()}   " + " | ".join(parts)

    @property
    def warnings(self) -> list[str]:
        """Plain-language reasons to distrust ``sigma`` (empty when none apply)."""
        out = []
        sides = [(name, d) for name, d in (("forward", self.forward), ("reverse", self.reverse))
                 if d is not None]
        low = [name for name, d in sides if d.ess < LOW_ESS or d.ess * d.n < MIN_EFFECTIVE]
        if low:
            out.append(f"ESS below {LOW_ESS:.0%} or fewer than {MIN_EFFECTIVE} effective "
                       f"trajectories ({' and '.join(low)}): the works barely overlap, σ may be "
                       "far too small; train longer, refine the transport or run more "
                       "trajectories")
        if len(sides) == 2:
            (_, f), (_, r) = sides
            spread = math.hypot(f.sigma, r.sigma)
            if math.isfinite(spread) and abs(f.delta_f - r.delta_f) > 3 * spread + 0.1:
                out.append("forward and reverse Jarzynski disagree by more than 3 σ: at least "
                           "one direction is not converged")
        sb = self.sigma_bootstrap
        if sb is not None and math.isfinite(self.sigma) and not sb <= 2 * self.sigma:
            out.append("bootstrap σ is more than twice the asymptotic σ: the estimate is not "
                       "converged; report the bootstrap σ or train longer")
        return out

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; non-finite floats as "inf"/"-inf"/"nan", absent parts as None.

        Includes the derived ``z`` (ignored by :meth:`from_dict`).
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("forward", "reverse", "bounds"):
            out[key] = None if out[key] is None else asdict(out[key])
        out["n_nan_dropped"] = list(self.n_nan_dropped)
        out["n_starts"] = None if self.n_starts is None else list(self.n_starts)
        out["z"] = self.z
        out["warnings"] = self.warnings
        return _encode(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreeEnergyEstimate:
        """Inverse of :meth:`to_dict`."""

        def one_sided(d: dict[str, Any] | None) -> OneSidedEstimate | None:
            if d is None:
                return None
            return OneSidedEstimate(
                delta_f=float(d["delta_f"]),
                sigma=float(d["sigma"]),
                ess=float(d["ess"]),
                n=int(d["n"]),
                n_posinf=int(d["n_posinf"]),
            )

        b = data["bounds"]
        return cls(
            delta_f=float(data["delta_f"]),
            sigma=float(data["sigma"]),
            sigma_bootstrap=_decode_float(data.get("sigma_bootstrap")),
            method=str(data["method"]),
            forward=one_sided(data.get("forward")),
            reverse=one_sided(data.get("reverse")),
            bounds=Bounds(*(_decode_float(b.get(k)) for k in ("lower", "upper", "gap"))),
            n_f=int(data["n_f"]),
            n_r=int(data["n_r"]),
            n_nan_dropped=tuple(int(n) for n in data.get("n_nan_dropped", (0, 0))),
            reference=_decode_float(data.get("reference")),
            units=str(data.get("units", "kT")),
            n_starts=(None if data.get("n_starts") is None
                      else tuple(int(n) for n in data["n_starts"])),
            reference_exact=bool(data.get("reference_exact", False)),
        )
