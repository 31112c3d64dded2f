"""Options chains: the schema, a CSV connector with validation, a ccxt source, and an SVI chain built
from an implied-vol index where no chain is observed.

Schema (one row per option per snapshot; the CSV columns, case-insensitive):

=================  ========  ==================================================================
column             required  meaning
=================  ========  ==================================================================
``as_of``          yes       snapshot time, ISO timestamp (naive = UTC); the time the row is known
``expiry``         yes       expiry time, ISO timestamp or date (a date expires at 08:00 UTC, as
                             Deribit's options do); strictly after ``as_of``
``strike``         yes       strike price (quote currency), > 0
``type``           yes       ``call`` / ``put`` (``c`` / ``p`` accepted, any case)
``iv``             yes       implied volatility, annualised, **decimal** (0.55 = 55 %); in
                             (0, `MAX_IV`]; a value above `MAX_IV` is refused as "percent?"
``open_interest``  yes       open interest in contracts of one unit of the underlying, >= 0
``volume``         no        traded contracts over the last day, >= 0 (NaN when absent)
``underlying``     no        the underlying (forward / index) price the IVs refer to, > 0
=================  ========  ==================================================================

In memory a chain is a DataFrame with the columns `CHAIN_COLUMNS`: ``ts`` (the
``as_of``, UTC, ns) first, so `AssetData.until` cuts it like any side series; it
travels in ``AssetData.series[CHAIN_SERIES]`` with a `SeriesInfo` whose ``source``
is ``observed:<file>`` (`attach_chain`).  Validation errors are `DataError` (as for
every other series, `aetheris_ray.data.validation`), one line naming the file, the
1-based line (header = line 1) and the problem.

CSV layout: ``<data>/options/<ASSET>.csv`` next to ``daily/`` (`chain_path`);
`ChainCsvSource` wraps any `MarketSource` and attaches the chain of each asset it has.

Constructed chain (`chain_from_index`, no chain observed; BTC's DVOL exists from
2022-11): every expiry of `CONSTRUCTED_EXPIRIES` gets a raw-SVI smile
``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + s^2))`` in log-moneyness ``k = ln(K/F)``
with, for the target total variance ``theta = (IV/100)^2 T`` (flat term structure at
the index level):

* ``b = SVI_BETA sqrt(theta)``, ``s = SVI_SIGMA sqrt(theta)``, ``m = 0``,
  ``rho = SVI_RHO`` (or the ``skew`` scenario): the smile's shape in units of the
  expiry's standard deviation is the same at every level and maturity;
* ``a`` solved (secant steps) so that the expiry's variance-swap variance (the
  model-free integral of out-of-the-money prices, what DVOL measures) equals
  ``theta``: the chain reprices the index it was built from;
* strikes ``F exp(z sqrt(theta))`` for ``z`` in `CONSTRUCTED_Z`, a call and a put at
  each; forward = spot (no rates, no basis);
* open interest from a stated profile: customers hold out-of-the-money options,
  call OI ``E_T exp(-((z - 0.75)/1.25)^2 / 2)``, put OI ``E_T exp(-((z + 0.75)/1.25)^2 / 2)``,
  expiry weights `CONSTRUCTED_OI_WEIGHTS` (only ratios matter downstream).

A constructed chain is never observed data: its `SeriesInfo` source and every
answer that uses it say ``from_implied_vol_index`` (`CHAIN_SOURCES`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import AssetData, SeriesInfo, copy_frames
from aetheris_ray.data.validation import (
    at,
    check_columns,
    check_not_future,
    fmt_time,
    parse_times,
    resolve_cutoff,
    to_numeric,
)
from aetheris_ray.errors import DataError, InvalidInput

__all__ = [
    "CHAIN_COLUMNS", "CHAIN_REQUIRED", "CHAIN_OPTIONAL", "CHAIN_SERIES", "CHAIN_SOURCES", "CHAIN_MAX_AGE", "MAX_IV",
    "CONSTRUCTED_EXPIRIES", "CONSTRUCTED_Z", "CONSTRUCTED_OI", "CONSTRUCTED_OI_WEIGHTS", "SVI_BETA", "SVI_SIGMA",
    "SVI_RHO", "VS_GRID_Z",
    "ChainCsvSource", "SviSmile", "attach_chain", "chain_from_index", "chain_path", "chain_source_of", "check_chain",
    "constructed_open_interest",
    "fetch_chain_ccxt", "read_chain_csv", "snapshot", "svi_smiles", "variance_swap", "vix_style_index",
]

#: Key of a chain in ``AssetData.series``.
CHAIN_SERIES = "options_chain"
CHAIN_REQUIRED = ("as_of", "expiry", "strike", "type", "iv", "open_interest")
CHAIN_OPTIONAL = ("volume", "underlying")
#: In-memory columns (``ts`` = ``as_of``; ``call`` True for calls).
CHAIN_COLUMNS = ("ts", "expiry", "strike", "call", "iv", "open_interest", "volume", "underlying")
#: Where an answer's chain came from (``metadata.chain_source``).
CHAIN_SOURCES = ("observed", "from_implied_vol_index", "none")
#: Largest implied vol accepted (decimal, annualised); above it the file is probably in percent.
MAX_IV = 5.0
#: A snapshot older than this at the origin's cutoff is not used.
CHAIN_MAX_AGE = pd.Timedelta(days=7)
#: Hour (UTC) at which an expiry given as a bare date expires.
EXPIRY_HOUR = 8

#: Days to expiry of the constructed chain.
CONSTRUCTED_EXPIRIES = (7, 14, 30, 60, 90)
#: Strike grid of the constructed chain, in standard deviations of the expiry (``k = z sqrt(theta)``).
CONSTRUCTED_Z = tuple(np.round(np.arange(-4.0, 4.0 + 1e-9, 0.25), 2).tolist())
#: Share of open interest per constructed expiry (same order as `CONSTRUCTED_EXPIRIES`).
CONSTRUCTED_OI_WEIGHTS = (0.30, 0.20, 0.25, 0.15, 0.10)
#: Total open interest of a constructed chain (contracts; a scale only, indices use ratios).
CONSTRUCTED_OI = 10_000.0
#: Raw-SVI wing slope and curvature in units of ``sqrt(theta)``, and the default correlation (put skew).
SVI_BETA = 0.2
SVI_SIGMA = 1.0
SVI_RHO = -0.25
#: Integration grid of the variance swap, in standard deviations of the expiry.
VS_GRID_Z = np.linspace(-12.0, 12.0, 481)
#: Secant steps of the SVI level solve (the variance swap is nearly linear in ``a``).
_SECANT_STEPS = 4
_YEAR_DAYS = 365.0


# -- schema and validation ---------------------------------------------------------------


def check_chain(raw: pd.DataFrame, where: str, lines: np.ndarray | None = None,
                now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Validate a raw chain table and return it in the in-memory layout.

    Parameters
    ----------
    raw : DataFrame, shape (n_rows, n_columns)
        The file's columns (lower-cased names), cells as read (strings or numbers).
    where : str
        File named in messages.
    lines : ndarray of int, shape (n_rows,), optional
        1-based line numbers of the rows; messages say ``row N`` without them.
    now : Timestamp, optional
        Time of reading for the future-row check (default: the wall clock).

    Returns
    -------
    DataFrame, shape (n_rows, len(CHAIN_COLUMNS))
        Columns `CHAIN_COLUMNS`, sorted by (``ts``, ``expiry``, ``strike``, ``call``).

    Raises
    ------
    DataError
        Missing columns, no rows, unparseable times, non-numeric cells, an expiry
        not after ``as_of``, a strike or underlying <= 0, an unknown ``type``, an
        ``iv`` that is missing, <= 0 or above `MAX_IV`, a negative or missing open
        interest, a negative volume, an ``as_of`` in the future, ``as_of`` not
        sorted, or the same option twice in one snapshot with different values.
        Each message names the file, the line and the problem.
    """
    check_columns(list(raw.columns), CHAIN_REQUIRED, CHAIN_OPTIONAL, where)
    if raw.empty:
        raise DataError(f"{where}: empty file (no data rows)")
    n = len(raw)
    as_of = parse_times(raw["as_of"].astype(str), "timestamp", where, lines, "as_of").floor("s")
    check_not_future(as_of, where, lines, raw["as_of"], now)
    expiry = _expiries(raw["expiry"], where, lines)
    late = np.flatnonzero(expiry.asi8 <= as_of.asi8)
    if late.size:
        i = int(late[0])
        raise DataError(f"{at(where, lines, i)}: expiry {fmt_time(expiry[i])} is not after as_of "
                        f"{fmt_time(as_of[i])}; drop expired options")
    kind = raw["type"].astype(str).str.strip().str.lower()
    is_call = kind.isin(["call", "c"]).to_numpy()
    bad = np.flatnonzero(~(is_call | kind.isin(["put", "p"]).to_numpy()))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{at(where, lines, i)}: type {str(raw['type'].iloc[i])!r} in column 'type' is not "
                        "call or put (c / p accepted)")
    values = {c: to_numeric(raw[c], c, where, lines) for c in ("strike", "iv", "open_interest")}
    for c in CHAIN_OPTIONAL:
        values[c] = to_numeric(raw[c], c, where, lines) if c in raw.columns else np.full(n, np.nan)
    _check_values(values, where, lines)
    frame = pd.DataFrame({"ts": as_of, "expiry": expiry, "strike": values["strike"], "call": is_call,
                          "iv": values["iv"], "open_interest": values["open_interest"],
                          "volume": values["volume"], "underlying": values["underlying"]})
    back = np.flatnonzero(np.diff(as_of.asi8) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataError(f"{at(where, lines, i)}: as_of {fmt_time(as_of[i])} is earlier than the previous row's "
                        f"{fmt_time(as_of[i - 1])}; rows must be sorted by as_of")
    key = ["ts", "expiry", "strike", "call"]
    dup = frame.duplicated(key, keep=False).to_numpy()
    if dup.any():
        first = frame[dup].groupby(key, sort=False).ngroup().to_numpy()
        rows = np.flatnonzero(dup)
        for g in np.unique(first):
            at_g = rows[first == g]
            vals = frame.iloc[at_g][["iv", "open_interest", "volume", "underlying"]].to_numpy(dtype=float)
            same = np.all((vals == vals[0]) | (np.isnan(vals) & np.isnan(vals[0])))
            if not same:
                i, j = int(at_g[1]), int(at_g[0])
                other = f"line {int(lines[j])}" if lines is not None else f"row {j + 1}"
                raise DataError(f"{at(where, lines, i)}: the same option (as_of, expiry, strike, type) as on "
                                f"{other} with different values; keep one row per option per snapshot")
        frame = frame.drop_duplicates(key)
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def _expiries(raw: pd.Series, where: str, lines: np.ndarray | None) -> pd.DatetimeIndex:
    """Expiry column: a timestamp as given, a bare date at `EXPIRY_HOUR` UTC."""
    text = raw.astype(str).str.strip()
    parsed = parse_times(text, "timestamp", where, lines, "expiry")
    bare = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").to_numpy()
    return parsed + pd.to_timedelta(np.where(bare, EXPIRY_HOUR, 0), unit="h")


def _check_values(v: dict[str, np.ndarray], where: str, lines: np.ndarray | None) -> None:
    """Range checks of the numeric columns; the first offending row raises."""
    rules = (
        ("strike", ~(v["strike"] > 0), "strike {x} must be a positive price"),
        ("iv", ~np.isfinite(v["iv"]) | ~(v["iv"] > 0), "implied vol {x} must be a positive decimal (0.55 = 55 %)"),
        ("iv", v["iv"] > MAX_IV, f"implied vol {{x}} is above {MAX_IV:g}: give it as a decimal (0.55 = 55 %), "
                                 "not in percent"),
        ("open_interest", ~np.isfinite(v["open_interest"]) | (v["open_interest"] < 0),
         "open interest {x} must be a number >= 0"),
        ("volume", v["volume"] < 0, "volume {x} must be >= 0 (or empty)"),
        ("underlying", v["underlying"] <= 0, "underlying {x} must be a positive price (or empty)"),
    )
    first: tuple[int, str] | None = None
    for column, bad, message in rules:
        idx = np.flatnonzero(bad)
        if idx.size and (first is None or idx[0] < first[0]):
            i = int(idx[0])
            x = v[column][i]
            first = (i, f"{message.format(x='missing' if np.isnan(x) else f'{x:g}')} (column '{column}')")
    if first is not None:
        raise DataError(f"{at(where, lines, first[0])}: {first[1]}")


def read_chain_csv(path: str | Path, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Read and validate a chain CSV (`check_chain`); columns `CHAIN_COLUMNS`.

    Raises
    ------
    DataError
        Unreadable or empty file, or any rule of `check_chain` (file, line and problem named).
    """
    where = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader([fh.readline()]), [])
        if not any(h.strip() for h in header):
            raise DataError(f"{where}: empty file (no header, no rows)")
        raw = pd.read_csv(path, skip_blank_lines=False, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{where}: cannot read the file as CSV ({reason})") from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    keep = (raw.apply(lambda col: col.str.strip() != "")).any(axis=1).to_numpy()
    lines = np.flatnonzero(keep) + 2
    raw = raw[keep].reset_index(drop=True).replace("", np.nan)
    return check_chain(raw, where, lines, now)


def chain_path(root: str | Path, asset: str) -> Path:
    """Where the chain of ``asset`` lives under a data directory: ``<root>/options/<ASSET>.csv``."""
    return Path(root) / "options" / f"{asset}.csv"


def attach_chain(data: AssetData, chain: pd.DataFrame, source: str) -> AssetData:
    """``data`` with ``chain`` (columns `CHAIN_COLUMNS`) as the series `CHAIN_SERIES`.

    ``source`` is recorded as ``observed:<source>`` in its `SeriesInfo`: only
    observed chains are attached; a constructed one is built at each origin.
    """
    missing = [c for c in CHAIN_COLUMNS if c not in chain.columns]
    if missing:
        raise InvalidInput(f"chain: missing column(s) {', '.join(missing)}; expected {', '.join(CHAIN_COLUMNS)}")
    series = {**data.series, CHAIN_SERIES: chain.loc[:, list(CHAIN_COLUMNS)]}
    info = {**data.info, CHAIN_SERIES: SeriesInfo(CHAIN_SERIES, "iv: decimal/year; open interest: contracts",
                                                  "snapshot", f"observed:{source}")}
    return AssetData(asset=data.asset, bars=data.bars, series=series, info=info)


def chain_source_of(data: AssetData) -> str:
    """``observed`` when ``data`` carries a chain, else ``none`` (a constructed chain is never attached)."""
    frame = data.series.get(CHAIN_SERIES)
    return "observed" if frame is not None and not frame.empty else "none"


def snapshot(data: AssetData, cutoff: pd.Timestamp) -> pd.DataFrame | None:
    """The newest observed snapshot known at ``cutoff`` and at most `CHAIN_MAX_AGE` old, unexpired; None if none.

    Returns
    -------
    DataFrame or None
        Rows of that snapshot (columns `CHAIN_COLUMNS`) whose expiry is after the cutoff.
    """
    frame = data.series.get(CHAIN_SERIES)
    if frame is None or frame.empty:
        return None
    ts = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8
    c = pd.Timestamp(cutoff).value
    k = int(np.searchsorted(ts, c, side="right"))
    if k == 0 or c - ts[k - 1] > CHAIN_MAX_AGE.value:
        return None
    rows = frame.iloc[int(np.searchsorted(ts, ts[k - 1], side="left")):k]
    rows = rows[pd.DatetimeIndex(rows["expiry"]).as_unit("ns").asi8 > c]
    return rows.reset_index(drop=True) if len(rows) else None


class ChainCsvSource:
    """A `MarketSource` that adds each asset's observed chain (``<folder>/<ASSET>.csv``) to another source.

    Parameters
    ----------
    base : MarketSource
        Where bars and side series come from (e.g. ``CsvSource(root)``).
    folder : str or Path
        Directory of ``<ASSET>.csv`` chain files (``<root>/options``).
    """

    def __init__(self, base: Any, folder: str | Path) -> None:
        self.base = base
        self.folder = Path(folder)
        self._cache: dict[str, pd.DataFrame] = {}

    def __repr__(self) -> str:
        return f"ChainCsvSource({self.base!r}, {str(self.folder)!r})"

    def assets(self) -> list[str]:
        return self.base.assets()

    def history(self, asset: str, until: pd.Timestamp | str | None = None) -> AssetData:
        """The base source's history with the asset's chain attached (cut at the same cutoff)."""
        data = self.base.history(asset, until)
        path = self.folder / f"{asset}.csv"
        if not path.is_file():
            return data
        if asset not in self._cache:
            self._cache[asset] = read_chain_csv(path)
        out = attach_chain(copy_frames(data), self._cache[asset], str(path))
        return out if until is None else out.until(resolve_cutoff(until))


# -- ccxt ------------------------------------------------------------------------------


def fetch_chain_ccxt(currency: str = "BTC", exchange_id: str = "deribit", client: Any = None,
                     iv_unit: str = "percent") -> pd.DataFrame:
    """The current chain of ``currency`` from an exchange through ccxt's ``fetch_option_chain``.

    Untested against a live exchange (no network where this was written); the unit
    test drives it with a fake client that returns ccxt's documented structures.

    Parameters
    ----------
    currency : str
        Base currency (``"BTC"``).
    exchange_id : str
        A ccxt exchange with ``has["fetchOptionChain"]`` (Deribit).
    client : object, optional
        A ccxt exchange instance (built with ``enableRateLimit`` when None; ccxt imported lazily).
    iv_unit : {"percent", "decimal"}
        Unit of the exchange's ``impliedVolatility`` (Deribit quotes percent).

    Returns
    -------
    DataFrame
        Columns `CHAIN_COLUMNS`, validated by `check_chain`.
    """
    if iv_unit not in ("percent", "decimal"):
        raise InvalidInput(f"iv_unit={iv_unit!r}: use 'percent' or 'decimal'")
    if client is None:
        import ccxt

        cls = getattr(ccxt, exchange_id, None)
        if cls is None:
            raise InvalidInput(f"exchange_id={exchange_id!r} is not a ccxt exchange")
        client = cls({"enableRateLimit": True})
    if not client.has.get("fetchOptionChain"):
        raise InvalidInput(f"exchange {exchange_id!r} has no fetchOptionChain in this ccxt version")
    client.load_markets()
    rows = []
    for symbol, opt in client.fetch_option_chain(currency).items():
        market = client.market(symbol)
        iv = opt.get("impliedVolatility")
        rows.append({
            "as_of": pd.Timestamp(int(opt["timestamp"]), unit="ms", tz="UTC").isoformat(),
            "expiry": pd.Timestamp(int(market["expiry"]), unit="ms", tz="UTC").isoformat(),
            "strike": market["strike"],
            "type": market["optionType"],
            "iv": None if iv is None else float(iv) / (100.0 if iv_unit == "percent" else 1.0),
            "open_interest": opt.get("openInterest"),
            "volume": opt.get("baseVolume"),
            "underlying": opt.get("underlyingPrice"),
        })
    raw = pd.DataFrame(rows, columns=[*CHAIN_REQUIRED, *CHAIN_OPTIONAL])
    raw["as_of"] = raw["as_of"].max()  # one snapshot: the newest quote time
    raw = raw.dropna(subset=["iv", "open_interest"])
    return check_chain(raw, f"{exchange_id} fetch_option_chain({currency})")


# -- constructed chain (SVI from an implied-vol index) ------------------------------------


@dataclass(frozen=True)
class SviSmile:
    """Raw-SVI smiles of several expiries (arrays broadcast together).

    Attributes
    ----------
    a, b, rho, m, s : ndarray, shape (..., n_expiries)
        ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + s^2))``, total variance at log-moneyness ``k``.
    t : ndarray, shape (n_expiries,)
        Years to expiry.
    """

    a: np.ndarray
    b: np.ndarray
    rho: np.ndarray
    m: np.ndarray
    s: np.ndarray
    t: np.ndarray

    def total_variance(self, k: np.ndarray) -> np.ndarray:
        """``w(k)``; ``k`` broadcasts against the parameters plus one trailing axis: shape (..., n_expiries, n_k)."""
        d = k - self.m[..., None]
        return self.a[..., None] + self.b[..., None] * (self.rho[..., None] * d
                                                         + np.sqrt(d * d + self.s[..., None] ** 2))

    def implied_vol(self, k: np.ndarray) -> np.ndarray:
        """Annualised implied vol (decimal) at ``k``, shape (..., n_expiries, n_k)."""
        return np.sqrt(np.maximum(self.total_variance(k), 1e-12) / self.t[..., None])


def _black(k: np.ndarray, w: np.ndarray, call: np.ndarray | bool) -> np.ndarray:
    """Undiscounted Black price per unit forward at log-moneyness ``k``, total variance ``w`` (elementwise)."""
    from scipy.special import ndtr
    sw = np.sqrt(np.maximum(w, 1e-16))
    d1 = -k / sw + 0.5 * sw
    d2 = d1 - sw
    c = ndtr(d1) - np.exp(k) * ndtr(d2)
    return np.where(call, c, c - 1.0 + np.exp(k))


def _otm_price(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Out-of-the-money price per unit forward: the call at ``k >= 0``, the put below."""
    return _black(k, w, k >= 0)


