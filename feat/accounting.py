"""Cost accounting: energy and network evaluations, sampling steps, wall time, peak memory.

Counting never changes a number: wrappers delegate to the wrapped object and only add to
tallies. The unit is a **configuration**: a batch of ``B`` positions evaluated by ``u`` adds
``B`` energy evaluations, by ``−∇u`` adds ``B`` gradient evaluations (one pass giving both adds
to both), a batch of ``B`` through a network adds ``B`` network evaluations, and one MCMC/MD
step of ``B`` chains adds ``B`` sampling steps.

>>> import torch
>>> from feat.energies.base import FunctionEnergy
>>> counter = Counter()
>>> u = counted(FunctionEnergy(lambda x: (x**2).sum(-1), 2), counter)
>>> with counter.phase("demo"):
...     _ = u(torch.zeros(5, 2)); _ = u.score(torch.zeros(3, 2))
>>> counter.counts("demo")
Counts(energy_evals=5, gradient_evals=3, network_evals=0, sampling_steps=0)

Three ways to count:

- :func:`counted` wraps an :class:`~feat.energies.base.Energy` (and :func:`counted_problem`
  both energies of a :class:`~feat.problem.TwoStateProblem`) for an explicit ``Counter``;
- :class:`CountedModule` wraps any ``torch.nn.Module`` whose first argument (or the second,
  for fields ``(t, x)``) is batch-first; inside ``with counter.networks():`` every outermost
  call of a :class:`~feat.fields.field.Field` anywhere is counted through global module hooks
  (for networks built inside the pipeline, out of reach of a wrapper);
- :func:`record` lets library code (samplers) add to whichever counter is active, a no-op
  when none is.

Wall time and peak memory: :meth:`Counter.phase` times each phase; :func:`peak_memory` reads
``resource.getrusage`` (the process's peak resident set, monotone over its life: run one
benchmark per process to attribute it) and ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .energies.base import Energy
from .problem import TwoStateProblem

__all__ = ["CountedEnergy", "CountedModule", "Counter", "Counts", "counted", "counted_problem",
           "peak_memory", "phase", "record", "total_cost"]

_KINDS = ("energy_evals", "gradient_evals", "network_evals", "sampling_steps")


@dataclass(frozen=True)
class Counts:
    """Tallies in configurations: ``u`` evaluations, ``∇u`` evaluations, network evaluations
    (forward passes; backward passes are not counted) and MCMC/MD steps (chains × steps)."""

    energy_evals: int = 0
    gradient_evals: int = 0
    network_evals: int = 0
    sampling_steps: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, k) + getattr(other, k) for k in _KINDS))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, k) - getattr(other, k) for k in _KINDS))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Counter:
    """Tallies of evaluations and steps, split by named phase, with the wall time of each.

    Add with :meth:`add` (or through :func:`counted` energies, :class:`CountedModule`, the
    :meth:`networks` hooks and :func:`record`); the current phase is set by :meth:`phase`
    (``"other"`` outside any). ``counts()`` sums over phases.
    """

    def __init__(self) -> None:
        self._counts: dict[str, Counts] = {}
        self.seconds: dict[str, float] = {}
        self._phase = "other"
        self._events: list[tuple[float, Counts]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Counter]:
        """Attribute what happens inside to ``name`` and add its wall time to ``seconds``.

        The counter is also the active one (for :func:`record`) while inside.
        """
        previous, self._phase = self._phase, str(name)
        _ACTIVE.append(self)
        start = time.perf_counter()
        try:
            yield self
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            _ACTIVE.remove(self)
            self._phase = previous

    def add(self, energy: int = 0, gradient: int = 0, network: int = 0,
            sampling: int = 0, phase: str | None = None) -> None:
        """Add configurations to the tallies of ``phase`` (default: the current phase)."""
        new = Counts(int(energy), int(gradient), int(network), int(sampling))
        name = self._phase if phase is None else str(phase)
        self._counts[name] = self._counts.get(name, Counts()) + new
        self._events.append((time.perf_counter(), new))

    def counts(self, phase: str | None = None) -> Counts:
        """The tallies of one phase, or (``None``) of all phases together."""
        if phase is not None:
            return self._counts.get(phase, Counts())
        return sum(self._counts.values(), Counts())

    def last_seconds(self, seconds: float) -> Counts:
        """What was counted in the ``seconds`` before the last count (``time.perf_counter``
        clock): the tallies of a final stage whose duration alone is known."""
        if not self._events:
            return Counts()
        since = self._events[-1][0] - float(seconds)
        return sum((c for t, c in self._events if t >= since), Counts())

    @property
    def phases(self) -> list[str]:
        return sorted(set(self._counts) | set(self.seconds))

    def to_dict(self) -> dict:
        """``{"total": {...}, "phases": {name: {..., "seconds": s}}}``, JSON-ready."""
        phases = {p: {**self.counts(p).to_dict(), "seconds": self.seconds.get(p)}
                  for p in self.phases}
        return {"total": self.counts().to_dict(), "phases": phases}

    @contextlib.contextmanager
    def networks(self) -> Iterator[Counter]:
        """Count every outermost :class:`~feat.fields.field.Field` call (global hooks).

        A field calling another field (a reversed, scaled or informed wrapper around a
        network) is one evaluation; the batch size is that of the position argument ``x``.
        """
        from .fields.field import Field

        depth = [0]

        def pre(module, args):
            if isinstance(module, Field):
                if depth[0] == 0:
                    self.add(network=_batch_of(args))
                depth[0] += 1

        def post(module, args, output):
            if isinstance(module, Field):
                depth[0] -= 1

        h_pre = nn.modules.module.register_module_forward_pre_hook(pre)
        h_post = nn.modules.module.register_module_forward_hook(post, always_call=True)
        try:
            yield self
        finally:
            h_pre.remove()
            h_post.remove()


_ACTIVE: list[Counter] = []


def phase(name: str) -> contextlib.AbstractContextManager:
    """``Counter.phase(name)`` of the innermost active counter; a no-op when none is active.

    For library stages (``with accounting.phase("transport"): ...``) that want their cost
    attributed when someone is counting, at no cost otherwise.
    """
    return _ACTIVE[-1].phase(name) if _ACTIVE else contextlib.nullcontext()


def total_cost(*costs: dict | None) -> dict[str, int] | None:
    """The sum of sampling costs (``{"sampling_steps": …, "gradient_evals": …}`` dicts, e.g.
    :attr:`~feat.sampling.hmc.HMCResult.cost`); None when any is unknown (None)."""
    if any(c is None for c in costs):
        return None
    return {k: int(sum(c.get(k, 0) for c in costs)) for k in ("sampling_steps", "gradient_evals")}


def record(energy: int = 0, gradient: int = 0, network: int = 0, sampling: int = 0) -> None:
    """Add to the innermost active counter (inside a :meth:`Counter.phase`); else do nothing.

    For library code that does work out of reach of the wrappers, e.g. a sampler:
    ``record(sampling=n_chains)`` after each MCMC step.
    """
    if _ACTIVE:
        _ACTIVE[-1].add(energy, gradient, network, sampling)


def _batch_of(args: tuple) -> int:
    """Batch size of a call: the last tensor argument's first dimension (``x`` of ``(t, x)``)."""
    for a in reversed(args):
        if isinstance(a, Tensor) and a.dim() > 0:
            return int(a.shape[0])
    return 1


