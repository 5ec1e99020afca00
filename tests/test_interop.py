"""Interop exports: the works CSV (pandas/alchemlyb) round-trips exactly, and pymbar's BAR on the
exported works (CSV or pymbar-npz) equals the ΔF in results.json."""

import csv
import json
import math

import numpy as np
import pytest
from pymbar import other_estimators

from feat.cli import main
from feat.config import resolve
from feat.estimators import read_works_csv, write_works_csv
from feat.estimators.io import WORKS_CSV_COLUMNS
from feat.pipeline import run

TINY = {
    "name": "tiny",
    "system": {"kind": "gaussian", "dim": 2, "n_samples_a": 600, "n_samples_b": 600},
    "fields": {"hidden": 16, "depth": 1},
    "training": {"steps": 40, "batch_size": 32},
    "transport": {"eps": 0.1, "n_points": 10, "n_forward": 120, "n_reverse": 90,
                  "batch_size": 60},
    "estimate": {"n_bootstrap": 5},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("interop") / "tiny"
    run(resolve(TINY), out, progress=False)
    return out


def test_csv_round_trips_exactly_with_nonfinite_works(tmp_path):
    rng = np.random.default_rng(0)
    w_f, w_r = rng.normal(2.0, 1.5, 7), rng.normal(-1.0, 0.7, 4)
    w_f[3] = math.inf
    path = write_works_csv(tmp_path / "w.csv", w_f, w_r, temperature=300)
    back = read_works_csv(path)
    np.testing.assert_array_equal(back.work_f, w_f)
    np.testing.assert_array_equal(back.work_r, w_r)
    assert back.metadata == {"energy_unit": "kT", "temperature": 300.0}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == WORKS_CSV_COLUMNS
    assert (rows[0]["direction"], rows[0]["from_lambda"], rows[0]["to_lambda"]) == \
        ("forward", "0.0", "1.0")
    assert (rows[-1]["direction"], rows[-1]["trajectory"], rows[-1]["from_lambda"]) == \
        ("reverse", "3", "1.0")
    one_way = read_works_csv(write_works_csv(tmp_path / "f.csv", w_f, None))
    assert one_way.work_r is None and one_way.metadata["temperature"] is None


def test_csv_input_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="needs work_f, work_r or both"):
        write_works_csv(tmp_path / "x.csv", None, None)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        write_works_csv(tmp_path / "x.csv", [1.0], [1.0], temperature=-3)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a works table: columns .* missing"):
        read_works_csv(tmp_path / "bad.csv")


def test_pymbar_bar_on_exported_works_equals_results(run_dir, tmp_path, capsys):
    delta_f = json.loads((run_dir / "results.json").read_text())["estimate"]["delta_f"]
    assert main(["export", str(run_dir), "--format", "csv", "--out", str(tmp_path / "w.csv")]) == 0
    works = read_works_csv(tmp_path / "w.csv")
    assert (len(works.work_f), len(works.work_r)) == (120, 90)
    ref = other_estimators.bar(works.work_f, works.work_r)
    assert ref["Delta_f"] == pytest.approx(delta_f, abs=1e-8)
    assert main(["export", str(run_dir), "--format", "pymbar-npz"]) == 0
    with np.load(run_dir / "pymbar.npz", allow_pickle=False) as d:
        ref = other_estimators.bar(d["w_F"], d["w_R"])
        assert ref["Delta_f"] == pytest.approx(float(d["Delta_f"]), abs=1e-8)
        assert float(d["Delta_f"]) == delta_f
        assert json.loads(str(d["results_json"]))["delta_f"] == delta_f
    assert "pymbar-npz export" in capsys.readouterr().err


def test_export_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("feat: error:") and "\n" not in err and "Traceback" not in err