def variance_swap(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Fair variance-swap total variance ``2 int OTM(k) e^{-k} dk`` (zero rates), trapezoid over the last axis.

    Parameters
    ----------
    k, w : ndarray, shape (..., n_k)
        Log-moneyness grid (increasing) and total variance on it.

    Returns
    -------
    ndarray, shape (...)
        Total variance (annualised variance x years).
    """
    f = 2.0 * _otm_price(k, w) * np.exp(-k)
    return np.sum(0.5 * (f[..., 1:] + f[..., :-1]) * np.diff(k, axis=-1), axis=-1)


def svi_smiles(iv_index: np.ndarray, rho: np.ndarray | float = SVI_RHO,
               days: Sequence[int] = CONSTRUCTED_EXPIRIES) -> SviSmile:
    """Per-origin raw-SVI smiles whose variance swaps equal ``iv_index`` at every expiry (module docstring).

    Parameters
    ----------
    iv_index : ndarray, shape (n,)
        Implied-vol index, annualised percent (DVOL), > 0.
    rho : float or ndarray, shape (n,)
        SVI correlation (the ``skew`` scenario sets it), clipped to [-0.99, 0.99].
    days : sequence of int, length n_expiries

    Returns
    -------
    SviSmile
        Parameters of shape (n, n_expiries).
    """
    level = np.asarray(iv_index, dtype=float).reshape(-1)
    if not np.all(level > 0):
        raise InvalidInput(f"iv_index: every value must be a positive annualised percent, "
                           f"got {level[~(level > 0)][:3]}")
    t = np.asarray(days, dtype=float) / _YEAR_DAYS
    theta = (level[:, None] / 100.0) ** 2 * t[None, :]  # (n, e)
    rho = np.broadcast_to(np.clip(np.asarray(rho, dtype=float).reshape(-1, 1), -0.99, 0.99), theta.shape)
    root = np.sqrt(theta)
    b, s = SVI_BETA * root, SVI_SIGMA * root
    k = VS_GRID_Z[None, None, :] * root[..., None]  # (n, e, z)
    wing = b[..., None] * (rho[..., None] * k + np.sqrt(k * k + s[..., None] ** 2))
    lo = -b * s * np.sqrt(1.0 - rho * rho) + 1e-9 * theta  # smallest a with w > 0 everywhere
    # the variance swap is close to linear in a (slope ~1): secant steps from a first guess, kept above lo
    a0 = theta - b * s
    a1 = np.maximum(a0 - 0.05 * theta, lo)
    f0 = variance_swap(k, a0[..., None] + wing) - theta
    f1 = variance_swap(k, a1[..., None] + wing) - theta
    for _ in range(_SECANT_STEPS):
        slope = np.where(a1 != a0, (f1 - f0) / np.where(a1 != a0, a1 - a0, 1.0), 1.0)
        a2 = np.maximum(a1 - f1 / np.where(slope > 0, slope, 1.0), lo)
        a0, f0 = a1, f1
        a1, f1 = a2, variance_swap(k, a2[..., None] + wing) - theta
    zero = np.zeros_like(theta)
    return SviSmile(a1, b, rho.copy(), zero, s, t)


def constructed_open_interest() -> np.ndarray:
    """The stated open-interest profile of a constructed chain (module docstring), summing to `CONSTRUCTED_OI`.

    Returns
    -------
    ndarray, shape (len(CONSTRUCTED_EXPIRIES), len(CONSTRUCTED_Z), 2)
        Contracts per expiry, strike and type (call, put).
    """
    z = np.asarray(CONSTRUCTED_Z)
    w = np.asarray(CONSTRUCTED_OI_WEIGHTS)[:, None]
    oi = np.stack([w * np.exp(-0.5 * ((z - 0.75) / 1.25) ** 2), w * np.exp(-0.5 * ((z + 0.75) / 1.25) ** 2)], axis=-1)
    return oi * (CONSTRUCTED_OI / oi.sum())


def chain_from_index(iv_index: float, spot: float, as_of: pd.Timestamp, rho: float = SVI_RHO) -> pd.DataFrame:
    """A chain consistent with an implied-vol index (module docstring; never observed data).

    Parameters
    ----------
    iv_index : float
        The index at the origin, annualised percent.
    spot : float
        Underlying price (= forward).
    as_of : Timestamp
        Snapshot time (the origin's cutoff).
    rho : float
        SVI correlation.

    Returns
    -------
    DataFrame, shape (2 * len(CONSTRUCTED_EXPIRIES) * len(CONSTRUCTED_Z), len(CHAIN_COLUMNS))
    """
    if not (spot > 0 and np.isfinite(spot)):
        raise InvalidInput(f"spot={spot!r} must be a positive price")
    smile = svi_smiles(np.array([iv_index]), rho)
    z = np.asarray(CONSTRUCTED_Z)
    theta = (iv_index / 100.0) ** 2 * smile.t  # (e,)
    k = z[None, :] * np.sqrt(theta)[:, None]  # (e, z)
    iv = np.sqrt(smile.total_variance(k[None])[0] / smile.t[:, None])
    oi = constructed_open_interest()
    ts = pd.Timestamp(as_of)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    expiry = np.repeat([ts + pd.Timedelta(days=int(d)) for d in CONSTRUCTED_EXPIRIES], 2 * z.size)
    n = expiry.size
    return pd.DataFrame({
        "ts": pd.DatetimeIndex([ts] * n).as_unit("ns"),
        "expiry": pd.DatetimeIndex(expiry).as_unit("ns"),
        "strike": np.repeat(spot * np.exp(k), 2, axis=1).ravel(),
        "call": np.tile([True, False], k.size),
        "iv": np.repeat(iv, 2, axis=1).ravel(),
        "open_interest": oi.ravel(),
        "volume": np.nan,
        "underlying": float(spot),
    })


def vix_style_index(chain: pd.DataFrame, spot: float, days: float = 30.0) -> float:
    """The ``days``-day implied-vol index of a chain by the VIX / DVOL recipe, annualised percent.

    Per expiry, ``sigma^2 = (2/T) sum_i dK_i / K_i^2 Q(K_i) - (1/T) (F / K_0 - 1)^2`` over
    out-of-the-money options ``Q`` (Black prices from the rows' IVs, zero rates,
    forward = ``underlying`` or ``spot``; ``K_0`` the first strike at or below F);
    then the total variances of the two expiries around ``days`` are interpolated
    linearly in time (the nearest one alone when ``days`` is outside the chain's span).
    An independent check of a constructed chain: it must give back its index.
    """
    t0 = pd.Timestamp(chain["ts"].iloc[0])
    fwd = float(chain["underlying"].iloc[0]) if np.isfinite(chain["underlying"].iloc[0]) else float(spot)
    per: list[tuple[float, float]] = []
    for expiry, rows in chain.groupby("expiry", sort=True):
        t = (pd.Timestamp(expiry) - t0).total_seconds() / (86400.0 * _YEAR_DAYS)
        strikes = np.unique(rows["strike"].to_numpy(dtype=float))
        k0 = strikes[strikes <= fwd].max() if np.any(strikes <= fwd) else strikes.min()
        calls = rows[rows["call"]].set_index("strike")["iv"]
        puts = rows[~rows["call"]].set_index("strike")["iv"]
        q = np.empty(strikes.size)
        for i, strike in enumerate(strikes):
            below = strike < k0
            iv = puts.get(strike, calls.get(strike)) if below else calls.get(strike, puts.get(strike))
            x = np.log(strike / fwd)
            q[i] = fwd * float(_otm_price(np.array(x), np.array(iv * iv * t)))
            if strike == k0:  # the average of the call and the put at K_0
                ivc, ivp = calls.get(strike, iv), puts.get(strike, iv)
                q[i] = 0.5 * fwd * float(_black(np.array(x), np.array(ivc * ivc * t), True)
                                         + _black(np.array(x), np.array(ivp * ivp * t), False))
        dk = np.gradient(strikes) if strikes.size > 1 else np.ones(1)
        var = 2.0 / t * np.sum(dk / strikes**2 * q) - (fwd / k0 - 1.0) ** 2 / t
        per.append((t, var * t))
    ts_, ws = np.array([p[0] for p in per]), np.array([p[1] for p in per])
    target = days / _YEAR_DAYS
    total = float(np.interp(target, ts_, ws)) if ts_.size > 1 else float(ws[0] * target / ts_[0])
    if target < ts_[0] or target > ts_[-1]:
        j = 0 if target < ts_[0] else -1
        total = float(ws[j] / ts_[j] * target)
    return 100.0 * float(np.sqrt(max(total, 0.0) / target))
