r"""phi^4 field theory on a periodic lattice of any dimension and shape.

A field ``phi`` has shape ``(batch, *shape)``; sites are ``x``, lattice directions are
``mu = 0 .. d-1`` with ``d = len(shape)``, and ``phi_{x+mu}`` is the periodic neighbour
(``torch.roll``). Two parameterisations, built with named constructors:

* :meth:`Phi4.from_mass` -- the FEAT paper's form (METHOD section 7), no 1/2 on the gradient term:

  .. math:: u(\phi) = \sum_x \Big[\sum_\mu (\phi_{x+\mu}-\phi_x)^2 + m^2\phi_x^2
            + \lambda_m\phi_x^4 - h\phi_x\Big]

* :meth:`Phi4.from_hopping` -- the standard hopping form:

  .. math:: u(\phi') = \sum_x \Big[-2\kappa\sum_\mu \phi'_x\phi'_{x+\mu} + \phi'^2_x
            + \lambda(\phi'^2_x-1)^2 - h'\phi'_x\Big]

Sums over ``mu`` run over all ``d`` axes with periodic wrap-around, literally as written: on an
axis of extent 2 each neighbour pair appears twice, on an axis of extent 1 a site is its own
neighbour (its gradient term vanishes). Both forms are the same theory up to a field rescaling
and an additive constant, see :class:`Phi4Conversion`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from feat.energies.base import Energy, check_batch

__all__ = ["MassParameters", "HoppingParameters", "Phi4", "Phi4Conversion", "magnetisation",
           "paper_umbrella_states"]


def magnetisation(phi: Tensor) -> Tensor:
    """Mean of the field over all sites, ``m = (1/V) sum_x phi_x``.

    Parameters
    ----------
    phi : Tensor, shape (batch, *lattice_shape)

    Returns
    -------
    Tensor, shape (batch,)
    """
    if not isinstance(phi, Tensor) or phi.dim() < 2:
        got = tuple(phi.shape) if isinstance(phi, Tensor) else type(phi).__name__
        raise ValueError(f"phi must be a tensor of shape (batch, *lattice_shape); got {got}. "
                         "Add a batch dimension with phi[None] for a single field.")
    return phi.flatten(1).mean(1)


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}.")
    return float(value)


def _nonnegative(name: str, value: float, why: str) -> float:
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0 ({why}); got {value}.")
    return value


@dataclass(frozen=True)
class MassParameters:
    """Couplings of the paper's form: ``m2`` (mass term), ``lam`` (quartic), ``h`` (field)."""

    m2: float
    lam: float
    h: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "m2", _finite("m2", self.m2))
        object.__setattr__(self, "lam", _nonnegative(
            "lam", self.lam, "a negative quartic makes u unbounded below"))
        object.__setattr__(self, "h", _finite("h", self.h))


@dataclass(frozen=True)
class HoppingParameters:
    """Couplings of the hopping form: ``kappa`` (hopping), ``lam`` (quartic), ``h`` (field)."""

    kappa: float
    lam: float
    h: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kappa", _finite("kappa", self.kappa))
        object.__setattr__(self, "lam", _nonnegative(
            "lam", self.lam, "a negative quartic makes u unbounded below"))
        object.__setattr__(self, "h", _finite("h", self.h))


@dataclass(frozen=True)
class _Canonical:
    """u = sum_x [c_grad sum_mu (phi_{x+mu}-phi_x)^2 + c2 phi^2 + c4 phi^4 - h phi] + const."""

    c_grad: float
    c2: float
    c4: float
    h: float
    const: float


