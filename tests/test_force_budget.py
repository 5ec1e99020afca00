"""systems/aldp_s/force_budget.py: FEAT's force evaluations against MBAR's at equal σ."""

import json

import pytest

from tests.scripts import load_script


def _module():
    return load_script("aldp_s/force_budget.py")


def _write(tmp_path, phases):
    run = tmp_path / "run"
    run.mkdir()
    total = sum(v["gradient_evals"] for v in phases.values())
    (run / "results.json").write_text(json.dumps({
        "estimate": {"delta_f": -29.4, "sigma": 0.04},
        "accounting": {"phases": phases, "total": {"gradient_evals": total}}}))
    ref = tmp_path / "reference.json"
    windows = [{"md_steps": 1_000} for _ in range(3)]
    ref.write_text(json.dumps({"spec": {"equilibration_steps": 200},
                               "reference": {"mbar": {"delta_f": -29.45, "sigma": 0.02},
                                             "windows": windows}}))
    return run, ref


def test_ratio_scales_mbar_production_to_feats_sigma(tmp_path):
    phases = {"end-state sampling": {"gradient_evals": 600}, "transport": {"gradient_evals": 150}}
    out = _module().budget(*_write(tmp_path, phases))
    # σ_MBAR / σ_FEAT = 1/2: MBAR needs a quarter of its production, plus its equilibration
    mbar_equal = 3 * (200 + 800 * 0.25)
    assert out["mbar"]["force_evals_at_feat_sigma"] == mbar_equal
    assert out["ratio_feat_over_mbar_at_equal_sigma"] == pytest.approx(750 / mbar_equal)


def test_a_run_without_end_state_accounting_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="end-state sampling"):
        _module().budget(*_write(tmp_path, {"transport": {"gradient_evals": 1}}))


def test_a_bench_record_is_read_by_entry_name(tmp_path):
    run, ref = _write(tmp_path, {"end-state sampling": {"gradient_evals": 600}})
    phases = {"end-state sampling": {"gradient_evals": 600}, "switching": {"gradient_evals": 150}}
    record = {"entry": "aldp_s-switching-internal", "method": "switching", "seed": 0,
              "date": "2026-12-07T06:00:00", "estimate": {"delta_f": -29.4, "sigma": 0.04},
              "counts": {"phases": phases, "total": {"gradient_evals": 750}}}
    older = {**record, "date": "2026-12-01T00:00:00", "counts": {
        "phases": phases, "total": {"gradient_evals": 1}}}
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"records": [older, record]}))
    out = _module().budget(bench, ref, "aldp_s-switching-internal")
    assert out["feat"]["method"] == "switching" and out["feat"]["force_evals"] == 750
    assert out["feat"]["command"] == "feat bench aldp_s-switching-internal --seeds 0"
    with pytest.raises(SystemExit, match="no record of bench entry"):
        _module().budget(bench, ref, "other")
