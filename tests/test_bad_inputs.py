"""The bad-input matrix (issue #5, part 8): every way of getting an input wrong, one row each.

Each row of :data:`CASES` is ``(id, call, exception, pattern)``: ``call(tmp_path)`` goes through
the public API (or the ``feat`` command line) with one bad input, and must raise ``exception``
with a message matching ``pattern``: the message names the argument, what was expected or
received, and the fix (ARCHITECTURE.md, habit 2). Command-line rows raise :class:`CLIExit`,
which carries the exit status and what ``feat`` printed on stderr.

Behaviour that is not an exception (fallbacks, ``on_error="inf"``, the clean-up after a
disk-full write, counting ``+inf`` works) is tested below the table.

Outcomes worth knowing, by row:

- all-infinite works (``works-all-posinf-*``): BAR, Jarzynski and ``estimate`` *raise*
  (no finite work, no estimate); some ``+inf`` works give a result with ``n_posinf`` set.
- a corrupt newest checkpoint falls back to ``checkpoint.prev.pt`` with a warning; only when
  no checkpoint is readable is it an error (``checkpoint-all-corrupt``).
- positions in Å are caught by ``OpenMMEnergy`` (bond lengths on its first call) and by
  ``load_trajectory`` (nearest-neighbour distances); both say "divide by 10".
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import re
from functools import cache
from pathlib import Path
from unittest import mock

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools import testsystems

from feat import FunctionEnergy, TwoStateProblem
from feat.cli import main as feat_main
from feat.config import ConfigError, load_run_config, resolve
from feat.energies.openmm import OpenMMEnergy, _ContextEvaluator
from feat.estimators import bar, estimate, jarzynski_forward, jarzynski_reverse
from feat.fields import MLPField
from feat.interpolants import Interpolant
from feat.pipeline import estimate_shard, load_run
from feat.pipeline.stages import identity, write_config
from feat.sampling import load_samples, save_samples
from feat.sampling.md import LangevinMD
from feat.sampling.trajectory import load_trajectory
from feat.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from feat.transport import SDEProcess, TimeGrid, transport

SYSTEMS = Path(__file__).resolve().parents[1] / "systems"


# -- small inputs ---------------------------------------------------------------------------------


def _u2(fn=None) -> FunctionEnergy:
    """A 2-D reduced potential; by default the standard Gaussian's."""
    return FunctionEnergy(fn or (lambda x: 0.5 * (x**2).sum(-1)), event_shape=(2,))


def _x(n: int = 5, *shape: int, dtype=torch.float64) -> torch.Tensor:
    shape = shape or (2,)
    g = torch.Generator().manual_seed(n)
    return torch.randn((n, *shape), generator=g, dtype=torch.float64).to(dtype)


def _problem(x_a=None, x_b=None, **kw) -> TwoStateProblem:
    u = kw.pop("energy", _u2())
    return TwoStateProblem(
        kw.pop("energy_a", u),
        kw.pop("energy_b", u),
        _x() if x_a is None else x_a,
        _x() if x_b is None else x_b,
        **kw,
    )


def _with(x: torch.Tensor, row: int, value: float) -> torch.Tensor:
    x = x.clone()
    x[row, 0] = value
    return x


def _sde(eps: float) -> SDEProcess:
    return SDEProcess(MLPField((2,), 8, 1, 2), MLPField((2,), 8, 1, 2), eps, _u2(), _u2())


@cache
def _aldp() -> testsystems.TestSystem:
    """Alanine dipeptide in vacuum, no constraints (openmmtools, offline): 22 atoms."""
    return testsystems.AlanineDipeptideVacuum(constraints=None)


def _aldp_x() -> torch.Tensor:
    """(1, 22, 3) float64 nm: alanine dipeptide's positions."""
    return torch.tensor(_aldp().positions.value_in_unit(unit.nanometer))[None]


def _aldp_energy(**kw) -> OpenMMEnergy:
    return OpenMMEnergy(_aldp().system, 300.0, platform="Reference", **kw)


