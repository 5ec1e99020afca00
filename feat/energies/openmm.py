"""The one OpenMM bridge: a batched reduced potential ``u = U / kT`` with forces as its gradient.

:class:`OpenMMEnergy` wraps an ``openmm.System`` at a temperature ``T``. Positions ``x`` have
shape ``(batch, n_atoms, 3)`` in nm; the energy is the reduced potential

    u(x) = U(x) / kT,    kT = R T  (kJ/mol, R = openmm.unit.MOLAR_GAS_CONSTANT_R),

of shape ``(batch,)``, and its gradient ``grad u = -F / kT`` (kT/nm) comes from OpenMM's forces
through a ``torch.autograd.Function``, never from a second autograd pass. Every evaluation is
done in float64 on one reused ``openmm.Context`` (or, optionally, one per worker process);
results come back on the caller's device and dtype.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Literal

import numpy as np
import openmm
import torch
from openmm import unit
from torch import Tensor

from feat.cpus import unpin
from feat.energies.base import Energy

__all__ = ["OpenMMEnergy", "boltzmann_kt", "default_platform"]

OnError = Literal["raise", "inf"]
PLATFORMS = ("Reference", "CPU", "CUDA", "OpenCL")
_DEFAULT_PROPERTIES: dict[str, dict[str, str]] = {
    "Reference": {},
    "CPU": {"Threads": "1"},
    "CUDA": {"Precision": "mixed"},
    "OpenCL": {"Precision": "mixed"},
}
_KJ_PER_MOL = unit.kilojoule_per_mole
_KJ_PER_MOL_NM = unit.kilojoule_per_mole / unit.nanometer
# State.getForces(asNumpy=True) fills a fresh array with State._getVectorAsNumpy; calling it on
# our output buffer saves a copy and the unit wrapper (~10 us per call); public path otherwise.
_FAST_FORCES = hasattr(openmm.State, "_getVectorAsNumpy")


def _kelvin(temperature: Any) -> float:
    """Temperature in kelvin from an ``openmm.unit.Quantity`` or a float (kelvin)."""
    if unit.is_quantity(temperature):
        value = float(temperature.value_in_unit(unit.kelvin))
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        value = float(temperature)
    else:
        raise TypeError(
            "temperature must be an openmm.unit.Quantity (e.g. 300 * unit.kelvin) "
            f"or a float in kelvin; got {type(temperature).__name__}."
        )
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"temperature must be finite and > 0 K; got {value} K. Give it in kelvin, e.g. "
            "300.0 or 300 * openmm.unit.kelvin."
        )
    return value


def boltzmann_kt(temperature: Any) -> float:
    """Thermal energy ``kT = R T`` in kJ/mol.

    Parameters
    ----------
    temperature : openmm.unit.Quantity or float
        Temperature; a bare float is read as kelvin.
    """
    r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(_KJ_PER_MOL / unit.kelvin)
    return r * _kelvin(temperature)


def default_platform(system: openmm.System) -> tuple[str, dict[str, str]]:
    """The fastest OpenMM platform for one small molecule on a CPU, and its properties.

    ``CPU`` with one thread when ``system`` holds a ``CustomGBForce`` (the Reference kernels
    for custom GB are slow); ``Reference`` (double precision) otherwise.
    """
    if any(isinstance(f, openmm.CustomGBForce) for f in system.getForces()):
        if _has_platform("CPU"):
            return "CPU", dict(_DEFAULT_PROPERTIES["CPU"])
    return "Reference", {}


def _has_platform(name: str) -> bool:
    n = openmm.Platform.getNumPlatforms()
    return name in [openmm.Platform.getPlatform(i).getName() for i in range(n)]


class _ContextEvaluator:
    """One ``openmm.Context`` evaluating energies (kJ/mol) and forces (kJ/mol/nm) in a loop."""

    def __init__(self, system: openmm.System, platform: str, properties: dict[str, str]):
        self.system = system
        self.platform = platform
        self.properties = dict(properties)
        self.has_virtual_sites = any(
            system.isVirtualSite(i) for i in range(system.getNumParticles())
        )
        self._integrator = openmm.VerletIntegrator(0.001)
        self.context = openmm.Context(
            system, self._integrator, openmm.Platform.getPlatformByName(platform), self.properties
        )

    def run(
        self, pos: np.ndarray, forces: bool
    ) -> tuple[np.ndarray, np.ndarray | None, dict[int, str]]:
        """Evaluate ``pos`` (B, N, 3) float64 nm; returns energies (B,), forces or None, failures.

        ``failures`` maps a batch index to the reason that configuration could not be evaluated
        (its energy is NaN then); non-finite *results* are checked by the caller.
        """
        energies = np.full(len(pos), np.nan)
        out = np.zeros_like(pos) if forces else None
        failures: dict[int, str] = {}
        finite = np.isfinite(pos.reshape(len(pos), -1)).all(axis=1)
        for i in range(len(pos)):
            if not finite[i]:
                failures[i] = "positions contain NaN or inf"
                continue
            try:
                energies[i] = self._one(pos[i], None if out is None else out[i])
            except openmm.OpenMMException as exc:
                failures[i] = f"OpenMM raised: {str(exc).strip()}"
        return energies, out, failures

    def _one(self, xi: np.ndarray, force_out: np.ndarray | None) -> float:
        """Energy (kJ/mol) of ``xi`` (N, 3) nm; forces (kJ/mol/nm) written into ``force_out``."""
        self.context.setPositions(xi)
        if self.has_virtual_sites:
            self.context.computeVirtualSites()
        state = self.context.getState(energy=True, forces=force_out is not None)
        if force_out is not None:
            if _FAST_FORCES:  # OpenMM's own asNumpy path, writing in place (kJ/mol/nm)
                state._getVectorAsNumpy(openmm.State.Forces, force_out)
            else:
                force_out[...] = state.getForces(asNumpy=True).value_in_unit(_KJ_PER_MOL_NM)
        return state.getPotentialEnergy().value_in_unit(_KJ_PER_MOL)


_WORKER: _ContextEvaluator | None = None


def _worker_init(system_xml: str, platform: str, properties: dict[str, str]) -> None:
    global _WORKER
    unpin()  # a pinned parent's workers spread over the CPUs it had before pinning
    _WORKER = _ContextEvaluator(openmm.XmlSerializer.deserialize(system_xml), platform, properties)


def _worker_run(pos: np.ndarray, forces: bool):
    return _WORKER.run(pos, forces)


class _OpenMMFunction(torch.autograd.Function):
    """``u = U(x) / kT`` with ``du/dx = -F(x) / kT`` taken from the same OpenMM call."""

    @staticmethod
    def forward(ctx, x: Tensor, energy: OpenMMEnergy) -> Tensor:
        u, score = energy._evaluate(x, forces=True)
        ctx.save_for_backward(x, score)
        return u

    @staticmethod
    def backward(ctx, grad_u: Tensor):
        x, score = ctx.saved_tensors
        grad_x = -grad_u[:, None, None] * score
        if torch.is_grad_enabled():  # create_graph=True: poison the second derivative
            grad_x = _FirstOrderOnly.apply(grad_x, x)
        return grad_x, None


class _FirstOrderOnly(torch.autograd.Function):
    """Identity on the gradient whose own backward raises: OpenMM gives no Hessians."""

    @staticmethod
    def forward(ctx, grad_x: Tensor, x: Tensor) -> Tensor:
        return grad_x.clone()

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(
            "OpenMMEnergy is differentiable once only: OpenMM provides forces (first "
            "derivatives) but no second derivatives, so double backward / Hessians through it "
            "are not available. Differentiate u without create_graph=True, or use "
            "energy_and_score(x), or finite differences of the score."
        )


class OpenMMEnergy(Energy):
    """Reduced potential ``u(x) = U(x) / kT`` of an ``openmm.System``, batched, in kT.

    Parameters
    ----------
    system : openmm.System
        The potential ``U``; it is not modified (a pickled copy travels as XML).
    temperature : openmm.unit.Quantity or float
        Temperature ``T`` (a float is read as kelvin); ``kT = R T``.
    platform : {"Reference", "CPU", "CUDA", "OpenCL"}, optional
        OpenMM platform. Default: :func:`default_platform` (``CPU`` with one thread for
        systems with a ``CustomGBForce``, ``Reference`` otherwise).
    platform_properties : dict, optional
        Platform properties, merged over the defaults (``CPU``: ``Threads=1``; ``CUDA`` and
        ``OpenCL``: ``Precision=mixed``). The CPU platform computes forces in mixed precision
        (relative energy error ~1e-7); use ``Reference`` for double precision.
    on_error : {"raise", "inf"}
        What to do with a configuration OpenMM cannot evaluate (NaN/inf positions, an
        ``OpenMMException``, a non-finite energy or force): ``"raise"`` a ``ValueError`` naming
        the batch index, or give it ``u = +inf`` (zero Boltzmann weight) and zero force. Either
        way ``n_nonfinite`` counts them.
    n_workers : int
        ``0`` or ``1``: evaluate in this process. ``> 1``: split each batch over that many
        worker processes ('spawn'), each with its own Context; worth it for expensive systems
        only. Scripts using it need an ``if __name__ == "__main__":`` guard; call
        :meth:`close` to stop the workers.

    Attributes
    ----------
    event_shape : tuple
        ``(n_atoms, 3)``; positions in nm.
    kT : float
        Thermal energy in kJ/mol.
    n_nonfinite : int
        Number of configurations that could not be evaluated (see ``on_error``).
    n_evaluated : int
        Number of configurations sent to OpenMM.

    Examples
    --------
    >>> from openmmtools.testsystems import AlanineDipeptideVacuum
    >>> ts = AlanineDipeptideVacuum(constraints=None)
    >>> u = OpenMMEnergy(ts.system, 300.0)
    >>> x = torch.tensor(ts.positions.value_in_unit(unit.nanometer))[None]
    >>> u(x).shape
    torch.Size([1])
    """

    def __init__(
        self,
        system: openmm.System,
        temperature: Any,
        *,
        platform: str | None = None,
        platform_properties: dict[str, str] | None = None,
        on_error: OnError = "raise",
        n_workers: int = 0,
        check_scale: bool = True,
    ):
        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System; got {type(system).__name__}.")
        if system.getNumParticles() == 0:
            raise ValueError("system has no particles; give an openmm.System with atoms.")
        self.system = system
        self.temperature = _kelvin(temperature)
        self.kT = boltzmann_kt(self.temperature)
        self.platform_name, self.platform_properties = _resolve_platform(
            system, platform, platform_properties
        )
        self.on_error = _check_on_error(on_error)
        self.n_workers = _check_workers(n_workers)
        self.n_atoms = system.getNumParticles()
        self.event_shape = (self.n_atoms, 3)
        self.n_nonfinite = 0
        self.n_evaluated = 0
        self._bonds = _bond_lengths(system) if check_scale else None
        self._evaluator: _ContextEvaluator | None = None
        self._pool: ProcessPoolExecutor | None = None

    def __repr__(self) -> str:
        return (
            f"OpenMMEnergy(n_atoms={self.n_atoms}, temperature={self.temperature} K, "
            f"platform={self.platform_name!r}, on_error={self.on_error!r}, "
            f"n_workers={self.n_workers})"
        )

    # ------------------------------------------------------------------ public API
    @property
    def context(self) -> openmm.Context:
        """The (lazily built, reused) ``openmm.Context`` of this process."""
        return self._local().context

    def energy(self, x: Tensor) -> Tensor:
        """Reduced potential ``u(x)`` in kT, shape ``(batch,)``, for ``x`` (batch, n_atoms, 3) nm.

        Differentiable once: ``torch.autograd.grad(u.sum(), x)`` is ``-F(x) / kT`` in kT/nm.
        """
        self._check_positions(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _OpenMMFunction.apply(x, self)
        return self._evaluate(x, forces=False)[0]

    def energy_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``u(x)`` (batch,) in kT and the score ``-grad u = F / kT`` (batch, n_atoms, 3) in
        kT/nm, from one OpenMM call per configuration; both detached."""
        self._check_positions(x)
        return self._evaluate(x, forces=True)

    def score(self, x: Tensor) -> Tensor:
        """The score ``-grad u(x) = F(x) / kT``, shape (batch, n_atoms, 3), in kT/nm."""
        return self.energy_and_score(x)[1]

    def close(self) -> None:
        """Stop the worker processes (if any); they restart on the next evaluation."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible to do
            pass

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["system"] = openmm.XmlSerializer.serialize(self.system)
        state["_evaluator"] = None
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["system"] = openmm.XmlSerializer.deserialize(state["system"])
        self.__dict__.update(state)

    # ------------------------------------------------------------------ internals
    def _check_positions(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(
                f"x must be a torch.Tensor of positions in nm; got "
                f"{type(x).__name__}. Convert with torch.as_tensor(...)."
            )
        if x.dim() != 3 or tuple(x.shape[1:]) != self.event_shape or x.shape[0] == 0:
            raise ValueError(
                f"x must have shape (batch, {self.n_atoms}, 3) in nm: the System has "
                f"{self.n_atoms} particles; got {tuple(x.shape)}. Check that the positions "
                "belong to this System (same atoms, virtual sites included) and add a batch "
                "dimension with x[None] for one configuration."
            )
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor (positions in nm); got {x.dtype}.")
        if self._bonds is not None and _check_scale(x, self._bonds):
            self._bonds = None  # checked once, on the first finite positions given

    def _local(self) -> _ContextEvaluator:
        if self._evaluator is None:
            self._evaluator = _ContextEvaluator(
                self.system, self.platform_name, self.platform_properties
            )
        return self._evaluator

    def _run(self, pos: np.ndarray, forces: bool):
        if self.n_workers <= 1 or len(pos) < 2:
            return self._local().run(pos, forces)
        if self._pool is None:
            xml = openmm.XmlSerializer.serialize(self.system)
            self._pool = ProcessPoolExecutor(
                self.n_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(xml, self.platform_name, self.platform_properties),
            )
        chunks = np.array_split(pos, min(self.n_workers, len(pos)))
        results = [self._pool.submit(_worker_run, c, forces) for c in chunks]
        energies, out, failures, offset = [], [], {}, 0
        for chunk, future in zip(chunks, results, strict=True):
            e, f, fail = future.result()
            energies.append(e)
            out.append(f)
            failures.update({offset + i: why for i, why in fail.items()})
            offset += len(chunk)
        return np.concatenate(energies), (np.concatenate(out) if forces else None), failures

    def _evaluate(self, x: Tensor, forces: bool) -> tuple[Tensor, Tensor | None]:
        """Energies (B,) in kT and scores F/kT (B, N, 3) (or None), in x's device and dtype."""
        pos = np.ascontiguousarray(x.detach().to(device="cpu", dtype=torch.float64).numpy())
        energies, f, failures = self._run(pos, forces)
        self.n_evaluated += len(pos)
        u = energies / self.kT
        score = f / self.kT if forces else None
        _find_nonfinite(u, score, failures)
        if failures:
            self._handle_failures(failures, u, score)

        def back(a: np.ndarray) -> Tensor:
            return torch.from_numpy(a).to(device=x.device, dtype=x.dtype)

        return back(u), (back(score) if forces else None)

    def _handle_failures(
        self, failures: dict[int, str], u: np.ndarray, score: np.ndarray | None
    ) -> None:
        self.n_nonfinite += len(failures)
        if self.on_error == "raise":
            first = sorted(failures)[:5]
            lines = "; ".join(f"index {i}: {failures[i]}" for i in first)
            more = f" (and {len(failures) - len(first)} more)" if len(failures) > len(first) else ""
            raise ValueError(
                f"OpenMMEnergy could not evaluate {len(failures)} of {len(u)} configurations "
                f"at batch {lines}{more}. Pass on_error='inf' to give such configurations "
                "u = +inf (zero weight) and zero force; they are counted in n_nonfinite."
            )
        bad = np.fromiter(failures, dtype=np.int64)
        u[bad] = np.inf
        if score is not None:
            score[bad] = 0.0


