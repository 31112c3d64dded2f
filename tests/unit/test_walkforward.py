"""The engine's walk-forward: point in time, deterministic, calibrated, and what the backtest harness calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.calibration import CalibrationConfig
from aetheris_ray.components.registry import register, unregister
from aetheris_ray.components.volatility import FittedGarch, GarchVolatility
from aetheris_ray.data.schema import AssetData, bar_ts_from_dates
from aetheris_ray.model import ComponentChoice, EngineConfig
from aetheris_ray.errors import InvalidInput
from aetheris_ray.evaluation.protocol import BlockWalkForwardModel, WalkForwardModel
from aetheris_ray.walkforward import EngineModel, combine_blocks, quantiles_at, raw_block, walk_forward

LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def garch_path(n: int, seed: int, omega=2e-5, alpha=0.1, beta=0.85, nu=5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
    r, v = np.empty(n), omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = np.sqrt(v) * z[t]
        v = omega + alpha * r[t] ** 2 + beta * v
    return r


def asset_data(returns: np.ndarray, start: str = "2019-01-01", asset: str = "SYN-USD", drop=()) -> AssetData:
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    dates = pd.date_range(start, periods=close.size, freq="D")
    keep = ~np.isin(np.arange(close.size), np.asarray(drop, dtype=int))
    bars = pd.DataFrame({"ts": bar_ts_from_dates(dates[keep]), "open": close[keep], "high": close[keep],
                         "low": close[keep], "close": close[keep], "volume": np.nan})
    return AssetData(asset=asset, bars={"1D": bars})


FAST = EngineConfig(
    volatility=ComponentChoice(name="garch"),
    refit_every=14,
    walkforward_paths=300,
    calibration=CalibrationConfig(window_days=150, coverage_days=100),
)


@pytest.fixture(scope="module")
def data():
    return asset_data(garch_path(900, seed=11))


@pytest.fixture(scope="module")
def origins(data):
    return data.daily_close().index[700:760]


@pytest.fixture(scope="module")
def result(data, origins):
    return walk_forward(data, origins, [1, 3, 7], LEVELS, FAST, seed=5, keep_last=True)


def test_engine_model_is_a_walk_forward_model():
    m = EngineModel()
    assert isinstance(m, WalkForwardModel) and m.name == "engine"
    assert isinstance(m, BlockWalkForwardModel)  # the harness may run it in blocks of origins


def test_shapes_finite_and_monotone(result, origins):
    q = result.quantiles
    assert q.shape == (len(origins), 3, len(LEVELS))
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=2) >= 0)
    # wider with the horizon
    assert np.all(q[:, 2, -1] - q[:, 2, 0] > q[:, 0, -1] - q[:, 0, 0])
    assert result.info["n_processed"] > len(origins)  # the calibration warm-up
    assert set(result.regimes) <= {"calm", "normal", "volatile", "crisis"}


@pytest.mark.slow
def test_seed_determinism(data, origins, result):
    again = walk_forward(data, origins, [1, 3, 7], LEVELS, FAST, seed=5)
    np.testing.assert_array_equal(again.quantiles, result.quantiles)
    other = walk_forward(data, origins, [1, 3, 7], LEVELS, FAST, seed=6)
    assert not np.array_equal(other.quantiles, result.quantiles)


def test_no_look_ahead(data, origins, result):
    """Altering the future (prices after day 730) leaves every forecast made before it unchanged."""
    r = garch_path(900, seed=11)
    r2 = r.copy()
    r2[730:] = 3.0 * r2[730:] + 0.02  # a different future: higher vol and a drift
    altered = walk_forward(asset_data(r2), origins, [1, 3, 7], LEVELS, FAST, seed=5)
    cut = data.daily_close().index[730]
    before = origins < cut
    assert before.sum() >= 20
    np.testing.assert_array_equal(altered.quantiles[before], result.quantiles[before])
    assert not np.array_equal(altered.quantiles[~before], result.quantiles[~before])


@pytest.mark.parametrize("jumps", ["none", "poisson"])
@pytest.mark.slow
def test_walk_forward_over_origin_blocks_equals_one_walk_forward(jumps):
    """Raw phase over blocks of days (as the Ray backtest runs it) + calibration pass == one walk-forward, bitwise.

    Gaps in the data, edges inside the warm-up, between chunks, on a missing day and
    at the last origin; the jump regression (poisson) trains on regime features.
    """
    cfg = FAST.model_copy(update={"jumps": ComponentChoice(name=jumps)})
    d = asset_data(garch_path(1000, seed=4), drop=[520, 521, 700, 833])
    idx = d.daily_close().index
    origins = idx[650:900]
    hz = [1, 3, 7]
    whole = walk_forward(d, origins, hz, LEVELS, cfg, seed=5, keep_last=True)
    assert np.isfinite(whole.quantiles).all()
    for edges in ([idx[400], origins[100]], [origins[0], origins[60], origins[61], origins[-1]],
                  [pd.Timestamp("2021-06-01"), pd.Timestamp("2021-06-02"), pd.Timestamp("2021-08-08")]):
        spans = list(zip([None, *edges], [*edges, None]))
        parts = [raw_block(d, origins, hz, cfg, span=s, seed=5, keep_last=True) for s in spans]
        assert sum(p.req.size > 0 for p in parts) >= 2  # the requested origins really are split
        got = combine_blocks(parts, origins, hz, LEVELS, cfg)
        np.testing.assert_array_equal(got.quantiles, whole.quantiles)
        np.testing.assert_array_equal(got.raw_quantiles, whole.raw_quantiles)
        assert got.regimes == whole.regimes and got.info == whole.info
        assert got.calibrator.version == whole.calibrator.version  # same pairs, raw and calibrated PITs
        assert [s.origin for s in got.states] == [s.origin for s in whole.states]
        assert got.last["origin"] == whole.last["origin"]
        np.testing.assert_array_equal(got.last["fitted"].part("volatility").params["omega"],
                                      whole.last["fitted"].part("volatility").params["omega"])
    with pytest.raises(InvalidInput, match="not consecutive"):
        combine_blocks(parts[::-1], origins, hz, LEVELS, cfg)


@pytest.mark.slow
def test_a_later_start_moves_no_fit_and_no_draw(data, origins, result):
    """Fits and random streams are tied to the calendar, not to the first origin asked: a walk-forward
    starting 20 days later computes the same raw PIT at every day both process, except in its first
    calendar chunk (which holds fewer origins, hence other draws)."""
    from aetheris_ray.calibration import day_number
    from aetheris_ray.walkforward import chunk_days

    later = walk_forward(data, origins[20:], [1, 3, 7], LEVELS, FAST, seed=5)
    assert later.info["n_processed"] < result.info["n_processed"]
    a, b = later.calibrator.pairs(), result.calibrator.pairs()
    m = a.merge(b, on=["origin", "horizon"], suffixes=("_later", "_all"))
    grid = chunk_days(300, 7)
    first_chunk = day_number(pd.DatetimeIndex(m["origin"])) // grid == day_number(a["origin"].min()) // grid
    assert first_chunk.sum() > 10 and (~first_chunk).sum() > 300
    np.testing.assert_array_equal(m.loc[~first_chunk, "raw_pit_later"], m.loc[~first_chunk, "raw_pit_all"])
    assert not np.array_equal(m.loc[first_chunk, "raw_pit_later"], m.loc[first_chunk, "raw_pit_all"])


@pytest.mark.slow
def test_rows_without_close_or_history_are_nan(data):
    idx = data.daily_close().index
    req = pd.DatetimeIndex([idx[5], idx[400], idx[400] + pd.Timedelta(hours=0)]).unique()
    req = req.append(pd.DatetimeIndex([idx[-1] + pd.Timedelta(days=30)]))
    res = walk_forward(data, req, [1], LEVELS, FAST)
    assert np.all(np.isnan(res.quantiles[0])) and np.all(np.isfinite(res.quantiles[1]))
    assert np.all(np.isnan(res.quantiles[-1]))
    with pytest.raises(InvalidInput, match="must be sorted"):
        walk_forward(data, req[::-1], [1], LEVELS, FAST)
    with pytest.raises(InvalidInput, match=r"whole days in 1..90"):
        walk_forward(data, req, [0], LEVELS, FAST)


def test_predict_matches_the_protocol_shape(data, origins):
    q = EngineModel(FAST).predict(data, origins[:5], [1, 14], LEVELS)
    assert q.shape == (5, 2, 7) and np.all(np.isfinite(q))


def test_keep_last_gives_the_fit_of_the_last_origin(result, origins):
    last = result.last
    assert last["origin"] == origins[-1]
    assert last["fitted"].part("volatility").batch_size == 1
    assert last["state"].origin == origins[-1]


def test_quantiles_at_matches_numpy():
    x = np.random.default_rng(0).standard_normal((3, 101, 2))
    lv = np.random.default_rng(1).random((3, 2, 4))
    got = quantiles_at(np.sort(x, axis=1), lv)
    for i in range(3):
        for k in range(2):
            np.testing.assert_allclose(got[i, k], np.quantile(x[i, :, k], lv[i, k]), rtol=1e-12)


@dataclass(frozen=True, eq=False)
class _HalfGarchFitted(FittedGarch):
    """A deliberately mis-scaled model: GARCH variance x 0.25 (sigma x 0.5)."""

    name: ClassVar[str] = "_half_garch"

    def filter(self, ctx):
        return 0.25 * super().filter(ctx)

    def update(self, ps, r):
        ps["v"] = 0.25 * (self.p("omega") + self.p("alpha") * r * r) + self.p("beta") * ps["v"]


@dataclass(frozen=True)
class _HalfGarch(GarchVolatility):
    name: ClassVar[str] = "_half_garch"
    fitted_cls: ClassVar[type] = _HalfGarchFitted

    def fit(self, returns, **kw):
        f = super().fit(returns, **kw)
        return _HalfGarchFitted(spec=self, params=f.params, info=f.info)


@pytest.mark.slow
def test_calibration_moves_coverage_towards_nominal_on_a_miscaled_model():
    register("volatility", "_half_garch", _HalfGarch)
    try:
        r = garch_path(1300, seed=3)
        d = asset_data(r)
        idx = d.daily_close().index[900:1290]
        base = EngineConfig(volatility=ComponentChoice(name="_half_garch"), jumps=ComponentChoice(name="none"),
                            refit_every=28, walkforward_paths=1000,
                            calibration=CalibrationConfig(window_days=365, by_regime=False, n0_bucket=5))
        res = walk_forward(d, idx, [1], LEVELS, base, seed=1)
        close = d.daily_close()
        y = np.log(close.shift(-1).reindex(idx).to_numpy() / close.reindex(idx).to_numpy())
        for q, name in ((res.raw_quantiles, "raw"), (res.quantiles, "cal")):
            cov = np.mean((y >= q[:, 0, 1]) & (y <= q[:, 0, 5]))
            if name == "raw":
                raw_cov = cov
            else:
                cal_cov = cov
        assert raw_cov < 0.6  # sigma x0.5: the raw 80% interval covers far less
        assert abs(cal_cov - 0.8) < 0.06 and abs(cal_cov - 0.8) < abs(raw_cov - 0.8)
    finally:
        unregister("volatility", "_half_garch")
