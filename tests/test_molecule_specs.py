"""Alanine-dipeptide system kinds (aldp_s, aldp_t) with tiny MD runs, and their run files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from feat.config import load_run_config
from feat.energies.states import dihedral
from feat.specs import KINDS, build_problem

ROOT = Path(__file__).resolve().parents[1]
PHI = (4, 6, 8, 14)


def _tiny(kind: str, cache: Path, **kw) -> dict:
    return {"kind": kind, "n_samples_a": 5, "n_samples_b": 5, "equilibration_steps": 500,
            "production_steps": 2000, "save_every": 20, "chunk_frames": 60,
            "cache_dir": str(cache), "progress": False, **kw}


@pytest.fixture(scope="module")
def aldp_s(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, build_problem(_tiny("aldp_s", cache), torch.Generator())


def test_aldp_s_builds_with_scores_and_metadata(aldp_s):
    _, p = aldp_s
    assert p.name == "aldp_s" and p.x_a.shape == (5, 22, 3) and p.x_b.shape == (5, 22, 3)
    assert p.x_a.dtype == torch.float64
    assert p.x_a.mean(1).abs().max() < 1e-12  # centred: the energies are translation-invariant
    u_a, s_a = p.energy_a.energy_and_score(p.x_a)
    assert torch.isfinite(u_a).all()
    assert torch.allclose(s_a, p.score_a, rtol=1e-3, atol=1e-2)  # same energy function
    assert len(p.metadata["atom_types"]) == 22 and p.metadata["phi_indices"] == list(PHI)
    # one force evaluation per MD step, equilibration included, both states
    assert p.metadata["sampling_cost"] == {"sampling_steps": 2 * 2500, "gradient_evals": 2 * 2500}
    # λ = 1 adds the (negative) polar solvation energy: u_b < u_a at the same configuration
    assert (p.energy_b(p.x_a) < u_a).all()


def test_aldp_s_reuses_its_cache_and_a_new_spec_does_not(aldp_s):
    cache, p = aldp_s
    again = build_problem(_tiny("aldp_s", cache), torch.Generator())
    assert torch.equal(again.x_a, p.x_a) and torch.equal(again.score_b, p.score_b)
    folders = sorted(d.name for d in cache.iterdir())
    assert len(folders) == 2 and all(f.startswith("aldp_s-lam") for f in folders)
    spec = KINDS["aldp_s"](**{k: v for k, v in _tiny("aldp_s", cache).items() if k != "kind"})
    changed = dataclasses.replace(spec, friction=2.0)
    longer = dataclasses.replace(spec, production_steps=4000)
    keys = {"lam": 0.0}
    assert changed.cache_path("aldp_s", "lam0", keys) != spec.cache_path("aldp_s", "lam0", keys)
    assert longer.cache_path("aldp_s", "lam0", keys) == spec.cache_path("aldp_s", "lam0", keys)


def test_aldp_s_asks_for_a_longer_run_when_samples_are_short(aldp_s):
    cache, _ = aldp_s
    with pytest.raises(ValueError, match="production_steps"):
        build_problem(_tiny("aldp_s", cache, n_samples_a=90), torch.Generator())


def test_aldp_t_samples_stay_in_their_basins(tmp_path):
    p = build_problem(_tiny("aldp_t", tmp_path), torch.Generator())
    phi_a, phi_b = dihedral(p.x_a, PHI), dihedral(p.x_b, PHI)
    assert ((phi_a > 0) & (phi_a < 2.15)).all()
    assert ((phi_b <= 0) | (phi_b >= 2.15)).all()
    assert torch.isfinite(p.energy_a(p.x_a)).all() and torch.isfinite(p.energy_b(p.x_b)).all()
    assert torch.isinf(p.energy_b(p.x_a)).all() and torch.isinf(p.energy_a(p.x_b)).all()
    # map_basins (internal coordinates): both states on b's φ arc, finite on each other's
    # samples where the other conformations allow it, state a's samples off b's arc refused
    mapped = build_problem(_tiny("aldp_t", tmp_path, coordinates="internal", map_basins=True),
                           torch.Generator())
    coords_a, coords_b = mapped.energy_a.coordinates, mapped.energy_b.coordinates
    assert coords_a.arc_map is not None and coords_b.arc_map is None
    assert coords_a.log_scale == pytest.approx(math.log((2 * math.pi - 2.15) / 2.15))
    for z in (mapped.x_a, mapped.x_b):  # the raw φ column of both lies on b's arc
        phi = dihedral(coords_b.inverse(z), PHI)
        assert ((phi <= 0) | (phi >= 2.15)).all()
    phi_a = dihedral(coords_a.inverse(mapped.x_a), PHI)  # mapped back: a's own basin
    assert torch.allclose(phi_a, dihedral(p.x_a, PHI), atol=1e-8)
    assert torch.isfinite(mapped.energy_a(mapped.x_a)).all()
    with pytest.raises(ValueError, match="map_basins"):
        build_problem(_tiny("aldp_t", tmp_path, map_basins=True), torch.Generator())


@pytest.mark.parametrize("name", ["aldp_s", "aldp_t"])
@pytest.mark.parametrize("preset", [None, "quick", "internal"])
def test_run_files_validate(name, preset):
    config = load_run_config(ROOT / "systems" / name, preset)
    system = dict(config.system)
    kind = system.pop("kind")
    system.pop("description", None)
    assert kind == name
    KINDS[kind](**system)  # every key is a valid key of the kind
