"""The trainer: learns velocity ``b`` and score ``s`` from a two-state problem (METHOD §3)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..fields.field import Field
from ..interpolants.couplings import (
    Coupling,
    IndependentCoupling,
    MinibatchOTCoupling,
    lift_periodic,
)
from ..interpolants.interpolant import Interpolant, InterpolantSample
from ..losses import LossTerms, interpolant_loss
from ..problem import TwoStateProblem
from . import distributed
from .ema import EMA

__all__ = ["TrainingConfig", "TrainingRecord", "Trainer"]


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings (the paper's defaults where it states them).

    steps, batch_size : Adam steps and end-state pairs per step.
    lr, lr_final : learning rate, cosine-annealed to ``lr_final`` (equal values: constant).
    grad_clip : gradient-norm clip per network.  ema_decay : weight averaging for estimation.
    tsm_weight : weight of target score matching (0 turns it off).
    checkpoint_every : steps between checkpoints in a run directory (0: only at the end).
    coupling : "independent", "ot" (minibatch optimal transport) or "kabsch_ot" (centre and
        Kabsch-align molecules to one reference first; needs equivariant fields) or
        "perm_kabsch_ot" (identical particles, e.g. LJ: also relabel them by Hungarian
        assignment; needs permutation-equivariant fields too).
    noise_a, noise_g0 : the interpolant noise ``gamma(t) = sqrt(noise_a t (1 − t)) + noise_g0``
        (METHOD §2; the paper: 0.05 and 0), in the problem's length units. Keep ``gamma``
        below the narrowest thermal width of the states (e.g. bond lengths of molecules) if
        the fields must resolve it.
    shortest_arc : for periodic coordinates (the problem's ``metadata["periods"]``, e.g.
        dihedrals in internal coordinates): pair and interpolate along the shorter arc (the
        OT cost and each pair use the minimal image; helps when the states share their
        conformations, as ALDP-S), or (False) along the unrolled representation, so that all
        mass crosses the circle one way (helps between disjoint basins, as ALDP-T).
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    lr_final: float = 1e-3
    grad_clip: float = 5.0
    ema_decay: float = 0.995
    tsm_weight: float = 0.1
    coupling: str = "independent"
    checkpoint_every: int = 1000
    noise_a: float = 0.05
    noise_g0: float = 0.0
    shortest_arc: bool = True

    def __post_init__(self):
        checks = {
            "steps": self.steps >= 0,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "lr_final": self.lr_final > 0,
            "grad_clip": self.grad_clip > 0,
            "ema_decay": 0 <= self.ema_decay < 1,
            "tsm_weight": self.tsm_weight >= 0,
            "checkpoint_every": self.checkpoint_every >= 0,
            "noise_a": self.noise_a > 0,
            "noise_g0": self.noise_g0 >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"training.{key} is out of range: got {getattr(self, key)!r}.")
        if self.coupling not in ("independent", "ot", "kabsch_ot", "perm_kabsch_ot"):
            raise ValueError(
                "training.coupling must be 'independent', 'ot', 'kabsch_ot' or "
                "'perm_kabsch_ot'; got "
                f"{self.coupling!r}."
            )


@dataclass(frozen=True)
class TrainingRecord:
    """One logged step: losses (floats), gradient norms before clipping, skipped steps so far."""

    step: int
    losses: dict
    grad_norm_velocity: float
    grad_norm_score: float
    n_skipped: int
    seconds: float


def _coupling(name: str, periods: Tensor | None = None) -> Coupling:
    return IndependentCoupling() if name == "independent" else MinibatchOTCoupling(periods)


def _aligned(x_a, x_b, s_a, s_b):
    """Centre and Kabsch-align both states' samples (and scores) to the first sample of a.

    Valid only with rotation-equivariant fields and COM-free noise (METHOD §2).
    """
    from ..interpolants.alignment import align_to_reference

    if x_a.dim() != 3 or x_a.shape[-1] != 3:
        raise ValueError(f"training.coupling 'kabsch_ot' needs particle samples (batch, "
                         f"n_atoms, 3); got {tuple(x_a.shape)}. Use 'ot' or 'independent'.")
    ref = x_a[0] - x_a[0].mean(0)
    x_a, s_a = align_to_reference(x_a, ref, s_a)
    x_b, s_b = align_to_reference(x_b, ref, s_b)
    return x_a, x_b, s_a, s_b


def _rank_slice(n: int) -> slice:
    """This rank's contiguous share of a global minibatch of ``n`` (divisible by the world)."""
    k = n // distributed.world_size()
    return slice(distributed.rank() * k, (distributed.rank() + 1) * k)


