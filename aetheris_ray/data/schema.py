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

import numpy as np
import pandas as pd

BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
SERIES_COLUMNS = ("ts", "value")
PRICE_COLUMNS = ("open", "high", "low", "close")

#: dtype of every ``ts`` column (nanosecond resolution, so every source agrees).
TS_DTYPE = "datetime64[ns, UTC]"

#: Prefixes of market-wide side-series names (the same frame for every asset).
MARKET_PREFIXES = ("macro_", "market_")

#: Quote currencies treated as USD when a pair is mapped to an asset
#: (``BTC/USDT`` and ``BTC-USD`` are both ``BTC-USD``; stablecoin de-pegs are ignored).
USD_QUOTES = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USDP"})

_DAY_NS = 86_400 * 10**9

#: Hour (UTC) at which a daily bar closes, and so the cutoff of an as-of date.
DAILY_CLOSE_HOUR = 22

#: Assets whose daily range stands for the market's volatility (the first a source has), and the side
#: series that carries it to every asset (`market_range`).
MARKET_ASSETS = ("BTC-USD", "SYN-BTC")
MARKET_RANGE = "market_range"

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
        ns = ts_ns(bars["ts"])
        days = (ns - ns % _DAY_NS).view("datetime64[ns]")  # the UTC calendar day (floor, also before 1970)
        idx = pd.DatetimeIndex(days, name="date")
        return pd.Series(bars["close"].to_numpy(dtype=float), index=idx, name=self.asset)

    def until(self, cutoff: pd.Timestamp) -> "AssetData":
        """Point-in-time view: only rows with ``ts <= cutoff``."""
        cutoff = as_utc(cutoff)
        return AssetData(
            asset=self.asset,
            bars={k: v[v["ts"] <= cutoff] for k, v in self.bars.items()},
            series={k: v[v["ts"] <= cutoff] for k, v in self.series.items()},
            info=self.info,
        )


def ts_ns(col: pd.Series) -> np.ndarray:
    """A ``ts`` column as int64 UTC nanoseconds (naive taken as UTC); a view when it has `TS_DTYPE`."""
    if str(col.dtype) == TS_DTYPE:
        return col.array.asi8
    idx = pd.DatetimeIndex(col)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ns").asi8


