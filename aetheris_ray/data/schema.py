"""The one in-memory vocabulary for market data.

Conventions (see docs/data.md):

* Every timestamp column is ``ts``: tz-aware UTC, and it is the moment the value
  became *known* (a bar's close time, a funding settlement time, the end of the
  day a daily index value is dated).  A point-in-time read keeps rows with
  ``ts <= cutoff`` and nothing else.
* Daily crypto bars close about 22:00 UTC, so a daily bar dated D has
  ``ts = D 22:00 UTC``.  A forecast "as of D" is made at that close:
  ``cutoff(D) = D + 22:00 UTC``.  Daily side series whose day ends at midnight
  UTC (DVOL, aggregated funding, basis, macro, on-chain) dated D get
  ``ts = D+1 00:00 UTC``, so a forecast as of D sees them only up to D-1.
* Bars: ``ts, open, high, low, close, volume`` (volume NaN when the source has
  none).  Side series: ``ts, value``, with the unit and cadence in `SeriesInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

import pandas as pd

BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
SERIES_COLUMNS = ("ts", "value")

#: Hour (UTC) at which a daily bar closes, and so the cutoff of an as-of date.
DAILY_CLOSE_HOUR = 22

#: Canonical side-series names the engine looks for.  Connectors map file names
#: onto these; absent series degrade gracefully in the engine.
SIDE_SERIES = {
    "funding": "perpetual funding rate, fraction per day",
    "implied_vol": "30-day implied volatility index, annualised percent",
    "basis": "perpetual minus spot, fraction of spot",
}


@dataclass(frozen=True)
class SeriesInfo:
    """Metadata of one side series."""

    name: str
    unit: str
    cadence: str  # pandas offset alias: "1D", "8h", "2h", ...
    source: str = ""


@dataclass(frozen=True)
class AssetData:
    """Everything known about one asset, point in time.

    Attributes
    ----------
    asset : str
        Ticker as used everywhere, e.g. ``"BTC-USD"``.
    bars : mapping cadence -> DataFrame
        OHLCV bars per cadence (``"1D"`` always present, ``"2h"`` when intraday
        bars exist), columns `BAR_COLUMNS`, sorted by ``ts``, unique ``ts``.
    series : mapping name -> DataFrame
        Side series with columns `SERIES_COLUMNS`, sorted, unique ``ts``.
        Asset-specific (``funding``, ``implied_vol``, ``basis``, ``onchain_*``)
        and market-wide (``macro_*``, ``market_*``) series both live here.
    info : mapping name -> SeriesInfo
        Unit and cadence of every side series.
    """

    asset: str
    bars: Mapping[str, pd.DataFrame]
    series: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    info: Mapping[str, SeriesInfo] = field(default_factory=dict)

    def daily_close(self) -> pd.Series:
        """Daily closes as a float Series indexed by tz-naive calendar date.

        Missing days stay missing (no fill).  The index is named ``date``.
        """
        bars = self.bars["1D"]
        idx = pd.DatetimeIndex(bars["ts"]).tz_convert("UTC").tz_localize(None).normalize()
        return pd.Series(bars["close"].to_numpy(dtype=float), index=idx.rename("date"), name=self.asset)

    def until(self, cutoff: pd.Timestamp) -> "AssetData":
        """Point-in-time view: only rows with ``ts <= cutoff``."""
        cutoff = as_utc(cutoff)
        return AssetData(
            asset=self.asset,
            bars={k: v[v["ts"] <= cutoff] for k, v in self.bars.items()},
            series={k: v[v["ts"] <= cutoff] for k, v in self.series.items()},
            info=self.info,
        )


def as_utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    """A tz-aware UTC timestamp (naive input is taken as UTC)."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def cutoff_for(as_of: pd.Timestamp | str) -> pd.Timestamp:
    """The point-in-time cutoff of an as-of date or timestamp.

    A bare date means "at that day's daily close" (22:00 UTC); a timestamp with a
    time of day is used as given.

    >>> str(cutoff_for("2024-12-09"))
    '2024-12-09 22:00:00+00:00'
    """
    t = pd.Timestamp(as_of)
    if t == t.normalize():
        t = t + pd.Timedelta(hours=DAILY_CLOSE_HOUR)
    return as_utc(t)


@runtime_checkable
class MarketSource(Protocol):
    """Anything that can answer point-in-time history questions."""

    def assets(self) -> list[str]:
        """Every asset with daily bars, sorted."""
        ...

    def history(self, asset: str, until: pd.Timestamp | str | None = None) -> AssetData:
        """All data of ``asset`` known at ``cutoff_for(until)`` (everything when None).

        Raises `UnknownAsset` naming the asset and listing a few known ones.
        """
        ...
