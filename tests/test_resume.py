"""Checkpoints and exact resume: a run killed with SIGKILL mid-training and resumed ends with
the same weights and the same ΔF as an uninterrupted run; bad checkpoints are handled."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from feat.config import ConfigError, resolve
from feat.pipeline import run
from feat.training.checkpoint import CheckpointError, load_checkpoint

RUN_FILE = """name = "resume"
[system]
kind = "gaussian"
dim = 2
n_samples_a = 1500
n_samples_b = 1500
[fields]
hidden = 32
depth = 2
[training]
steps = {steps}
batch_size = 64
checkpoint_every = 20
[transport]
eps = 0.1
n_points = 20
n_forward = 200
n_reverse = 200
batch_size = 50
[estimate]
n_bootstrap = 10
"""


def _feat(args, **kw):
    cmd = [sys.executable, "-m", "feat.cli", "run", *args, "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _weights(out: Path):
    path = out / "checkpoint.pt"
    path = path if path.exists() else out / "checkpoint.prev.pt"  # killed between two renames
    state = torch.load(path, weights_only=False)["state"]["trainer"]
    return state["ema"]["velocity"]["averaged"], state["step"]


def test_sigkill_mid_training_then_resume_equals_uninterrupted(tmp_path):
    (tmp_path / "system.toml").write_text(RUN_FILE.format(steps=3000))
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert _feat([str(tmp_path), "--out", str(whole)]).wait(timeout=300) == 0
    proc = _feat([str(tmp_path), "--out", str(broken)])
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a checkpoint past the first one exists
        prev = broken / "checkpoint.prev.pt"
        if prev.exists() and proc.poll() is None:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("training finished before it could be interrupted (machine too fast)")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (broken / "results.json").exists()
    _, step_at_kill = _weights(broken)
    assert 0 < step_at_kill < 3000
    assert _feat([str(tmp_path), "--out", str(broken), "--resume"]).wait(timeout=300) == 0
    w1, s1 = _weights(whole)
    w2, s2 = _weights(broken)
    assert s1 == s2 == 3000
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    r1 = json.loads((whole / "results.json").read_text())["estimate"]
    r2 = json.loads((broken / "results.json").read_text())["estimate"]
    assert r1["delta_f"] == r2["delta_f"] and r1["sigma"] == r2["sigma"]


def _config(steps=40):
    import tomllib

    return resolve(tomllib.loads(RUN_FILE.format(steps=steps)))


def test_corrupt_checkpoint_falls_back_and_incompatible_one_is_refused(tmp_path):
    out = tmp_path / "run"
    run(_config(), out, progress=False)
    assert (out / "checkpoint.prev.pt").exists()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="previous checkpoint"):
        result = run(_config(), out, progress=False, resume=True)
    assert result.estimate.n_f == 200
    with pytest.raises(ConfigError, match="training.steps: checkpoint 40, now 60"):
        run(_config(steps=60), out, progress=False, resume=True)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable.*start over"):
        load_checkpoint(out / "checkpoint.pt", {})


def test_sharded_estimation_merges_to_the_unsharded_result(tmp_path, capsys):
    from feat.cli import main

    out = tmp_path / "run"
    run(_config(), out, progress=False)
    whole = json.loads((out / "results.json").read_text())["estimate"]
    (out / "results.json").unlink()
    for k in (1, 0, 2):
        assert main(["estimate", str(out), "--shard", f"{k}/3", "--no-progress"]) == 0
    assert main(["merge", str(out)]) == 0
    merged = json.loads((out / "results.json").read_text())["estimate"]
    for key in ("delta_f", "sigma", "sigma_bootstrap"):
        assert merged[key] == whole[key], key
    assert "ΔF =" in capsys.readouterr().out
    (out / "works.shard-1-of-3.npz").unlink()
    assert main(["merge", str(out)]) == 2
    assert "shards [1] of 3 are missing" in capsys.readouterr().err
    assert main(["estimate", str(out), "--shard", "0/9"]) == 2
    assert "only 4 chunk(s)" in capsys.readouterr().err


def test_train_then_estimate_equals_run(tmp_path, capsys):
    from feat.cli import main

    (tmp_path / "system.toml").write_text(RUN_FILE.format(steps=40))
    whole = tmp_path / "whole"
    assert main(["run", str(tmp_path), "--out", str(whole), "--no-progress"]) == 0
    staged = tmp_path / "staged"
    assert main(["train", str(tmp_path), "--out", str(staged), "--no-progress"]) == 0
    assert "Next: feat estimate" in capsys.readouterr().out
    assert main(["estimate", str(staged), "--no-progress"]) == 0
    a = json.loads((whole / "results.json").read_text())["estimate"]
    b = json.loads((staged / "results.json").read_text())["estimate"]
    assert a["delta_f"] == b["delta_f"] and a["sigma_bootstrap"] == b["sigma_bootstrap"]


def test_checkpoint_from_before_a_new_setting_loads_while_that_setting_is_at_its_default(
        tmp_path):
    """A setting added to feat after a checkpoint was written (absent from its identity) does
    not invalidate it at its default value, which reproduces the old behaviour; changed, it does."""
    from feat.pipeline.stages import identity
    from feat.training.checkpoint import save_checkpoint

    config = resolve({"system": {"kind": "gaussian", "dim": 2}})
    old = identity(config)
    del old["training"]["noise_a"]
    save_checkpoint(tmp_path / "checkpoint.pt", {"step": 7}, old)
    assert load_checkpoint(tmp_path / "checkpoint.pt", identity(config)) == {"step": 7}
    changed = resolve({"system": {"kind": "gaussian", "dim": 2}, "training": {"noise_a": 0.2}})
    with pytest.raises(ConfigError, match="training.noise_a: checkpoint absent, now 0.2"):
        load_checkpoint(tmp_path / "checkpoint.pt", identity(changed))
