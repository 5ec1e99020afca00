"""Where a feat process computes on the CPU: torch's thread count and, for one thread, one CPU.

Why pin a single-threaded run to one CPU: OpenMM's CPU platform computes on a worker thread
while the calling thread waits for it, once per MD step or energy call. When the process may
use every CPU, the two threads end up on different ones, and each hand-off waits for an idle
CPU to wake up. Measured on the 2-vCPU development host on an idle machine (alanine dipeptide
with its CustomGB force, CPU platform, one OpenMM thread; ``systems/aldp_s/cpu_pinning.py``,
2026-12-07): MD 1,040 steps/s unpinned against 4,630 pinned to one CPU, bridge energies and
forces 1,160 against 5,070 configurations/s (4.4× both); unpinned MD ran at 4,400 steps/s while
another job kept the second CPU busy. torch with one thread computes in the calling thread, so
pinning costs it nothing.

The CLI pins by default when torch runs with one thread, to the CPU the scheduler placed it
on unless another allowed CPU is clearly less busy (``--no-pin`` leaves placement to the
operating system); a library user can call :func:`pin_one_cpu` themselves. The process pool of
:class:`feat.energies.OpenMMEnergy` gives its workers back the CPUs the parent had before it
was pinned (:func:`unpin`), so they still spread over the machine.
"""

from __future__ import annotations

import os
import time

__all__ = ["allowed_cpus", "busy_fractions", "configure", "current_cpu", "pin_one_cpu", "unpin"]

_BEFORE_PIN = "FEAT_CPUS_BEFORE_PIN"  # inherited by child processes, so workers can unpin


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_times() -> dict[int, tuple[int, int]]:
    """``{cpu: (idle, total)}`` jiffies from /proc/stat (empty where there is none)."""
    try:
        with open("/proc/stat") as fh:
            lines = [line.split() for line in fh if line.startswith("cpu")]
    except OSError:
        return {}
    out = {}
    for fields in lines:
        if fields[0] == "cpu" or not fields[0][3:].isdigit():
            continue
        ticks = [int(v) for v in fields[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        out[int(fields[0][3:])] = (idle, sum(ticks))
    return out


def busy_fractions(interval: float = 0.1) -> dict[int, float]:
    """Each CPU's busy fraction over the next ``interval`` seconds (empty without /proc)."""
    before = _cpu_times()
    time.sleep(interval)
    after = _cpu_times()
    out = {}
    for cpu, (idle1, total1) in after.items():
        idle0, total0 = before.get(cpu, (idle1, total1))
        span = total1 - total0
        out[cpu] = 1.0 - (idle1 - idle0) / span if span > 0 else 0.0
    return out


def current_cpu() -> int | None:
    """The CPU this process last ran on (field 39 of /proc/self/stat; None without /proc)."""
    try:
        with open("/proc/self/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return int(fields[36])


def _choose(cpus: list[int]) -> int:
    """The CPU to pin to: under torchrun, one per local rank; else the one the scheduler put
    this process on, unless another is clearly less busy (so jobs started together, which the
    scheduler spreads, stay apart); among equally busy ones the highest number, as CPU 0
    usually takes the interrupts."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and local_rank.isdigit():
        return cpus[int(local_rank) % len(cpus)]
    busy = {c: round(v, 1) for c, v in busy_fractions().items()}
    here = current_cpu()
    least = min(busy.get(c, 0.0) for c in cpus)
    if here in cpus and busy.get(here, 0.0) <= least:
        return here
    return min(cpus, key=lambda c: (busy.get(c, 0.0), -c))


def _set_all_threads(cpus: set[int]) -> None:
    """Set the affinity of every thread of this process (Linux applies it per thread)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile, or one we may not move


def pin_one_cpu(cpu: int | None = None) -> int | None:
    """Run this process (all its threads, and those it starts) on one CPU.

    ``cpu`` defaults to the CPU the process runs on, or a clearly less busy allowed one.
    Returns the CPU, or None where the operating system has no CPU affinity (macOS, Windows)
    or only one CPU is allowed.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = _cpus_before_pin()  # a second pin may move to any CPU the first one could
    if cpu is not None and cpu not in cpus:
        raise ValueError(f"pin_one_cpu: cpu must be one of the allowed CPUs {cpus}; got {cpu}.")
    if cpu is None and len(cpus) < 2:
        return None
    cpu = _choose(cpus) if cpu is None else cpu
    os.environ.setdefault(_BEFORE_PIN, ",".join(map(str, cpus)))
    _set_all_threads({cpu})
    return cpu


def unpin() -> None:
    """Give this process back the CPUs allowed before :func:`pin_one_cpu` (here or in the
    parent process); a no-op when nothing was pinned."""
    if os.environ.get(_BEFORE_PIN) and hasattr(os, "sched_setaffinity"):
        _set_all_threads(set(_cpus_before_pin()))


def configure(threads: int | None = None, *, pin: bool = True) -> str:
    """Set torch's thread count (default 1) and, for one thread with ``pin``, pin the process
    to one CPU. Returns a line saying what was chosen and why, for the user."""
    import torch

    n = threads if threads else 1
    torch.set_num_threads(n)
    why = "as asked" if threads else "default: fastest for small networks on CPU; --threads N"
    line = f"torch threads: {n} ({why})"
    if n > 1 or not pin:
        return line
    cpu = pin_one_cpu()
    if cpu is None:
        return line
    return (f"{line}; pinned to CPU {cpu} of {_cpu_list()} (no hand-offs between CPUs: "
            "OpenMM MD 4.4× faster on a 2-vCPU host; --no-pin leaves placement to the OS)")


def _cpus_before_pin() -> list[int]:
    """The CPUs allowed before :func:`pin_one_cpu` (here or in a parent), else the allowed ones."""
    saved = os.environ.get(_BEFORE_PIN)
    return [int(c) for c in saved.split(",")] if saved else allowed_cpus()


def _cpu_list() -> str:
    """The CPUs allowed before pinning, as text (e.g. ``0-1`` or ``0,2,5``)."""
    cpus = _cpus_before_pin()
    if cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))
