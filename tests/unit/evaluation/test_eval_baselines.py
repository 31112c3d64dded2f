"""Baselines: loop re-implementations, `arch` itself, np.quantile, look-ahead guards, short histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from arch.univariate import StudentsT
from scipy import stats

from aetheris_ray.calibration import day_number
from aetheris_ray.history import daily_log_returns
from aetheris_ray.evaluation.baselines import Bootstrap, EwmaNormal, GarchT, baseline_models
from aetheris_ray.evaluation.protocol import WalkForwardModel
from evalkit import LEVELS, asset_data, closes, with_hole

HORIZONS = [1, 3, 7, 14]


def _origins(close: pd.Series, first: str, last: str) -> pd.DatetimeIndex:
    idx = close.dropna().index
    return idx[(idx >= pd.Timestamp(first)) & (idx <= pd.Timestamp(last))]


@pytest.fixture(scope="module")
def garch_run(long_close):
    """One GARCH-t run over 2021 (shared by the GARCH tests: fits cost ~10 ms each)."""
    data = asset_data(long_close)
    origins = _origins(long_close, "2021-01-01", "2021-03-31")
    q, fits = GarchT().predict_detail(data, origins, HORIZONS, LEVELS)
    return data, origins, q, fits


def test_baselines_implement_the_protocol():
    for m in baseline_models():
        assert isinstance(m, WalkForwardModel)
    assert [m.name for m in baseline_models()] == ["ewma_normal", "garch_t", "bootstrap"]


# -- EWMA ------------------------------------------------------------------------------


def test_ewma_loop_equals_vectorised(long_close):
    data = asset_data(long_close)
    origins = _origins(long_close, "2017-01-20", "2022-12-31")
    got = EwmaNormal().sigma(data, origins)
    r = daily_log_returns(long_close).to_numpy()
    lam, var = 0.94, float(np.var(r[:30]))
    loop = np.empty(r.size)
    for t, x in enumerate(r):  # RiskMetrics recursion, one return at a time
        var = lam * var + (1 - lam) * x * x
        loop[t] = np.sqrt(var)
    n_ret = np.searchsorted(long_close.index, origins)  # returns known at each origin
    want = np.where(n_ret >= 30, loop[np.maximum(n_ret - 1, 0)], np.nan)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isnan(got[n_ret < 30]).all() and (n_ret < 30).any()


def test_ewma_quantiles(long_close):
    data = asset_data(long_close)
    origins = _origins(long_close, "2022-01-01", "2022-01-31")
    q = EwmaNormal().predict(data, origins, HORIZONS, LEVELS)
    sig = EwmaNormal().sigma(data, origins)
    want = sig[:, None, None] * np.sqrt(HORIZONS)[None, :, None] * stats.norm.ppf(LEVELS)[None, None, :]
    np.testing.assert_array_equal(q, want)
    np.testing.assert_allclose(q[:, :, 3], 0.0, atol=1e-15)  # zero drift


# -- GARCH ------------------------------------------------------------------------------


def _fit_at(fits, long_close, origin):
    """The fit an origin uses: the latest fit on or before it (fits are on the calendar schedule)."""
    n_ret = int(np.searchsorted(long_close.index, origin))
    return max((f for f in fits if f.end <= n_ret), key=lambda f: f.end)


def test_garch_params_equal_arch_on_the_same_window(garch_run, long_close):
    _, origins, _, fits = garch_run
    r = daily_log_returns(long_close).to_numpy()
    fit_days = day_number(long_close.index[[f.end for f in fits]])
    assert np.all(fit_days % 7 == 0) and np.all(np.diff(fit_days) > 0)  # refitted every 7 days on the calendar
    used = {_fit_at(fits, long_close, o).end for o in origins}
    assert len(used) == len({d // 7 for d in day_number(origins)} | {day_number(origins[0]) // 7})
    # warm starts: from the first fit of each 91-day calendar period, itself cold
    periods = fit_days // 91
    for f, p in zip(fits, periods):
        anchor = fits[int(np.argmax(periods == p))]
        assert (f.starting_values is None) == (f is anchor)
    assert any(f.starting_values is not None for f in fits) and any(f.starting_values is None for f in fits)
    warm = next(f for f in fits if f.starting_values is not None)
    for fit in (fits[0], warm, fits[-1]):
        window = r[fit.end - fit.n_obs: fit.end]
        assert fit.n_obs == 1000
        res = arch_model(window * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False).fit(
            disp="off", starting_values=fit.starting_values)
        np.testing.assert_array_equal(fit.params, res.params.to_numpy())
        assert fit.sigma2_last == res.conditional_volatility[-1] ** 2
    # a warm start lands where a cold fit lands (same optimum, to optimiser tolerance)
    cold = arch_model(r[warm.end - 1000: warm.end] * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t",
                      rescale=False).fit(disp="off")
    np.testing.assert_allclose(warm.params, cold.params.to_numpy(), rtol=2e-2, atol=1e-3)


def test_garch_quantiles_match_arch_forecast_at_fit_origins(garch_run, long_close):
    _, origins, q, fits = garch_run
    r = daily_log_returns(long_close).to_numpy()
    at_fit = np.flatnonzero(day_number(origins) % 7 == 0)  # origins on a refit day use the fit made there
    for i in (at_fit[0], at_fit[3]):
        fit = _fit_at(fits, long_close, origins[i])
        assert fit.end == int(np.searchsorted(long_close.index, origins[i]))
        res = arch_model(r[fit.end - fit.n_obs: fit.end] * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t",
                         rescale=False).fit(disp="off", starting_values=fit.starting_values)
        var = res.forecast(horizon=max(HORIZONS), reindex=False).variance.to_numpy()[0]  # percent^2, steps 1..14
        vh = np.cumsum(var)[np.array(HORIZONS) - 1]
        z = StudentsT().ppf(np.array(LEVELS), np.array([res.params["nu"]]))
        want = np.sqrt(vh)[:, None] * z[None, :] / 100
        np.testing.assert_allclose(q[i], want, rtol=1e-9)


def test_garch_variance_filtered_between_refits(garch_run, long_close):
    # origins between refits: parameters held, variance filtered forward; `arch` fixed at those
    # parameters on the window ending at the origin gives the same forecast (backcast effect ~ beta**1000)
    _, origins, q, fits = garch_run
    r = daily_log_returns(long_close).to_numpy()
    i = int(np.flatnonzero(day_number(origins) % 7 == 5)[2])  # 5 days after a refit
    fit = _fit_at(fits, long_close, origins[i])
    end = int(np.searchsorted(long_close.index, origins[i]))
    assert end - fit.end == 5
    am = arch_model(r[end - 1000: end] * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    var = am.fix(fit.params).forecast(horizon=max(HORIZONS), reindex=False).variance.to_numpy()[0]
    want = np.sqrt(np.cumsum(var)[np.array(HORIZONS) - 1])[:, None] * StudentsT().ppf(
        np.array(LEVELS), np.array([fit.params[3]]))[None, :] / 100
    np.testing.assert_allclose(q[i], want, rtol=1e-8)


@pytest.mark.slow
def test_garch_failed_cold_anchor_starts_from_the_previous_period(monkeypatch, long_close):
    """A period's first fit that fails cold is warm-started from the previous period's first fit."""
    from types import SimpleNamespace

    import aetheris_ray.evaluation.baselines as bl

    data = asset_data(long_close)
    origins = _origins(long_close, "2021-01-01", "2021-06-30")
    q0, fits = GarchT().predict_detail(data, origins, HORIZONS, LEVELS)
    anchors = [f for f in fits if f.starting_values is None]
    bad = anchors[1]  # its cold fit will fail
    r = daily_log_returns(long_close).to_numpy()
    real = bl.fit_garch_t

    def flaky(window, starting_values=None):
        res = real(window, starting_values=starting_values)
        if starting_values is None and np.array_equal(window, r[bad.end - 1000: bad.end]):
            return SimpleNamespace(params=res.params, convergence_flag=1,
                                   conditional_volatility=res.conditional_volatility)
        return res

    monkeypatch.setattr(bl, "fit_garch_t", flaky)
    q, fits = GarchT().predict_detail(data, origins, HORIZONS, LEVELS)
    redo = next(f for f in fits if f.end == bad.end)
    assert redo.converged and redo.starting_values is not None  # warm from the previous period's first fit
    np.testing.assert_allclose(redo.params, bad.params, rtol=2e-2, atol=1e-3)  # the same optimum
    assert np.isfinite(q).all()
    parts = np.split(np.arange(len(origins)), [40, 100])
    got = np.concatenate([GarchT().predict(data, origins[p], HORIZONS, LEVELS) for p in parts])
    np.testing.assert_array_equal(got, q)


@pytest.mark.parametrize("model", baseline_models(), ids=lambda m: m.name)
@pytest.mark.slow
def test_any_split_of_the_origins_gives_the_same_forecasts(model, long_close):
    """Origins asked in blocks (as the Ray backtest does) get bitwise the answers of one call."""
    data = asset_data(with_hole(long_close, "2021-02-10", "2021-02-20"))
    origins = _origins(long_close, "2021-01-01", "2021-04-30").difference(
        pd.date_range("2021-02-10", "2021-02-20"))
    whole = model.predict(data, origins, HORIZONS, LEVELS)
    for cuts in ([1], [10, 11, 50], [33, 90]):
        parts = np.split(np.arange(len(origins)), cuts)
        got = np.concatenate([model.predict(data, origins[p], HORIZONS, LEVELS) for p in parts])
        np.testing.assert_array_equal(got, whole)
    assert np.isfinite(whole).all()


@pytest.mark.slow
def test_garch_short_history_skips_origins():
    close = closes("2022-01-01", 400, seed=7)
    origins = close.index[200:]
    q = GarchT().predict(asset_data(close), origins, [1, 7], LEVELS)
    n_ret = np.arange(200, 400)
    assert np.isnan(q[n_ret < 250]).all()
    assert np.isfinite(q[n_ret >= 250]).all()


# -- Bootstrap ------------------------------------------------------------------------------


@pytest.mark.slow
def test_bootstrap_equals_np_quantile_of_overlapping_returns():
    close = with_hole(closes("2020-01-01", 900, seed=8), "2021-03-01", "2021-03-20")
    data = asset_data(close)
    origins = _origins(close, "2021-01-01", "2022-06-01")
    q = Bootstrap().predict(data, origins, HORIZONS, LEVELS)
    for i in range(0, len(origins), 37):
        o = origins[i]
        for j, h in enumerate(HORIZONS):
            rets = []  # every pair (t - h, t) with both closes in [o - 365 days, o]
            for t in close.index[(close.index >= o - pd.Timedelta(days=365 - h)) & (close.index <= o)]:
                s = t - pd.Timedelta(days=h)
                if s in close.index:
                    rets.append(np.log(close[t] / close[s]))
            if len(rets) >= 180:
                np.testing.assert_array_equal(q[i, j], np.quantile(np.array(rets), LEVELS))
            else:
                assert np.isnan(q[i, j]).all()


# -- every baseline -------------------------------------------------------------------------


@pytest.mark.parametrize("model", baseline_models(), ids=lambda m: m.name)
def test_quantiles_increase_with_level(model, long_close):
    data = asset_data(long_close)
    origins = _origins(long_close, "2022-03-01", "2022-04-30")
    q = model.predict(data, origins, HORIZONS, LEVELS)
    assert q.shape == (len(origins), 4, 7) and np.isfinite(q).all()
    assert (np.diff(q, axis=-1) >= 0).all()
    if model.name != "bootstrap":  # parametric: strictly
        assert (np.diff(q, axis=-1) > 0).all()
    # wider at longer horizons for the outer quantiles
    assert (q[:, -1, -1] > q[:, 0, -1]).all()


@pytest.mark.parametrize("model", baseline_models(), ids=lambda m: m.name)
@pytest.mark.slow
def test_look_ahead_guard(model, long_close):
    """Altering prices after D leaves every forecast at origins before D bitwise identical."""
    d = pd.Timestamp("2022-03-15")
    rng = np.random.default_rng(9)
    altered = long_close.copy()
    after = altered.index > d - pd.Timedelta(days=1)  # from D on (D itself included)
    altered[after] = altered[after] * np.exp(rng.normal(0, 0.2, after.sum()))
    origins = _origins(long_close, "2022-01-01", "2022-05-31")
    a = model.predict(asset_data(long_close), origins, HORIZONS, LEVELS)
    b = model.predict(asset_data(altered), origins, HORIZONS, LEVELS)
    before = origins < d
    np.testing.assert_array_equal(a[before], b[before])
    assert np.isfinite(a[before]).all()
    assert not np.array_equal(a[~before], b[~before])  # the alteration does reach later origins


def test_look_ahead_guard_has_teeth(long_close):
    """A model that peeks (full-sample volatility) fails the same check."""

    class Peeking:
        name = "peeking"

        def predict(self, data, origins, horizons, levels):
            sig = daily_log_returns(data.daily_close()).std()
            return np.broadcast_to(sig * stats.norm.ppf(levels), (len(origins), len(horizons), len(levels))).copy()

    d = pd.Timestamp("2022-03-15")
    altered = long_close.copy()
    altered[altered.index >= d] *= np.linspace(1, 3, (altered.index >= d).sum())
    origins = _origins(long_close, "2022-01-01", "2022-02-28")
    a = Peeking().predict(asset_data(long_close), origins, [1], LEVELS)
    b = Peeking().predict(asset_data(altered), origins, [1], LEVELS)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("model", baseline_models(), ids=lambda m: m.name)
def test_too_little_history_is_nan_not_an_error(model):
    close = closes("2022-01-01", 20, seed=10)
    q = model.predict(asset_data(close), close.index, HORIZONS, LEVELS)
    assert q.shape == (20, 4, 7) and np.isnan(q).all()
    empty = model.predict(asset_data(close), pd.DatetimeIndex([]), HORIZONS, LEVELS)
    assert empty.shape == (0, 4, 7)


@pytest.mark.parametrize("model", baseline_models(), ids=lambda m: m.name)
@pytest.mark.slow
def test_two_year_hole(model):
    """A two-year hole: the gap return is scaled (EWMA/GARCH) or absent (bootstrap); nothing raises."""
    close = with_hole(closes("2017-01-01", 6 * 365, seed=11), "2019-06-01", "2021-05-31")
    origins = _origins(close, "2019-05-01", "2022-06-30")
    q = model.predict(asset_data(close), origins, [1, 7], LEVELS)
    assert q.shape == (len(origins), 2, 7)
    before_hole = origins < pd.Timestamp("2019-06-01")
    assert np.isfinite(q[before_hole]).all()
    after = origins >= pd.Timestamp("2022-06-01")
    assert np.isfinite(q[after]).all()  # a year after the hole every baseline forecasts again
    if model.name == "bootstrap":  # just after the hole the window holds too few returns
        assert np.isnan(q[origins == pd.Timestamp("2021-06-10")]).all()


def test_unsorted_origins_rejected(long_close):
    from aetheris_ray.errors import InvalidInput

    origins = _origins(long_close, "2022-01-01", "2022-01-05")[::-1]
    with pytest.raises(InvalidInput, match="origins must be sorted"):
        EwmaNormal().predict(asset_data(long_close), origins, [1], LEVELS)