def _map_sample(smp: InterpolantSample, fn: Callable[[torch.Tensor], torch.Tensor]
                ) -> InterpolantSample:
    """``fn`` applied to every (batch, ...) tensor of an interpolant sample."""
    c = smp.coef
    coef = type(c)(**{f.name: fn(getattr(c, f.name)) for f in dataclasses.fields(c)})
    rows = {f.name: fn(getattr(smp, f.name)) for f in dataclasses.fields(smp) if f.name != "coef"}
    return InterpolantSample(**rows, coef=coef)


def _slice_sample(smp: InterpolantSample, sl: slice) -> InterpolantSample:
    """The rows ``sl`` of every (batch, ...) tensor of an interpolant sample."""
    return _map_sample(smp, lambda v: v[sl])


def _fields_device(velocity: nn.Module, score: nn.Module) -> torch.device:
    """The one device both networks' parameters live on."""
    devices = {p.device for m in (velocity, score) for p in m.parameters()}
    if len(devices) > 1:
        raise ValueError(f"velocity and score must have their parameters on one device; got "
                         f"{sorted(map(str, devices))}. Move both with .to(device).")
    return devices.pop() if devices else torch.device("cpu")


def _global_losses(terms: LossTerms) -> dict[str, float]:
    """The loss terms averaged over ranks: the global minibatch's means (non-finite anywhere →
    non-finite everywhere, so every rank skips the same steps)."""
    names = [k for k in ("velocity", "denoising", "total", "target_score")
             if getattr(terms, k) is not None]
    values = torch.stack([getattr(terms, k).detach() for k in names])
    values = distributed.all_reduce_sum_(values) / distributed.world_size()
    return dict(zip(names, values.tolist(), strict=True))


