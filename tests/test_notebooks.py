"""Every notebook runs top to bottom in tiny mode (FEAT_NOTEBOOK_TINY=1), from the repo root."""

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]


def _execute(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEAT_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("FEAT_RUNS_DIR", str(tmp_path))  # run directories go here
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("name", ["quickstart.ipynb", "lattice.ipynb"])
def test_notebook_runs(name, tmp_path, monkeypatch):
    _execute(name, tmp_path, monkeypatch)


@pytest.mark.slow  # OpenMM MD for the end states when data/ holds no cached samples (~1 min)
def test_molecule_notebook_runs(tmp_path, monkeypatch):
    _execute("molecule.ipynb", tmp_path, monkeypatch)