def _openmm_fails_at(index: int):
    """Patch the OpenMM evaluation so that batch entry ``index`` raises an OpenMMException."""
    real, calls = _ContextEvaluator._one, []

    def one(self, xi, force_out):
        calls.append(None)
        if len(calls) == index + 1:
            raise openmm.OpenMMException("Particle coordinate is NaN (simulated)")
        return real(self, xi, force_out)

    return mock.patch.object(_ContextEvaluator, "_one", one)


def _openmm_mid_batch(tmp: Path, **kw) -> torch.Tensor:
    energy = _aldp_energy(**kw)
    with _openmm_fails_at(2):
        return energy(_aldp_x().repeat(4, 1, 1))


def _trajectory_files(tmp: Path) -> dict[str, Path]:
    """Alanine dipeptide as a 2-frame DCD, its PDB, a 21-atom PDB and a PDB written in Å."""
    traj = mdtraj.Trajectory(_aldp_x().numpy().repeat(2, axis=0), _aldp().mdtraj_topology)
    files = {
        k: tmp / n
        for k, n in (
            ("dcd", "aldp.dcd"),
            ("pdb", "aldp.pdb"),
            ("pdb21", "aldp21.pdb"),
            ("angstrom", "angstrom.pdb"),
            ("garbage", "garbage.dcd"),
        )
    }
    traj.save_dcd(str(files["dcd"]))
    traj.save_pdb(str(files["pdb"]))
    traj.atom_slice(range(21)).save_pdb(str(files["pdb21"]))
    mdtraj.Trajectory(10.0 * traj.xyz, traj.topology).save_pdb(str(files["angstrom"]))
    files["garbage"].write_bytes(b"this is not a DCD file" * 10)
    return files


def _run_config(steps: int = 10):
    return resolve(
        {
            "system": {"kind": "gaussian", "dim": 2, "n_samples_a": 50, "n_samples_b": 50},
            "training": {"steps": steps, "batch_size": 8},
            "transport": {"n_points": 5, "n_forward": 10, "n_reverse": 10, "batch_size": 10},
        }
    )


def _interrupted_run(tmp: Path) -> Path:
    """A run directory whose training stopped (killed) at step 3 of 10."""
    out = tmp / "run"
    config = _run_config()
    write_config(out, config)
    save_checkpoint(
        out / "checkpoint.pt",
        {"trainer": {"step": 3}, "monitor": {"records": []}},
        identity(config),
    )
    return out


def _corrupt_checkpoints(tmp: Path, *names: str) -> Path:
    out = tmp / "run"
    config = _run_config()
    write_config(out, config)
    save_checkpoint(out / "checkpoint.pt", {"step": 1}, identity(config))
    save_checkpoint(out / "checkpoint.pt", {"step": 2}, identity(config))
    for name in names:
        (out / name).write_bytes(b"\x00truncated")
    return out


def _disk_full(*args, **kwargs):
    """Stand-in for ``np.savez``: writes part of the file, then the disk is full."""
    fh = args[0]
    fh.write(b"PK\x03\x04 half a zip")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _save_samples_disk_full(tmp: Path) -> None:
    with mock.patch.object(np, "savez", _disk_full):
        save_samples(tmp / "samples.npz", _x())


class CLIExit(Exception):
    """``feat`` exited with a nonzero status; the message is ``exit N: <stderr>``."""


