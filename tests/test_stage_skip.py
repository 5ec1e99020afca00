"""Stage reuse in ``feat run``: finished, matching stages are skipped (and say so); anything that
changed reruns with a note naming the stage and the reason; ``--force`` reruns everything;
stale shards are refused by ``feat merge``."""

import json

import pytest

from feat.cli import main

RUN_FILE = """name = "skip"
[system]
kind = "gaussian"
dim = 2
n_samples_a = 800
n_samples_b = 800
[fields]
hidden = 32
depth = 2
[training]
steps = 300
batch_size = 64
checkpoint_every = 100
[transport]
eps = 0.1
n_points = 40
n_forward = 200
n_reverse = 200
batch_size = 100
[estimate]
n_bootstrap = 10
"""


def _run(tmp_path, capsys, *extra):
    out = tmp_path / "run"
    assert main(["run", str(tmp_path), "--out", str(out), "--no-progress", *extra]) == 0
    err = capsys.readouterr().err
    return json.loads((out / "results.json").read_text()), err


def _busy(results) -> float:
    t = results["timings_s"]
    return t["training"] + t["transport"]


@pytest.fixture
def first(tmp_path, capsys):
    (tmp_path / "system.toml").write_text(RUN_FILE)
    results, err = _run(tmp_path, capsys)
    assert "skipped:" not in err and "reruns:" not in err  # a fresh directory: nothing to say
    assert results["stages"] == {"training": "computed", "transport": "computed"}
    return results


def test_second_run_reuses_both_stages_and_gives_identical_numbers(first, tmp_path, capsys):
    again, err = _run(tmp_path, capsys)
    assert "training skipped: checkpoint.pt is finished (300 steps)" in err
    assert "transport skipped: works.npz matches" in err
    assert "training reused, transport reused" in err
    assert again["stages"] == {"training": "reused", "transport": "reused"}
    assert again["estimate"] == first["estimate"]
    assert again["training"] == first["training"]
    assert _busy(again) < 0.3 * _busy(first)


def test_changed_transport_reruns_only_the_transport(first, tmp_path, capsys):
    changed, err = _run(tmp_path, capsys, "--set", "transport.eps=0.05")
    assert "training skipped" in err
    assert "transport reruns: works.npz was made with other settings " \
           "(transport.eps: 0.1 → 0.05)" in err
    assert changed["stages"] == {"training": "reused", "transport": "computed"}
    assert changed["training"] == first["training"]


def test_reference_is_not_part_of_the_checkpoint_identity():
    """The system's reference value only grades the estimate: editing it must not retrain
    (or re-transport), while any other system key still does."""
    from pathlib import Path

    from feat.config import load_run_config
    from feat.pipeline.stages import identity

    lj13 = Path(__file__).parents[1] / "systems" / "lj13"
    base = load_run_config(lj13, None, {})
    moved = load_run_config(lj13, None, {"system": {"reference": -1.0}})
    assert moved.to_dict()["system"]["reference"] != base.to_dict()["system"]["reference"]
    assert identity(moved) == identity(base)
    other = load_run_config(lj13, None, {"system": {"n_samples_a": 123}})
    assert identity(other) != identity(base)


def test_changed_held_out_samples_retrain(first, tmp_path, capsys):
    """More transport starts would start from samples the checkpoint was trained on: retrain.
    Two trajectories per start sample hold out fewer samples (150 and 100): retrain too."""
    changed, err = _run(tmp_path, capsys, "--set", "transport.n_forward=300")
    assert "training reruns: checkpoint.pt was trained with other settings " \
           "(held_out.a: 200 → 300)" in err
    assert changed["stages"] == {"training": "computed", "transport": "computed"}
    shared, err = _run(tmp_path, capsys, "--set", "transport.n_forward=300",
                       "--set", "transport.trajectories_per_start=2")
    assert "(held_out.a: 300 → 150; held_out.b: 200 → 100)" in err
    assert shared["estimate"]["n_f"] == 300 and shared["estimate"]["n_starts"] == [150, 100]


def test_changed_training_reruns_training_and_transport(first, tmp_path, capsys):
    changed, err = _run(tmp_path, capsys, "--set", "training.steps=200")
    assert "training reruns: checkpoint.pt was trained with other settings " \
           "(training.steps: 300 → 200)" in err
    assert "transport reruns: works.npz came from other trained fields" in err
    assert changed["stages"] == {"training": "computed", "transport": "computed"}
    assert changed["training"]["steps"] == 200


def test_force_reruns_everything_with_the_same_result(first, tmp_path, capsys):
    forced, err = _run(tmp_path, capsys, "--force")
    assert "skipped:" not in err
    assert forced["stages"] == {"training": "computed", "transport": "computed"}
    assert forced["estimate"] == first["estimate"]


def test_changed_monitor_settings_rerun_training(first, tmp_path, capsys):
    changed, err = _run(tmp_path, capsys, "--set", "estimate.monitor_every=100")
    assert "training reruns: its in-training estimates used other settings" in err
    assert [m["step"] for m in changed["monitor"]] == [100, 200, 300]


def test_merge_refuses_shards_of_a_retrained_run(tmp_path, capsys):
    (tmp_path / "system.toml").write_text(RUN_FILE.replace("steps = 300", "steps = 40"))
    out = str(tmp_path / "run")
    assert main(["train", str(tmp_path), "--out", out, "--no-progress"]) == 0
    for k in (0, 1):
        assert main(["estimate", out, "--shard", f"{k}/2", "--no-progress"]) == 0
    assert main(["train", str(tmp_path), "--out", out, "--no-progress"]) == 0
    assert "training skipped" in capsys.readouterr().err
    assert main(["merge", out]) == 0  # same checkpoint: the shards are still valid
    assert main(["train", str(tmp_path), "--out", out, "--no-progress", "--seed", "5"]) == 0
    capsys.readouterr()
    assert main(["merge", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("feat: error: shards [0, 1] of 2") and "\n" not in err
    assert "were made with other settings or another checkpoint" in err
