"""feat report and feat.plotting: the recomputed estimate equals results.json; plots; errors."""

import json
import shutil

import numpy as np
import pytest

from feat.cli import main
from feat.config import resolve
from feat.pipeline import run
from feat.plotting import (
    convergence_curves,
    plot_convergence,
    plot_magnetisation,
    plot_work_histograms,
    umbrella_weights,
)
from feat.report import RunDirectoryError, load_run, report

TINY = {
    "name": "tiny",
    "system": {"kind": "gaussian", "dim": 2, "n_samples_a": 700, "n_samples_b": 700},
    "fields": {"hidden": 16, "depth": 1},
    "training": {"steps": 100},
    "transport": {"eps": 0.1, "n_points": 10, "n_forward": 200, "n_reverse": 150},
    "estimate": {"n_bootstrap": 20, "monitor_every": 25, "monitor_trajectories": 50},
}
PLOTS = ("works", "convergence", "monitor", "losses")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "tiny"
    run(resolve(TINY), out, progress=False)
    return out


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_recomputed_estimate_equals_results_json_exactly(run_dir):
    record = load_run(run_dir)
    stored = json.loads((run_dir / "results.json").read_text())["estimate"]
    assert record.reproduced and record.mismatches == ()
    assert json.loads(json.dumps(record.estimate.to_dict())) == stored


def test_a_forward_only_run_is_reported(tmp_path):
    data = {**TINY, "training": {"steps": 20}, "estimate": {"n_bootstrap": 5},
            "transport": {**TINY["transport"], "n_reverse": 0}}
    run(resolve(data), tmp_path / "fwd", progress=False)
    text = report(tmp_path / "fwd").read_text()
    assert "identical to `results.json`" in text and "| Jarzynski forward (headline) |" in text
    assert "BAR" not in text.split("## Estimators")[1].split("## Reference")[0]
    assert _is_png(tmp_path / "fwd" / "plots" / "works.png")


def test_report_writes_markdown_and_plots(run_dir):
    path = report(run_dir)
    text = path.read_text()
    assert path == run_dir / "report.md"
    assert "ΔF = F_b − F_a" in text and "identical to `results.json`" in text
    for phrase in ("Jarzynski forward", "Jensen bounds", "gap", "ESS", "Non-finite works",
                   "Reference ΔF", "z = ", "## Timings", "## Provenance"):
        assert phrase in text, phrase
    for name in PLOTS:
        assert _is_png(run_dir / "plots" / f"{name}.png"), name
        assert f"](plots/{name}.png)" in text


def test_cli_report_prints_the_summary_and_the_path(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("ΔF =") and "exact:" in printed.out
    assert str(run_dir / "report.md") in printed.err


def test_an_edited_results_json_is_flagged(run_dir, tmp_path, capsys):
    copy = shutil.copytree(run_dir, tmp_path / "edited")
    results = json.loads((copy / "results.json").read_text())
    results["estimate"]["delta_f"] += 1e-9
    (copy / "results.json").write_text(json.dumps(results))
    assert main(["report", str(copy)]) == 1
    assert "differs from results.json in delta_f;" in capsys.readouterr().err
    text = (copy / "report.md").read_text()
    assert "DIFFERS from `results.json`** in: `delta_f`." in text


def test_not_a_run_directory_names_the_missing_file_and_the_fix(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match="works.npz, results.json missing.*feat run"):
        report(tmp_path)
    with pytest.raises(RunDirectoryError, match="is not a directory"):
        report(tmp_path / "nowhere")
    assert main(["report", str(tmp_path)]) == 2
    assert "feat: error:" in capsys.readouterr().err


def test_plots_take_one_direction_and_non_finite_works(tmp_path):
    rng = np.random.default_rng(0)
    work_f = np.append(rng.normal(2.0, 1.0, 300), [np.inf, np.nan])
    assert _is_png(plot_work_histograms(work_f, None, tmp_path / "w.png", delta_f=1.5))
    assert _is_png(plot_convergence(work_f, None, tmp_path / "c.png", reference=1.5))
    curves = convergence_curves(work_f, None, n_points=5)
    assert "BAR" not in curves and curves["n"][-1] == 301  # NaN left out, +inf kept
    with pytest.raises(ValueError, match="neither"):
        plot_work_histograms(None, None, tmp_path / "x.png")


def _umbrella_windows(seed: int, n: int = 20000, k: float = 0.5, c=(-1.0, 1.5)):
    """Exact samples of windows u = m²/2 + (k/2)(m - c)², their biases and exact ΔF."""
    rng, c = np.random.default_rng(seed), np.asarray(c)
    m = [k * ci / (1 + k) + rng.standard_normal(n) / np.sqrt(1 + k) for ci in c]
    bias_kn = 0.5 * k * (np.concatenate(m)[None] - c[:, None]) ** 2
    return m, bias_kn, 0.5 * k / (1 + k) * (c[1] ** 2 - c[0] ** 2)


def test_umbrella_reweighting_recovers_the_unbiased_gaussian(tmp_path):
    (m_a, m_b), bias_kn, delta_f = _umbrella_windows(seed=0)
    pooled = np.concatenate([m_a, m_b])
    w = umbrella_weights(bias_kn, [m_a.size, m_b.size], [0.0, delta_f])
    mean, se = w @ pooled, 1 / np.sqrt(1 / (w @ w))  # unbiased N(0, 1); Kish ESS
    assert abs(mean) < 4 * se and abs(w @ pooled**2 - mean**2 - 1) < 0.04
    wrong = umbrella_weights(bias_kn, [m_a.size, m_b.size], [0.0, delta_f + 0.5])
    assert abs(wrong @ pooled) > 15 * se  # ΔF matters
    exact = np.random.default_rng(1).standard_normal(5000)
    assert _is_png(plot_magnetisation(m_a, m_b, bias_kn, delta_f, tmp_path / "m.png",
                                      exact=exact))
    with pytest.raises(ValueError, match="n_k must sum"):
        umbrella_weights(bias_kn, [10, 10], [0.0, delta_f])
