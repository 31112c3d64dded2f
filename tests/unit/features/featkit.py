"""Builders of small `AssetData` objects straight from numpy (no connector needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import AssetData, SeriesInfo, bar_ts_from_dates, series_ts_from_dates

UNITS = {"implied_vol": "percent/year", "funding": "fraction/day", "basis": "fraction of spot",
         "funding_8h": "fraction/8h"}  # fmt: skip


def asset_data(
    close: np.ndarray,
    dates: pd.DatetimeIndex | None = None,
    series: dict[str, tuple[pd.DatetimeIndex, np.ndarray]] | None = None,
    intraday: tuple[pd.DatetimeIndex, np.ndarray] | None = None,
    units: dict[str, str] | None = None,
    asset: str = "TEST-USD",
) -> AssetData:
    """Daily bars from closes (dated ``dates``, default daily from 2016-01-01), daily side series
    dated by day (``ts = D+1 00:00``) or, for ``funding_8h``, by settlement time, and 2h bars
    given by their close times."""
    close = np.asarray(close, dtype=float)
    if dates is None:
        dates = pd.date_range("2016-01-01", periods=close.size, freq="D")
    bars = {"1D": pd.DataFrame({"ts": bar_ts_from_dates(dates), "open": close, "high": close, "low": close,
                                "close": close, "volume": np.nan})}  # fmt: skip
    if intraday is not None:
        ts, c = intraday
        bars["2h"] = pd.DataFrame({"ts": pd.DatetimeIndex(ts).tz_localize("UTC").as_unit("ns"), "open": c, "high": c,
                                   "low": c, "close": c, "volume": 1.0})  # fmt: skip
    frames, info = {}, {}
    for name, (when, values) in (series or {}).items():
        if name == "funding_8h":
            ts = pd.DatetimeIndex(when).tz_localize("UTC").as_unit("ns")
            cadence = "8h"
        else:
            ts, cadence = series_ts_from_dates(pd.DatetimeIndex(when)), "1D"
        frames[name] = pd.DataFrame({"ts": ts, "value": np.asarray(values, dtype=float)})
        unit = (units or {}).get(name, UNITS.get(name, "level"))
        info[name] = SeriesInfo(name, unit, cadence, "test")
    return AssetData(asset=asset, bars=bars, series=frames, info=info)


def random_walk(n: int, vol: float = 0.02, seed: int = 0, start: float = 100.0) -> np.ndarray:
    """Closes of a driftless log random walk with daily log-return std ``vol``."""
    r = np.random.default_rng(seed).normal(0.0, vol, n)
    return start * np.exp(np.cumsum(r))


def full_asset(n: int = 1500, seed: int = 0) -> AssetData:
    """Prices with gaps, late-starting side series (IV, daily and 8h funding, basis, a macro
    level) and 2h bars with a hole: every input kind at once."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2019-01-01", periods=n, freq="D")
    keep = np.ones(n, dtype=bool)
    keep[[100, 101, 102, 700]] = False  # missing days
    dates = dates[keep]
    close = random_walk(dates.size, 0.03, seed)
    side = dates[dates.size // 3 :]
    k = side.size
    series = {
        "implied_vol": (side, 60 * np.exp(np.cumsum(rng.normal(0, 0.03, k)) * 0.3)),
        "funding": (side[k // 2 :], rng.normal(3e-4, 2e-4, k - k // 2)),
        "funding_8h": (pd.date_range(side[0], periods=3 * k, freq="8h"), rng.normal(1e-4, 8e-5, 3 * k)),
        "basis": (side[k // 4 :], rng.normal(0.0, 5e-4, k - k // 4)),
        "macro_dxy": (side[::1], 100 + np.cumsum(rng.normal(0, 0.3, k))),
    }
    first = dates[dates.size // 2] - pd.Timedelta(days=3)
    bars_2h = pd.date_range(first, dates[-1] + pd.Timedelta(hours=22), freq="2h")
    hole = (bars_2h > dates[dates.size // 2 + 50]) & (bars_2h < dates[dates.size // 2 + 53])
    bars_2h = bars_2h[~hole]
    c2h = 100 * np.exp(np.cumsum(rng.normal(0, 0.008, bars_2h.size)))
    return asset_data(close, dates, series, (bars_2h, c2h))
