"""Stationarity layer and window kernels against pandas / loop references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.features import denormalise, normalise
from aetheris_ray.features.stationarity import (
    EW_WINDOW,
    HALFLIFE,
    SIGMA_FLOOR,
    ew_moments,
    past_windows,
    pct_rank,
    row_sum,
    safe_div,
    safe_log_ratio,
    trailing_sum,
    window_moments,
    zscore,
)


def test_ew_moments_match_pandas_ewm_adjusted():
    x = np.random.default_rng(0).standard_t(3, 250) * 0.03
    mu, sigma = ew_moments(past_windows(x, np.arange(1, x.size + 1), EW_WINDOW))  # window ending at each i
    ewm = pd.Series(x).ewm(halflife=HALFLIFE, adjust=True)
    np.testing.assert_allclose(mu, ewm.mean().to_numpy(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(sigma[1:], np.sqrt(ewm.var(bias=True).to_numpy()[1:]), rtol=1e-7)


def test_ew_window_drops_only_a_negligible_tail():
    x = np.random.default_rng(1).normal(0.001, 0.02, 2000)
    mu, sigma = ew_moments(x[None, -EW_WINDOW:])
    ewm = pd.Series(x).ewm(halflife=HALFLIFE, adjust=True)
    assert sigma[0] == pytest.approx(np.sqrt(ewm.var(bias=True).iloc[-1]), rel=2e-3)
    assert mu[0] == pytest.approx(ewm.mean().iloc[-1], abs=1e-4)


def test_flat_returns_get_the_sigma_floor(strict_warnings):
    mu, sigma = ew_moments(np.zeros((2, 50)))
    assert (mu == 0).all() and (sigma == SIGMA_FLOOR).all()
    mu, sigma = ew_moments(np.full((1, 5), np.nan))
    assert mu[0] == 0.0 and sigma[0] == SIGMA_FLOOR


def test_normalise_round_trip():
    x = np.array([[0.01, -0.03], [0.2, 0.0]])
    np.testing.assert_allclose(denormalise(normalise(x, 0.001, 0.02), 0.001, 0.02), x, rtol=1e-15)
    assert float(normalise(0.0, 0.0, 0.0)) == 0.0  # sigma floored, no division by zero


def test_window_helpers_agree_with_loops():
    x = np.random.default_rng(2).normal(size=120)
    x[[0, 7, 8, 60]] = np.nan
    ends = np.array([0, 3, 59, 119])
    pw = past_windows(x, ends, 10)
    for row, e in zip(pw, ends):
        ref = np.concatenate([np.full(max(0, 10 - e), np.nan), x[max(0, e - 10) : e]])
        assert np.array_equal(row, ref, equal_nan=True)
    total, count = trailing_sum(x, 5)
    assert total[10] == pytest.approx(np.nansum(x[6:11])) and count[10] == 3
    inclusive = past_windows(x, np.arange(1, x.size + 1), 5)  # the windows ending at each position
    assert np.array_equal(total, row_sum(np.where(np.isnan(inclusive), 0.0, inclusive)))  # the same additions
    lagged, _ = trailing_sum(x, 13, lag=1)
    strictly_past = past_windows(x, np.arange(x.size), 13)
    assert np.array_equal(lagged, row_sum(np.where(np.isnan(strictly_past), 0.0, strictly_past)))


def test_row_sum_gives_the_same_bits_alone_or_in_a_batch():
    a = np.random.default_rng(3).normal(size=(700, 365)) * 1e3
    batch = row_sum(a)
    assert all(row_sum(a[i : i + 1])[0] == batch[i] for i in range(0, 700, 37))


def test_window_moments_and_constant_windows(strict_warnings):
    a = np.array([[1.0, 2.0, np.nan, 3.0], [0.1, 0.1, 0.1, 0.1], [np.nan] * 4])
    n, mean, std = window_moments(a)
    assert n.tolist() == [3, 4, 0] and mean[0] == 2.0 and std[0] == pytest.approx(np.std([1, 2, 3]))
    assert std[1] == 0.0 and mean[2] == 0.0 and std[2] == 0.0


def test_pct_rank_mid_ranks_and_ties():
    past = np.array([[1.0, 2.0, 3.0, np.nan], [5.0, 5.0, 5.0, 5.0], [np.nan] * 4])
    p = pct_rank(past, np.array([2.0, 5.0, 7.0]))
    assert p.tolist() == [0.5, 0.5, 0.5]
    assert pct_rank(past[:1], np.array([10.0]))[0] == pytest.approx(3.5 / 4)
    assert np.isnan(pct_rank(past[:1], np.array([np.nan]))[0])


def test_zscore_min_obs_prior_and_constant(strict_warnings):
    past = np.array([np.arange(30.0), np.full(30, 4.0)])
    z = zscore(past, np.array([30.0, 4.0]), min_obs=20)
    window = np.arange(31.0)
    assert z[0] == pytest.approx((30 - window.mean()) / window.std()) and z[1] == 0.0
    short = np.full((1, 30), np.nan)
    assert np.isnan(zscore(short, np.array([1.0]), min_obs=20)[0])
    assert zscore(short, np.array([1.0]), min_obs=20, prior=(0.5, 0.25))[0] == pytest.approx(2.0)


def test_safe_division_and_log_ratio_never_warn(strict_warnings):
    assert safe_div(np.array([1.0, 1.0, np.nan]), np.array([0.0, 2.0, 1.0]))[:2].tolist() == [0.0, 0.5]
    out = safe_log_ratio(np.array([1.0, 0.0, -1.0, np.e]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert out[0] == 0.0 and np.isnan(out[1]) and np.isnan(out[2]) and out[3] == pytest.approx(1.0)
