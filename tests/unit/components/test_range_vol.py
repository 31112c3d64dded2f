"""Range-based volatility: estimators against their formulas and Brownian paths, the bars' ranges
(flat days and gaps unobserved), range-GARCH against a loop, range-HAR's path and point-in-time fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.components.base import Context
from aetheris_ray.components.range_vol import (
    ANCHORS,
    FittedRangeGarch,
    RangeGarchVolatility,
    RangeHarVolatility,
    range_variance,
    variance_path,
)
from aetheris_ray.data.schema import AssetData, bar_ts_from_dates
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features import compute_state
from aetheris_ray.features.state import MarketState


def brownian_bars(n_days: int, sigma: float, steps: int, seed: int, vol_path: np.ndarray | None = None):
    """Daily O/H/L/C of a driftless Brownian log price sampled ``steps`` times a day (open = previous close)."""
    rng = np.random.default_rng(seed)
    s = np.full(n_days, sigma) if vol_path is None else np.asarray(vol_path)
    inc = rng.standard_normal((n_days, steps)) * (s[:, None] / np.sqrt(steps))
    path = np.cumsum(inc.ravel()).reshape(n_days, steps)
    start = np.concatenate([[0.0], path[:-1, -1]])
    full = np.concatenate([start[:, None], path], axis=1)
    return start, full.max(axis=1), full.min(axis=1), path[:, -1]


def test_estimators_match_their_formulas_on_hand_made_bars():
    o, h, lo, c = 100.0, 110.0, 95.0, 104.0
    hl, co = np.log(h / lo), np.log(c / o)
    assert range_variance([hl])[0] == pytest.approx(hl ** 2 / (4 * np.log(2)))
    assert range_variance([hl], [co], "garman_klass")[0] == pytest.approx(
        0.5 * hl ** 2 - (2 * np.log(2) - 1) * co ** 2)
    # NaN in, NaN out: an unobserved range is never a zero variance
    assert np.isnan(range_variance([np.nan])[0])
    assert np.isnan(range_variance([hl], [np.nan], "garman_klass")[0])
    with pytest.raises(ValueError, match="estimator"):
        range_variance([hl], estimator="yang_zhang")


@pytest.mark.parametrize("estimator", ["parkinson", "garman_klass"])
def test_estimators_are_unbiased_for_brownian_variance(estimator):
    sigma = 0.03
    o, h, lo, c = brownian_bars(2000, sigma, steps=10_000, seed=1)
    v = range_variance(h - lo, c - o, estimator)
    # discrete sampling biases the range down by O(1/sqrt(steps)): about 1.5 % at 10,000 steps
    assert np.mean(v) / sigma ** 2 == pytest.approx(1.0, abs=0.04)
    # and both are several times more efficient than the squared return
    assert np.var(v) < np.var((c - o) ** 2) / 3


def _data(close, high, low, dates):
    bars = pd.DataFrame({"ts": bar_ts_from_dates(dates), "open": close, "high": high, "low": low, "close": close,
                         "volume": np.nan})
    return AssetData(asset="RNG-USD", bars={"1D": bars})


def test_bar_ranges_flat_days_and_gaps_are_unobserved():
    n = 60
    dates = pd.date_range("2020-01-01", periods=n, freq="D")
    close = 100.0 * np.exp(np.cumsum(np.full(n, 0.001)))
    high, low = close * 1.02, close * 0.99
    high[10] = low[10] = close[10]  # a flat (stale) bar
    keep = np.ones(n, dtype=bool)
    keep[30:33] = False  # a 3-day gap: the bar after it spans more than its own day
    st = compute_state(_data(close[keep], high[keep], low[keep], dates[keep]), dates[-1])
    assert st.log_hl.shape == st.returns.shape
    expected = np.log(1.02 / 0.99)
    obs = np.isfinite(st.log_hl)
    np.testing.assert_allclose(st.log_hl[obs], expected)
    # returns[i] is the return into bar i + 1: bar 10 is flat, bar 30 of the kept bars follows the gap
    assert np.isnan(st.log_hl[9]) and np.isnan(st.log_hl[29])
    assert obs.sum() == st.returns.size - 2
    # ctx carries them aligned with the returns (rv_shock scales them like the returns)
    ctx = Context.from_states([st.with_(overrides={"rv_shock": 2.0})], lookback=100)
    np.testing.assert_allclose(ctx.log_hl[0, -5:], 2.0 * st.log_hl[-5:])
    assert np.all(np.isnan(ctx.log_hl[0, ~ctx.valid[0]]))


def _state(r, hl=None, co=None):
    return MarketState(asset="T", origin=pd.Timestamp("2024-01-01"), spot=1.0, returns=r, mu=0.0, sigma=0.02,
                       regime_label="normal", regime_vector=np.zeros(3), log_hl=hl, log_co=co)


def test_range_garch_filter_matches_a_loop():
    rng = np.random.default_rng(3)
    r = 0.02 * rng.standard_normal(300)
    hl = np.abs(0.03 * rng.standard_normal(300)) + 0.005
    hl[::17] = np.nan  # unobserved days fall back to r^2
    fit = FittedRangeGarch.from_params(RangeGarchVolatility(), omega=1e-5, alpha=0.12, beta=0.85, nu=5.0, k=0.9)
    ctx = Context.from_states([_state(r, hl, np.zeros(300))], lookback=300)
    v = fit.filter(ctx)[0]
    q = hl ** 2 / (4 * np.log(2))
    prev = np.mean(r[:30] ** 2)
    ref = np.empty(300)
    for t in range(300):
        x = 0.9 * q[t] if np.isfinite(q[t]) else r[t] ** 2
        prev = 1e-5 + 0.12 * x + 0.85 * prev
        ref[t] = prev
    np.testing.assert_allclose(v, ref, rtol=1e-10)


def test_range_garch_fit_recovers_a_persistent_model():
    n = 1500
    rng = np.random.default_rng(5)
    # a range-GARCH world: variance driven by the day's Brownian range
    v = np.empty(n)
    r = np.empty(n)
    hl = np.empty(n)
    var = 4e-4
    for t in range(n):
        v[t] = var
        o, h, lo, c = brownian_bars(1, np.sqrt(var), 200, seed=int(rng.integers(1 << 30)))
        r[t], hl[t] = c[0] - o[0], h[0] - lo[0]
        var = 2e-5 + 0.25 * hl[t] ** 2 / (4 * np.log(2)) + 0.70 * var
    fit = RangeGarchVolatility().fit(r, ranges=(hl, np.zeros(n)))
    a, b = float(fit.params["alpha"][0]), float(fit.params["beta"][0])
    assert 0.85 < a + b < 0.99 and a > 0.1, (a, b)
    assert fit.info["close_ratio"] == pytest.approx(1.0, abs=0.15)


def test_variance_path_running_means_hit_the_anchors():
    mv = np.array([[4e-4, 4.2e-4, 4.4e-4, 4.6e-4, 4.8e-4, 5e-4, 5.2e-4, 5.4e-4, 5.6e-4, 5.8e-4, 6e-4, 6e-4]])
    v = variance_path(mv, 90)
    running = np.cumsum(v, axis=1) / np.arange(1, 91)
    for a, m in zip(ANCHORS, mv[0]):
        assert running[0, a - 1] == pytest.approx(m, rel=1e-9)
    assert np.all(v > 0)


def test_range_har_fit_is_point_in_time_and_scaled_to_close_variance():
    o, h, lo, c = brownian_bars(1200, 0.03, 200, seed=7, vol_path=0.03 * np.exp(0.4 * np.sin(np.arange(1200) / 40)))
    r, hl, co = c - o, h - lo, c - o
    spec = RangeHarVolatility()
    fit = spec.fit(r[:1000], ranges=(hl[:1000], co[:1000]))
    # another future changes nothing fitted before it
    hl2 = hl.copy()
    hl2[1000:] *= 3.0
    again = spec.fit(r[:1000], ranges=(hl2[:1000], co[:1000]))
    for k in fit.params:
        np.testing.assert_array_equal(fit.params[k], again.params[k])
    # ranges longer than the returns are right-aligned (the fit input's contract)
    aligned = spec.fit(r[:1000], ranges=(np.concatenate([[0.5], hl[:1000]]), np.concatenate([[0.0], co[:1000]])))
    np.testing.assert_array_equal(aligned.params["coef"], fit.params["coef"])
    # one-step forecasts track the variance: mean forecast ~ mean squared return
    ctx = Context.from_states([_state(r[:1000], hl[:1000], co[:1000])], lookback=1000)
    f = fit.filter(ctx)[0, 30:-1]
    assert np.mean(f) / np.mean(r[31:1000] ** 2) == pytest.approx(1.0, abs=0.15)
    # and the term structure is a proper variance path
    cond = fit.condition(ctx)
    ev = fit.expected_variance(cond, 30)
    assert ev.shape == (1, 30) and np.all(ev > 0)
    np.testing.assert_allclose(ev[0, 0], cond["v1"][0])


def test_range_parts_without_ranges_fit_on_squared_returns_and_say_so():
    r = 0.02 * np.random.default_rng(2).standard_normal(600)
    fit = RangeHarVolatility().fit(r)
    assert "no_ranges" in fit.info and np.all(np.isfinite(fit.params["coef"]))
    ctx = Context.from_states([_state(r)], lookback=600)
    assert ctx.log_hl is None and np.all(np.isfinite(fit.filter(ctx)))
    g = RangeGarchVolatility().fit(r)
    assert np.isfinite(g.filter(ctx)).all() and g.info["close_ratio"] == 1.0


def test_young_asset_falls_back_and_bad_settings_are_refused():
    r = 0.02 * np.random.default_rng(4).standard_normal(100)
    assert "fallback" in RangeHarVolatility().fit(r).info
    assert "fallback" in RangeGarchVolatility().fit(r).info
    with pytest.raises(InvalidInput, match="estimator"):
        RangeHarVolatility(estimator="rogers")


def test_online_blend_of_range_parts_scores_a_context_shorter_than_its_window():
    from aetheris_ray.components.volatility import BlendVolatility, GarchVolatility

    o, h, lo, c = brownian_bars(400, 0.03, 100, seed=9)
    r, hl, co = c - o, h - lo, c - o
    spec = BlendVolatility(members=(GarchVolatility(), RangeGarchVolatility(), RangeHarVolatility()),
                           weighting="online", eval_days=250)
    fit = spec.fit(r, ranges=(hl, co))
    ctx = Context.from_states([_state(r[-40:], hl[-40:], co[-40:])], lookback=40)  # 40 < eval_days
    w = fit.weights(ctx)
    assert w.shape == (1, 3) and np.isclose(w.sum(), 1.0) and np.all(w > 0)
    assert np.all(np.isfinite(fit.filter(ctx)))


# -- pooled across assets -----------------------------------------------------------------------


def _panel(n_assets=4, n=900, seed=0):
    out = []
    for i in range(n_assets):
        vol = 0.02 * (1 + 0.5 * i) * np.exp(0.5 * np.sin(np.arange(n) / (30 + 7 * i)))
        o, h, lo, c = brownian_bars(n, 0.0, 60, seed=seed + i, vol_path=vol)
        out.append((c - o, (h - lo, c - o)))
    return out


def test_pooled_prior_is_the_within_regression_of_the_panel():
    from aetheris_ray.components.range_vol import ANCHORS, fit_pooled_prior, har_design

    panel = _panel()
    prior = fit_pooled_prior(panel)
    i = ANCHORS.index(7)
    xs, ys = [], []
    for r, rg in panel:
        X, y, _ = har_design(r, rg, 1000, "parkinson").rows(7)
        xs.append(X[:, 1:] - X[:, 1:].mean(axis=0))
        ys.append(y - y.mean())
    ref = np.linalg.lstsq(np.concatenate(xs), np.concatenate(ys), rcond=None)[0]
    np.testing.assert_allclose(prior.shared["prior"][i], ref, rtol=1e-10)
    assert prior.info["n_assets"] == 4


def test_pooled_fit_shrinks_a_young_asset_towards_the_panel_and_keeps_its_own_level(tmp_path):
    from aetheris_ray.components.base import load_component
    from aetheris_ray.components.range_vol import PooledHarVolatility, fit_pooled_prior

    prior = fit_pooled_prior(_panel())
    prior.save(tmp_path / "prior")
    loaded = load_component(tmp_path / "prior")  # the registry's round trip
    np.testing.assert_array_equal(loaded.shared["prior"], prior.shared["prior"])
    r, (hl, co) = _panel(1, 900, seed=50)[0]
    spec = PooledHarVolatility()
    old = spec.fit(r, ranges=(hl, co), artefact=loaded)
    young = spec.fit(r[-150:], ranges=(hl[-150:], co[-150:]), artefact=loaded)
    assert young.info["own_weight"][0] < 0.3 < old.info["own_weight"][0]
    gap_young = np.abs(young.params["coef"][0, :, 1:] - prior.shared["prior"]).max()
    gap_own = np.abs(RangeHarVolatility(min_obs=60).fit(r[-150:], ranges=(hl[-150:], co[-150:])).params["coef"][0, :, 1:]
                     - prior.shared["prior"]).max()
    assert gap_young < gap_own
    # every origin's fit carries the same shared prior, so fits stack
    both = type(old).stack([old, young])
    assert both.batch_size == 2 and np.array_equal(both.shared["prior"], prior.shared["prior"])
    # the level is the asset's own: a 4x more volatile copy gets ~4x the variance
    loud = spec.fit(2 * r, ranges=(hl * 2, co * 2), artefact=loaded)
    ctx = Context.from_states([_state(r, hl, co)], lookback=900)
    ctx2 = Context.from_states([_state(2 * r, 2 * hl, 2 * co)], lookback=900)
    ratio = loud.condition(ctx2)["mean_var"] / old.condition(ctx)["mean_var"]
    np.testing.assert_allclose(ratio, 4.0, rtol=1e-6)


def test_pooled_har_without_a_registered_prior_falls_back_to_range_har(tmp_path):
    from aetheris_ray import registry as reg
    from aetheris_ray.components.range_vol import PooledHarVolatility

    with pytest.warns(reg.FallbackWarning, match="fell back"):
        out = reg.resolve_artefact("volatility", "pooled_har", registry=reg.Registry(tmp_path / "empty"))
    assert out.fallback == "range_har" and "train one with `aetheris pool --component pooled_har" in out.why
    with pytest.raises(InvalidInput, match="aetheris pool"):
        PooledHarVolatility().fit(np.zeros(100))


def _csv_dir(root, panel, start="2019-01-01"):
    d = root / "daily"
    d.mkdir(parents=True)
    for i, (r, (hl, co)) in enumerate(panel):
        close = 100 * np.exp(np.cumsum(r))
        opn = close / np.exp(co)
        mid = np.log(close * opn) / 2
        high, low = np.exp(mid + hl / 2), np.exp(mid - hl / 2)
        high, low = np.maximum(high, np.maximum(opn, close)), np.minimum(low, np.minimum(opn, close))
        dates = pd.date_range(start, periods=r.size, freq="D")
        pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "open": opn, "high": high, "low": low,
                      "close": close}).to_csv(d / f"A{i}-USD.csv", index=False)
    return root


def test_aetheris_pool_sees_no_data_after_its_end(tmp_path, capsys, monkeypatch):
    import json

    from aetheris_ray.cli import main

    monkeypatch.setenv("AETHERIS_HOME", str(tmp_path / "home"))
    panel = _panel(3, 700)
    a = _csv_dir(tmp_path / "a", panel)
    changed = [(r.copy(), (hl.copy(), co.copy())) for r, (hl, co) in panel]
    for r, (hl, co) in changed:  # another future after day 600 (2020-08-23)
        r[600:] *= 3.0
        hl[600:] *= 3.0
    b = _csv_dir(tmp_path / "b", changed)
    outs = []
    for d in (a, b):
        assert main(["pool", "--data", str(d), "--end", "2020-08-01", "--format", "json", "--no-register"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1] and outs[0]["assets"] == 3
    assert main(["pool", "--data", str(b), "--end", "2020-12-01", "--format", "json", "--no-register"]) == 0
    later = json.loads(capsys.readouterr().out)
    assert later["pooled_har"] != outs[1]["pooled_har"] and later["pooled_garch"] != outs[1]["pooled_garch"]
    # registered, each is what `latest` resolves to
    assert main(["pool", "--data", str(a), "--end", "2020-08-01"]) == 0
    out = capsys.readouterr().out
    assert "registered as pooled_har-" in out and "registered as pooled_garch-" in out
    from aetheris_ray import registry as reg

    assert reg.resolve_artefact("volatility", "pooled_garch").version.startswith("pooled_garch-")
    assert main(["pool", "--data", str(a), "--end", "not-a-date"]) == 2
    assert "--end" in capsys.readouterr().err


def test_implied_vol_and_intraday_regressors_are_used_where_present_and_harmless_where_absent():
    n = 900
    vol = 0.03 * np.exp(0.6 * np.sin(np.arange(n) / 25))
    o, h, lo, c = brownian_bars(n, 0.0, 60, seed=21, vol_path=vol)
    r, hl, co = c - o, h - lo, c - o
    iv = np.full(n, np.nan)
    iv[300:] = 100 * np.sqrt(365) * vol[300:] * 1.1  # an informative index from day 300, with a premium
    spec = RangeHarVolatility(extras=("rv", "iv"))
    with_iv = spec.fit(r, ranges=(hl, co), iv=iv)
    assert with_iv.info["extras_used"] == ["iv"]  # no intraday bars: rv stays out
    i1 = ANCHORS.index(1)
    assert with_iv.params["coef"][0, i1, 5] > 0.2 and with_iv.params["iv_premium"][0] > 0
    # absent series: the same model as range_har
    plain = RangeHarVolatility().fit(r, ranges=(hl, co))
    without = spec.fit(r, ranges=(hl, co))
    np.testing.assert_allclose(without.params["coef"][0, :, :4], plain.params["coef"][0], rtol=1e-12)
    assert np.all(without.params["coef"][0, :, 4:] == 0) and without.info["extras_used"] == []
    ctx = Context.from_states([_state(r, hl, co)], lookback=n)
    np.testing.assert_allclose(without.condition(ctx)["mean_var"], plain.condition(ctx)["mean_var"], rtol=1e-12)
    # the index tracks the true variance better than the range alone at short horizons
    st = _state(r, hl, co)
    st_iv = MarketState(**{**st.__dict__, "implied_vol": iv})
    err_iv = np.log(with_iv.filter(Context.from_states([st_iv], lookback=n))[0, 300:-1] / vol[301:] ** 2)
    err_plain = np.log(plain.filter(Context.from_states([st], lookback=n))[0, 300:-1] / vol[301:] ** 2)
    assert np.mean(err_iv ** 2) < np.mean(err_plain ** 2)
    with pytest.raises(InvalidInput, match="extras"):
        RangeHarVolatility(extras=("dvol",))


def test_pooled_garch_borrows_the_panels_dynamics_and_keeps_its_own_level(tmp_path):
    from aetheris_ray.components.base import load_component
    from aetheris_ray.components.range_vol import PooledGarchVolatility, fit_garch_prior, theta_of

    panel = _panel(3, 700)
    prior = fit_garch_prior(panel)
    prior.save(tmp_path / "p")
    loaded = load_component(tmp_path / "p")
    a, b = float(prior.params["alpha"][0]), float(prior.params["beta"][0])
    assert 0.5 < a + b < 1 and prior.info["n_assets"] == 3
    spec = PooledGarchVolatility()
    r, (hl, co) = _panel(1, 700, seed=60)[0]
    young = spec.fit(r[-100:], ranges=(hl[-100:], co[-100:]), artefact=loaded)  # no own fit below own_min
    assert young.info["own_weight"] == 0.0
    np.testing.assert_allclose(theta_of(*(float(young.params[k][0]) for k in ("alpha", "beta", "nu"))),
                               prior.shared["theta"], atol=1e-9)
    # own level: omega = sample variance x (1 - persistence)
    var = float(np.mean(r[-100:] ** 2))
    assert float(young.params["omega"][0]) == pytest.approx(var * (1 - a - b), rel=1e-9)
    old = spec.fit(r, ranges=(hl, co), artefact=loaded)
    assert old.info["own_weight"] == pytest.approx(700 / 1200, abs=1e-3)
    assert type(old).stack([old, young]).batch_size == 2
    with pytest.raises(InvalidInput, match="aetheris pool"):
        spec.fit(r)


def test_an_explosive_log_har_fit_is_scaled_back_to_a_stationary_one():
    from aetheris_ray.components.range_vol import MAX_PERSISTENCE, _stable

    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(200), rng.standard_normal((200, 3))])
    y = X @ np.array([0.5, 0.7, 0.6, 0.5]) + 0.1 * rng.standard_normal(200)
    c = _stable(np.array([0.5, 0.7, 0.6, 0.5]), X, y)
    assert c[1:].sum() == pytest.approx(MAX_PERSISTENCE)
    np.testing.assert_allclose(c[1:] / c[1:].sum(), np.array([0.7, 0.6, 0.5]) / 1.8)
    assert np.mean(y - X @ c) == pytest.approx(0.0, abs=1e-12)  # the intercept keeps the sample mean
    ok = np.array([0.1, 0.3, 0.3, 0.2])
    assert _stable(ok, X, y) is ok



def test_range_garch_optimiser_equals_plain_scipy_lbfgsb_bit_for_bit():
    """The exact finite differences (`ExactGradient`) leave L-BFGS-B's path unchanged: `_minimise` finds
    scipy's own optimum to the last bit, from several starts, with and without ranges."""
    from scipy.optimize import minimize

    from aetheris_ray.components.range_vol import START, _minimise, garch_inputs, theta_of

    rng = np.random.default_rng(3)
    r = 0.02 * rng.standard_t(5, 1200)
    hl = np.abs(r) * 1.5 + 0.005 * rng.random(1200)
    for ranges in (None, (hl, np.zeros(r.size))):
        g = garch_inputs(r, ranges, 1000, "parkinson")
        for th0 in (START, theta_of(0.08, 0.9, 6.0), np.array([8.0, -8.0, 0.0])):
            want = minimize(g.nll, th0, method="L-BFGS-B", bounds=[(-8, 8)] * 3)
            got = _minimise(g.nll, [th0])
            assert np.array_equal(want.x, got.x) and want.fun == got.fun and want.success == got.success


