"""Core windows: schema, hand-computed values, and no look-ahead."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.data.schema import AssetData, cutoff_for
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.errors import InvalidInput
from aetheris_ray.windows import WindowSpec, daily_frame, make_windows, window_schema

SPEC = WindowSpec(lookback=20, horizon=5, stride=1)


@pytest.fixture(scope="module")
def btc() -> AssetData:
    return SyntheticSource(seed=3, start="2023-01-01", end="2023-12-31").history("SYN-BTC")


@pytest.fixture(scope="module")
def alt() -> AssetData:
    return SyntheticSource(seed=3, start="2023-01-01", end="2023-12-31").history("SYN-ALT")


def _alter_after(data: AssetData, cutoff: pd.Timestamp, factor: float = 1.7) -> AssetData:
    bars = {}
    for key, frame in data.bars.items():
        f = frame.copy()
        later = f["ts"] > cutoff
        for col in ("open", "high", "low", "close"):
            f.loc[later, col] = f.loc[later, col] * factor * (1 + 0.1 * np.arange(later.sum()) % 3)
        f.loc[later, "high"] = f.loc[later, ["open", "high", "low", "close"]].max(axis=1)
        f.loc[later, "low"] = f.loc[later, ["open", "high", "low", "close"]].min(axis=1)
        bars[key] = f
    return AssetData(data.asset, bars, data.series, data.info)


def test_schema_shapes_and_dtypes(btc):
    w = make_windows(btc, SPEC)
    schema = window_schema(SPEC)
    assert set(w) == set(schema)
    n = len(w["origin"])
    assert n > 300
    for name, (dtype, shape) in schema.items():
        assert w[name].shape == (n, *shape), name
        if dtype != "str":
            assert w[name].dtype == np.dtype(dtype), name
    assert np.all(np.isfinite(w["x_ret"])) and np.all(np.isfinite(w["y_logvol"]))
    np.testing.assert_allclose(w["x_ret"].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(w["x_ret"].std(axis=1), 1, atol=1e-4)


def test_values_match_a_hand_computation(btc, alt):
    frame = daily_frame(alt)  # no intraday bars: Parkinson
    bars = alt.bars["1D"].iloc[100]
    day = pd.Timestamp(bars["ts"]).tz_convert(None).normalize()
    expect = 0.5 * np.log(np.log(bars["high"] / bars["low"]) ** 2 / (4 * np.log(2)))
    assert frame.loc[day, "vol_source"] == "parkinson"
    assert frame.loc[day, "logvol"] == pytest.approx(expect)

    frame = daily_frame(btc)  # 2h bars: realised variance of the day's 12 bars
    day = frame.index[200]
    close = cutoff_for(day)
    intra = btc.bars["2h"]
    sel = intra[(intra["ts"] > close - pd.Timedelta(days=1) - pd.Timedelta(hours=2)) & (intra["ts"] <= close)]
    r = np.diff(np.log(sel["close"].to_numpy()))
    assert len(r) == 12
    assert frame.loc[day, "vol_source"] == "2h"
    assert frame.loc[day, "logvol"] == pytest.approx(0.5 * np.log(np.sum(r**2)))
    w_alt = make_windows(alt, SPEC)
    assert not w_alt["x_has_rv"].any()  # no intraday bars: every day is Parkinson

    w = make_windows(btc, SPEC)
    i = int(np.flatnonzero(w["origin"] == np.datetime64(day))[0])
    rets = frame["ret"].to_numpy()
    k = frame.index.get_loc(day)
    raw = rets[k - SPEC.lookback + 1 : k + 1]
    np.testing.assert_allclose(w["x_ret"][i], (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(w["y_ret"][i], rets[k + 1 : k + 1 + SPEC.horizon], rtol=1e-5)
    np.testing.assert_array_equal(w["x_has_rv"][i], (frame["vol_source"] == "2h").to_numpy()[k - SPEC.lookback + 1 : k + 1])


def test_altering_the_future_leaves_inputs_unchanged(btc):
    spec = WindowSpec(SPEC.lookback, SPEC.horizon, SPEC.stride, regime=True)
    w = make_windows(btc, spec)
    origin = pd.Timestamp(w["origin"][len(w["origin"]) // 2])
    altered = _alter_after(btc, cutoff_for(origin))
    w2 = make_windows(altered, spec)
    i = int(np.flatnonzero(w["origin"] == np.datetime64(origin))[0])
    j = int(np.flatnonzero(w2["origin"] == np.datetime64(origin))[0])
    for col in ("x_ret", "x_logvol", "x_has_rv", "mu", "sigma", "regime"):
        np.testing.assert_array_equal(w[col][: i + 1], w2[col][: j + 1], err_msg=col)
    assert not np.array_equal(w["y_ret"][i], w2["y_ret"][j])  # the targets did see the change
    early = w["origin"] <= np.datetime64(origin - pd.Timedelta(days=SPEC.horizon))
    np.testing.assert_array_equal(w["y_logvol"][early], w2["y_logvol"][: early.sum()])


def test_inputs_equal_those_from_truncated_history(btc):
    w = make_windows(btc, SPEC)
    origin = pd.Timestamp(w["origin"][123])
    cut = make_windows(btc.until(cutoff_for(origin)), WindowSpec(SPEC.lookback, 0, 1))
    assert cut["origin"][-1] == w["origin"][123]
    np.testing.assert_array_equal(cut["x_ret"][-1], w["x_ret"][123])
    np.testing.assert_array_equal(cut["x_logvol"][-1], w["x_logvol"][123])


def test_stride_bounds_and_gaps(alt):
    w = make_windows(alt, WindowSpec(20, 5, 7), start="2023-03-01", end="2023-06-30")
    d = np.diff(w["origin"]).astype("timedelta64[D]").astype(int)
    assert np.all(d == 7)
    assert w["origin"][0] >= np.datetime64("2023-03-01") and w["origin"][-1] <= np.datetime64("2023-06-30")
    bars = alt.bars["1D"]
    gap_day = pd.Timestamp(bars["ts"].iloc[150]).tz_convert(None).normalize()
    holed = AssetData(alt.asset, {"1D": bars.drop(bars.index[150])})
    wh = make_windows(holed, SPEC)
    lo, hi = gap_day - pd.Timedelta(days=SPEC.horizon), gap_day + pd.Timedelta(days=SPEC.lookback)
    inside = (wh["origin"] >= np.datetime64(lo)) & (wh["origin"] < np.datetime64(hi))
    assert not inside.any()  # no window bridges the missing day
    assert len(make_windows(AssetData(alt.asset, {"1D": bars.iloc[:10]}), SPEC)["origin"]) == 0


def test_spec_validation():
    with pytest.raises(InvalidInput, match="lookback=1"):
        WindowSpec(lookback=1)
    with pytest.raises(InvalidInput, match="stride=0"):
        WindowSpec(stride=0)


def test_core_imports_without_ray_or_torch():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import aetheris_ray.windows, aetheris_ray.registry, aetheris_ray.components.rough_vol\n"
        "import aetheris_ray.components.rough_vol.fbm\n"
        "assert 'torch' not in sys.modules, 'torch imported at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
