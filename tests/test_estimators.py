"""Tests of feat.estimators: pymbar cross-checks, exact Gaussian work model, non-finite works,
result objects and I/O."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from pymbar import other_estimators as pymbar_est

from feat.estimators import (
    Bounds,
    FreeEnergyEstimate,
    OneSidedEstimate,
    bar,
    bootstrap,
    bounds,
    check_works,
    estimate,
    jarzynski_forward,
    jarzynski_reverse,
    load_works,
    save_works,
    to_pymbar,
)


def gaussian_works(delta_f: float, s: float, n_f: int, n_r: int, seed: int):
    """Crooks-consistent Gaussian works: W_f ~ N(ΔF + s²/2, s²), W_r ~ N(-ΔF + s²/2, s²)."""
    rng = np.random.default_rng(seed)
    work_f = rng.normal(delta_f + s**2 / 2, s, n_f)
    work_r = rng.normal(-delta_f + s**2 / 2, s, n_r)
    return work_f, work_r


# --- cross-checks against pymbar -------------------------------------------------------------

PYMBAR_CASES = [  # (ΔF, s, n_f, n_r, seed)
    (0.0, 0.5, 300, 300, 0),
    (2.0, 1.0, 500, 137, 1),
    (-3.0, 2.0, 137, 500, 2),
    (10.0, 4.0, 1000, 250, 3),
    (40.0, 6.0, 200, 900, 4),
]


@pytest.mark.parametrize("delta_f, s, n_f, n_r, seed", PYMBAR_CASES)
def test_bar_matches_pymbar(delta_f, s, n_f, n_r, seed):
    work_f, work_r = gaussian_works(delta_f, s, n_f, n_r, seed)
    ours = bar(work_f, work_r)
    ref = pymbar_est.bar(work_f, work_r, compute_uncertainty=True, uncertainty_method="BAR")
    assert ours[0] == pytest.approx(ref["Delta_f"], abs=1e-8)
    assert ours[1] == pytest.approx(ref["dDelta_f"], abs=1e-8)


@pytest.mark.parametrize("delta_f, s, n_f, n_r, seed", PYMBAR_CASES)
def test_jarzynski_matches_pymbar_exp(delta_f, s, n_f, n_r, seed):
    work_f, work_r = gaussian_works(delta_f, s, n_f, n_r, seed)
    fwd, rev = jarzynski_forward(work_f), jarzynski_reverse(work_r)
    ref_f, ref_r = pymbar_est.exp(work_f), pymbar_est.exp(work_r)
    assert fwd.delta_f == pytest.approx(ref_f["Delta_f"], abs=1e-10)
    assert fwd.sigma == pytest.approx(ref_f["dDelta_f"], abs=1e-10)
    assert rev.delta_f == pytest.approx(-ref_r["Delta_f"], abs=1e-10)  # pymbar: F_a - F_b
    assert rev.sigma == pytest.approx(ref_r["dDelta_f"], abs=1e-10)
    assert (fwd.n, rev.n) == (n_f, n_r)


def test_bar_with_posinf_matches_pymbar_with_huge_finite_work():
    """+inf works have exactly zero weight; a work of 600 kT has weight e^-600 ~ 1e-261."""
    work_f, work_r = gaussian_works(1.0, 1.5, 400, 250, seed=5)
    work_f[:7], work_r[:3] = np.inf, np.inf
    proxy_f, proxy_r = (
        np.where(np.isinf(work_f), 600.0, work_f),
        np.where(np.isinf(work_r), 600.0, work_r),
    )
    ref = pymbar_est.bar(proxy_f, proxy_r)
    ours = bar(work_f, work_r)
    assert ours == pytest.approx((ref["Delta_f"], ref["dDelta_f"]), abs=1e-8)


def test_to_pymbar_feeds_pymbar_directly():
    work_f, work_r = gaussian_works(1.0, 1.0, 50, 40, seed=6)
    kwargs = to_pymbar(work_f, work_r)
    assert set(kwargs) == {"w_F", "w_R"} and kwargs["w_F"].dtype == np.float64
    assert pymbar_est.bar(**kwargs)["Delta_f"] == pytest.approx(bar(work_f, work_r)[0], abs=1e-8)


# --- exact Gaussian work model ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [10, 11, 12, 13, 14])
def test_bar_gaussian_model_z_score(seed):
    delta_f = 3.0
    work_f, work_r = gaussian_works(delta_f, 2.0, 1000, 600, seed)
    result = estimate(work_f, work_r, reference=delta_f, seed=seed)
    assert result.method == "BAR"
    assert abs(result.z) < 3.0
    assert result.bounds.contains(delta_f)
    assert result.bounds.gap == pytest.approx(result.bounds.upper - result.bounds.lower)
    assert result.bounds.gap > 0
    assert result.sigma_bootstrap == pytest.approx(result.sigma, rel=0.3)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_jarzynski_gaussian_model_calibrated_over_replicas(direction):
    """Over 400 replicas: the mean estimate is within 3 standard errors of the exact ΔF (the
    O(1/N) bias is ~0.5 SE here) and the spread matches the mean delta-method σ."""
    delta_f, n_rep = -1.0, 400
    pick = 0 if direction == "forward" else 1
    one_sided = jarzynski_forward if direction == "forward" else jarzynski_reverse
    runs = [one_sided(gaussian_works(delta_f, 1.0, 500, 500, seed)[pick]) for seed in range(n_rep)]
    estimates = np.array([run.delta_f for run in runs])
    spread = estimates.std(ddof=1)
    assert abs((estimates.mean() - delta_f) / (spread / np.sqrt(n_rep))) < 3.0
    assert spread / np.mean([run.sigma for run in runs]) == pytest.approx(1.0, abs=0.2)
    assert all(0.0 < run.ess <= 1.0 for run in runs)


def test_bar_asymptotic_sigma_is_calibrated_over_replicas():
    """Spread of BAR over 300 independent replicas vs its mean asymptotic σ, and no bias."""
    delta_f, n_rep = 1.5, 300
    runs = [bar(*gaussian_works(delta_f, 1.5, 200, 120, seed)) for seed in range(n_rep)]
    results = np.array(runs)
    spread, mean_sigma = results[:, 0].std(ddof=1), results[:, 1].mean()
    assert spread / mean_sigma == pytest.approx(1.0, abs=0.2)  # sd of a sd ~ 4% here
    assert abs((results[:, 0].mean() - delta_f) / (spread / np.sqrt(n_rep))) < 3.0


def test_identical_zero_works_give_zero():
    assert bar(np.zeros(10), np.zeros(3)) == (0.0, 0.0)
    assert jarzynski_forward(np.zeros(4)).ess == 1.0


# --- bounds and bootstrap ---------------------------------------------------------------------


def test_bounds_values_and_missing_sides():
    b = bounds([1.0, 3.0], [0.0, -1.0])
    assert b == Bounds(lower=0.5, upper=2.0, gap=1.5)
    assert bounds([1.0, 3.0], None) == Bounds(upper=2.0)
    assert bounds(None, [1.0]) == Bounds(lower=-1.0)
    assert bounds([1.0, np.inf], [1.0]).upper == np.inf
    assert bounds([1.0], [np.inf, 1.0]).lower == -np.inf


def test_bootstrap_reproducible_and_leaves_global_rng_alone():
    work_f, work_r = gaussian_works(0.5, 1.0, 300, 200, seed=30)
    state = np.random.get_state()[1].copy()
    a = bootstrap(work_f, work_r, lambda f, r: bar(f, r)[0], n_bootstrap=50, seed=7)
    b = bootstrap(work_f, work_r, lambda f, r: bar(f, r)[0], n_bootstrap=50, seed=7)
    assert a == b and a > 0
    assert np.array_equal(np.random.get_state()[1], state)
    one = bootstrap(work_f, None, lambda f, r: jarzynski_forward(f).delta_f, n_bootstrap=50)
    assert one == pytest.approx(jarzynski_forward(work_f).sigma, rel=0.3)


def test_bootstrap_is_inf_when_a_resample_has_no_finite_work():
    work_f = np.array([0.3] + [np.inf] * 49)
    assert bootstrap(work_f, None, lambda f, r: jarzynski_forward(f).delta_f) == np.inf


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_bootstrap"):
        bootstrap([1.0], None, lambda f, r: 0.0, n_bootstrap=1)
    with pytest.raises(ValueError, match="neither"):
        bootstrap(None, None, lambda f, r: 0.0)


# --- non-finite works and input validation ----------------------------------------------------


def test_posinf_counted_and_reduces_ess():
    work_f, work_r = gaussian_works(0.0, 1.0, 200, 200, seed=40)
    clean = jarzynski_forward(work_f)
    with_inf = jarzynski_forward(np.concatenate([work_f, np.full(50, np.inf)]))
    assert (with_inf.n, with_inf.n_posinf) == (250, 50)
    assert with_inf.ess == pytest.approx(clean.ess * 200 / 250)
    assert with_inf.delta_f == pytest.approx(clean.delta_f + np.log(250 / 200))
    result = estimate(np.concatenate([work_f, [np.inf] * 50]), work_r, n_bootstrap=0)
    assert result.n_f == 250 and result.n_posinf == 50 and result.n_nonfinite == 50
    assert "50 non-finite" in result.summary()


def test_nan_raises_by_default_with_count_and_indices():
    with pytest.raises(ValueError, match=r"work_f contains 2 NaN.*indices \[1, 3\]"):
        check_works([0.0, np.nan, 1.0, np.nan])
    with pytest.raises(ValueError, match="work_r contains 1 NaN"):
        estimate([0.0, 1.0], [np.nan, 1.0])


def test_nan_policy_drop_drops_and_counts():
    works = check_works([0.0, np.nan, 1.0, np.nan, np.inf], nan_policy="drop")
    assert works.values.tolist() == [0.0, 1.0, np.inf]
    assert (works.n_nan_dropped, works.n_posinf, works.n) == (2, 1, 3)
    result = estimate(
        [0.0, np.nan, 1.0], [0.5, 0.2, np.nan, np.nan], nan_policy="drop", n_bootstrap=0
    )
    assert result.n_nan_dropped == (1, 2) and (result.n_f, result.n_r) == (2, 2)
    assert result.n_nonfinite == 3 and "3 non-finite" in result.summary()


@pytest.mark.parametrize(
    "work, match",
    [
        ([0.0, -np.inf], "-inf"),
        ([], "empty"),
        (np.zeros((3, 2)), r"1-D.*\(3, 2\)"),
        ([np.inf, np.inf], "all 2 works are \\+inf"),
        ([np.nan, np.nan], "NaN"),
        (["a", "b"], "real numbers"),
    ],
)
def test_invalid_works_raise(work, match):
    with pytest.raises(ValueError, match=match):
        check_works(work, nan_policy="raise")
    with pytest.raises(ValueError, match=match):
        estimate(work, [0.0], n_bootstrap=0)


def test_all_nan_with_drop_raises_and_bad_policy_raises():
    with pytest.raises(ValueError, match="all 2 works are NaN"):
        check_works([np.nan, np.nan], nan_policy="drop")
    with pytest.raises(ValueError, match="nan_policy"):
        check_works([1.0], nan_policy="omit")


def test_torch_tensor_input_is_float64():
    work = torch.tensor([0.1, 0.2, float("inf")], dtype=torch.float32, requires_grad=True)
    works = check_works(work * 1.0)
    assert works.values.dtype == np.float64 and works.n_posinf == 1
    assert not works.values.flags.writeable


def test_estimate_needs_a_direction_and_finite_reference():
    with pytest.raises(ValueError, match="got neither"):
        estimate()
    with pytest.raises(ValueError, match="reference"):
        estimate([0.0], reference=float("nan"))


def test_bar_rejects_bad_solver_arguments():
    with pytest.raises(ValueError, match="tol"):
        bar([0.0], [0.0], tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        bar([0.0], [0.0], max_iter=0)


# --- result object ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bar_result() -> FreeEnergyEstimate:
    work_f, work_r = gaussian_works(0.0, 1.0, 400, 300, seed=50)
    return estimate(work_f, work_r, reference=0.0, reference_exact=True, n_bootstrap=50)


def test_summary_says_exact_only_for_an_exact_reference(bar_result):
    """An MBAR value is a reference with its own error, not the exact answer: say which."""
    work_f, work_r = gaussian_works(0.0, 1.0, 400, 300, seed=50)
    mbar = estimate(work_f, work_r, reference=0.0, n_bootstrap=50)
    assert "(reference: 0, z = " in mbar.summary() and "exact" not in mbar.summary()
    assert "(exact: 0, z = " in bar_result.summary()
    for est in (mbar, bar_result):
        again = FreeEnergyEstimate.from_dict(est.to_dict())
        assert again.reference_exact == est.reference_exact and again.summary() == est.summary()
    assert not estimate(work_f, reference=None, reference_exact=True).reference_exact


def test_summary_contains_the_essentials(bar_result):
    text = bar_result.summary()
    for piece in (
        "ΔF = ",
        "±",
        "kT",
        "(exact: 0",
        "BAR",
        "fwd",
        "rev",
        "bounds [",
        "gap",
        "ESS",
        "%",
        "0 non-finite",
    ):
        assert piece in text, (piece, text)
    assert str(bar_result) == text and "\n" not in text


def test_one_sided_results():
    work_f, work_r = gaussian_works(1.0, 1.0, 100, 80, seed=51)
    fwd = estimate(work_f, n_bootstrap=0)
    assert fwd.method == "Jarzynski forward" and fwd.reverse is None and fwd.n_r == 0
    assert fwd.delta_f == jarzynski_forward(work_f).delta_f and fwd.sigma_bootstrap is None
    assert "exact" not in fwd.summary() and "reference" not in fwd.summary()
    assert "rev" not in fwd.summary()
    rev = estimate(work_r=work_r)
    assert rev.method == "Jarzynski reverse" and rev.bounds.upper is None
    assert rev.delta_f == jarzynski_reverse(work_r).delta_f and rev.sigma_bootstrap > 0


def test_to_dict_from_dict_round_trip_through_json(bar_result):
    data = bar_result.to_dict()
    assert data["z"] == pytest.approx(bar_result.z)
    restored = FreeEnergyEstimate.from_dict(json.loads(json.dumps(data, allow_nan=False)))
    assert restored == bar_result
    assert isinstance(restored.forward, OneSidedEstimate)


def test_to_dict_encodes_infinities_as_strings():
    work_f, work_r = gaussian_works(0.0, 1.0, 50, 50, seed=52)
    work_f[0] = np.inf
    result = estimate(work_f, work_r, n_bootstrap=0)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["bounds"]["upper"] == "inf" and data["sigma_bootstrap"] is None
    assert FreeEnergyEstimate.from_dict(data) == result


# --- I/O ------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_atomic(tmp_path):
    work_f = np.array([0.5, np.inf, np.nan, -1.0])
    path = save_works(tmp_path / "works.npz", work_f, None, system="gmm40", seed=3)
    work_f2, work_r2, meta = load_works(path)
    np.testing.assert_array_equal(work_f2, work_f)
    assert work_r2 is None and meta == {"system": "gmm40", "seed": 3}
    save_works(path, torch.zeros(3), [1.0, 2.0])  # overwrite in place
    assert load_works(path).work_r.tolist() == [1.0, 2.0]
    assert os.listdir(tmp_path) == ["works.npz"]  # no temporary files left behind


def test_save_works_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_works(tmp_path / "w.npz", [0.0], None, bad=object())
    with pytest.raises(ValueError, match="neither"):
        save_works(tmp_path / "w.npz", None, None)
    assert os.listdir(tmp_path) == []


def test_summary_flags_unreliable_sigma():
    import numpy as np

    from feat.estimators import estimate as _estimate

    rng = np.random.default_rng(0)
    good = _estimate(rng.normal(1.5, 1.0, 2000), rng.normal(-0.5, 1.0, 2000), n_bootstrap=50)
    assert good.warnings == [] and "WARNING" not in good.summary()
    bad = _estimate(rng.normal(60.0, 30.0, 200), rng.normal(60.0, 30.0, 200), n_bootstrap=50)
    assert any("ESS below" in w for w in bad.warnings)
    assert "WARNING" in bad.summary() and bad.to_dict()["warnings"] == bad.warnings


# --- trajectories sharing start samples (cluster bootstrap) -----------------------------------

def clustered_works(n_starts: int, per_start: int, between: float, within: float, seed: int):
    """Forward works ``ΔF + c + e`` with a per-start part ``c ~ N(0, between²)`` shared by the
    ``per_start`` trajectories of a start and ``e ~ N(0, within²)``; the start labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_starts * per_start) % n_starts
    work = rng.normal(0.0, between, n_starts)[labels] + rng.normal(0.0, within, labels.size)
    return work, labels