# -- the market volatility factor ------------------------------------------------------------


def _two_asset_dir(root, n=60, missing=40, flat=45):
    """daily/BTC-USD.csv (one day missing, one flat bar) and daily/ETH-USD.csv, from 2024-01-01."""
    rng = np.random.default_rng(5)
    d = root / "daily"
    d.mkdir(parents=True)
    dates = pd.date_range("2024-01-01", periods=n, freq="D")
    for name, level in (("BTC-USD", 40000.0), ("ETH-USD", 2000.0)):
        close = level * np.exp(np.cumsum(0.02 * rng.standard_normal(n)))
        high, low = close * np.exp(np.abs(0.03 * rng.standard_normal(n))), close / np.exp(0.01)
        frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "open": close, "high": high, "low": low,
                              "close": close})
        if name == "BTC-USD":
            frame.loc[flat, ["open", "high", "low"]] = frame.loc[flat, "close"]
            frame = frame.drop(index=missing)
        frame.to_csv(d / f"{name}.csv", index=False)
    return root, dates


def test_market_range_is_the_market_assets_same_day_range_point_in_time(tmp_path):
    from aetheris_ray.data import open_source
    from aetheris_ray.data.schema import MARKET_RANGE
    from aetheris_ray.data.store import ParquetStore
    from aetheris_ray.data.synthetic import SyntheticSource

    root, dates = _two_asset_dir(tmp_path / "csv")
    btc = pd.read_csv(root / "daily" / "BTC-USD.csv", parse_dates=["date"]).set_index("date")
    src = open_source(data=root)
    eth = src.history("ETH-USD")
    assert eth.info[MARKET_RANGE].source == "BTC-USD daily bars"
    st = compute_state(eth, dates[50])
    m = st.market_log_hl
    assert m.shape == st.returns.shape  # aligned with ETH's returns (days 1..50)
    days = dates[1:51]
    for i, day in enumerate(days):
        if day in (dates[40], dates[45], dates[41]):  # missing, flat, and the bar after the gap
            assert np.isnan(m[i]), day
        else:
            assert m[i] == pytest.approx(np.log(btc.loc[day, "high"] / btc.loc[day, "low"]), rel=1e-12)
    # the cut at the origin: the same state from data that runs on, or from data that stops there
    cut = compute_state(src.history("ETH-USD", until=dates[50]), dates[50])
    np.testing.assert_array_equal(cut.market_log_hl, m)
    # the market range is not a macro level: features and regime are what they were without it
    bare = type(eth)(asset=eth.asset, bars=eth.bars, info=eth.info,
                     series={k: v for k, v in eth.series.items() if k != MARKET_RANGE})
    st_bare = compute_state(bare, dates[50])
    assert st_bare.market_log_hl is None
    np.testing.assert_array_equal(st_bare.regime_vector, st.regime_vector)
    assert st_bare.descriptors == st.descriptors
    # a Parquet store derives it when read (never stored), from its own BTC-USD bars
    store = ParquetStore(tmp_path / "store")
    store.ingest(src)
    assert MARKET_RANGE not in store.series_names("ETH-USD")
    pd.testing.assert_frame_equal(store.history("ETH-USD").series[MARKET_RANGE].reset_index(drop=True),
                                  eth.series[MARKET_RANGE].reset_index(drop=True))
    assert MARKET_RANGE in SyntheticSource().history("SYN-ETH").series


