"""Works on disk (.npz), in pymbar's format, and as a CSV table for pandas/alchemlyb users."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ..storage import atomic_write, save_npz
from .works import as_work_array, check_works

__all__ = ["SavedWorks", "WORKS_CSV_COLUMNS", "load_works", "read_works_csv",
           "save_pymbar_npz", "save_works", "to_pymbar", "write_works_csv"]

FORMAT_VERSION = 1


class SavedWorks(NamedTuple):
    """Works read back by :func:`load_works`: ``work_f, work_r, metadata = load_works(path)``."""

    work_f: np.ndarray | None
    work_r: np.ndarray | None
    metadata: dict[str, Any]


def to_pymbar(work_f: ArrayLike, work_r: ArrayLike) -> dict[str, np.ndarray]:
    """Works in the form pymbar's two-state estimators take.

    Our works are already pymbar's reduced works (dimensionless, in kT, forward a -> b and
    reverse b -> a), so no conversion is needed:
    ``pymbar.other_estimators.bar(**to_pymbar(work_f, work_r))``.

    Parameters
    ----------
    work_f, work_r : array_like or torch.Tensor
        Shapes ``(n_f,)`` and ``(n_r,)``, validated by :func:`check_works` (NaN, ``-inf`` raise).
        pymbar does not handle ``+inf`` works; our :func:`bar` does.

    Returns
    -------
    dict
        ``{"w_F": float64 (n_f,), "w_R": float64 (n_r,)}``.
    """
    return {
        "w_F": np.array(check_works(work_f, "work_f").values),
        "w_R": np.array(check_works(work_r, "work_r").values),
    }


def save_works(
    path: str | os.PathLike, work_f: ArrayLike | None, work_r: ArrayLike | None, **metadata: Any
) -> Path:
    """Save raw works (non-finite values included) and JSON metadata to ``path`` (.npz), atomically.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so a reader never sees a half-written file. No pickles are stored.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; written exactly as given (no suffix is added).
    work_f, work_r : array_like or torch.Tensor or None
        Shapes ``(n_f,)`` and ``(n_r,)``, in kT; ``None`` for a direction not run.
    **metadata
        JSON-serialisable values (e.g. system, seed, eps, n_steps).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if work_f is None and work_r is None:
        raise ValueError("save_works needs work_f, work_r or both; got neither.")
    try:
        meta = json.dumps(metadata, allow_nan=True)
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable; {err}.") from None
    arrays = {"format_version": np.array(FORMAT_VERSION), "metadata": np.array(meta)}
    for name, work in (("work_f", work_f), ("work_r", work_r)):
        if work is not None:
            arrays[name] = as_work_array(work, name)
    return save_npz(path, arrays)


