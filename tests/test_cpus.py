"""feat.cpus: torch threads and the one-CPU pin. Pinning runs in child processes, so the test
process keeps its own placement."""

import json
import os
import subprocess
import sys

import pytest

from feat import cpus

affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(cpus.allowed_cpus()) < 2,
    reason="needs CPU affinity and at least two allowed CPUs")

PIN_AND_REPORT = """
import json, os, threading, time
from feat import cpus
early = threading.Thread(target=time.sleep, args=(2,)); early.start()  # exists before pinning
before = sorted(os.sched_getaffinity(0))
cpu = cpus.pin_one_cpu()
late = threading.Thread(target=time.sleep, args=(0.5,)); late.start()  # started after
threads = {t: sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
cpus.unpin()
after = sorted(os.sched_getaffinity(0))
print(json.dumps({"before": before, "cpu": cpu, "threads": threads, "after": after}))
"""


def _child(code: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@affinity
def test_pin_moves_every_thread_to_one_cpu_and_unpin_restores():
    r = _child(PIN_AND_REPORT)
    assert r["cpu"] in r["before"]
    assert len(r["threads"]) >= 3  # main, the early thread and the late one
    assert all(mask == [r["cpu"]] for mask in r["threads"].values())
    assert r["after"] == r["before"]


@affinity
def test_torchrun_ranks_take_one_cpu_each():
    allowed = cpus.allowed_cpus()
    got = [_child(PIN_AND_REPORT, LOCAL_RANK=str(k))["cpu"] for k in range(2)]
    assert got == [allowed[0], allowed[1 % len(allowed)]]


@affinity
def test_children_of_a_pinned_process_can_unpin():
    """A process started by a pinned parent inherits the pin; unpin() gives it the parent's
    CPUs from before the pin (what the OpenMMEnergy pool workers do)."""
    code = """
import json, os, subprocess, sys
from feat import cpus
before = sorted(os.sched_getaffinity(0))
cpus.pin_one_cpu()
child = subprocess.run([sys.executable, "-c", "import json, os; from feat import cpus; "
    "a = sorted(os.sched_getaffinity(0)); cpus.unpin(); "
    "print(json.dumps([a, sorted(os.sched_getaffinity(0))]))"],
    capture_output=True, text=True, check=True)
inherited, unpinned = json.loads(child.stdout)
print(json.dumps({"before": before, "inherited": inherited, "unpinned": unpinned}))
"""
    r = _child(code)
    assert len(r["inherited"]) == 1
    assert r["unpinned"] == r["before"]


def test_busy_fractions_are_fractions_of_allowed_cpus():
    busy = cpus.busy_fractions(0.05)
    if not busy:
        pytest.skip("no /proc/stat here")
    assert set(cpus.allowed_cpus()) <= set(busy)
    assert all(0.0 <= v <= 1.0 for v in busy.values())


def test_current_cpu_is_an_allowed_cpu():
    cpu = cpus.current_cpu()
    if cpu is None:
        pytest.skip("no /proc here")
    assert cpu in cpus.allowed_cpus()


def test_pin_refuses_a_cpu_outside_the_allowed_set():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this OS")
    bad = max(cpus.allowed_cpus()) + 1000
    with pytest.raises(ValueError, match=r"pin_one_cpu: cpu must be one of the allowed CPUs"):
        cpus.pin_one_cpu(bad)


@affinity
def test_configure_pins_one_thread_only():
    code = """
import json, os, torch
from feat import cpus
two = cpus.configure(2)
n2, mask2 = torch.get_num_threads(), sorted(os.sched_getaffinity(0))
off = cpus.configure(None, pin=False)
mask_off = sorted(os.sched_getaffinity(0))
one = cpus.configure(None)
print(json.dumps({"two": two, "n2": n2, "mask2": mask2, "off": off, "mask_off": mask_off,
                  "one": one, "n1": torch.get_num_threads(),
                  "mask1": sorted(os.sched_getaffinity(0))}))
"""
    r = _child(code)
    allowed = cpus.allowed_cpus()
    assert r["n2"] == 2 and r["mask2"] == allowed and "pinned" not in r["two"]
    assert r["mask_off"] == allowed and "pinned" not in r["off"]
    assert r["n1"] == 1 and len(r["mask1"]) == 1
    assert f"pinned to CPU {r['mask1'][0]}" in r["one"] and "--no-pin" in r["one"]


@pytest.mark.parametrize("command", ["run", "train", "sample", "reference", "estimate"])
def test_cli_offers_no_pin(command, capsys):
    from feat.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--no-pin" in capsys.readouterr().out
