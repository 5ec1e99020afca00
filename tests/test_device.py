"""``--device``: resolution and early, clear failures; "cpu" equals the default on a CPU machine;
energies follow their inputs' device and dtype; DDP picks NCCL for CUDA and gloo otherwise."""

import json

import numpy as np
import pytest
import torch

from feat.cli import main
from feat.config import ConfigError, resolve
from feat.energies.analytic import Gaussian, GaussianMixture
from feat.energies.bias import Biased, HarmonicUmbrella
from feat.energies.lattice import Phi4, magnetisation
from feat.estimators import load_works
from feat.pipeline import resolve_device, run
from feat.training import distributed

TINY = {
    "name": "tiny",
    "system": {"kind": "gaussian", "dim": 2, "n_samples_a": 500, "n_samples_b": 500},
    "fields": {"hidden": 16, "depth": 1},
    "training": {"steps": 30, "batch_size": 32},
    "transport": {"eps": 0.1, "n_points": 10, "n_forward": 100, "n_reverse": 100,
                  "batch_size": 50},
    "estimate": {"n_bootstrap": 5},
}


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_and_cpu_resolve_to_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_unavailable_devices_fail_naming_the_flag_and_the_fix(no_gpu, name):
    with pytest.raises(ConfigError, match=f"--device {name}: .*not available.*--device cpu"):
        resolve_device(name)


def test_cli_fails_early_with_one_line_on_an_unavailable_gpu(no_gpu, tmp_path, capsys):
    (tmp_path / "system.toml").write_text('[system]\nkind = "gaussian"\ndim = 2\n')
    out = tmp_path / "run"
    assert main(["run", str(tmp_path), "--out", str(out), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("feat: error: --device cuda: CUDA is not available")
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()  # failed before any work
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects the syntax
        main(["train", str(tmp_path), "--out", str(out), "--device", "gpu"])
    assert exit_info.value.code == 2
    assert "argument --device: expected auto, cpu, cuda, cuda:N or mps; got 'gpu'" in \
        capsys.readouterr().err


def test_device_cpu_equals_the_default_and_is_recorded(tmp_path):
    default, cpu = tmp_path / "default", tmp_path / "cpu"
    a = run(resolve(TINY), default, progress=False)
    b = run(resolve(dict(TINY, device="cpu")), cpu, progress=False)
    assert a.estimate.to_dict() == b.estimate.to_dict()
    wa, wb = load_works(default / "works.npz"), load_works(cpu / "works.npz")
    np.testing.assert_array_equal(wa.work_f, wb.work_f)
    np.testing.assert_array_equal(wa.work_r, wb.work_r)
    for out, asked in ((default, "auto"), (cpu, "cpu")):
        record = json.loads((out / "config.json").read_text())
        assert record["config"]["device"] == asked
        expected = "cpu" if not torch.cuda.is_available() else record["provenance"]["device"]
        assert record["provenance"]["device"] == expected
        prov = record["provenance"]
        for key in ("feat", "git_revision", "torch", "openmm", "pymbar", "host", "threads",
                    "seed", "command"):
            assert key in prov, key
        assert prov["openmm"] and prov["torch"] == torch.__version__


def _energies():
    gmm = GaussianMixture(torch.randn(3, 2, dtype=torch.float64), 0.5)
    gauss = Gaussian(torch.zeros(2), torch.eye(2) * 2)
    phi4 = Phi4.from_mass((4, 4), m2=-1.0, lam=0.8)
    biased = Biased(phi4, HarmonicUmbrella(magnetisation, 10.0, 0.3))
    return [(gauss, (2,)), (gmm, (2,)), (phi4, (4, 4)), (biased, (4, 4))]


@pytest.mark.parametrize("energy, shape", _energies())
def test_energies_follow_the_input_dtype(energy, shape):
    x64 = torch.randn(5, *shape, dtype=torch.float64)
    u64, s64 = energy(x64), energy.score(x64)
    u32, s32 = energy(x64.float()), energy.score(x64.float())
    assert (u64.dtype, s64.dtype) == (torch.float64, torch.float64)
    assert (u32.dtype, s32.dtype) == (torch.float32, torch.float32)
    torch.testing.assert_close(u32.double(), u64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s32.double(), s64, rtol=1e-4, atol=1e-4)


def test_analytic_parameters_are_copied_once_per_device_and_dtype():
    # the mixture computes in float64 whatever the input (its expanded squared distances
    # cancel), so float32 inputs use one float64 copy; outputs keep the input dtype
    gmm = GaussianMixture(torch.randn(3, 2, dtype=torch.float64), 0.5)
    x = torch.randn(4, 2, dtype=torch.float32)
    for _ in range(3):
        gmm(x), gmm.score(x)
    assert list(gmm._copies) == [(x.device, torch.float64)]
    first = gmm._copies[(x.device, torch.float64)][0]
    assert gmm(x).dtype == gmm.score(x).dtype == torch.float32
    assert gmm._copies[(x.device, torch.float64)][0] is first


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("cuda:0", "nccl")])
def test_data_parallel_backend_follows_the_device(monkeypatch, device, backend):
    """One code path: NCCL for CUDA devices, gloo otherwise (no process group is started)."""
    import torch.distributed as dist

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.update(backend=backend))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.update(cuda=i))
    assert distributed.init(torch.device(device))
    assert calls["backend"] == backend
    assert ("cuda" in calls) == (backend == "nccl")