def load_works(path: str | os.PathLike) -> SavedWorks:
    """Read works saved by :func:`save_works`.

    Returns
    -------
    SavedWorks
        ``(work_f, work_r, metadata)``; float64 arrays of shape ``(n,)`` or ``None``.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"works file '{path}' does not exist; check the path, or run "
                                "'feat run' / 'feat estimate' first to write it.")
    with np.load(path, allow_pickle=False) as data:
        if "metadata" not in data.files:
            raise ValueError(f"{path} is not a works file written by save_works (no metadata).")
        work_f = np.array(data["work_f"], dtype=np.float64) if "work_f" in data.files else None
        work_r = np.array(data["work_r"], dtype=np.float64) if "work_r" in data.files else None
        metadata = json.loads(str(data["metadata"]))
    return SavedWorks(work_f, work_r, metadata)


# --- interoperability: alchemlyb/pandas (CSV) and pymbar (.npz) ------------------------------

WORKS_CSV_COLUMNS = ("direction", "trajectory", "from_lambda", "to_lambda", "work",
                     "energy_unit", "temperature")


def _temperature(temperature: float | None) -> str:
    if temperature is None:
        return ""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature > 0:
        raise ValueError(f"temperature must be a positive number of kelvin or None; got "
                         f"{temperature!r}.")
    return repr(float(temperature))


def _csv_rows(work_f, work_r, temperature: str):
    for direction, lam, work in (("forward", (0.0, 1.0), work_f), ("reverse", (1.0, 0.0), work_r)):
        if work is None:
            continue
        for k, w in enumerate(as_work_array(work, f"work_{direction[0]}")):
            yield [direction, k, lam[0], lam[1], repr(float(w)), "kT", temperature]


def write_works_csv(path: str | os.PathLike, work_f: ArrayLike | None, work_r: ArrayLike | None,
                    *, temperature: float | None = None) -> Path:
    """Write works as a long-format CSV table that pandas and alchemlyb users can read.

    One row per trajectory, columns :data:`WORKS_CSV_COLUMNS`:

    ``direction``  "forward" (a → b, λ 0 → 1) or "reverse" (b → a, λ 1 → 0)
    ``trajectory`` 0-based index of the trajectory within its direction
    ``from_lambda``, ``to_lambda``  the end states as alchemlyb's λ values, a = 0.0, b = 1.0
    ``work``       the reduced work in kT (``repr`` precision: float64 round-trips exactly;
                   ``inf``/``nan`` are written as such)
    ``energy_unit`` always "kT", as in alchemlyb's ``DataFrame.attrs["energy_unit"]``
    ``temperature`` in K when the system defines one, else empty

    Why this layout: alchemlyb's FEP estimators take ``u_nk``, reduced potentials indexed by
    ``(time, fep-lambda)``, and have no estimator for non-equilibrium works. A long table
    with one work per row is what pandas reads without options, and it maps onto a two-state
    ``u_nk`` whose BAR is exactly BAR on the works: a forward trajectory is a "sample" of λ = 0
    with ``u(0) = 0, u(1) = W_f``; a reverse one a sample of λ = 1 with ``u(1) = 0,
    u(0) = W_r``. With pandas::

        df = pd.read_csv(path)
        fwd = df.direction == "forward"
        w_F, w_R = df.work[fwd].to_numpy(), df.work[~fwd].to_numpy()
        pymbar.other_estimators.bar(w_F, w_R)                       # pymbar directly, or
        u_nk = pd.DataFrame({0.0: df.work.where(~fwd, 0.0), 1.0: df.work.where(fwd, 0.0)})
        u_nk.index = pd.MultiIndex.from_arrays(
            [df.trajectory.astype(float), df.from_lambda], names=["time", "fep-lambda"])
        u_nk.attrs = {"temperature": df.temperature[0], "energy_unit": "kT"}
        alchemlyb.estimators.BAR().fit(u_nk).delta_f_.loc[0.0, 1.0]  # alchemlyb

    Parameters
    ----------
    path : destination (.csv), written atomically.
    work_f, work_r : (n_f,) and (n_r,) works in kT, or None for a direction not run.
    temperature : the temperature in K, if the system has one (None: the column is empty).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if work_f is None and work_r is None:
        raise ValueError("write_works_csv needs work_f, work_r or both; got neither.")
    rows = list(_csv_rows(work_f, work_r, _temperature(temperature)))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(WORKS_CSV_COLUMNS)
            out.writerows(rows)

    return atomic_write(path, write)


def read_works_csv(path: str | os.PathLike) -> SavedWorks:
    """Read a table written by :func:`write_works_csv`.

    Returns
    -------
    SavedWorks
        ``(work_f, work_r, metadata)``: float64 arrays in trajectory order (None for a
        direction without rows) and ``{"energy_unit": "kT", "temperature": K or None}``.
    """
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(WORKS_CSV_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a works table: columns {sorted(missing)} are "
                             f"missing; expected {', '.join(WORKS_CSV_COLUMNS)}.")
        rows = list(reader)
    works: dict[str, list[tuple[int, float]]] = {"forward": [], "reverse": []}
    for row in rows:
        if row["direction"] not in works or row["energy_unit"] != "kT":
            raise ValueError(f"{path}: rows need direction forward|reverse and energy_unit kT; "
                             f"got {row['direction']!r}, {row['energy_unit']!r}.")
        works[row["direction"]].append((int(row["trajectory"]), float(row["work"])))
    arrays = [np.array([w for _, w in sorted(v)], dtype=np.float64) if v else None
              for v in works.values()]
    temps = {row["temperature"] for row in rows} - {""}
    meta = {"energy_unit": "kT", "temperature": float(temps.pop()) if temps else None}
    return SavedWorks(arrays[0], arrays[1], meta)


def save_pymbar_npz(path: str | os.PathLike, work_f: ArrayLike, work_r: ArrayLike,
                    estimate: dict[str, Any] | None = None) -> Path:
    """Works and the estimate under pymbar's names, in one ``.npz`` (no pickles).

    Arrays: ``w_F`` (n_f,) and ``w_R`` (n_r,) in kT, ready for
    ``pymbar.other_estimators.bar(d["w_F"], d["w_R"])``; with ``estimate`` (the ``estimate``
    table of results.json, :meth:`FreeEnergyEstimate.to_dict`) also ``Delta_f`` and
    ``dDelta_f`` (ΔF = F_b − F_a and its σ in kT, the keys pymbar's ``bar`` returns) and
    ``results_json``, the whole table as JSON text.
    """
    arrays = dict(to_pymbar(work_f, work_r))
    if estimate is not None:
        arrays["Delta_f"] = np.array(estimate["delta_f"], dtype=np.float64)
        arrays["dDelta_f"] = np.array(
            np.nan if estimate.get("sigma") is None else estimate["sigma"], dtype=np.float64)
        arrays["results_json"] = np.array(json.dumps(estimate, allow_nan=True))
    return save_npz(path, arrays)
