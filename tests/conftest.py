"""Test-suite settings: one torch thread (much faster on small CPUs) and a --runslow tier."""

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_cpu_affinity(monkeypatch):
    """A test that runs the CLI in-process pins the process to one CPU (feat.cpus); undo it."""
    monkeypatch.delenv("FEAT_CPUS_BEFORE_PIN", raising=False)
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    yield
    if before is not None and os.sched_getaffinity(0) != before:
        from feat.cpus import _set_all_threads

        _set_all_threads(before)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the slow statistical tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: give --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