def _find_nonfinite(u: np.ndarray, score: np.ndarray | None, failures: dict[int, str]) -> None:
    """Add non-finite energies (and forces) to ``failures`` in place."""
    for i in np.flatnonzero(~np.isfinite(u)):
        failures.setdefault(int(i), f"OpenMM returned a non-finite energy ({u[i]})")
    if score is not None:
        bad_f = ~np.isfinite(score.reshape(len(score), -1)).all(axis=1)
        for i in np.flatnonzero(bad_f):
            failures.setdefault(
                int(i),
                "OpenMM returned non-finite forces (e.g. two bonded atoms at the same position)",
            )


#: Largest accepted ratio (either way) of the median bond length to its equilibrium length.
SCALE_TOLERANCE = 4.0


def _bond_lengths(system: openmm.System) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Atom pairs ``i, j`` bonded in ``system`` and their equilibrium lengths (nm), or None."""
    pairs = []
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r0, _ = force.getBondParameters(k)
                pairs.append((i, j, r0.value_in_unit(unit.nanometer)))
    for k in range(system.getNumConstraints()):
        i, j, r0 = system.getConstraintParameters(k)
        pairs.append((i, j, r0.value_in_unit(unit.nanometer)))
    pairs = [p for p in pairs if p[2] > 0]
    if not pairs:
        return None
    i, j, r0 = np.array(pairs).T
    return i.astype(np.int64), j.astype(np.int64), r0.astype(np.float64)


def _check_scale(x: Tensor, bonds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bool:
    """Raise a ``ValueError`` when the bonds of ``x`` (batch, N, 3) are ~10x off in length.

    Returns whether there was a finite configuration to check.
    """
    i, j, r0 = bonds
    pos = x[:10].detach().to(device="cpu", dtype=torch.float64).numpy()
    pos = pos[np.isfinite(pos.reshape(len(pos), -1)).all(axis=1)]
    if len(pos) == 0:
        return False
    ratio = float(np.median(np.linalg.norm(pos[:, i] - pos[:, j], axis=-1) / r0))
    if ratio > SCALE_TOLERANCE:
        raise ValueError(
            f"x does not look like nanometres: bonded atoms are a median {ratio:.3g} times "
            "their equilibrium length. Positions must be in nm; if they are in Å, divide by "
            "10. Give check_scale=False to skip this check."
        )
    if ratio < 1.0 / SCALE_TOLERANCE:
        raise ValueError(
            f"x does not look like nanometres: bonded atoms are a median {ratio:.3g} times "
            "their equilibrium length. Positions must be in nm; if they are 10 times too "
            "small (nm divided by 10 again), multiply by 10. Give check_scale=False to skip "
            "this check."
        )
    return True


def _resolve_platform(
    system: openmm.System, platform: str | None, properties: dict[str, str] | None
) -> tuple[str, dict[str, str]]:
    if platform is None:
        name, props = default_platform(system)
    else:
        if platform not in PLATFORMS:
            raise ValueError(
                f"platform must be one of {PLATFORMS} or None (automatic); got {platform!r}."
            )
        if not _has_platform(platform):
            raise ValueError(
                f"platform {platform!r} is not available in this OpenMM build; "
                "give platform=None to choose automatically, or 'Reference'."
            )
        name, props = platform, dict(_DEFAULT_PROPERTIES[platform])
    if properties is not None:
        if not isinstance(properties, dict):
            raise TypeError(
                "platform_properties must be a dict of str to str, e.g. "
                f"{{'Threads': '2'}}; got {type(properties).__name__}."
            )
        props.update({str(k): str(v) for k, v in properties.items()})
    return name, props


def _check_on_error(on_error: str) -> str:
    if on_error not in ("raise", "inf"):
        raise ValueError(
            f"on_error must be 'raise' or 'inf'; got {on_error!r}. Use 'inf' to give "
            "configurations OpenMM cannot evaluate u = +inf (zero weight)."
        )
    return on_error


def _check_workers(n_workers: int) -> int:
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
        raise ValueError(
            f"n_workers must be an int >= 0 (0 or 1: no worker processes); got {n_workers!r}."
        )
    return n_workers
