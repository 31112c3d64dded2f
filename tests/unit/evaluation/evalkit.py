"""Helpers of the evaluation tests: synthetic closes as `AssetData` and as a CSV data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import AssetData, bar_ts_from_dates

LEVELS = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)


def closes(start: str, n: int, seed: int, vol: float = 0.03, p0: float = 100.0) -> pd.Series:
    """A random walk of daily closes (GARCH-ish volatility clustering), one per calendar day."""
    rng = np.random.default_rng(seed)
    var, r = vol**2, np.empty(n)
    for i in range(n):
        r[i] = np.sqrt(var) * rng.standard_t(5) * np.sqrt(3 / 5)
        var = 0.1 * vol**2 + 0.8 * var + 0.1 * r[i] ** 2
    idx = pd.date_range(start, periods=n, freq="D", name="date")
    return pd.Series(p0 * np.exp(np.cumsum(r)), index=idx)


def asset_data(close: pd.Series, asset: str = "TEST-USD") -> AssetData:
    """`AssetData` with daily bars from a close Series indexed by date."""
    c = close.dropna()
    bars = pd.DataFrame({
        "ts": bar_ts_from_dates(pd.DatetimeIndex(c.index)),
        "open": c.to_numpy(), "high": c.to_numpy(), "low": c.to_numpy(), "close": c.to_numpy(),
        "volume": np.nan,
    })
    return AssetData(asset=asset, bars={"1D": bars.reset_index(drop=True)})


def write_daily(folder: Path, asset: str, close: pd.Series) -> None:
    """Write ``daily/<asset>.csv`` like shared/data (date,open,high,low,close)."""
    d = folder / "daily"
    d.mkdir(parents=True, exist_ok=True)
    c = close.dropna()
    pd.DataFrame({"date": c.index.strftime("%Y-%m-%d"), "open": c.values, "high": c.values, "low": c.values,
                  "close": c.values}).to_csv(d / f"{asset}.csv", index=False, float_format="%.10g")


def with_hole(close: pd.Series, first: str, last: str) -> pd.Series:
    """Drop the closes dated in [first, last]."""
    return close[(close.index < pd.Timestamp(first)) | (close.index > pd.Timestamp(last))]