def test_pooled_garch_market_level_shrinks_a_young_assets_level_towards_the_panel_ratio():
    from aetheris_ray.components.range_vol import PooledGarchVolatility, fit_garch_prior, level_ratio

    panel = _panel(3, 700)
    market = _panel(1, 700, seed=90)[0][1][0]  # the market's ln(H/L), aligned with every asset
    prior = fit_garch_prior(panel, markets=[market] * 3)
    q_m = range_variance(market[-365:])
    ratios = [np.mean(r[-365:] ** 2) / np.mean(q_m) for r, _ in panel]
    assert prior.shared["level_ratio"][0] == pytest.approx(np.median(ratios), rel=1e-12)
    # the market asset itself is left out of the ratio
    assert level_ratio([(panel[0][0], (market, None))], [market]) is None
    a, b = float(prior.params["alpha"][0]), float(prior.params["beta"][0])
    r, (hl, co) = _panel(1, 700, seed=60)[0]
    young_r, young_rg, young_m = r[-100:], (hl[-100:], co[-100:]), market[-100:]
    fit = PooledGarchVolatility(market_n0=250.0).fit(young_r, ranges=young_rg, market=young_m, artefact=prior)
    w = 100 / 350
    level = w * np.mean(young_r ** 2) + (1 - w) * prior.shared["level_ratio"][0] * np.mean(range_variance(young_m))
    assert fit.info["market_level"]["own_weight"] == pytest.approx(w, abs=1e-3)
    assert float(fit.params["omega"][0]) == pytest.approx(level * (1 - a - b), rel=1e-9)
    # off by default, and said where it cannot apply
    plain = PooledGarchVolatility().fit(young_r, ranges=young_rg, market=young_m, artefact=prior)
    assert "market_level" not in plain.info
    assert float(plain.params["omega"][0]) == pytest.approx(np.mean(young_r ** 2) * (1 - a - b), rel=1e-9)
    spec = PooledGarchVolatility(market_n0=250.0)
    itself = spec.fit(young_r, ranges=(young_m, co[-100:]), market=young_m, artefact=prior)
    assert itself.info["market_level"] == "none: the asset is the market"
    old_prior = fit_garch_prior(panel)  # trained without the market
    assert spec.fit(young_r, ranges=young_rg, market=young_m, artefact=old_prior).info["market_level"].startswith(
        "none: the pooled prior has no level ratio")
    assert spec.fit(young_r, ranges=young_rg, artefact=prior).info["market_level"] == "none: no market ranges"
    with pytest.raises(InvalidInput, match="market_n0"):
        PooledGarchVolatility(market_n0=-1.0)


