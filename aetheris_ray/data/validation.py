"""Checks every connector and the store run on market data before using it.

One rule set, one place (docs/data.md, "Validation rules"):

* errors (`DataError`, one line naming the file or partition, the 1-based line
  of the file -- header = line 1 -- or the row of a frame, and the problem):
  missing columns, empty file, unparseable time, non-numeric value, NaN or
  non-positive price, ``high < low``, open/close more than `OC_TOLERANCE`
  outside ``[low, high]``, negative volume, unsorted times, conflicting
  duplicate times;
* repairs (applied, then reported as `DataQualityWarning` notes): open/close at
  most `OC_TOLERANCE` outside ``[low, high]`` widen the range; exact duplicate
  rows are dropped;
* notes only: gaps (counted, largest one named, never filled) and zero-volume
  bars;
* future rows (`check_not_future`): a row whose ``ts`` -- the time its value is
  known: a daily bar dated D closes at D 22:00 UTC, an intraday bar at its open +
  cadence, a daily side-series value dated D at D+1 00:00 UTC -- is later than the
  time of reading (`utc_now`) is an error.  So a daily bar dated today is refused
  until 22:00 UTC today, when it has closed.

The check functions return the clean frame and the notes; callers decide how to
surface the notes (connectors warn, the store puts them in its `IngestReport`).
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import PRICE_COLUMNS, cutoff_for
from aetheris_ray.errors import DataError, DataQualityWarning, InvalidInput, UnknownAsset

#: Open/close may sit this far (relative) outside ``[low, high]``; the range is widened.
OC_TOLERANCE = 0.005

#: Largest spacing of a business-day series that is not a gap (a weekend plus a holiday).
BUSINESS_DAY_MAX_STEP = pd.Timedelta(days=4)

#: Expected format of each kind of time column, quoted in parse errors.
TIME_FORMATS = {"date": "YYYY-MM-DD", "timestamp": "YYYY-MM-DD HH:MM:SS (UTC)"}


@dataclass(frozen=True)
class Checked:
    """A validated frame and the notes (repairs, gaps) produced on the way.

    Attributes
    ----------
    frame : DataFrame
        Sorted by ``ts``, unique ``ts``, index 0..n-1.
    notes : tuple of str
        One readable line per repair or data-quality remark.
    """

    frame: pd.DataFrame
    notes: tuple[str, ...] = ()


def at(where: str, lines: np.ndarray | None, i: int) -> str:
    """Location prefix of row ``i`` (0-based): ``"<file>, line N"`` or ``"<where>, row N"``."""
    return f"{where}, line {int(lines[i])}" if lines is not None else f"{where}, row {i + 1}"


def fmt_time(t: pd.Timestamp) -> str:
    """A timestamp as a short readable string (a bare date when it is midnight)."""
    t = pd.Timestamp(t)
    return t.strftime("%Y-%m-%d") if t == t.normalize() else t.strftime("%Y-%m-%d %H:%M:%S")


def check_columns(columns: Sequence[str], required: Sequence[str], optional: Sequence[str], where: str) -> None:
    """Raise `DataError` naming the missing and the expected columns.

    Examples
    --------
    >>> check_columns(["date", "close"], ["date", "close"], ["volume"], "x.csv")
    >>> check_columns(["date"], ["date", "close"], ["volume"], "x.csv")
    Traceback (most recent call last):
    ...
    aetheris_ray.errors.DataError: x.csv: missing column(s) close; expected columns date,close[,volume]
    """
    missing = [c for c in required if c not in columns]
    if missing:
        expected = ",".join(required) + "".join(f"[,{c}]" for c in optional)
        found = ",".join(columns) if columns else "(none)"
        raise DataError(
            f"{where}: missing column(s) {','.join(missing)}; expected columns {expected}"
            + ("" if set(columns) & set(required) else f" (found {found})")
        )


def parse_times(raw: pd.Series, kind: str, where: str, lines: np.ndarray | None, column: str) -> pd.DatetimeIndex:
    """Parse a column of ISO dates or timestamps to UTC (naive input is UTC).

    Parameters
    ----------
    raw : Series of str, shape (n_rows,)
    kind : {"date", "timestamp"}
        Dates must be midnight; timestamps are floored to the second (exchanges
        stamp settlements a few ms late, e.g. ``16:00:00.010``).
    where, lines, column
        Location used in error messages.

    Returns
    -------
    DatetimeIndex, shape (n_rows,), UTC, ns
    """
    parsed = pd.DatetimeIndex(pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")).as_unit("ns")
    bad = np.flatnonzero(parsed.isna())
    if bad.size:
        i = int(bad[0])
        value = raw.iloc[i]
        shown = "an empty cell" if pd.isna(value) or str(value).strip() == "" else repr(str(value))
        raise DataError(
            f"{at(where, lines, i)}: unparseable {kind} {shown} in column '{column}' (expected {TIME_FORMATS[kind]})"
        )
    if kind == "date":
        off = np.flatnonzero(parsed != parsed.normalize())
        if off.size:
            i = int(off[0])
            raise DataError(
                f"{at(where, lines, i)}: date {raw.iloc[i]!r} in column '{column}' has a time of day; "
                "daily files take plain dates (YYYY-MM-DD)"
            )
        return parsed
    return parsed.floor("s")


def utc_now() -> pd.Timestamp:
    """The wall-clock time rows are checked against (a function so tests can pin it)."""
    return pd.Timestamp.now(tz="UTC")


def check_not_future(
    ts: pd.Series | pd.DatetimeIndex,
    where: str,
    lines: np.ndarray | None = None,
    shown: pd.Series | None = None,
    now: pd.Timestamp | None = None,
) -> None:
    """Raise `DataError` at the first row whose ``ts`` is after ``now`` (default `utc_now`).

    ``ts`` is the canonical time a row's value is known (a daily bar's 22:00 UTC close);
    ``shown`` (the file's own time column, same rows) is quoted in the message.

    >>> import pandas as pd
    >>> check_not_future(pd.Series(pd.to_datetime(["2024-01-01 22:00"], utc=True)), "x.csv",
    ...                  now=pd.Timestamp("2024-01-01 21:00", tz="UTC"))
    Traceback (most recent call last):
    ...
    aetheris_ray.errors.DataError: x.csv, row 1: 2024-01-01 22:00:00 UTC is in the future (now 2024-01-01 21:00:00 UTC); remove rows that have not happened yet
    """
    now = utc_now() if now is None else now
    times = pd.DatetimeIndex(ts)
    late = np.flatnonzero(times > now)
    if not late.size:
        return
    i = int(late[0])
    known = f"{fmt_time(times[i])} UTC"
    what = known if shown is None else f"{shown.name} {str(shown.iloc[i]).strip()} (known at {known})"
    raise DataError(
        f"{at(where, lines, i)}: {what} is in the future (now {now.strftime('%Y-%m-%d %H:%M:%S')} UTC); "
        "remove rows that have not happened yet"
    )


def to_numeric(raw: pd.Series, column: str, where: str, lines: np.ndarray | None) -> np.ndarray:
    """A column as float64; raise `DataError` at the first cell that is not a number (empty cells -> NaN)."""
    if pd.api.types.is_float_dtype(raw.dtype) or pd.api.types.is_integer_dtype(raw.dtype):
        return raw.to_numpy(dtype=float, na_value=np.nan)
    values = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() & raw.notna().to_numpy() & (raw.astype(str).str.strip() != ""))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{at(where, lines, i)}: non-numeric value {str(raw.iloc[i])!r} in column '{column}'")
    return values.to_numpy(dtype=float, na_value=np.nan)


def check_bars(frame: pd.DataFrame, where: str, lines: np.ndarray | None = None, cadence: str = "1D") -> Checked:
    """Validate and repair OHLCV bars.

    Parameters
    ----------
    frame : DataFrame
        Columns ``ts`` (tz-aware) and ``open, high, low, close`` (price units,
        > 0), ``volume`` (base units, >= 0 or NaN); rows in file order.
    where : str
        File or partition named in messages.
    lines : ndarray of int, shape (n_rows,), optional
        1-based line numbers of the rows in their file; messages say ``row N``
        (1-based position) without them.
    cadence : str
        Pandas offset alias of the bars, for the gap note.

    Returns
    -------
    Checked
        Bars with columns `BAR_COLUMNS`, plus notes.
    """
    _require_rows(frame, where)
    notes: list[str] = []
    prices = frame.loc[:, list(PRICE_COLUMNS)].to_numpy(dtype=float)
    bad = ~(prices > 0)
    if bad.any():
        i, j = _first(bad)
        col = PRICE_COLUMNS[j]
        what = "missing (NaN) price" if np.isnan(prices[i, j]) else f"non-positive price {prices[i, j]:g}"
        raise DataError(f"{at(where, lines, i)}: {what} in column '{col}'")
    o, h, lo, c = prices.T
    inverted = np.flatnonzero(h < lo)
    if inverted.size:
        i = int(inverted[0])
        raise DataError(f"{at(where, lines, i)}: high {h[i]:g} is below low {lo[i]:g}")
    excess_open = np.maximum(o / h - 1.0, 1.0 - o / lo)
    excess = np.maximum(excess_open, np.maximum(c / h - 1.0, 1.0 - c / lo))
    far = np.flatnonzero(excess > OC_TOLERANCE)
    if far.size:
        i = int(far[0])
        name, value = ("open", o[i]) if excess_open[i] > OC_TOLERANCE else ("close", c[i])
        side = f"above high {h[i]:g}" if value > h[i] else f"below low {lo[i]:g}"
        raise DataError(
            f"{at(where, lines, i)}: {name} {value:g} is {side} "
            f"(more than {OC_TOLERANCE:.1%} outside [low, high])"
        )
    out = frame.loc[:, ["ts", *PRICE_COLUMNS]].copy()
    widened = int(np.count_nonzero(excess > 0))
    if widened:
        out["high"] = np.maximum(h, np.maximum(o, c))
        out["low"] = np.minimum(lo, np.minimum(o, c))
        notes.append(
            f"{where}: widened high/low of {widened} bar(s) whose open/close sat up to "
            f"{OC_TOLERANCE:.1%} outside [low, high]"
        )
    volume = frame["volume"].to_numpy(dtype=float) if "volume" in frame else np.full(len(frame), np.nan)
    negative = np.flatnonzero(volume < 0)
    if negative.size:
        i = int(negative[0])
        raise DataError(f"{at(where, lines, i)}: negative volume {volume[i]:g} in column 'volume'")
    out["volume"] = volume
    zero = int(np.count_nonzero(volume == 0))
    if zero:
        notes.append(f"{where}: {zero} bar(s) with zero volume (kept)")
    return _finish(out, where, lines, cadence, notes)


def check_series(
    frame: pd.DataFrame,
    where: str,
    lines: np.ndarray | None = None,
    cadence: str = "1D",
    column: str = "value",
    positive: bool = False,
) -> Checked:
    """Validate a side series.

    Parameters
    ----------
    frame : DataFrame
        Columns ``ts`` (tz-aware) and ``column`` (float, finite).
    where, lines, cadence
        As in `check_bars`.
    column : str
        Name of the value column (the file's own name, so messages quote it).
    positive : bool
        Also reject values <= 0 (levels such as implied vol or an index).

    Returns
    -------
    Checked
        Frame with columns ``ts, value``, plus notes.
    """
    _require_rows(frame, where)
    values = frame[column].to_numpy(dtype=float)
    finite = np.isfinite(values)
    bad = ~finite | (positive & ~(values > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "missing or non-finite value" if not finite[i] else f"non-positive value {values[i]:g}"
        raise DataError(f"{at(where, lines, i)}: {what} in column '{column}'")
    out = pd.DataFrame({"ts": frame["ts"], "value": values})
    return _finish(out, where, lines, cadence, [])


def gap_note(ts: pd.Series, cadence: str, where: str) -> str | None:
    """Describe the gaps of a sorted, unique time column (None when there are none).

    A gap is a step longer than 1.5 cadences (for business-day series ``"1B"``:
    longer than `BUSINESS_DAY_MAX_STEP`).  Gaps are reported, never filled.
    """
    if len(ts) < 2:
        return None
    times = pd.DatetimeIndex(ts)
    steps = np.diff(times.asi8)
    limit = BUSINESS_DAY_MAX_STEP if cadence.endswith("B") else 1.5 * pd.Timedelta(cadence)
    gaps = np.flatnonzero(steps > limit.value)
    if not gaps.size:
        return None
    k = int(gaps[np.argmax(steps[gaps])])
    largest = pd.Timedelta(int(steps[k]), unit="ns")
    return (
        f"{where}: {gaps.size} gap(s) longer than {cadence}, largest {largest} "
        f"({fmt_time(times[k])} to {fmt_time(times[k + 1])}); gaps are kept, not filled"
    )


def unknown_asset(asset: str, known: Iterable[str], where: str) -> UnknownAsset:
    """An `UnknownAsset` naming the asset, close matches and a few known assets."""
    known = sorted(known)
    if not known:
        return UnknownAsset(f"unknown asset {asset!r}: {where} holds no assets; ingest data first")
    close = difflib.get_close_matches(asset.upper(), [k.upper() for k in known], n=3, cutoff=0.8)
    by_upper = {k.upper(): k for k in known}
    hint = f"; did you mean {', '.join(repr(by_upper[c]) for c in close)}?" if close else ""
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return UnknownAsset(f"unknown asset {asset!r} in {where}{hint} (known: {shown}; {len(known)} in all)")


def resolve_cutoff(until: pd.Timestamp | str | None) -> pd.Timestamp | None:
    """`cutoff_for` of a user-given ``until``; `InvalidInput` when it is not a date.

    >>> str(resolve_cutoff("2024-01-31"))
    '2024-01-31 22:00:00+00:00'
    """
    if until is None:
        return None
    try:
        return cutoff_for(until)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"until={until!r} is not a date or timestamp; use YYYY-MM-DD or an ISO timestamp such as "
            "2024-01-31T12:00:00Z"
        ) from exc


def warn_notes(notes: Iterable[str], stacklevel: int = 1) -> None:
    """Emit each note as a `DataQualityWarning`, attributed ``stacklevel`` frames above the caller."""
    for note in notes:
        warnings.warn(note, DataQualityWarning, stacklevel=stacklevel + 2)


def _require_rows(frame: pd.DataFrame, where: str) -> None:
    if frame.empty:
        raise DataError(f"{where}: empty file (no data rows)")


def _first(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first True of a 2-D mask, row-major."""
    flat = int(np.flatnonzero(mask.ravel())[0])
    return divmod(flat, mask.shape[1])


def _finish(out: pd.DataFrame, where: str, lines: np.ndarray | None, cadence: str, notes: list[str]) -> Checked:
    """Sortedness, duplicates and gaps, shared by bars and series."""
    ts = pd.DatetimeIndex(out["ts"])
    if ts.isna().any():
        i = int(np.flatnonzero(ts.isna())[0])
        raise DataError(f"{at(where, lines, i)}: missing time")
    ts = (ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).as_unit("ns")
    step = np.diff(ts.asi8)
    back = np.flatnonzero(step < 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataError(
            f"{at(where, lines, i)}: time {fmt_time(ts[i])} is earlier than the previous row's "
            f"{fmt_time(ts[i - 1])}; rows must be sorted by time"
        )
    dup = np.flatnonzero(step == 0) + 1
    if dup.size:
        values = out.drop(columns="ts").to_numpy(dtype=float)
        same = np.all((values[dup] == values[dup - 1]) | (np.isnan(values[dup]) & np.isnan(values[dup - 1])), axis=1)
        if not same.all():
            i = int(dup[~same][0])
            first = i - 1
            while first > 0 and ts[first - 1] == ts[i]:
                first -= 1
            other = f"line {int(lines[first])}" if lines is not None else f"row {first + 1}"
            raise DataError(
                f"{at(where, lines, i)}: duplicate time {fmt_time(ts[i])} (also on {other}) with different "
                "values; keep one row per time"
            )
        keep = np.ones(len(out), dtype=bool)
        keep[dup] = False
        out, ts = out[keep], ts[keep]
        notes.append(f"{where}: dropped {dup.size} exact duplicate row(s)")
    out = out.reset_index(drop=True)
    out["ts"] = ts
    gap = gap_note(out["ts"], cadence, where)
    if gap:
        notes.append(gap)
    return Checked(out, tuple(notes))
