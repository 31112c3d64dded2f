"""Scores: hand-computed values, scoringrules cross-checks, consistency between routes."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules as sr
from scipy import stats

from aetheris_ray.errors import InvalidInput
from aetheris_ray.evaluation.scores import coverage_interval, crps_ensemble, pinball_loss, pinball_quantile, width

LEVELS = np.array([0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95])


def test_pinball_quantile_by_hand():
    # y = 0.02; forecasts -0.1 .. 0.1 at the 7 levels
    q = np.array([-0.10, -0.05, -0.02, 0.00, 0.02, 0.05, 0.10])
    y = 0.02
    by_hand = [
        0.05 * 0.12, 0.10 * 0.07, 0.25 * 0.04, 0.50 * 0.02,  # y above q: level * (y - q)
        0.0, 0.10 * 0.03, 0.05 * 0.08,  # y at / below q: (1 - level) * (q - y)
    ]
    assert pinball_quantile(y, q, LEVELS) == pytest.approx((2 / 7) * sum(by_hand), rel=1e-14)


def test_pinball_matches_scoringrules():
    rng = np.random.default_rng(0)
    q = np.sort(rng.normal(size=(200, 7)), axis=1)
    y = rng.normal(size=200)
    ours = pinball_quantile(y, q, LEVELS)
    np.testing.assert_allclose(ours, sr.crps_quantile(y, q, LEVELS), rtol=1e-12)
    per_level = sr.quantile_score(y[:, None], q, LEVELS[None, :])
    np.testing.assert_allclose(ours, (2 / 7) * per_level.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(pinball_loss(y[:, None], q, LEVELS), per_level, rtol=1e-12, atol=1e-15)


def test_pinball_axis_and_broadcast():
    rng = np.random.default_rng(1)
    q = np.sort(rng.normal(size=(5, 7, 3)), axis=1)  # (origins, levels, horizons)
    y = rng.normal(size=(5, 3))
    a = pinball_quantile(y, q, LEVELS, axis=1)
    b = pinball_quantile(y, np.moveaxis(q, 1, -1), LEVELS)
    assert a.shape == (5, 3)
    np.testing.assert_array_equal(a, b)


def test_pinball_quantile_approximates_crps():
    # many levels -> QL tends to the CRPS of the distribution (closed form for a normal)
    lv = np.linspace(0.005, 0.995, 199)
    y = np.array([-1.3, 0.0, 0.4, 2.5])
    ql = pinball_quantile(y, np.broadcast_to(stats.norm.ppf(lv), (4, lv.size)), lv)
    np.testing.assert_allclose(ql, sr.crps_normal(y, 0.0, 1.0), rtol=2e-2)


def test_crps_ensemble_by_hand_and_scoringrules():
    x = np.array([0.1, 0.5, 0.9])
    # E|X - y| = (0.2 + 0.2 + 0.6) / 3; E|X - X'| (1/m^2) = 2 * (0.4 + 0.8 + 0.4) / 9
    assert crps_ensemble(0.3, x) == pytest.approx(1.0 / 3 - 0.5 * 3.2 / 9, rel=1e-14)
    assert crps_ensemble(0.3, x, estimator="fair") == pytest.approx(1.0 / 3 - 0.5 * 3.2 / 6, rel=1e-14)
    rng = np.random.default_rng(2)
    paths = rng.standard_t(4, size=(50, 400))
    y = rng.normal(size=50)
    for est in ("nrg", "fair"):
        np.testing.assert_allclose(crps_ensemble(y, paths, estimator=est), sr.crps_ensemble(y, paths, estimator=est),
                                   rtol=1e-10)
    # m_axis
    np.testing.assert_allclose(crps_ensemble(y, paths.T, m_axis=0), crps_ensemble(y, paths), rtol=1e-14)


def test_crps_ensemble_closed_form_consistency():
    # a large normal sample approaches the closed-form normal CRPS
    rng = np.random.default_rng(3)
    y = np.array([-2.0, 0.0, 0.7])
    paths = rng.normal(0.0, 1.0, size=(3, 200_000))
    np.testing.assert_allclose(crps_ensemble(y, paths, estimator="fair"), sr.crps_normal(y, 0.0, 1.0), rtol=1e-2)


def test_coverage_and_width():
    y = np.array([0.0, 1.0, 1.5, -1.0, np.nan])
    cov = coverage_interval(y, -1.0, 1.0)
    np.testing.assert_array_equal(cov, [1.0, 1.0, 0.0, 1.0, np.nan])  # ends are inside
    np.testing.assert_array_equal(width(np.array([-1.0, 0.2]), np.array([1.0, 0.5])), [2.0, 0.5 - 0.2])
    assert coverage_interval(y[:4], -1.0, 1.0, nan_policy="raise").astype(bool).tolist() == [True, True, False, True]


def test_nan_policy():
    q = np.array([[-1.0, 0.0, 1.0], [np.nan, 0.0, 1.0]])
    out = pinball_quantile(np.array([0.5, 0.5]), q, [0.1, 0.5, 0.9])
    assert np.isfinite(out[0]) and np.isnan(out[1])
    with pytest.raises(InvalidInput, match="fct holds 1 NaN"):
        pinball_quantile(np.array([0.5, 0.5]), q, [0.1, 0.5, 0.9], nan_policy="raise")
    with pytest.raises(InvalidInput, match="obs holds 1 NaN"):
        coverage_interval(np.array([np.nan]), 0.0, 1.0, nan_policy="raise")
    with pytest.raises(InvalidInput, match="nan_policy='omit' is not valid"):
        width(0.0, 1.0, nan_policy="omit")
    assert np.isnan(crps_ensemble(np.nan, np.array([0.0, 1.0])))
    assert np.isnan(crps_ensemble(0.0, np.array([np.nan, 1.0])))


def test_bad_levels():
    with pytest.raises(InvalidInput, match="2 level"):
        pinball_quantile(0.0, np.zeros(3), [0.1, 0.9])
    with pytest.raises(InvalidInput, match=r"must lie in \(0, 1\)"):
        pinball_quantile(0.0, np.zeros(2), [0.0, 0.9])
    with pytest.raises(InvalidInput, match="estimator='pwm' is not valid"):
        crps_ensemble(0.0, np.zeros(3), estimator="pwm")
