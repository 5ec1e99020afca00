"""Run files, presets, validation messages, and the `feat run` command end to end."""

import json

import pytest

from feat.cli import main
from feat.config import ConfigError, load_run_config, resolve

BASE = {
    "name": "g",
    "system": {"kind": "gaussian", "dim": 2, "n_samples_a": 900, "n_samples_b": 900},
}


def test_presets_and_overrides_merge():
    data = dict(
        BASE, training={"steps": 10}, presets={"quick": {"training": {"steps": 5, "batch_size": 8}}}
    )
    cfg = resolve(data, "quick", {"transport": {"eps": 0.2}})
    assert cfg.training.steps == 5 and cfg.training.batch_size == 8
    assert cfg.transport.eps == 0.2 and cfg.system["dim"] == 2


@pytest.mark.parametrize(
    "data,match",
    [
        (
            dict(BASE, training={"stpes": 3}),
            "unknown key 'stpes' in \\[training\\]. Did you mean 'steps'",
        ),
        (dict(BASE, trainng={}), "Did you mean 'training'"),
        (dict(BASE, training={"steps": "ten"}), "training.steps must be of type int"),
        (dict(BASE, training={"lr": -1.0}), "training.lr is out of range"),
        (dict(BASE, transport={"eps": 0.0}), "transport.eps must be > 0"),
        (dict(BASE, transport={"grid": "log"}), "transport.grid must be one of"),
        ({"system": {}}, "needs a \\[system\\] table with a 'kind'"),
    ],
)
def test_bad_config_messages_name_the_key_and_fix(data, match):
    with pytest.raises(ConfigError, match=match):
        resolve(data)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'fast' in \\[presets\\]"):
        resolve(dict(BASE, presets={"quick": {}}), "fast")
    with pytest.raises(ConfigError, match="no run file"):
        load_run_config(tmp_path / "nothing")


def test_feat_run_end_to_end(tmp_path, capsys):
    run_file = tmp_path / "system.toml"
    run_file.write_text(
        'name = "tiny"\n[system]\nkind = "gaussian"\ndim = 2\nn_samples_a = 1500\n'
        "n_samples_b = 1500\n[fields]\nhidden = 32\ndepth = 2\n"
        "[training]\nsteps = 200\n[transport]\neps = 0.1\nn_points = 40\n"
        "n_forward = 400\nn_reverse = 300\n[estimate]\nn_bootstrap = 20\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "ΔF =" in printed.out and "exact:" in printed.out and "torch threads: 1" in printed.err
    result = json.loads((out / "results.json").read_text())
    est = result["estimate"]
    assert est["n_f"] == 400 and est["n_r"] == 300
    assert abs(est["delta_f"] - est["reference"]) < 4 * est["sigma"]
    for name in ("config.json", "checkpoint.pt", "works.npz"):
        assert (out / name).is_file()


def test_feat_run_reports_config_errors_with_exit_code(tmp_path, capsys):
    (tmp_path / "system.toml").write_text('[system]\nkind = "gausian"\n')
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "Did you mean 'gaussian'" in capsys.readouterr().err


def test_monitoring_records_estimates_and_does_not_change_the_result():
    from feat.pipeline import run

    data = dict(BASE, fields={"hidden": 16, "depth": 1}, training={"steps": 40},
                transport={"eps": 0.1, "n_points": 10, "n_forward": 100, "n_reverse": 100},
                estimate={"n_bootstrap": 0})
    plain = run(resolve(data), progress=False)
    data["estimate"] = {"n_bootstrap": 0, "monitor_every": 20, "monitor_trajectories": 50}
    monitored = run(resolve(data), progress=False)
    assert monitored.estimate.delta_f == plain.estimate.delta_f
    assert [m["step"] for m in monitored.monitor] == [20, 40]
    assert all(m["lower"] <= m["upper"] for m in monitored.monitor)


def test_feat_sample_prints_the_sample_shapes(capsys):
    assert main(["sample", "systems/gaussian", "--preset", "quick"]) == 0
    assert "x_a (12000, 10), x_b (12000, 10)" in capsys.readouterr().out


def test_optional_keys_accept_none_ints_and_reject_wrong_types():
    from dataclasses import dataclass

    from feat.config import from_mapping

    @dataclass(frozen=True)
    class Spec:
        reference: float | None = None

    assert from_mapping(Spec, {"reference": 1}, "system").reference == 1.0
    assert from_mapping(Spec, {}, "system").reference is None
    with pytest.raises(ConfigError, match="system.reference must be of type float"):
        from_mapping(Spec, {"reference": "x"}, "system")


@pytest.mark.parametrize("argv", [
    ["run", "no/such/system"],
    ["train", "no/such/system", "--out", "unused"],
    ["sample", "no/such/system"],
    ["estimate", "no/such/run"],
    ["merge", "no/such/run"],
    ["report", "no/such/run"],
    ["export", "no/such/run"],
])
def test_bad_input_exits_nonzero_with_one_line_and_no_traceback(argv, capsys):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("torch threads")]
    assert len(err) == 1 and err[0].startswith("feat: error: "), err
    assert "no/such" in err[0]


@pytest.mark.parametrize("command, flags", [
    ("run", ("--seed", "--threads", "--device", "--force", "--resume", "--set")),
    ("train", ("--seed", "--threads", "--device", "--force", "--resume", "--set")),
    ("sample", ("--seed", "--threads", "--preset")),
    ("estimate", ("--shard", "--threads", "--device")),
    ("merge", ()),
    ("report", ()),
    ("export", ("--format", "--out")),
])
def test_every_command_explains_itself(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in flags), text
    assert len(text.split("\n\n")[1]) > 60  # a description, not only the usage line


@pytest.mark.filterwarnings("ignore:HMC autocorrelation estimate is unreliable")
def test_feat_reference_on_a_small_umbrella_ladder(tmp_path, capsys):
    """`feat reference` writes the MBAR ladder of a phi4_umbrella system to --out."""
    import json

    from feat.cli import main

    run_file = tmp_path / "tiny.toml"
    run_file.write_text(
        'name = "tiny"\n[system]\nkind = "phi4_umbrella"\nshape = [3, 3]\nm2 = 0.5\nlam = 0.0\n'
        'n_chains = 16\nn_warmup = 50\nn_steps = 100\nn_leapfrog = 8\n'
        f'cache_dir = "{tmp_path}"\n[reference]\nn_windows = 3\nn_samples = 100\n'
        'n_bootstrap = 5\n')
    out = tmp_path / "ref.json"
    assert main(["reference", str(run_file), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["reference"]["parameter"] == "center"
    assert len(record["reference"]["values"]) == 3
    assert record["settings"]["n_windows"] == 3
    assert "MBAR reference ΔF" in capsys.readouterr().out


def test_feat_reference_on_a_kind_without_a_ladder_exits_2(tmp_path, capsys):
    from feat.cli import main

    assert main(["reference", "systems/gaussian", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "no classical (MBAR) reference" in err and "phi4_umbrella" in err


def test_feat_bench_is_forwarded_to_the_bench_runner(capsys):
    from feat.cli import main

    assert main(["bench", "--list"]) == 0
    assert "gaussian-quick-feat" in capsys.readouterr().out