@dataclass
class Trainer:
    """Adam on velocity and score networks, per-network clipping, EMA, non-finite steps skipped.

    The live networks are ``velocity`` and ``score``; estimation uses ``velocity_ema`` and
    ``score_ema``. All randomness comes from ``generator``.

    The networks may live on any device (``.to(device)`` them before building the trainer):
    minibatches, couplings and interpolant noise are drawn on the CPU from ``generator`` (so
    the random stream is the same on every device) and each minibatch is moved to the
    networks' device, where the losses and gradients are computed.

    Data-parallel under ``torchrun`` (see :mod:`feat.training.distributed`): every rank draws
    the same global minibatch and coupling, computes the loss on its contiguous slice, and the
    gradients are averaged over ranks before clipping, so the weights equal a single process's
    (up to round-off). ``batch_size`` must then be divisible by the number of processes.
    """

    problem: TwoStateProblem
    velocity: Field
    score: Field
    config: TrainingConfig = field(default_factory=TrainingConfig)
    interpolant: Interpolant = field(default_factory=Interpolant)
    generator: torch.Generator | None = None
    step: int = 0
    n_skipped: int = 0
    history: list = field(default_factory=list)

    def __post_init__(self):
        self.generator = self.generator or torch.Generator().manual_seed(0)
        c = self.config
        n = distributed.world_size()
        if c.batch_size % n:
            raise ValueError(
                f"training.batch_size = {c.batch_size} must be divisible by the number of "
                f"data-parallel processes ({n}): each takes an equal slice of the minibatch. "
                f"Use e.g. --set training.batch_size={-(-c.batch_size // n) * n}."
            )
        self.optimizers = {
            k: torch.optim.Adam(getattr(self, k).parameters(), lr=c.lr)
            for k in ("velocity", "score")
        }
        self.emas = {k: EMA(getattr(self, k), c.ema_decay) for k in ("velocity", "score")}
        periods = self.problem.metadata.get("periods")
        if periods is None or not c.shortest_arc:
            self._periods = None
        else:
            self._periods = torch.as_tensor(periods, dtype=torch.float64)
        self.coupling = _coupling(c.coupling, self._periods)
        self.device = _fields_device(self.velocity, self.score)
        dtype = next(self.velocity.parameters()).dtype
        x_a, x_b = self.problem.x_a.cpu(), self.problem.x_b.cpu()
        s_a, s_b = [v.cpu() for v in self.problem.scores()] if c.tsm_weight > 0 else (None, None)
        if c.coupling == "kabsch_ot":
            x_a, x_b, s_a, s_b = _aligned(x_a, x_b, s_a, s_b)
        elif c.coupling == "perm_kabsch_ot":
            from ..interpolants.couplings import PermKabschOTCoupling

            x_a, x_b, s_a, s_b = PermKabschOTCoupling().align(x_a, x_b, s_a, s_b)
        self._x_a, self._x_b = x_a.to(dtype), x_b.to(dtype)
        self._s_a = s_a.to("cpu", dtype) if s_a is not None else None
        self._s_b = s_b.to("cpu", dtype) if s_b is not None else None

    @property
    def velocity_ema(self) -> nn.Module:
        return self.emas["velocity"].averaged

    @property
    def score_ema(self) -> nn.Module:
        return self.emas["score"].averaged

    def _lr(self, step: int) -> float:
        c = self.config
        frac = min(step / max(c.steps, 1), 1.0)
        return c.lr_final + 0.5 * (c.lr - c.lr_final) * (1 + math.cos(math.pi * frac))

    def _batch(self):
        n, g = self.config.batch_size, self.generator
        ia = torch.randint(0, self._x_a.shape[0], (n,), generator=g)
        ib = torch.randint(0, self._x_b.shape[0], (n,), generator=g)
        ib = ib[self.coupling(self._x_a[ia], self._x_b[ib])]
        s = (self._s_a[ia], self._s_b[ib]) if self._s_a is not None else (None, None)
        x_b = self._x_b[ib]
        if self._periods is not None:  # periodic coordinates: pair along the shorter arc
            x_b = lift_periodic(self._x_a[ia], x_b, self._periods)
        return self._x_a[ia], x_b, s

    def loss(self) -> LossTerms:
        """The total loss on one fresh minibatch (with gradients)."""
        x_a, x_b, (s_a, s_b) = self._batch()
        smp = self.interpolant.sample(x_a, x_b, self.generator)
        if distributed.world_size() > 1:  # this rank's slice of the global minibatch
            sl = _rank_slice(len(x_a))
            smp = _slice_sample(smp, sl)
            s_a, s_b = (None, None) if s_a is None else (s_a[sl], s_b[sl])
        if self.device.type != "cpu":
            smp = _map_sample(smp, lambda v: v.to(self.device, non_blocking=True))
            s_a, s_b = (None, None) if s_a is None else (s_a.to(self.device), s_b.to(self.device))
        b_p, b_m = self.velocity(smp.t, smp.x_plus), self.velocity(smp.t, smp.x_minus)
        s_p, s_m = self.score(smp.t, smp.x_plus), self.score(smp.t, smp.x_minus)
        return interpolant_loss(b_p, b_m, s_p, s_m, smp, s_a, s_b, self.config.tsm_weight)

    def train_step(self) -> TrainingRecord:
        """One optimisation step; a non-finite loss is skipped and counted, never applied."""
        t0 = time.perf_counter()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
            for group in opt.param_groups:
                group["lr"] = self._lr(self.step)
        terms = self.loss()
        norms = {"velocity": math.nan, "score": math.nan}
        parallel = distributed.world_size() > 1
        losses = _global_losses(terms) if parallel else terms.items()
        if math.isfinite(losses["total"]) if parallel else torch.isfinite(terms.total):
            terms.total.backward()
            for k, opt in self.optimizers.items():
                module = getattr(self, k)
                if parallel:
                    distributed.all_reduce_mean_(p.grad for p in module.parameters())
                norms[k] = float(
                    nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
                )
                opt.step()
                self.emas[k].update(module)
        else:
            self.n_skipped += 1
        self.step += 1
        return TrainingRecord(
            self.step,
            losses,
            norms["velocity"],
            norms["score"],
            self.n_skipped,
            time.perf_counter() - t0,
        )

    def train(self, steps: int | None = None, *, log_every: int = 50, progress: bool = True,
              callbacks: Sequence[tuple[int, Callable[[Trainer], None]]] = ()
              ) -> list[TrainingRecord]:
        """Run ``steps`` (default: up to ``config.steps``) steps; returns the logged records.

        ``callbacks`` holds ``(every, fn)`` pairs: ``fn(trainer)`` runs after every ``every``-th
        step (e.g. checkpoints and in-training estimates).
        """
        steps = self.config.steps - self.step if steps is None else int(steps)
        bar = tqdm(range(steps), disable=not progress, desc="train", dynamic_ncols=True,
                   initial=0)
        for _ in bar:
            rec = self.train_step()
            if self.step % log_every == 0 or self.step == self.config.steps:
                self.history.append(rec)
                bar.set_postfix(loss=f"{rec.losses['total']:.3g}", skipped=self.n_skipped)
            for every, fn in callbacks:
                if every and self.step % every == 0:
                    fn(self)
        return self.history

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically: weights, optimisers, EMA, RNG, step."""
        return {"step": self.step, "n_skipped": self.n_skipped,
                "velocity": self.velocity.state_dict(), "score": self.score.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "ema": {k: e.state_dict() for k, e in self.emas.items()},
                "generator": self.generator.get_state(),
                "history": [dataclasses.asdict(r) for r in self.history]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (the networks must have the same architecture)."""
        self.velocity.load_state_dict(state["velocity"])
        self.score.load_state_dict(state["score"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, ema in self.emas.items():
            ema.load_state_dict(state["ema"][k])
        self.generator.set_state(state["generator"])
        self.step, self.n_skipped = int(state["step"]), int(state["n_skipped"])
        self.history = [TrainingRecord(**r) for r in state["history"]]