class Phi4(Energy):
    """phi^4 reduced potential (kT) on a periodic lattice; ``event_shape`` = lattice shape.

    Build it with :meth:`from_mass` (the paper's form) or :meth:`from_hopping`. The energy and
    the score ``-grad u`` are closed-form and vectorised over the batch (no loops over sites).

    Examples
    --------
    >>> u = Phi4.from_mass((16, 16), m2=-1.0, lam=0.8)
    >>> u(torch.zeros(2, 16, 16))
    tensor([0., 0.])
    """

    def __init__(self, shape: tuple[int, ...], params: MassParameters | HoppingParameters):
        self.event_shape = _check_shape(shape)
        if not isinstance(params, (MassParameters, HoppingParameters)):
            raise TypeError("params must be MassParameters or HoppingParameters; got "
                            f"{type(params).__name__}. Use Phi4.from_mass or Phi4.from_hopping.")
        self.params = params

    @classmethod
    def from_mass(cls, shape: tuple[int, ...], m2: float, lam: float, h: float = 0.0) -> Phi4:
        """The paper's form, no 1/2 on the gradient term.

        ``u = sum_x [sum_mu (phi_{x+mu} - phi_x)^2 + m2 phi_x^2 + lam phi_x^4 - h phi_x]``;
        METHOD section 7 uses ``m2 = -1, lam = 0.8, h = 0`` on ``shape = (16, 16)``.

        Parameters
        ----------
        shape : tuple of int
            Lattice extents ``(L_0, ..., L_{d-1})``, periodic; the ``event_shape``.
        m2 : float
            Mass term (may be negative for the interacting theory).
        lam : float
            Quartic coupling, ``>= 0``; ``lam = 0`` with ``m2 > 0`` is the free field.
        h : float
            Uniform external field.
        """
        return cls(shape, MassParameters(m2, lam, h))

    @classmethod
    def from_hopping(cls, shape: tuple[int, ...], kappa: float, lam: float,
                     h: float = 0.0) -> Phi4:
        """The standard hopping form.

        ``u = sum_x [-2 kappa sum_mu phi_x phi_{x+mu} + phi_x^2 + lam (phi_x^2 - 1)^2 - h phi_x]``

        Parameters
        ----------
        shape : tuple of int
            Lattice extents, periodic; the ``event_shape``.
        kappa : float
            Hopping parameter (``kappa > 0`` for the conversion to the mass form).
        lam : float
            Quartic coupling of the hopping form, ``>= 0``.
        h : float
            Uniform external field.
        """
        return cls(shape, HoppingParameters(kappa, lam, h))

    def __repr__(self) -> str:
        return f"Phi4(shape={self.event_shape}, {self.params!r})"

    @property
    def ndim(self) -> int:
        """Number of lattice directions ``d``."""
        return len(self.event_shape)

    @property
    def volume(self) -> int:
        """Number of sites ``V``."""
        return self.dim

    @property
    def is_free(self) -> bool:
        """True when the quartic coupling vanishes (a Gaussian field)."""
        return self.params.lam == 0.0

    @property
    def canonical(self) -> _Canonical:
        """Either form written as ``_Canonical`` coefficients (gradient, phi^2, phi^4, h, C)."""
        p, d = self.params, self.ndim
        if isinstance(p, MassParameters):
            return _Canonical(1.0, p.m2, p.lam, p.h, 0.0)
        # -2k phi_x phi_{x+mu} = k (phi_{x+mu}-phi_x)^2 - 2k phi_x^2 after summing over x
        return _Canonical(p.kappa, 1.0 - 2.0 * d * p.kappa - 2.0 * p.lam, p.lam, p.h,
                          self.volume * p.lam)

    # -- energy and score ---------------------------------------------------------------------

    def _shifted(self, phi: Tensor, shift: int) -> list[Tensor]:
        return [torch.roll(phi, shifts=shift, dims=mu + 1) for mu in range(self.ndim)]

    def energy(self, x: Tensor) -> Tensor:
        """Reduced potential ``u(phi)``, shape (batch,), from ``x`` of shape (batch, *shape)."""
        p, phi2 = self.params, x * x
        if isinstance(p, MassParameters):
            grad2 = sum((f - x) ** 2 for f in self._shifted(x, -1))
            density = grad2 + p.m2 * phi2 + p.lam * phi2 * phi2 - p.h * x
        else:
            hop = sum(self._shifted(x, -1))
            density = -2.0 * p.kappa * x * hop + phi2 + p.lam * (phi2 - 1.0) ** 2 - p.h * x
        return density.flatten(1).sum(1)

    def _force(self, x: Tensor) -> Tensor:
        """``-grad u``: the neighbour sum enters through phi_{x+mu} + phi_{x-mu}."""
        p = self.params
        nbr = sum(self._shifted(x, -1)) + sum(self._shifted(x, 1))
        if isinstance(p, MassParameters):
            grad = 2.0 * (2 * self.ndim * x - nbr) + 2.0 * p.m2 * x + 4.0 * p.lam * x ** 3 - p.h
        else:
            grad = -2.0 * p.kappa * nbr + 2.0 * x + 4.0 * p.lam * (x * x - 1.0) * x - p.h
        return -grad

    def score(self, x: Tensor) -> Tensor:
        """Closed-form score ``-grad u(x)``, shape (batch, *shape)."""
        check_batch(x, self.event_shape)
        return self._force(x)

    def energy_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``u(x)`` (batch,) and ``-grad u(x)`` (batch, *shape), closed form, no autograd."""
        x = x.detach()
        return self(x), self._force(x)

    # -- conversions --------------------------------------------------------------------------

    def to_hopping(self) -> Phi4Conversion:
        """The same theory in hopping form: ``u_hop(phi') = u(a phi') + V lam_hop``.

        With ``b = 2d + m2``: ``kappa = 2 / (b + sqrt(b^2 + 8 lam))`` (the positive root of
        ``2 lam kappa^2 + b kappa - 1 = 0``), ``a = sqrt(kappa)``, ``lam_hop = lam kappa^2``,
        ``h_hop = a h``.
        """
        p = self.params
        if isinstance(p, HoppingParameters):
            return Phi4Conversion(self, self, 1.0, 0.0)
        b = 2.0 * self.ndim + p.m2
        denom = b + math.sqrt(b * b + 8.0 * p.lam)
        if denom <= 0.0:
            raise ValueError(
                f"this Phi4 (lam=0, m2={p.m2}, d={self.ndim}) has no hopping form: it needs "
                f"2d + m2 > 0 when lam = 0; got 2d + m2 = {b}. Use lam > 0 or a larger m2.")
        kappa = 2.0 / denom
        a = math.sqrt(kappa)
        lam_h = p.lam * kappa * kappa
        target = Phi4.from_hopping(self.event_shape, kappa, lam_h, a * p.h)
        return Phi4Conversion(self, target, a, self.volume * lam_h)

    def to_mass(self) -> Phi4Conversion:
        """The same theory in the paper's form: ``u_mass(phi) = u(phi / sqrt(kappa)) - V lam``.

        ``m2 = (1 - 2 lam) / kappa - 2d``, ``lam_mass = lam / kappa^2``,
        ``h_mass = h / sqrt(kappa)``; needs ``kappa > 0``.
        """
        p = self.params
        if isinstance(p, MassParameters):
            return Phi4Conversion(self, self, 1.0, 0.0)
        if p.kappa <= 0.0:
            raise ValueError(f"kappa must be > 0 to rescale to the mass form (phi = "
                             f"sqrt(kappa) phi'); got kappa={p.kappa}.")
        k, s = p.kappa, math.sqrt(p.kappa)
        target = Phi4.from_mass(self.event_shape, (1.0 - 2.0 * p.lam) / k - 2.0 * self.ndim,
                                p.lam / (k * k), p.h / s)
        return Phi4Conversion(self, target, 1.0 / s, -self.volume * p.lam)

    # -- exact free-field results -------------------------------------------------------------

    def spectrum(self) -> np.ndarray:
        """Eigenvalues ``lambda_k`` of ``A`` in ``u = 1/2 phi^T A phi - h 1^T phi + C`` (lam = 0).

        ``lambda_k = 2 (c2 + c_grad sum_mu 4 sin^2(pi k_mu / L_mu))``; for the paper's form
        ``c_grad = 1, c2 = m2``. Returns a float64 array of shape ``shape``; index ``(0,...,0)``
        is the uniform mode, ``lambda_0 = 2 c2``.
        """
        c = self.canonical
        p_k = np.zeros(self.event_shape)
        for mu, n in enumerate(self.event_shape):
            s = 4.0 * np.sin(np.pi * np.arange(n) / n) ** 2
            p_k = p_k + s.reshape([-1 if i == mu else 1 for i in range(self.ndim)])
        return 2.0 * (c.c2 + c.c_grad * p_k)

    def log_z(self) -> float | None:
        """Exact ``log Z = log int exp(-u) dphi`` of the free field; ``None`` when lam != 0.

        ``log Z = (V/2) log 2 pi - 1/2 sum_k log lambda_k + 1/2 h^T A^{-1} h - C`` with the
        uniform field coupling only to the k = 0 mode: ``h^T A^{-1} h = V h^2 / lambda_0``.
        Raises ``ValueError`` if the free field is not normalisable (some ``lambda_k <= 0``).
        """
        return self.log_z_umbrella(0.0, 0.0)

    def log_z_umbrella(self, k: float, center: float) -> float | None:
        """Exact log Z of ``u(phi) + (k/2)(m(phi) - center)^2``, ``m`` the magnetisation.

        The umbrella changes only the uniform mode: ``lambda_0 -> lambda_0 + k/V``,
        ``h -> h + k center / V`` and adds ``k center^2 / 2``. ``None`` when lam != 0.
        """
        if not self.is_free:
            return None
        k, center = _nonnegative("k", k, "the umbrella must confine"), _finite("center", center)
        lam_k = self.spectrum().reshape(-1).copy()
        v = self.volume
        lam_k[0] += k / v
        if lam_k.min() <= 0.0:
            raise ValueError(f"{self!r} is not normalisable: the smallest mode of A is "
                             f"{lam_k.min():.6g} <= 0. A free field needs m2 > 0 (mass form) "
                             "or 0 < 1 - 2 d kappa (hopping form); add lam > 0 otherwise.")
        h_eff = self.canonical.h + k * center / v
        return float(0.5 * v * math.log(2 * math.pi) - 0.5 * np.log(lam_k).sum()
                     + 0.5 * v * h_eff ** 2 / lam_k[0] - 0.5 * k * center ** 2
                     - self.canonical.const)

    def exact_phi2(self) -> float | None:
        """Exact ``<phi_x^2> = (1/V) sum_k 1/lambda_k + (h / lambda_0)^2`` of the free field.

        The same at every site (translation invariance); ``None`` when lam != 0.
        """
        if self.log_z() is None:  # also validates normalisability
            return None
        lam_k = self.spectrum().reshape(-1)
        return float((1.0 / lam_k).mean() + (self.canonical.h / lam_k[0]) ** 2)


@dataclass(frozen=True)
class Phi4Conversion:
    """An exact change of parameterisation ``phi_source = scale * phi_target``.

    "Identical after conversion" means, for every target field ``phi'``::

        u_target(phi') = u_source(scale * phi') + shift

    so the Boltzmann densities agree after the change of variables, but the normalisers differ
    by the Jacobian ``scale^V`` and by ``exp(shift)``::

        log Z_source = log Z_target + V log(scale) + shift      (= log_z_offset)

    Free energies of the two forms must therefore be compared with this offset; differences
    between two states with the same ``V`` and ``scale`` keep only the ``shift`` difference.
    """

    source: Phi4
    target: Phi4
    scale: float
    shift: float

    def to_target(self, phi: Tensor) -> Tensor:
        """Map a source field to the target variable, ``phi' = phi / scale``."""
        return phi / self.scale

    def to_source(self, phi: Tensor) -> Tensor:
        """Map a target field back, ``phi = scale * phi'``."""
        return phi * self.scale

    @property
    def log_z_offset(self) -> float:
        """``log Z_source - log Z_target = V log(scale) + shift``."""
        return self.source.volume * math.log(self.scale) + self.shift


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    ok = isinstance(shape, (tuple, list)) and len(shape) >= 1 and all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in shape)
    if not ok:
        raise ValueError(f"shape must be a non-empty tuple of positive ints, e.g. (16, 16); "
                         f"got {shape!r}.")
    return tuple(int(n) for n in shape)


def paper_umbrella_states(shape: tuple[int, ...] = (16, 16), m2: float = -1.0, lam: float = 0.8,
                          k: float = 10.0, centers: tuple[float, float] = (-0.3, 0.6)):
    """The paper's two phi^4 states: ``u + (k/2)(m - c)^2`` with ``c = -0.3`` (a), ``+0.6`` (b).

    Returns
    -------
    (Biased, Biased)
        ``(energy_a, energy_b)`` on a shared :class:`Phi4` in the mass form.
    """
    from feat.energies.bias import Biased, HarmonicUmbrella

    base = Phi4.from_mass(shape, m2, lam)
    return tuple(Biased(base, HarmonicUmbrella(magnetisation, k, c)) for c in centers)
