"""systems/diagnose.py: the split of each work into path windows and the end-state part."""

import torch

from feat.cli import main as feat
from feat.pipeline.build import make_grid, make_process
from feat.pipeline.shards import _setup
from tests.scripts import load_script


def test_work_splits_exactly_into_path_windows_and_end_energies(tmp_path, capsys):
    run = tmp_path / "run"
    assert feat(["run", "systems/gaussian", "--preset", "quick", "--out", str(run),
                 "--no-progress", "--set", "training.steps=20", "--set", "transport.n_points=30",
                 "--set", "transport.n_forward=40", "--set", "transport.n_reverse=40"]) == 0
    diagnose = load_script("diagnose.py")
    config, _, problem, trainer, x_a, x_b = _setup(run, "cpu")
    process = make_process(config.transport, trainer.velocity_ema, trainer.score_ema, problem)
    grid = make_grid(config.transport)
    for proc, gr, x0, ref, rev in ((process, grid, x_a, x_b, False),
                                   (process.reversed(), grid.reversed(), x_b, x_a, True)):
        parts = diagnose.decompose(proc, gr, x0[:25], ref, "label", reverse=rev)
        assert parts["path"].shape == (25, len(diagnose.EDGES) - 1)
        torch.testing.assert_close(parts["path"].sum(1) + parts["end"], parts["work"],
                                   rtol=1e-10, atol=1e-10)
    assert diagnose.main([str(run), "--n", "10", "--scan", "eps=0.2,n_points=20"]) == 0
    out = capsys.readouterr().out
    assert "reverse b → a" in out and "eps=0.2,n_points=20: ΔF" in out