def test_bootstrap_over_starts_is_honest_where_the_trajectory_bootstrap_is_not():
    """Shared starts make works correlated: over 200 independent replicates the spread of the
    forward estimate matches the cluster-bootstrap σ, while the per-trajectory σ is ~2× too
    small (design effect 1 + (k − 1) ρ = 4.2 here)."""
    fn = lambda f, r: jarzynski_forward(f).delta_f  # noqa: E731
    values, naive, clustered = [], [], []
    for seed in range(200):
        work, labels = clustered_works(40, 8, 0.5, 0.3, seed)
        values.append(fn(work, None))
        naive.append(bootstrap(work, None, fn, n_bootstrap=100, seed=seed))
        clustered.append(bootstrap(work, None, fn, n_bootstrap=100, seed=seed, groups_f=labels))
    spread = np.std(values, ddof=1)
    assert np.mean(clustered) == pytest.approx(spread, rel=0.2)
    assert np.mean(naive) < 0.6 * spread


def test_estimate_with_shared_starts_reports_them_and_the_larger_sigma():
    work_f, starts_f = clustered_works(50, 4, 0.6, 0.2, seed=3)
    work_r, starts_r = clustered_works(50, 4, 0.6, 0.2, seed=4)
    work_f, work_r = work_f + 0.3, work_r - 0.1
    plain = estimate(work_f, work_r, n_bootstrap=100)
    shared = estimate(work_f, work_r, n_bootstrap=100, starts_f=starts_f, starts_r=starts_r)
    assert shared.delta_f == plain.delta_f and shared.n_starts == (50, 50)
    assert shared.sigma == max(plain.sigma, shared.sigma_bootstrap) > 1.5 * plain.sigma
    assert "200 / 200 trajectories from 50 / 50 start samples" in shared.summary()
    assert FreeEnergyEstimate.from_dict(json.loads(json.dumps(shared.to_dict()))) == shared
    # one trajectory per start: exactly the ungrouped estimate (same bootstrap draws)
    own = estimate(work_f, work_r, n_bootstrap=100, starts_f=np.arange(200),
                   starts_r=np.arange(200))
    assert own == plain and own.n_starts is None


def test_shared_starts_follow_dropped_nans_and_reject_bad_labels():
    work, labels = clustered_works(30, 3, 0.5, 0.3, seed=5)
    work[[0, 31]] = np.nan
    est = estimate(work, None, n_bootstrap=50, nan_policy="drop", starts_f=labels)
    assert est.n_f == 88 and est.n_starts == (30, 0) and est.n_nan_dropped == (2, 0)
    with pytest.raises(ValueError, match="starts_f must be one integer start-sample label"):
        estimate(work, None, nan_policy="drop", starts_f=labels[:-1])
    with pytest.raises(ValueError, match="n_bootstrap"):
        estimate(np.nan_to_num(work), None, n_bootstrap=0, starts_f=labels)