def observed_log_range(ns: np.ndarray, high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ln(high / low)`` of daily bars closing at ``ns`` (int64 UTC nanoseconds) and where it is observed:
    not flat (high == low), both prices positive, not the first bar, not more than 1.5 days after the
    previous bar (the range would not cover the gap)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(high / low)
    step = np.diff(ns, prepend=ns[0] - 2 * _DAY_NS)
    ok = np.isfinite(x) & (x > 0) & (low > 0) & (step <= 1.5 * _DAY_NS)
    ok[0] = False
    return x, ok


def market_range(daily: pd.DataFrame, asset: str) -> tuple[pd.DataFrame, SeriesInfo] | None:
    """``ln(high / low)`` of the market asset's daily bars as the `MARKET_RANGE` side series.

    ``ts`` is each bar's close, so a point-in-time cut keeps exactly the bars known at
    the cutoff.  Unobserved bars (`observed_log_range`, the rule of an asset's own ranges)
    are left out.  None when the bars have no high / low.
    """
    if daily.empty or not {"high", "low"} <= set(daily.columns):
        return None
    x, ok = observed_log_range(ts_ns(daily["ts"]), *(daily[c].to_numpy(dtype=float) for c in ("high", "low")))
    frame = pd.DataFrame({"ts": daily["ts"].array[ok], "value": x[ok]})
    return frame, SeriesInfo(MARKET_RANGE, f"ln(high/low) of {asset}'s daily bar", "1D", f"{asset} daily bars")


def with_market_range(data: AssetData, daily: pd.DataFrame | None, asset: str | None) -> AssetData:
    """``data`` with the `MARKET_RANGE` series of the market asset's daily bars (unchanged without them)."""
    made = None if daily is None or asset is None else market_range(daily, asset)
    if made is None:
        return data
    frame, info = made
    return AssetData(asset=data.asset, bars=data.bars, series={**data.series, MARKET_RANGE: frame},
                     info={**data.info, MARKET_RANGE: info})


def is_market_series(name: str) -> bool:
    """Whether a side series is market-wide (``macro_*``, ``market_*``) rather than per asset.

    >>> is_market_series("macro_dxy"), is_market_series("funding")
    (True, False)
    """
    return name.startswith(MARKET_PREFIXES)


def asset_for_pair(base: str, quote: str) -> str:
    """The asset name of a trading pair: USD-like quotes map to ``-USD``; the base keeps its case.

    >>> asset_for_pair("BTC", "USDT"), asset_for_pair("ETH", "BTC"), asset_for_pair("XAUt", "usdt")
    ('BTC-USD', 'ETH-BTC', 'XAUt-USD')
    """
    return f"{base}-{'USD' if quote.upper() in USD_QUOTES else quote}"


def bar_ts_from_dates(dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """``ts`` of daily bars dated ``dates``: the day's close, ``D 22:00 UTC``."""
    return _utc_ns(dates).normalize() + pd.Timedelta(hours=DAILY_CLOSE_HOUR)


def series_ts_from_dates(dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """``ts`` of daily side-series values dated ``dates``: the end of the UTC day, ``D+1 00:00``."""
    return _utc_ns(dates).normalize() + pd.Timedelta(days=1)


def bar_ts_from_open(open_times: pd.DatetimeIndex, cadence: str) -> pd.DatetimeIndex:
    """``ts`` of bars keyed by their open time: ``open + cadence`` (the close)."""
    return _utc_ns(open_times) + pd.Timedelta(cadence)


def daily_bars_from_intraday(bars: pd.DataFrame, cadence: str) -> pd.DataFrame:
    """Daily bars closing at 22:00 UTC, aggregated from intraday bars.

    Day D collects the bars with ``ts`` (close time) in ``(D-1 22:00, D 22:00]``;
    the result has ``ts = D 22:00 UTC`` like every daily bar.  Partial days at
    the edges are dropped: a first day whose first bar opened after ``D-1 22:00``
    and a last day whose last bar closed before ``D 22:00`` (still open).
    Missing bars inside the span do not drop a day.

    Parameters
    ----------
    bars : DataFrame
        Intraday bars, columns `BAR_COLUMNS`, sorted unique ``ts``.
    cadence : str
        Their cadence (pandas offset alias, e.g. ``"2h"``).

    Returns
    -------
    DataFrame
        Daily bars, columns `BAR_COLUMNS`; volume is the sum (NaN when all NaN).

    Examples
    --------
    >>> ts = pd.date_range("2024-01-01 02:00", periods=24, freq="2h", tz="UTC")  # bar close times
    >>> bars = pd.DataFrame({"ts": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 1.0})
    >>> daily_bars_from_intraday(bars, "2h")[["ts", "volume"]]  # Jan 1 starts at 00:00, not 22:00: dropped
                             ts  volume
    0 2024-01-02 22:00:00+00:00    12.0
    """
    close = pd.Timedelta(hours=DAILY_CLOSE_HOUR)
    ts = pd.DatetimeIndex(bars["ts"])
    day_close = (ts - close - pd.Timedelta(1, unit="ns")).floor("D") + pd.Timedelta(days=1) + close
    grouped = bars.assign(ts=day_close).groupby("ts", sort=True)
    daily = grouped.agg(open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"))
    daily["volume"] = grouped["volume"].sum(min_count=1)
    first_open = pd.Series(ts, index=day_close).groupby(level=0).min() - pd.Timedelta(cadence)
    last_close = pd.Series(ts, index=day_close).groupby(level=0).max()
    complete = (first_open <= daily.index - pd.Timedelta(days=1)) & (last_close >= daily.index)
    inner = np.ones(len(daily), dtype=bool)
    if len(daily):
        inner[0], inner[-1] = complete.iloc[0], complete.iloc[-1]
    daily = daily[inner].reset_index()
    daily["ts"] = pd.DatetimeIndex(daily["ts"]).as_unit("ns")
    return daily.loc[:, list(BAR_COLUMNS)]


def _utc_ns(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(times)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ns")


def copy_frames(data: AssetData) -> AssetData:
    """The same data in new (copy-on-write) frames, so callers cannot mutate a source's cache."""
    return AssetData(
        asset=data.asset,
        bars={k: v.copy(deep=False) for k, v in data.bars.items()},
        series={k: v.copy(deep=False) for k, v in data.series.items()},
        info=dict(data.info),
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
