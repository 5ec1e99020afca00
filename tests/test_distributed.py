"""Data-parallel training under torchrun (gloo on CPU): the trained weights, the (sharded)
transport works and ΔF equal a single process's up to round-off, a non-finite loss on one
rank skips the step on all, and a batch size the processes cannot share is refused clearly."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from feat.estimators import load_works
from feat.training import Trainer, TrainingConfig, distributed

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)

RUN_FILE = """name = "dp"
seed = 3
[system]
kind = "gaussian"
dim = 2
n_samples_a = 1000
n_samples_b = 1000
[fields]
hidden = 16
depth = 2
[training]
steps = 40
batch_size = 64
checkpoint_every = 20
coupling = "ot"
[transport]
eps = 0.1
n_points = 20
n_forward = 100
n_reverse = 100
batch_size = 50
[estimate]
n_bootstrap = 0
monitor_every = 20
monitor_trajectories = 20
"""


def _env():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    return env | {"OMP_NUM_THREADS": "1"}


def _torchrun(*args, n=2):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(n),
        "--standalone",
        "-m",
        "feat.cli",
        *args,
        "--no-progress",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=180)


def _checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=False)["state"]["trainer"]


def _assert_same_weights(a: dict, b: dict, rtol=1e-5):
    assert a["step"] == b["step"] and a["n_skipped"] == b["n_skipped"]
    for net in ("velocity", "score"):
        wa, wb = a["ema"][net]["averaged"], b["ema"][net]["averaged"]
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=rtol, atol=1e-7, msg=f"{net}.{k}")


def test_torchrun_training_equals_a_single_process(tmp_path):
    from feat.cli import main

    (tmp_path / "system.toml").write_text(RUN_FILE)
    single, parallel, trained = tmp_path / "single", tmp_path / "parallel", tmp_path / "trained"
    assert main(["run", str(tmp_path), "--out", str(single), "--no-progress"]) == 0
    proc = _torchrun("run", str(tmp_path), "--out", str(parallel))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("data-parallel training: 2 processes (gloo backend)") == 1
    assert proc.stdout.count("ΔF =") == 1  # rank 0 alone reports
    _assert_same_weights(_checkpoint(single), _checkpoint(parallel))
    r1 = json.loads((single / "results.json").read_text())
    r2 = json.loads((parallel / "results.json").read_text())
    assert abs(r1["estimate"]["delta_f"] - r2["estimate"]["delta_f"]) < 1e-6
    w1, w2 = load_works(single / "works.npz"), load_works(parallel / "works.npz")
    # 2 chunks per direction: one per rank, gathered in order. The weights agree to ~1e-7
    # (gloo's reduction order), so float32 fields give works equal to ~1e-8 absolute: a work
    # near zero can differ by 1e-3 relative (seen: 2.2e-8 on -2.2e-5), hence the atol.
    for d in ("work_f", "work_r"):
        np.testing.assert_allclose(getattr(w2, d), getattr(w1, d), rtol=1e-6, atol=1e-6)
    h1, h2 = r1["training"]["history"][-1], r2["training"]["history"][-1]
    for k, v in h1["losses"].items():  # the logged losses are the global minibatch's
        assert h2["losses"][k] == pytest.approx(v, rel=1e-5)
    assert len(r2["monitor"]) == len(r1["monitor"]) == 2
    # `feat train` under torchrun: the same checkpoint, then a plain `feat estimate`
    proc = _torchrun("train", str(tmp_path), "--out", str(trained))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("trained to step 40") == 1
    _assert_same_weights(_checkpoint(single), _checkpoint(trained))


def test_batch_size_not_divisible_by_the_processes_is_refused(tmp_path):
    (tmp_path / "system.toml").write_text(RUN_FILE)
    proc = _torchrun(
        "run", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "training.batch_size=63"
    )
    assert proc.returncode != 0
    assert (
        "training.batch_size = 63 must be divisible by the number of data-parallel processes (2)"
    ) in proc.stderr
    assert "training.batch_size=64" in proc.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_helpers_outside_torchrun_are_a_world_of_one(monkeypatch):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert not distributed.launched() and not distributed.init()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.backend() is None
    g = torch.ones(3)
    distributed.all_reduce_mean_([g, None])
    distributed.barrier()
    distributed.shutdown()
    assert torch.equal(g, torch.ones(3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nonfinite_worker(rank: int, port: int, out: str) -> None:
    """Rank 1's loss is NaN at step 3 only; both ranks must skip that step alike."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from feat.fields import MLPField

    from .test_training import _gaussian_problem

    assert distributed.init() and distributed.backend() == "gloo"
    torch.manual_seed(0)
    tr = Trainer(
        _gaussian_problem(n=500),
        MLPField(2, 16, 2),
        MLPField(2, 16, 2),
        TrainingConfig(steps=6, batch_size=32),
        generator=torch.Generator(),
    )
    loss = tr.loss

    def poisoned():
        terms = loss()
        if rank == 1 and tr.step == 2:
            return type(terms)(
                terms.velocity, terms.denoising, terms.target_score, terms.total * float("nan")
            )
        return terms

    tr.loss = poisoned
    records = [tr.train_step() for _ in range(6)]
    torch.save(
        {
            "n_skipped": tr.n_skipped,
            "weights": tr.velocity.state_dict(),
            "losses": [r.losses["total"] for r in records],
        },
        f"{out}/rank{rank}.pt",
    )
    distributed.shutdown()
    assert not dist.is_initialized()


def test_nonfinite_loss_on_one_rank_skips_the_step_on_all(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_nonfinite_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{k}.pt") for k in (0, 1))
    assert r0["n_skipped"] == r1["n_skipped"] == 1
    assert math.isnan(r0["losses"][2]) and math.isnan(r1["losses"][2])
    del r0["losses"][2], r1["losses"][2]
    assert r0["losses"] == r1["losses"]
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
