"""The engine: contract of a single forecast, seeds, shards, caches, extreme inputs, scenarios."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from aetheris_ray import simulation as sim
from aetheris_ray.calibration import CalibrationConfig
from aetheris_ray.contract import ForecastRequest
from aetheris_ray.data.schema import AssetData, bar_ts_from_dates
from aetheris_ray.engine import finish, forecast, prepare
from aetheris_ray.history import daily_log_returns
from aetheris_ray.model import ComponentChoice, EngineConfig, PRESETS, model_config
from aetheris_ray.state_cache import clear_caches
from aetheris_ray.errors import DataError, InvalidInput, ModelNotFound

CFG = EngineConfig(
    volatility=ComponentChoice(name="blend", params={"members": ["ewma", "garch"]}),
    refit_every=14,
    walkforward_paths=300,
    calibration=CalibrationConfig(window_days=150, coverage_days=100),
)


def garch_path(n: int, seed: int, omega=2e-5, alpha=0.1, beta=0.85, nu=5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
    r, v = np.empty(n), omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = np.sqrt(v) * z[t]
        v = omega + alpha * r[t] ** 2 + beta * v
    return r


def asset_data(returns, start="2020-01-01", asset="SYN-USD", spot0=100.0) -> AssetData:
    close = spot0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    dates = pd.date_range(start, periods=close.size, freq="D")
    bars = pd.DataFrame({"ts": bar_ts_from_dates(dates), "open": close, "high": close, "low": close,
                         "close": close, "volume": np.nan})
    return AssetData(asset=asset, bars={"1D": bars})


@pytest.fixture(scope="module")
def data():
    return asset_data(garch_path(700, seed=2))


def req(**kw) -> ForecastRequest:
    base = dict(asset="SYN-USD", horizon=7, paths=2000, seed=7)
    return ForecastRequest(**{**base, **kw})


@pytest.fixture(scope="module")
def fc(data):
    # module-scoped fixtures run before the per-test isolated home: no disk cache here
    return forecast(data, req(thresholds=[90.0, 130.0]), config=CFG, use_cache=False)


def test_forecast_contract(fc, data):
    assert fc.quantiles.shape == (7, 7)
    assert np.all(np.diff(fc.quantiles, axis=1) > 0) and np.all(fc.quantiles > 0)
    assert fc.origin == data.daily_close().index[-1]
    assert fc.spot == pytest.approx(float(data.daily_close().iloc[-1]))
    assert fc.model_version == CFG.version and fc.calibration_version.startswith("cal-")
    assert fc.regime["label"] in ("calm", "normal", "volatile", "crisis")
    assert set(fc.coverage) == {"1", "2-3", "4-7"} and all(0 <= v["0.8"] <= 1 for v in fc.coverage.values())
    assert fc.conditional is False and fc.drivers is None
    assert fc.paths.shape == (2000, 7) and fc.paths.dtype == np.float32
    assert fc.metadata["calibration_pairs"] > 0
    assert isinstance(fc.metadata["warnings"], list)
    assert fc.to_json()  # the wire schema accepts it


def test_seeds_reproduce_and_differ(fc, data):
    again = forecast(data, req(thresholds=[90.0, 130.0]), config=CFG)
    np.testing.assert_array_equal(again.quantiles, fc.quantiles)
    np.testing.assert_array_equal(again.p_below, fc.p_below)
    other = forecast(data, req(seed=8), config=CFG)
    assert not np.array_equal(other.quantiles, fc.quantiles)


def test_threshold_probabilities_match_path_frequencies_without_calibration(data):
    cfg = CFG.model_copy(update={"calibrate": False})
    spot = float(data.daily_close().iloc[-1])
    f = forecast(data, req(thresholds=[0.9 * spot, spot, 1.1 * spot], paths=5000), config=cfg)
    cum = np.cumsum(f.paths.astype(float), axis=1)[:, -1]
    emp = [np.mean(cum < np.log(k / f.spot)) for k in f.thresholds]
    assert f.threshold_estimator == ("monte_carlo",) * 3  # hundreds of paths beyond each K
    np.testing.assert_allclose(f.p_below, emp, atol=1e-12)
    np.testing.assert_allclose(f.threshold_se, np.sqrt(np.multiply(emp, 1 - np.array(emp)) / 5000), rtol=1e-9)
    assert f.calibration_version == "uncalibrated"
    np.testing.assert_allclose(f.quantile(0.5)[-1], f.spot * np.exp(np.quantile(cum, 0.5)), rtol=1e-9)


def test_calibrated_threshold_probabilities_invert_the_cone(fc):
    """P(price < q_tau) = tau for the calibrated quantiles, through the exact inverse map."""
    for j, tau in enumerate(fc.levels):
        assert fc.prob_below(float(fc.quantiles[-1, j]) * (1 + 1e-12)) == pytest.approx(tau, abs=0.01)


def test_sharded_blocks_equal_the_whole(data):
    prep = prepare(data, req(paths=9000), config=CFG)
    whole = sim.simulate_blocks(prep.sample, 9000, 7, prep.seed)
    shards = sim.shard_blocks(9000, 2)
    parts = [sim.simulate_blocks(prep.sample, 9000, 7, prep.seed, blocks=b) for b in shards]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(finish(prep, whole).quantiles, forecast(data, req(paths=9000), config=CFG).quantiles)


def test_prepared_pickles_small(data):
    prep = prepare(data, req(), config=CFG)
    blob = pickle.dumps(prep)
    assert len(blob) < 200_000
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.sample(100, 7, np.random.default_rng(0)),
                                  prep.sample(100, 7, np.random.default_rng(0)))


@pytest.mark.slow
def test_cache_on_disk_gives_the_same_forecast(data, isolated_home):
    clear_caches()
    cold = forecast(data, req(horizon=3), config=CFG)
    assert list((isolated_home / "state" / "engine").rglob("calibration.json"))
    clear_caches()  # a fresh process: only the disk state is left
    warm = forecast(data, req(horizon=3), config=CFG)
    np.testing.assert_array_equal(warm.quantiles, cold.quantiles)
    assert warm.calibration_version == cold.calibration_version
    nocache = forecast(data, req(horizon=3), config=CFG, use_cache=False)
    np.testing.assert_array_equal(nocache.quantiles, cold.quantiles)


@pytest.mark.slow
def test_as_of_cuts_the_data(data):
    idx = data.daily_close().index
    f = forecast(data, req(as_of=idx[500].date(), horizon=1), config=CFG)
    g = forecast(AssetData(data.asset, {"1D": data.bars["1D"].iloc[:501]}), req(as_of=idx[500].date(), horizon=1),
                 config=CFG)
    assert f.origin == idx[500]
    np.testing.assert_array_equal(f.quantiles, g.quantiles)


@pytest.mark.parametrize("case", ["crash", "flat", "short"])
def test_extreme_inputs_give_finite_forecasts(case):
    if case == "crash":
        r = np.concatenate([garch_path(400, 1), [np.log(0.1)], garch_path(10, 2)])
    elif case == "flat":
        r = np.zeros(400)
    else:
        r = garch_path(30, 3)
    d = asset_data(r, spot0=1.0 if case == "flat" else 100.0)
    f = forecast(d, req(horizon=14, thresholds=[0.5, 1.0, 150.0]), config=CFG)
    assert np.all(np.isfinite(f.quantiles)) and np.all(f.quantiles > 0)
    assert np.all(np.isfinite(f.p_below)) and np.all(np.diff(f.quantiles, axis=1) >= 0)
    if case == "flat":
        np.testing.assert_allclose(f.quantiles, 1.0, rtol=1e-4)  # the variance floor: sigma 1e-6
    if case == "short":
        assert any("fallback" in w for w in f.metadata["warnings"])


def test_too_little_history_is_a_data_error():
    with pytest.raises(DataError, match="at least 31 needed"):
        forecast(asset_data(garch_path(10, 0)), req(), config=CFG)


def test_model_names():
    cfg, notes = model_config(None)
    assert cfg is PRESETS["baseline"] and notes == []
    cfg, notes = model_config("latest")
    assert cfg is PRESETS["baseline"] and "latest" in notes[0]
    with pytest.raises(ModelNotFound, match="model 'nope' is not known; valid: baseline"):
        model_config("nope")
    with pytest.raises(InvalidInput, match="trend component 'drifty' is not registered"):
        EngineConfig(trend=ComponentChoice(name="drifty")).specs()
    with pytest.raises(InvalidInput, match="jumps would be counted twice"):
        EngineConfig(jumps=ComponentChoice(name="poisson", params={"threshold": 5.0}),
                     residuals=ComponentChoice(name="fhs")).specs()
    assert EngineConfig().version == EngineConfig().version != CFG.version


def test_scenario_is_conditional_and_does_not_touch_calibration(data, fc):
    shocked = forecast(data, req(scenario={"rv_shock": 2.0}), config=CFG)
    assert shocked.conditional is True
    assert shocked.calibration_version == fc.calibration_version
    w = lambda f: f.quantile(0.95)[-1] - f.quantile(0.05)[-1]  # noqa: E731
    assert w(shocked) > 1.5 * w(fc)


@pytest.mark.slow
def test_explain_gives_drivers(data):
    f = forecast(data, req(explain=True), config=CFG)
    assert set(f.drivers) >= {"upside", "downside", "trend", "method"}


def test_daily_log_returns_scale_gaps():
    c = pd.Series([100.0, 110.0, 99.0], index=pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-06"]))
    r = daily_log_returns(c).to_numpy()
    np.testing.assert_allclose(r, [np.log(1.1), np.log(0.9) / 2.0])


def test_model_names_and_pinned_registry_versions():
    from aetheris_ray.model import PRESETS, model_config

    cfg, _ = model_config("rough_vol")
    assert cfg == PRESETS["rough_vol"] and cfg.volatility.version is None
    pinned, _ = model_config("rough_vol@rough_vol-20260101T000000Z-abc")
    assert pinned.volatility.version == "rough_vol-20260101T000000Z-abc"
    assert pinned.version != cfg.version  # the pinned version is part of the model version
    assert pinned.version.endswith("+volatility=rough_vol@rough_vol-20260101T000000Z-abc")
    with pytest.raises(ModelNotFound, match="'baseline' has no registered component to pin"):
        model_config("baseline@v1")
    with pytest.raises(ModelNotFound, match=r"model 'nope' is not known; valid: baseline, .*rough_vol"):
        model_config("nope")