def _cli(*argv: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = feat_main(list(argv))
    if rc:
        raise CLIExit(f"exit {rc}: {err.getvalue()}")


def _half_written_npz(path: Path) -> Path:
    """A samples file cut in half (e.g. copied while being written by another tool)."""
    save_samples(path, _x(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# -- the matrix -----------------------------------------------------------------------------------

CASES = [
    # samples of a TwoStateProblem: shapes
    (
        "x_a-wrong-event-shape",
        lambda tmp: _problem(x_a=_x(5, 3)),
        ValueError,
        r"x_a must have shape \(batch, 2\); got \(5, 3\)\. Each sample must have the energy's "
        r"event shape \(2,\)",
    ),
    (
        "x_a-flattened-molecule",
        lambda tmp: TwoStateProblem(
            FunctionEnergy(lambda x: x.pow(2).sum((1, 2)), (4, 3)),
            FunctionEnergy(lambda x: x.pow(2).sum((1, 2)), (4, 3)),
            _x(5, 12),
            _x(5, 4, 3),
        ),
        ValueError,
        r"x_a must have shape \(batch, 4, 3\); got \(5, 12\)\. Reshape with "
        r"x\.reshape\(-1, 4, 3\)",
    ),
    (
        "x_b-one-sample-without-batch",
        lambda tmp: _problem(x_b=torch.zeros(2)),
        ValueError,
        r"x_b must have shape \(batch, 2\); got \(2,\)\. .*add a batch dimension: x\[None\]",
    ),
    (
        "x_a-empty",
        lambda tmp: _problem(x_a=torch.zeros(0, 2)),
        ValueError,
        r"x_a is empty: shape \(0, 2\); give at least one sample",
    ),
    (
        "x_b-missing",
        lambda tmp: TwoStateProblem(_u2(), _u2(), _x(), None),
        ValueError,
        r"x_b is missing: give samples of shape \(n, 2\)",
    ),
    (
        "score_a-wrong-shape",
        lambda tmp: _problem(score_a=_x(4)),
        ValueError,
        r"score_a must have the shape of its samples \(5, 2\); got \(4, 2\)\. .*None to compute",
    ),
    # samples: dtypes
    (
        "x_a-int64-tensor",
        lambda tmp: _problem(x_a=torch.ones(5, 2, dtype=torch.int64)),
        TypeError,
        r"x_a must be a real floating-point tensor .*got torch\.int64\. "
        r"Convert with x\.double\(\)",
    ),
    (
        "x_b-int-numpy-array",
        lambda tmp: _problem(x_b=np.ones((5, 2), dtype=np.int32)),
        TypeError,
        r"x_b must be a real floating-point tensor .*got torch\.int32\. Convert",
    ),
    (
        "x_a-complex-tensor",
        lambda tmp: _problem(x_a=_x(dtype=torch.complex128)),
        TypeError,
        r"x_a must be a real floating-point tensor .*complex128\. Take x\.real",
    ),
    (
        "x_a-float16-tensor",
        lambda tmp: _problem(x_a=_x(dtype=torch.float16)),
        TypeError,
        r"x_a must be float32 or float64; got torch\.float16.*Convert with x\.double\(\)",
    ),
    (
        "x_a-strings",
        lambda tmp: _problem(x_a=np.array([["1.0", "a"]])),
        TypeError,
        r"x_a must be a tensor or array of real numbers with shape \(n, 2\); got ndarray of "
        r"dtype <U3\. Convert with np\.asarray\(x, dtype=float\)",
    ),
    (
        "x_b-ragged-list",
        lambda tmp: _problem(x_b=[[0.0, 1.0], [2.0]]),
        TypeError,
        r"x_b must be a tensor or array of real numbers with shape \(n, 2\); got list of dtype "
        r"object \(rows of unequal length\?\)",
    ),
    # samples: non-finite values
    (
        "x_a-nan-sample",
        lambda tmp: _problem(x_a=_with(_x(), 1, math.nan)),
        ValueError,
        r"x_a has 1 sample\(s\) with NaN or inf coordinates \(first at rows \[1\]\); remove them",
    ),
    (
        "x_b-inf-sample",
        lambda tmp: _problem(x_b=_with(_x(), 4, math.inf)),
        ValueError,
        r"x_b has 1 sample\(s\) with NaN or inf .*rows \[4\]",
    ),
    # energies
    (
        "energy_a-plain-callable",
        lambda tmp: TwoStateProblem(lambda x: x.sum(-1), _u2(), _x(), _x()),
        TypeError,
        r"energy_a must be a feat Energy; got function\. Wrap a callable with "
        r"feat\.FunctionEnergy\(fn, event_shape\)",
    ),
    (
        "energies-event-shape-mismatch",
        lambda tmp: TwoStateProblem(_u2(), FunctionEnergy(lambda x: x.sum(-1), 3), _x(), _x()),
        ValueError,
        r"energy_a and energy_b must share one event shape; got \(2,\) and \(3,\)\. "
        r".*same event_shape",
    ),
    (
        "energy-returns-shape-B1",
        lambda tmp: _u2(lambda x: x.sum(-1, keepdim=True))(_x()),
        ValueError,
        r"FunctionEnergy returned shape \(5, 1\) for a batch of 5; a reduced "
        r"potential must return shape \(5,\)\. .*squeeze the last dimension",
    ),
    (
        "energy-returns-nan-at-samples",
        lambda tmp: _problem(
            energy_a=_u2(lambda x: torch.log(x[:, 0]) + x[:, 1]), x_a=_with(_x().abs(), 2, -1.0)
        ).scores(),
        ValueError,
        r"energy_a returned a non-finite energy at 1 of 5 samples x_a \(rows \[2\]; u = \[nan\]\)"
        r".*fix energy_a .*or remove those samples",
    ),
    (
        "energy-returns-inf-at-samples",
        lambda tmp: _problem(
            energy_b=_u2(lambda x: 1.0 / x[:, 0].abs()), x_b=_with(_x(), 0, 0.0)
        ).scores(),
        ValueError,
        r"energy_b returned a non-finite energy at 1 of 5 samples x_b \(rows \[0\]; u = \[inf\]\)"
        r".*fix energy_b",
    ),
    (
        "energy-numpy-positions",
        lambda tmp: _u2()(np.zeros((3, 2))),
        TypeError,
        r"x must be a torch\.Tensor; got ndarray\. Convert arrays with torch\.as_tensor",
    ),
    (
        "energy-int-positions",
        lambda tmp: _u2()(torch.zeros(3, 2, dtype=torch.int64)),
        TypeError,
        r"x must be a real floating-point tensor .*got torch\.int64\. Convert with "
        r"x\.double\(\)",
    ),
    # OpenMM
    (
        "openmm-atom-count-mismatch",
        lambda tmp: _aldp_energy()(_aldp_x()[:, :21]),
        ValueError,
        r"x must have shape \(batch, 22, 3\); got \(1, 21, 3\)\. .*same number of atoms",
    ),
    (
        "openmm-positions-in-angstrom",
        lambda tmp: _aldp_energy()(10.0 * _aldp_x()),
        ValueError,
        r"x does not look like nanometres: bonded atoms are a median 10 times their "
        r"equilibrium length\. Positions must be in nm; if they are in Å, divide by 10",
    ),
    (
        "openmm-exception-mid-batch",
        _openmm_mid_batch,
        ValueError,
        r"OpenMMEnergy could not evaluate 1 of 4 configurations at batch index 2: OpenMM raised:"
        r" Particle coordinate is NaN.*Pass on_error='inf'",
    ),
    (
        "openmm-bad-on_error",
        lambda tmp: _aldp_energy(on_error="nan"),
        ValueError,
        r"on_error must be 'raise' or 'inf'; got 'nan'\. Use 'inf' to give configurations",
    ),
    (
        "openmm-temperature-not-positive",
        lambda tmp: OpenMMEnergy(_aldp().system, -300.0),
        ValueError,
        r"temperature must be finite and > 0 K; got -300\.0 K\. Give it in kelvin",
    ),
    # trajectories and MD
    (
        "trajectory-atom-count-mismatch",
        lambda tmp: load_trajectory(_trajectory_files(tmp)["pdb"], n_atoms=21),
        ValueError,
        r"has 22 atoms per frame; the system has 21\. Give the topology \(and trajectory\) of "
        r"the same system, or select atoms",
    ),
    (
        "trajectory-topology-other-atoms",
        lambda tmp: load_trajectory((f := _trajectory_files(tmp))["dcd"], f["pdb21"]),
        ValueError,
        r"mdtraj could not read '.*aldp\.dcd'.*and that topology \(21 atoms\) describes its "
        r"atoms in the same order",
    ),
    (
        "trajectory-in-angstrom",
        lambda tmp: load_trajectory(_trajectory_files(tmp)["angstrom"]),
        ValueError,
        r"positions in '.*angstrom\.pdb' do not look like nanometres.*probably in Å: divide by "
        r"10",
    ),
    (
        "trajectory-missing-file",
        lambda tmp: load_trajectory(tmp / "nope.dcd"),
        ValueError,
        r"trajectory file '.*nope\.dcd' does not exist; check the path",
    ),
    (
        "trajectory-missing-topology-file",
        lambda tmp: load_trajectory(_trajectory_files(tmp)["dcd"], tmp / "nope.pdb"),
        ValueError,
        r"topology file '.*nope\.pdb' does not exist; check the path",
    ),
    (
        "trajectory-without-topology",
        lambda tmp: load_trajectory(_trajectory_files(tmp)["dcd"]),
        ValueError,
        r"mdtraj could not read .*This format stores no topology: give topology=",
    ),
    (
        "trajectory-unreadable-file",
        lambda tmp: load_trajectory((f := _trajectory_files(tmp))["garbage"], f["pdb"]),
        ValueError,
        r"mdtraj could not read '.*garbage\.dcd'.*Check that the file is complete "
        r"and in the format its extension names",
    ),
    (
        "md-topology-atom-count-mismatch",
        lambda tmp: LangevinMD(platform="Reference").run(
            _aldp().system,
            _aldp().positions,
            _aldp().mdtraj_topology.subset(range(21)),
            10,
            tmp / "md",
            progress=False,
        ),
        ValueError,
        r"topology has 21 atoms, system has 22; give the topology of this system",
    ),
    # configuration (did-you-mean)
    (
        "config-misspelled-section",
        lambda tmp: resolve({"system": {"kind": "gaussian"}, "trainig": {"steps": 5}}),
        ConfigError,
        r"unknown key 'trainig' in \[top level\]\. Did you mean 'training'\?",
    ),
    (
        "config-misspelled-key",
        lambda tmp: resolve({"system": {"kind": "gaussian"}, "transport": {"n_forwrd": 5}}),
        ConfigError,
        r"unknown key 'n_forwrd' in \[transport\]\. Did you mean 'n_forward'\?",
    ),
    (
        "config-wrong-type",
        lambda tmp: resolve({"system": {"kind": "gaussian"}, "training": {"steps": "ten"}}),
        ConfigError,
        r"training\.steps must be of type int; got 'ten' \(str\)",
    ),
    (
        "config-eps-not-positive",
        lambda tmp: resolve({"system": {"kind": "gaussian"}, "transport": {"eps": 0.0}}),
        ConfigError,
        r"transport\.eps must be > 0 for method 'sde'; got 0\.0\. Use method = 'ode'",
    ),
    (
        "config-missing-run-file",
        lambda tmp: load_run_config(tmp / "nope"),
        ConfigError,
        r"no run file at '.*nope'\. Give a system folder \(with system\.toml\) or a \.toml file",
    ),
    # checkpoints and interrupted runs
    (
        "checkpoint-all-corrupt",
        lambda tmp: load_checkpoint(
            _corrupt_checkpoints(tmp, "checkpoint.pt", "checkpoint.prev.pt") / "checkpoint.pt",
            identity(_run_config()),
        ),
        CheckpointError,
        r"checkpoint '.*checkpoint\.pt' is unreadable.*checkpoint "
        r"'.*checkpoint\.prev\.pt' is unreadable.*Delete the run directory's "
        r"checkpoints \(or use a new --out\)",
    ),
    (
        "checkpoint-other-settings",
        lambda tmp: load_checkpoint(
            _interrupted_run(tmp) / "checkpoint.pt", identity(_run_config(steps=20))
        ),
        ConfigError,
        r"cannot resume: .*training\.steps: checkpoint 10, now 20.*Use a new --out "
        r"directory, or run without --resume",
    ),
    (
        "estimate-after-interrupted-training",
        lambda tmp: estimate_shard(_interrupted_run(tmp), (0, 1)),
        CheckpointError,
        r"training in '.*run' stopped at step 3 of 10; finish it with 'feat run \.\.\. --resume'",
    ),
    (
        "estimate-not-a-run-directory",
        lambda tmp: load_run(tmp),
        ConfigError,
        r"is not a run directory: config\.json is missing\. Train first with 'feat run'",
    ),
    # works and estimators
    (
        "works-empty",
        lambda tmp: bar([], [0.5]),
        ValueError,
        r"work_f is empty \(shape \(0,\)\); give at least one trajectory's work",
    ),
    (
        "works-all-posinf-bar",
        lambda tmp: bar([0.5], [math.inf, math.inf]),
        ValueError,
        r"work_r: all 2 works are \+inf.*Improve the transport \(fields, time grid, eps\)",
    ),
    (
        "works-all-posinf-jarzynski",
        lambda tmp: jarzynski_forward([math.inf] * 3),
        ValueError,
        r"work_f: all 3 works are \+inf.*every weight exp\(-W\) is zero\. Improve the transport",
    ),
    (
        "works-all-posinf-estimate",
        lambda tmp: estimate(None, [math.inf]),
        ValueError,
        r"work_r: all 1 works are \+inf.*Improve the transport",
    ),
    (
        "works-nan",
        lambda tmp: estimate([0.1, math.nan, 0.3]),
        ValueError,
        r"work_f contains 1 NaN work\(s\) out of 3, at indices \[1\]\. .*"
        r"nan_policy=\"drop\"",
    ),
    (
        "works-neginf",
        lambda tmp: jarzynski_reverse([0.0, -math.inf]),
        ValueError,
        r"work_r contains 1 work\(s\) equal to -inf.*check the end-state energies and samples",
    ),
    (
        "works-2d",
        lambda tmp: estimate(np.zeros((4, 2))),
        ValueError,
        r"work_f must be 1-D with shape \(n_trajectories,\); got shape \(4, 2\)\. .*"
        r"work\.reshape\(-1\)",
    ),
    (
        "works-complex",
        lambda tmp: bar(np.array([1.0 + 1j]), [0.0]),
        ValueError,
        r"work_f must hold real numbers \(works in kT\); got complex values\. Take \.real",
    ),
    (
        "works-neither-direction",
        lambda tmp: estimate(),
        ValueError,
        r"estimate needs work_f \(forward works\), work_r \(reverse works\) or both",
    ),
    # transport
    (
        "sde-eps-zero",
        lambda tmp: _sde(0.0),
        ValueError,
        r"eps must be a finite number > 0 for SDE transport; got 0\.0\. For eps = 0 use "
        r"ODEProcess",
    ),
    (
        "sde-eps-negative",
        lambda tmp: _sde(-0.01),
        ValueError,
        r"eps must be a finite number > 0 for SDE transport; got -0\.01",
    ),
    (
        "time-grid-not-increasing",
        lambda tmp: TimeGrid(torch.tensor([0.0, 0.5, 0.5, 1.0])),
        ValueError,
        r"grid must be strictly increasing; t\[1\] = 0\.5 is followed by "
        r"t\[2\] = 0\.5\. Sort it and drop duplicates",
    ),
    (
        "transport-x0-wrong-shape",
        lambda tmp: transport(_sde(0.1), _x(4, 3), TimeGrid.uniform(3), seed=0),
        ValueError,
        r"x0 must have shape \(batch, 2\); got \(4, 3\)\. Each sample must have the energy's "
        r"event shape \(2,\)",
    ),
    (
        "interpolant-unpaired-batches",
        lambda tmp: Interpolant().sample(_x(4), _x(3)),
        ValueError,
        r"x_a and x_b must have the same shape \(batch, \*event_shape\); got \(4, 2\) and "
        r"\(3, 2\)\. Pair them first",
    ),
    # sample files and disk-full writes
    (
        "samples-file-missing",
        lambda tmp: load_samples(tmp / "nope.npz"),
        FileNotFoundError,
        r"samples file '.*nope\.npz' does not exist; check the path, or write it with "
        r"feat\.sampling\.save_samples",
    ),
    (
        "samples-file-corrupt",
        lambda tmp: load_samples(_half_written_npz(tmp / "bad.npz")),
        ValueError,
        r"samples file '.*bad\.npz' is not a readable \.npz file .*write it again",
    ),
    (
        "samples-int-tensor",
        lambda tmp: save_samples(tmp / "s.npz", torch.zeros(3, 2, dtype=torch.int64)),
        ValueError,
        r"samples must be float16/32/64; got torch\.int64\. Convert with "
        r"\.double\(\)",
    ),
    (
        "samples-disk-full",
        _save_samples_disk_full,
        OSError,
        r"\[Errno 28\] could not write '.*samples\.npz': No space left on device; nothing was "
        r"written and no temporary file is left\. Free disk space and retry",
    ),
    # the command line
    (
        "cli-misspelled-set-key",
        lambda tmp: _cli("run", str(SYSTEMS / "gaussian"), "--set", "transport.n_forwrd=5"),
        CLIExit,
        r"exit 2: feat: error: unknown key 'n_forwrd' in \[transport\]\. Did you mean "
        r"'n_forward'\?",
    ),
    (
        "cli-missing-system-folder",
        lambda tmp: _cli("run", str(tmp / "nope")),
        CLIExit,
        r"exit 2: feat: error: no run file at '.*nope'\. Give a system folder",
    ),
    (
        "cli-estimate-after-interrupted-training",
        lambda tmp: _cli("estimate", str(_interrupted_run(tmp)), "--no-progress"),
        CLIExit,
        r"exit 2: .*feat: error: training in '.*run' stopped at step 3 of 10; finish it with "
        r"'feat run \.\.\. --resume'",
    ),
    (
        "cli-bad-shard",
        lambda tmp: _cli("estimate", str(_interrupted_run(tmp)), "--shard", "4/4"),
        CLIExit,
        r"exit 2: .*--shard must be K/N with 0 <= K < N \(e\.g\. 0/4\); got '4/4'",
    ),
]


@pytest.mark.parametrize(
    ("call", "exception", "pattern"), [pytest.param(*case[1:], id=case[0]) for case in CASES]
)
def test_bad_input(call, exception, pattern, tmp_path):
    with pytest.raises(exception, match=re.compile(pattern, re.DOTALL)):
        call(tmp_path)


def test_the_matrix_has_at_least_25_distinct_cases():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)


# -- behaviour that is not an exception -----------------------------------------------------------


def test_openmm_exception_mid_batch_with_on_error_inf_gives_inf_and_counts(tmp_path):
    energy = _aldp_energy(on_error="inf")
    with _openmm_fails_at(2):
        u = energy(_aldp_x().repeat(4, 1, 1))
    assert math.isinf(u[2]) and u[2] > 0
    assert torch.isfinite(u[[0, 1, 3]]).all() and torch.allclose(u[0], u[[1, 3]])
    assert energy.n_nonfinite == 1 and energy.n_evaluated == 4


def test_openmm_scale_check_can_be_skipped_and_passes_nanometres():
    assert torch.isfinite(_aldp_energy()(_aldp_x())).all()
    assert torch.isfinite(_aldp_energy(check_scale=False)(10.0 * _aldp_x())).all()


def test_some_infinite_works_give_a_flagged_result_not_an_error():
    result = estimate([0.1, math.inf, 0.3], [0.2, -0.1], n_bootstrap=0)
    assert result.forward.n_posinf == 1 and result.n_f == 3
    assert math.isfinite(result.delta_f) and result.bounds.upper == math.inf


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    out = _corrupt_checkpoints(tmp_path, "checkpoint.pt")
    with pytest.warns(
        UserWarning,
        match=r"unreadable.*Resuming from the previous checkpoint "
        r"'.*checkpoint\.prev\.pt'",
    ):
        state = load_checkpoint(out / "checkpoint.pt", identity(_run_config()))
    assert state == {"step": 1}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_disk_full_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    good = _x(7)
    save_samples(tmp_path / "samples.npz", good)
    before = _files(tmp_path)
    with (
        mock.patch.object(np, "savez", _disk_full),
        pytest.raises(OSError, match=r"previous version is unchanged") as info,
    ):
        save_samples(tmp_path / "samples.npz", _x(9))
    assert info.value.errno == errno.ENOSPC
    assert _files(tmp_path) == before  # no partial file, no stray temp
    assert torch.equal(load_samples(tmp_path / "samples.npz").samples, good)


def test_disk_full_checkpoint_keeps_the_previous_checkpoint(tmp_path):
    out = _interrupted_run(tmp_path)
    before = _files(out)

    def torch_save(obj, f):
        with open(f, "wb") as fh:
            _disk_full(fh)

    with (
        mock.patch.object(torch, "save", torch_save),
        pytest.raises(OSError, match=r"No space left on device") as info,
    ):
        save_checkpoint(out / "checkpoint.pt", {"trainer": {"step": 5}}, identity(_run_config()))
    assert info.value.errno == errno.ENOSPC
    assert _files(out) == before
    assert load_checkpoint(out / "checkpoint.pt", identity(_run_config()))["trainer"]["step"] == 3