class CountedEnergy(Energy):
    """An :class:`Energy` that delegates to ``inner`` and counts configurations in ``counter``.

    Values are the inner energy's, bit for bit; other attributes (``sample``, ``means``, …)
    are looked up on the inner energy.
    """

    def __init__(self, inner: Energy, counter: Counter):
        if not isinstance(inner, Energy):
            raise TypeError(f"inner must be a feat Energy; got {type(inner).__name__}.")
        self.inner, self.counter = inner, counter
        self.event_shape = tuple(inner.event_shape)

    def energy(self, x: Tensor) -> Tensor:
        self.counter.add(energy=x.shape[0])
        return self.inner.energy(x)

    def score(self, x: Tensor) -> Tensor:
        self.counter.add(gradient=x.shape[0])
        return self.inner.score(x)

    def energy_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.counter.add(energy=x.shape[0], gradient=x.shape[0])
        return self.inner.energy_and_score(x)

    def log_z(self) -> float | None:
        return self.inner.log_z()

    def __getattr__(self, name: str):
        if name in ("inner", "counter"):  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"counted({self.inner!r})"


def counted(energy: Energy, counter: Counter) -> CountedEnergy:
    """``energy`` wrapped so that its evaluations add to ``counter`` (see :class:`Counter`)."""
    return CountedEnergy(energy, counter)


def counted_problem(problem: TwoStateProblem, counter: Counter) -> TwoStateProblem:
    """The same problem (samples, scores, reference, metadata) with both energies counted."""
    return dataclasses.replace(problem, energy_a=counted(problem.energy_a, counter),
                               energy_b=counted(problem.energy_b, counter))


class CountedModule(nn.Module):
    """Wrap a module; each call adds its batch size (see :func:`_batch_of`) to ``counter``."""

    def __init__(self, module: nn.Module, counter: Counter):
        super().__init__()
        self.module, self.counter = module, counter

    def forward(self, *args, **kwargs):
        self.counter.add(network=_batch_of(args))
        return self.module(*args, **kwargs)


def peak_memory() -> dict[str, float | None]:
    """Peak memory in MiB: ``rss`` (this process's peak resident set since it started) and
    ``cuda`` (``torch.cuda.max_memory_allocated`` since the last reset, None without CUDA)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes vs KiB
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.max_memory_allocated() / 2**20
    return {"rss_mib": rss_mib, "cuda_mib": cuda}
