"""Exchange connector through ``ccxt`` (imported lazily, only when a client is built).

Mapping (docs/data.md, "Exchange connector"):

* a spot symbol ``BASE/QUOTE`` is asset `asset_for_pair` ``(BASE, QUOTE)``:
  ``BTC/USDT`` -> ``BTC-USD`` (USD stablecoin quotes count as USD);
* bars are fetched at ``intraday`` cadence (default 2h) with ``fetch_ohlcv``,
  paginated by ``since``/``limit``; ccxt stamps a bar with its open time, so
  ``ts = open + cadence``; bars not closed at the exchange's clock are dropped;
* daily bars are aggregated from the intraday bars to the 22:00 UTC close
  (`daily_bars_from_intraday`), so they line up with CSV daily bars (an
  exchange's native 1d bars close at 00:00 UTC and would not);
* perpetual funding comes from ``fetch_funding_rate_history`` on
  ``BASE/QUOTE:QUOTE``: ``funding_<cadence>`` (fraction per settlement interval,
  ``ts`` = settlement time floored to the second) and ``funding`` (sum of the
  settlements of each UTC day, fraction/day, ``ts`` = the end of that day).

Network and exchange failures raise `DataError` naming the exchange, symbol
and call.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import (
    AssetData,
    SeriesInfo,
    asset_for_pair,
    as_utc,
    bar_ts_from_open,
    copy_frames,
    daily_bars_from_intraday,
)
from aetheris_ray.data.validation import check_bars, check_series, resolve_cutoff, unknown_asset, warn_notes
from aetheris_ray.errors import DataError, InvalidInput

#: ccxt timeframe of each supported intraday cadence.
TIMEFRAMES = {"1h": "1h", "2h": "2h", "4h": "4h", "6h": "6h", "8h": "8h", "12h": "12h"}


class ExchangeSource:
    """Market data fetched from an exchange, implementing `MarketSource`.

    Parameters
    ----------
    exchange_id : str
        ccxt exchange id (``"binance"``, ``"kraken"``, ...).
    symbols : sequence of str
        Spot symbols ``BASE/QUOTE``; each maps to one asset.
    client : object, optional
        A ccxt exchange instance (or anything with the same methods); built from
        ``exchange_id`` when None.
    since : str or Timestamp
        First bar open time to fetch (UTC).
    intraday : str
        Bar cadence fetched (a key of `TIMEFRAMES`); daily bars are aggregated from it.
    funding : bool
        Also fetch perpetual funding history where the exchange has it.
    limit : int
        Rows per request.
    max_pages : int
        Safety bound on requests per series.

    Examples
    --------
    >>> src = ExchangeSource("binance", ["BTC/USDT", "ETH/USDT"])
    >>> src.assets()
    ['BTC-USD', 'ETH-USD']
    """

    def __init__(
        self,
        exchange_id: str = "binance",
        symbols: Sequence[str] = ("BTC/USDT",),
        client: Any = None,
        since: str | pd.Timestamp = "2017-01-01",
        intraday: str = "2h",
        funding: bool = True,
        limit: int = 1000,
        max_pages: int = 10_000,
    ) -> None:
        if intraday not in TIMEFRAMES:
            raise InvalidInput(f"intraday={intraday!r}: expected one of {', '.join(TIMEFRAMES)}")
        if limit < 1 or max_pages < 1:
            raise InvalidInput(f"limit={limit}, max_pages={max_pages}: both must be >= 1")
        self._symbols: dict[str, str] = {}
        for symbol in symbols:
            base, sep, quote = symbol.partition("/")
            if not (base and sep and quote) or ":" in quote:
                raise InvalidInput(f"symbol {symbol!r}: expected a spot symbol BASE/QUOTE such as 'BTC/USDT'")
            asset = asset_for_pair(base, quote)
            if asset in self._symbols:
                raise InvalidInput(f"symbols {self._symbols[asset]!r} and {symbol!r} both map to asset {asset!r}")
            self._symbols[asset] = symbol
        try:
            self.since = as_utc(since)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"since={since!r}: expected a date such as '2017-01-01'") from exc
        self.exchange_id, self.intraday, self.funding = exchange_id, intraday, funding
        self.limit, self.max_pages = limit, max_pages
        self._client_obj = client
        self._cache: dict[str, AssetData] = {}

    def __repr__(self) -> str:
        return f"ExchangeSource({self.exchange_id!r}, {list(self._symbols.values())!r})"

    def assets(self) -> list[str]:
        """The assets of the configured symbols, sorted (no network)."""
        return sorted(self._symbols)

    def history(self, asset: str, until: pd.Timestamp | str | None = None) -> AssetData:
        """Fetch (once per instance) and return ``asset``'s data known at ``cutoff_for(until)``."""
        cutoff = resolve_cutoff(until)
        if asset not in self._symbols:
            raise unknown_asset(asset, self._symbols, repr(self))
        if asset not in self._cache:
            self._cache[asset] = self._fetch(asset, self._symbols[asset])
        data = copy_frames(self._cache[asset])
        return data if cutoff is None else data.until(cutoff)

    # -- fetching ----------------------------------------------------------------

    def _client(self) -> Any:
        if self._client_obj is None:
            import ccxt

            cls = getattr(ccxt, self.exchange_id, None)
            if cls is None:
                raise InvalidInput(
                    f"exchange_id={self.exchange_id!r} is not a ccxt exchange; e.g. "
                    f"{', '.join(ccxt.exchanges[:5])} ({len(ccxt.exchanges)} in all)"
                )
            self._client_obj = cls({"enableRateLimit": True})
        return self._client_obj

    def _call(self, method: str, symbol: str, *args: Any, **kwargs: Any) -> Any:
        """Call a client method; network/exchange failures become `DataError`."""
        try:
            return getattr(self._client(), method)(*args, **kwargs)
        except Exception as exc:
            if not _is_fetch_error(exc):
                raise
            raise DataError(
                f"{self.exchange_id} {symbol}: {method} failed ({type(exc).__name__}: {exc}); "
                "check the network and the symbol, or read a CSV export with data=..."
            ) from exc

    def _fetch(self, asset: str, symbol: str) -> AssetData:
        markets = self._call("load_markets", symbol) or {}
        if symbol not in markets:
            listed = sorted(m for m in markets if ":" not in m)
            raise InvalidInput(
                f"symbol {symbol!r} is not listed on {self.exchange_id}; e.g. {', '.join(listed[:5])}"
            )
        now = pd.Timestamp(int(self._call("milliseconds", symbol)), unit="ms", tz="UTC")
        where = f"{self.exchange_id} {symbol} {self.intraday}"
        intraday = self._ohlcv(symbol, now)
        checked = check_bars(intraday, where, cadence=self.intraday)
        bars = {self.intraday: checked.frame, "1D": daily_bars_from_intraday(checked.frame, self.intraday)}
        notes = list(checked.notes)
        series: dict[str, pd.DataFrame] = {}
        info: dict[str, SeriesInfo] = {}
        perp = f"{symbol}:{symbol.partition('/')[2]}"
        has = getattr(self._client(), "has", {}) or {}
        if self.funding and has.get("fetchFundingRateHistory") and perp in markets:
            rates = self._funding(perp, now)
            if len(rates) >= 2:
                cadence = _cadence(rates["ts"])
                checked_f = check_series(rates, f"{self.exchange_id} {perp} funding", cadence=cadence)
                name = f"funding_{cadence}"
                series[name] = checked_f.frame
                info[name] = SeriesInfo(name, f"fraction/{cadence}", cadence, f"{self.exchange_id} {perp}")
                series["funding"] = _daily_funding(checked_f.frame, self.since, now)
                info["funding"] = SeriesInfo("funding", "fraction/day", "1D", f"{self.exchange_id} {perp}")
                notes += checked_f.notes
        elif self.funding:
            notes.append(f"{self.exchange_id} {symbol}: no perpetual funding history ({perp}); funding omitted")
        warn_notes(notes, stacklevel=3)
        return AssetData(asset, bars, series, info)

    def _ohlcv(self, symbol: str, now: pd.Timestamp) -> pd.DataFrame:
        """Closed intraday bars from ``since`` to ``now``, paginated; columns `BAR_COLUMNS`."""
        step = int(pd.Timedelta(self.intraday).value // 1_000_000)
        cursor, now_ms = _ms(self.since), _ms(now)
        rows: list[list[float]] = []
        for _ in range(self.max_pages):
            if cursor + step > now_ms:  # the next bar has not closed yet
                break
            batch = self._call(
                "fetch_ohlcv", symbol, symbol, timeframe=TIMEFRAMES[self.intraday], since=cursor, limit=self.limit
            )
            if not batch:
                break
            rows.extend(batch)
            cursor = max(cursor, int(batch[-1][0]) + step)
        else:
            raise DataError(f"{self.exchange_id} {symbol}: more than {self.max_pages} pages of bars; pass a later since")
        if not rows:
            raise DataError(f"{self.exchange_id} {symbol}: no {self.intraday} bars since {self.since.date()}")
        raw = np.asarray(rows, dtype=float).reshape(len(rows), -1)[:, :6]
        frame = pd.DataFrame(raw, columns=["open_ms", "open", "high", "low", "close", "volume"]).drop_duplicates()
        opened = pd.DatetimeIndex(pd.to_datetime(frame["open_ms"].astype(np.int64), unit="ms", utc=True))
        frame.insert(0, "ts", bar_ts_from_open(opened, self.intraday))
        frame = frame[(frame["ts"] <= now).to_numpy()].sort_values("ts", kind="stable")
        return frame.drop(columns="open_ms").reset_index(drop=True)

    def _funding(self, perp: str, now: pd.Timestamp) -> pd.DataFrame:
        """Funding settlements from ``since`` to ``now``, paginated; columns ``ts, value``."""
        cursor, now_ms = _ms(self.since), _ms(now)
        rows: dict[int, float] = {}
        for _ in range(self.max_pages):
            batch = self._call("fetch_funding_rate_history", perp, perp, since=cursor, limit=self.limit)
            if not batch:
                break
            for item in batch:
                rows[int(item["timestamp"])] = float(item["fundingRate"])
            cursor = max(cursor, int(batch[-1]["timestamp"]) + 1)
            if cursor > now_ms:
                break
        else:
            raise DataError(f"{self.exchange_id} {perp}: more than {self.max_pages} pages of funding; pass a later since")
        ts = pd.DatetimeIndex(pd.to_datetime(sorted(rows), unit="ms", utc=True)).floor("s").as_unit("ns")
        return pd.DataFrame({"ts": ts, "value": [rows[k] for k in sorted(rows)]})


def _is_fetch_error(exc: Exception) -> bool:
    """Whether ``exc`` is a network/exchange failure (ccxt's own errors or OS-level I/O errors)."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    import ccxt

    return isinstance(exc, ccxt.BaseError)


def _ms(t: pd.Timestamp) -> int:
    return int(t.value // 1_000_000)


def _cadence(ts: pd.Series) -> str:
    """Funding interval as an offset alias (``"8h"``), from the median spacing."""
    step = pd.Timedelta(int(np.median(np.diff(pd.DatetimeIndex(ts).asi8))), unit="ns").round("h")
    return f"{max(int(step / pd.Timedelta(hours=1)), 1)}h"


def _daily_funding(rates: pd.DataFrame, since: pd.Timestamp, now: pd.Timestamp) -> pd.DataFrame:
    """Sum of each UTC day's settlements, fraction/day, ``ts`` = the end of the day.

    The settlement at ``D+1 00:00`` pays for the last interval of D, so it counts
    towards D.  Days that began before ``since`` or end after ``now`` are partial
    and dropped.
    """
    day_end = pd.DatetimeIndex(rates["ts"]).ceil("D")
    daily = rates.groupby(day_end, sort=True)["value"].sum()
    ends = pd.DatetimeIndex(daily.index).as_unit("ns")
    keep = np.asarray((ends - pd.Timedelta(days=1) >= since) & (ends <= now))
    return pd.DataFrame({"ts": ends[keep], "value": daily.to_numpy()[keep]})
