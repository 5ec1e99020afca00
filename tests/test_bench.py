"""The benchmark runner: catalog, counted pipeline equal to the plain one, budget, table, JSON."""

import json
from pathlib import Path

import pytest

from feat.bench import (
    BenchEntry,
    feat_transport_evaluations,
    load_catalog,
    main,
    markdown_table,
    run_benchmarks,
    run_entry,
)
from feat.config import ConfigError, load_run_config

TINY = """
name = "tiny"
seed = 0
[system]
kind = "gaussian"
dim = 2
n_samples_a = 300
n_samples_b = 300
[fields]
hidden = 16
depth = 2
[training]
steps = 15
batch_size = 32
checkpoint_every = 0
[transport]
eps = 0.1
n_points = 6
n_forward = 50
n_reverse = 40
batch_size = 32
[estimate]
n_bootstrap = 0
"""

CATALOG = """
[sets]
both = ["tiny-feat", "tiny-switching"]
[entries.tiny-feat]
system = "tiny"
method = "feat"
[entries.tiny-switching]
system = "tiny"
method = "switching"
switching = { n_moves = 1, n_pilot = 20, n_warmup = 5, budget = "feat" }
[entries.tiny-ode]
system = "tiny"
method = "ode"
set = { transport = { n_reverse = 0 } }
seeds = [3]
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "system.toml").write_text(TINY)
    (tmp_path / "benchmarks.toml").write_text(CATALOG)
    return tmp_path / "benchmarks.toml"


def test_catalog_entries_and_sets(catalog):
    entries, sets = load_catalog(catalog)
    assert sets == {"both": ["tiny-feat", "tiny-switching"]}
    assert entries["tiny-ode"].seeds == (3,) and entries["tiny-feat"].system.name == "tiny"
    bad = catalog.parent / "bad.toml"
    bad.write_text('[entries.x]\nsystem = "tiny"\nmethod = "mcmc"\n')
    with pytest.raises(ConfigError, match="method must be one of"):
        load_catalog(bad)
    with pytest.raises(ConfigError, match="Did you mean 'tiny-feat'"):
        run_benchmarks(["tiny-fet"], catalog=catalog)


def test_counted_feat_run_equals_the_plain_pipeline(catalog, tmp_path):
    from feat.pipeline import run

    entries, _ = load_catalog(catalog)
    rec = run_entry(entries["tiny-feat"], 0, tmp_path / "runs")
    config = load_run_config(catalog.parent / "tiny", overrides={"seed": 0})
    plain = run(config, progress=False)
    assert rec["estimate"]["delta_f"] == plain.estimate.delta_f
    # the transport's counts: b and s at 6 points, u at both ends, for 90 trajectories
    t = rec["settings"]["transport_counts"]
    assert t["network_evals"] == 2 * 6 * 90 and t["energy_evals"] == 2 * 90
    assert rec["estimator_evals"] == feat_transport_evaluations(config) == 90 * (2 * 6 + 2)
    assert rec["counts"]["total"]["network_evals"] > t["network_evals"]  # training too
    assert (tmp_path / "runs" / "tiny-feat" / "seed0" / "results.json").is_file()
    assert rec["memory_mib"]["rss_mib"] > 0 and rec["machine"]["cpu_count"] >= 1


def test_switching_entry_stays_within_feat_budget_and_ode_runs(catalog, tmp_path):
    entries, _ = load_catalog(catalog)
    rec = run_entry(entries["tiny-switching"], 0, tmp_path)
    budget = rec["settings"]["feat_transport_budget"]
    used = rec["counts"]["total"]["energy_evals"]
    assert used == rec["estimator_evals"] <= budget
    assert used > 0.5 * budget  # as many λ steps as the budget allows
    assert rec["counts"]["total"]["sampling_steps"] > 0
    assert rec["estimate"]["reference"] == pytest.approx(-2 * __import__("math").log(0.5))
    ode = run_entry(entries["tiny-ode"], 3, tmp_path)
    assert ode["estimate"]["method"] == "Jarzynski forward" and ode["seed"] == 3


def test_run_benchmarks_writes_json_and_markdown_and_merges(catalog, tmp_path):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    out_json.write_text(json.dumps({"runs": ["old format"]}))
    recs = run_benchmarks(["both"], out_json, out_md, catalog=catalog, isolate=False,
                          run_root=tmp_path / "runs")
    assert [r["method"] for r in recs] == ["feat", "switching"]
    data = json.loads(out_json.read_text())
    assert data["previous_format"] == {"runs": ["old format"]} and len(data["records"]) == 2
    run_benchmarks(["tiny-switching"], out_json, out_md, catalog=catalog, isolate=False,
                   seeds=[1])
    data = json.loads(out_json.read_text())
    assert [(r["entry"], r["seed"]) for r in data["records"]] == [
        ("tiny-feat", 0), ("tiny-switching", 0), ("tiny-switching", 1)]
    md = out_md.read_text()
    assert md.count("| tiny |") == 3 and "CPUs" in md


def test_failures_are_recorded_not_raised(tmp_path):
    entry = BenchEntry("missing", tmp_path / "nowhere", "feat")
    recs = run_benchmarks([entry], isolate=False)
    assert "ConfigError" in recs[0]["error"]
    assert "failed" in markdown_table(recs)


def test_main_lists_the_catalog(catalog, capsys):
    assert main(["--list", "--catalog", str(catalog)]) == 0
    assert "tiny-switching" in capsys.readouterr().out


def test_isolated_run_in_a_fresh_process(catalog, tmp_path):
    (rec,) = run_benchmarks(["tiny-switching"], catalog=catalog, run_root=tmp_path)
    assert "error" not in rec and rec["threads"] == 1 and rec["memory_mib"]["rss_mib"] > 0


def test_end_state_sampling_cost_enters_the_record(catalog, tmp_path, monkeypatch):
    """Samples made by MD/HMC (metadata['sampling_cost']) are charged to the record, as in
    `feat run`, so force budgets compare whole methods."""
    import feat.specs

    build = feat.specs.build_problem

    def with_cost(system, gen):
        problem = build(system, gen)
        problem.metadata["sampling_cost"] = {"gradient_evals": 1234, "sampling_steps": 1234}
        return problem

    monkeypatch.setattr(feat.specs, "build_problem", with_cost)
    entries, _ = load_catalog(catalog)
    rec = run_entry(entries["tiny-switching"], 0, tmp_path)
    phase = rec["counts"]["phases"]["end-state sampling"]
    assert phase["gradient_evals"] == 1234 and phase["sampling_steps"] == 1234
    assert rec["estimator_evals"] == rec["counts"]["phases"]["switching"]["energy_evals"]


def test_two_runners_sharing_one_file_keep_each_others_records(catalog, tmp_path, monkeypatch):
    """Each write merges into the file as it is then (not as it was when the runner started),
    so a second `feat bench` writing meanwhile loses nothing."""
    out_json = tmp_path / "b.json"
    run_benchmarks(["tiny-switching"], out_json, catalog=catalog, isolate=False, seeds=[0])
    first = json.loads(out_json.read_text())["records"]
    from feat import bench

    writes = []
    real = bench._save

    def other_runner_writes_first(path, md, records, merge):
        if not writes:  # another process finishes its entry just before this one's write
            real(path, None, [{**first[0], "seed": 7}], True)
        writes.append(1)
        real(path, md, records, merge)

    monkeypatch.setattr(bench, "_save", other_runner_writes_first)
    run_benchmarks(["tiny-switching"], out_json, catalog=catalog, isolate=False, seeds=[1])
    assert sorted(r["seed"] for r in json.loads(out_json.read_text())["records"]) == [0, 1, 7]


def test_show_prints_the_recorded_rows_without_running(catalog, tmp_path, capsys):
    out_json = tmp_path / "b.json"
    run_benchmarks(["tiny-switching"], out_json, catalog=catalog, isolate=False, seeds=[0])
    capsys.readouterr()
    assert main(["--show", "both", "--json", str(out_json), "--catalog", str(catalog)]) == 0
    out, err = capsys.readouterr()
    assert out.count("| tiny |") == 1 and "| switching |" in out
    assert "not run yet" in err and "tiny-feat" in err
    assert main(["--show", "--json", str(out_json), "--catalog", str(catalog)]) == 0
    assert capsys.readouterr().out.count("| tiny |") == 1
