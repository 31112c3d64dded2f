"""Scenario sensitivities: the regression, the prior, point in time, persistence, real BTC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.calibration import BUCKETS
from aetheris_ray.data.schema import AssetData, SeriesInfo, bar_ts_from_dates, series_ts_from_dates
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features import compute_states
from aetheris_ray.features.build import input_history
from aetheris_ray.sensitivity import (
    CHANNELS,
    LEAD_BLOCKS,
    MIN_ROWS,
    Sensitivities,
    combine,
    derive_prior,
    estimate,
    fit_channel,
    format_table,
    forward_log_vol,
    hac_ols,
)

N = 1500
DATES = pd.date_range("2019-01-01", periods=N, freq="D")
BETA = 0.8  # planted elasticity of tomorrow's volatility to today's implied vol


def planted(n_iv: int = N - 200, seed: int = 0) -> AssetData:
    """Returns whose next-day volatility is ``exp(BETA * (log IV - mean))`` times 2%, with
    ``IV`` a persistent series known at each close (dated the day before, like real side series)."""
    rng = np.random.default_rng(seed)
    x = np.empty(N)
    x[0] = 0.0
    for t in range(1, N):
        x[t] = 0.98 * x[t - 1] + 0.06 * rng.standard_normal()
    known = np.concatenate([[np.nan], x[:-1]])  # the value dated D-1 is what bar D knows
    sigma = 0.02 * np.exp(BETA * np.nan_to_num(np.concatenate([[0.0], known[:-1]])))
    r = sigma * rng.standard_normal(N)
    r[0] = 0.0
    close = 100 * np.exp(np.cumsum(r))
    bars = pd.DataFrame({"ts": bar_ts_from_dates(DATES), "open": close, "high": close, "low": close,
                         "close": close, "volume": np.nan})
    iv_dates = DATES[N - n_iv:]
    iv = 60 * np.exp(x[N - n_iv:])
    series = {"implied_vol": pd.DataFrame({"ts": series_ts_from_dates(iv_dates), "value": iv})}
    info = {"implied_vol": SeriesInfo("implied_vol", "percent/year", "1D")}
    return AssetData("PLANT-USD", {"1D": bars}, series, info)


@pytest.fixture(scope="module")
def syn():
    return SyntheticSource(seed=3, assets=("SYN-BTC", "SYN-ETH"), start="2019-01-01", end="2023-06-30")


def test_lead_blocks_are_the_calibration_buckets():
    assert LEAD_BLOCKS == BUCKETS


def test_forward_log_vol_needs_every_return_of_the_block():
    r = np.array([np.nan, 0.1, np.nan, 0.2, 0.0, 0.1])
    y = forward_log_vol(r, np.full(6, 1e-6), (1, 2))
    assert np.isnan(y[0]) and np.isnan(y[1]) and np.isnan(y[4]) and np.isnan(y[5])
    assert y[2] == pytest.approx(0.5 * np.log(0.02)) and y[3] == pytest.approx(0.5 * np.log(0.005))
    floored = forward_log_vol(np.array([np.nan, 0.0, 0.0]), np.full(3, 1e-4), (1, 1))
    assert floored[0] == pytest.approx(np.log(1e-2))


def test_hac_ols_coefficients_and_white_covariance_without_lags():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(400), rng.standard_normal(400)])
    y = X @ [0.5, 2.0] + rng.standard_normal(400) * (1 + np.abs(X[:, 1]))
    beta, cov = hac_ols(X, y, 0)
    np.testing.assert_allclose(beta, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10)
    e = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    np.testing.assert_allclose(cov, bread @ (X.T * e**2) @ X @ bread, rtol=1e-10)
    _, cov_hac = hac_ols(X, y, 10)
    assert cov_hac.shape == (2, 2) and np.all(np.linalg.eigvalsh(cov_hac) > 0)


def test_combine_weights_data_and_prior_by_precision():
    b, s = combine(np.array([1.0, -1.0]), np.diag([0.04, 100.0]), np.array([0.0, 0.5]), np.array([0.2, 0.1]))
    assert b[0] == pytest.approx(0.5) and s[0] == pytest.approx(np.sqrt(0.02))
    assert b[1] == pytest.approx((-1 / 100 + 0.5 / 0.01) / (1 / 100 + 1 / 0.01))  # a noisy estimate barely moves it


def test_a_planted_effect_is_recovered():
    fit = estimate(planted(), DATES[-1]).fits["implied_vol"]
    assert fit.source == "data" and np.all(fit.n_rows > 1000)
    t = fit.data_beta[:, 0] / fit.data_se[:, 0]
    assert np.all(t[:5] > 3) and t[5] > 0  # up to 30 days ahead (IV forgets 2% a day: 30-90 days is faint)
    # lead 1 is set by today's implied vol exactly; longer blocks by its decaying forecast (0.98 per day)
    assert abs(fit.data_beta[0, 0] - BETA) < 3 * fit.data_se[0, 0]
    assert abs(fit.data_beta[1, 0] - BETA * 0.98) < 3 * fit.data_se[1, 0]
    # the posterior lies between the data estimate and the prior, nearer the more precise one
    prior = CHANNELS["implied_vol"].prior_mean[0]
    assert np.all((fit.beta[:, 0] - prior) * (fit.data_beta[:, 0] - fit.beta[:, 0]) >= 0)
    assert np.all(fit.sd[:, 0] < fit.data_se[:, 0])


def test_estimates_are_point_in_time():
    data = planted()
    origin = DATES[1200]
    before = estimate(data, origin)
    # rewrite every price and implied vol after the origin's close
    bars = data.bars["1D"].copy()
    later = bars.index[1201:]
    bars.loc[later, ["open", "high", "low", "close"]] *= np.exp(np.linspace(0.0, 3.0, later.size))[:, None]
    iv = data.series["implied_vol"].copy()
    iv.loc[iv["ts"] > bars["ts"].iloc[1200], "value"] = 300.0
    after = estimate(AssetData(data.asset, {"1D": bars}, {"implied_vol": iv}, data.info), origin)
    for name in CHANNELS:
        a, b = before.fits[name], after.fits[name]
        for field in ("beta", "sd", "data_beta", "data_se", "n_rows", "x_range"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # rows run from the first bar that knows an implied vol (201: the value dated 200) to the last
    # whose block is known at the origin (1200 - last day of the block)
    np.testing.assert_array_equal(before.fits["implied_vol"].n_rows, [1200 - b - 201 + 1 for _, b in LEAD_BLOCKS])


def test_an_asset_without_the_series_gets_the_prior(syn):
    sens = estimate(syn.history("SYN-ETH"), "2023-06-30")
    for name, ch in CHANNELS.items():
        fit = sens.fits[name]
        assert fit.source == "prior" and np.all(fit.n_rows == 0) and np.all(np.isnan(fit.data_beta))
        np.testing.assert_array_equal(fit.beta, np.broadcast_to(ch.prior_mean, fit.beta.shape))
        np.testing.assert_array_equal(fit.sd, np.broadcast_to(ch.prior_sd, fit.sd.shape))


def test_short_history_gets_the_prior_block_by_block():
    fit = estimate(planted(n_iv=110), DATES[-1]).fits["implied_vol"]
    # 108 usable rows: enough for blocks spanning at most 27 days, not for 31-90
    assert fit.source == "data+prior"
    assert np.all(np.isfinite(fit.data_beta[:5])) and np.isnan(fit.data_beta[5, 0])
    assert fit.beta[5, 0] == CHANNELS["implied_vol"].prior_mean[0]
    few = estimate(planted(n_iv=MIN_ROWS), DATES[-1]).fits["implied_vol"]
    assert few.source == "prior"


def test_synthetic_btc_has_data_estimates_with_the_expected_signs(syn):
    sens = estimate(syn.history("SYN-BTC"), "2023-06-30")
    iv = sens.fits["implied_vol"]
    assert iv.source == "data" and np.all(iv.data_beta[:, 0] / iv.data_se[:, 0] > 2)  # IV tracks the true vol
    text = format_table(sens)
    assert "implied_vol" in text and "inventory_down" in text and len(text.splitlines()) == 2 + 3 * len(LEAD_BLOCKS)


def test_round_trip_through_json_and_refusal_of_other_priors(syn):
    import json

    sens = estimate(syn.history("SYN-BTC"), "2023-06-30")
    back = Sensitivities.from_dict(json.loads(json.dumps(sens.to_dict(), allow_nan=False)))
    assert back.asset == sens.asset and back.origin == sens.origin
    for name in CHANNELS:
        for field in ("beta", "sd", "data_beta", "data_se", "n_rows", "x_range"):
            np.testing.assert_array_equal(getattr(back.fits[name], field), getattr(sens.fits[name], field))
    d = sens.to_dict()
    d["channels"]["implied_vol"]["log_iv"]["prior"] = [0.9, 0.1]
    with pytest.raises(ValueError, match="written with prior"):
        Sensitivities.from_dict(d)


def test_input_history_gives_the_states_indices_bitwise(syn):
    data = syn.history("SYN-BTC")
    hist = input_history(data, "2023-06-30")
    dates = data.daily_close().index
    picks = [400, 700, 1000, len(dates) - 1]
    states = compute_states(data, [dates[i] for i in picks])
    for i, s in zip(picks, states):
        for name in ("gamma_squeeze", "inventory_unwind", "basis_pressure"):
            v = s.mm_indices[name]
            assert (np.isnan(hist[name][i]) if v is None else hist[name][i] == v)
        assert hist["rv_short"][i] == s.descriptors["rv_short"] and hist["ret"][i] == s.returns[-1]
        assert hist["rv_long"][i] == pytest.approx(s.descriptors["rv_long"], rel=1e-12)


def test_bad_names_are_refused(syn):
    with pytest.raises(InvalidInput, match=r"channels \['vix'\] are not known; valid: implied_vol, inventory"):
        estimate(syn.history("SYN-ETH"), "2023-06-30", channels=("vix",))
    with pytest.raises(InvalidInput, match=r"indices \['gamma'\] are not known"):
        input_history(syn.history("SYN-ETH"), "2023-06-30", indices=("gamma",))


def test_fit_channel_without_variation_keeps_the_prior():
    n = 400
    hist = {"ret": np.r_[np.nan, np.full(n - 1, 0.01)], "rv_short": np.full(n, 0.01), "rv_long": np.full(n, 0.01),
            "iv": np.full(n, 50.0), "inventory_unwind": np.zeros(n)}
    for name, ch in CHANNELS.items():
        fit = fit_channel(ch, hist)
        assert fit.source == "prior" and np.all(fit.n_rows > 0)


@pytest.mark.slow
def test_real_btc_is_data_estimated_and_the_inventory_prior_is_reproduced(shared_data):
    import warnings

    from aetheris_ray.data.csv_connector import CsvSource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real files' data-quality warnings
        btc = CsvSource(shared_data).history("BTC-USD")
    sens = estimate(btc, "2024-12-09")
    assert sens.fits["implied_vol"].source == "data" and sens.fits["inventory"].source == "data"
    iv = sens.fits["implied_vol"]
    assert np.all(iv.data_beta[:5, 0] / iv.data_se[:5, 0] > 2)  # implied vol leads realised vol up to 30 days
    up = sens.fits["inventory"]
    assert np.all(up.data_beta[:5, 0] / up.data_se[:5, 0] > 2)  # crowded longs: more volatility
    mean, sd = derive_prior(btc)
    assert (tuple(mean), tuple(sd)) == (CHANNELS["inventory"].prior_mean, CHANNELS["inventory"].prior_sd)
    # before DVOL exists (2022-11) the implied-vol channel is the prior
    assert estimate(btc, "2021-12-31", channels=("implied_vol",)).fits["implied_vol"].source == "prior"