def test_market_regressor_of_the_range_har_is_used_where_present_and_harmless_where_absent():
    n = 900
    vol = 0.03 * np.exp(0.6 * np.sin(np.arange(n) / 25))
    o, h, lo, c = brownian_bars(n, 0.0, 60, seed=31, vol_path=vol)
    r, hl, co = c - o, h - lo, c - o
    # the market's variance moves with the asset's but is observed without the asset's own noise
    _, mh, ml, _ = brownian_bars(n, 0.0, 400, seed=32, vol_path=vol / 2)
    market = mh - ml
    spec = RangeHarVolatility(extras=("market",))
    fit = spec.fit(r, ranges=(hl, co), market=market)
    assert fit.info["extras_used"] == ["market"]
    assert fit.params["coef"][0, ANCHORS.index(1), 4] > 0.1
    assert fit.params["market_premium"][0] == pytest.approx(np.log(0.25), abs=0.3)  # a quarter of the variance
    plain = RangeHarVolatility().fit(r, ranges=(hl, co))
    without = spec.fit(r, ranges=(hl, co))
    np.testing.assert_allclose(without.params["coef"][0, :, :4], plain.params["coef"][0], rtol=1e-12)
    assert np.all(without.params["coef"][0, :, 4:] == 0) and without.info["extras_used"] == []
    st = _state(r, hl, co)
    st_m = MarketState(**{**st.__dict__, "market_log_hl": market})
    ctx, ctx_m = Context.from_states([st], lookback=n), Context.from_states([st_m], lookback=n)
    assert ctx.market is None and ctx_m.take([0]).market.shape == (1, n)
    np.testing.assert_allclose(without.condition(ctx)["mean_var"], plain.condition(ctx)["mean_var"], rtol=1e-12)
    err_m = np.log(fit.filter(ctx_m)[0, 100:-1] / vol[101:] ** 2)
    err_plain = np.log(plain.filter(ctx)[0, 100:-1] / vol[101:] ** 2)
    assert np.mean(err_m ** 2) < np.mean(err_plain ** 2)
