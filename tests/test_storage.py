"""Atomic writes: nothing half-written survives a failure, the old version stays."""

import json

import numpy as np
import pytest

from feat.storage import atomic_write, save_npz, write_json


def test_failed_write_leaves_previous_file_and_no_temporaries(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"delta_f": 1.0})

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write('{"delta_f": 2')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"delta_f": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_save_npz_keeps_the_exact_name(tmp_path):
    path = save_npz(tmp_path / "works", {"w": np.arange(3.0)})
    assert path.name == "works" and np.load(path)["w"].tolist() == [0.0, 1.0, 2.0]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
