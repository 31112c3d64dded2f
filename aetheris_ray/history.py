"""The data layer of one request: daily closes, returns, the origin, point-in-time cuts.

The first layer a forecast goes through (request -> data -> features -> model ->
calibration -> result); nothing here knows about models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import AssetData, as_utc, ts_ns
from aetheris_ray.errors import DataError

__all__ = ["MIN_CLOSES", "MAX_STALENESS_DAYS", "daily_log_returns", "positive_closes", "resolve_origin", "at_origin",
           "resolve_seed", "point_in_time"]

#: Fewest daily closes a forecast needs (the baseline's ``min_history`` returns + 1).
MIN_CLOSES = 31
#: An as-of date whose newest close is older than this is refused (stale data).
MAX_STALENESS_DAYS = 3


def daily_log_returns(close: pd.Series) -> pd.Series:
    """Log-returns of consecutive closes; a return spanning a k-day gap is scaled by 1/sqrt(k).

    Gaps are kept honest: the scaled return has the variance of a one-day move
    under a random walk, so volatility estimates are not inflated by missing days.

    >>> c = pd.Series([100.0, 110.0, 99.0], index=pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-06"]))
    >>> [round(x, 4) for x in daily_log_returns(c)]
    [0.0953, -0.0527]
    """
    close = close.dropna()
    r = np.log(close.to_numpy(dtype=float))
    days = np.diff(close.index.to_numpy()).astype("timedelta64[D]").astype(float)
    out = np.diff(r) / np.sqrt(np.maximum(days, 1.0))
    return pd.Series(out, index=close.index[1:])


def positive_closes(data: AssetData) -> pd.Series:
    """Positive daily closes by date (non-positive prints are dropped)."""
    close = data.daily_close()
    keep = close.to_numpy() > 0  # NaN is not > 0
    return close if keep.all() else close[keep]


def resolve_origin(close: pd.Series, as_of: Any, asset: str) -> pd.Timestamp:
    """The origin date: the newest close on or before ``as_of`` (default: the newest close)."""
    if close.empty:
        if as_of is not None:  # the source was read up to as_of: nothing that early
            raise DataError(f"as_of {pd.Timestamp(as_of).date()}: {asset} has no daily close on or before it; "
                            "pick a later as_of")
        raise DataError(f"{asset}: no daily closes in the data source")
    if as_of is None:
        return close.index[-1]
    as_of = pd.Timestamp(as_of).normalize()  # unit "s" for dates past 2262 (9999-12-31): compare, never subtract
    known = close.index[close.index <= as_of]
    if known.empty:
        raise DataError(f"as_of {as_of.date()}: {asset} has no close on or before it "
                        f"(first close {close.index[0].date()})")
    origin = known[-1]
    stale = (as_of.date() - origin.date()).days
    if stale > MAX_STALENESS_DAYS:
        raise DataError(
            f"as_of {as_of.date()}: the newest {asset} close on or before it is {origin.date()}, "
            f"{stale} days earlier (more than {MAX_STALENESS_DAYS}); pick an as_of with data"
        )
    return origin


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one (returned with the forecast so it can be replayed)."""
    return int(seed) if seed is not None else int(np.random.SeedSequence().entropy % (2**63))


def point_in_time(data: AssetData, cutoff: pd.Timestamp) -> AssetData:
    """``data.until(cutoff)`` for sorted frames: a frame already ending by the cutoff is kept as is,
    the others are sliced at ``searchsorted`` (no copy)."""

    try:
        c = as_utc(cutoff).as_unit("ns").value
    except (OverflowError, pd.errors.OutOfBoundsDatetime):  # a cutoff past 2262 (or before 1677)
        c = int(np.iinfo(np.int64).max if cutoff.year > 2000 else np.iinfo(np.int64).min)

    def cut(f: pd.DataFrame) -> pd.DataFrame:
        ns = ts_ns(f["ts"])
        if ns.size == 0 or ns[-1] <= c:
            return f
        return f.iloc[: int(np.searchsorted(ns, c, side="right"))]

    return AssetData(asset=data.asset, bars={k: cut(v) for k, v in data.bars.items()},
                     series={k: cut(v) for k, v in data.series.items()}, info=data.info)


def at_origin(data: AssetData, as_of: Any, min_closes: int) -> tuple[pd.Timestamp, AssetData, pd.Series]:
    """The origin for ``as_of``, the data cut point in time at its cutoff, and the closes up to it.

    Raises `DataError` (naming the asset and the date) when there is no usable close
    or fewer than ``min_closes`` closes up to the origin.
    """
    from aetheris_ray.data.schema import cutoff_for

    close_all = positive_closes(data)
    origin = resolve_origin(close_all, as_of, data.asset)
    cut = point_in_time(data, cutoff_for(origin))
    close = close_all[close_all.index <= origin]
    if len(close) < min_closes:
        where = f"as_of {pd.Timestamp(as_of).date()}: " if as_of is not None else ""
        raise DataError(f"{where}{data.asset}: {len(close)} daily closes up to {origin.date()}, at least {min_closes} "
                        "needed; pick a later as_of or give more history")
    return origin, cut, close
