"""State construction: point-in-time `AssetData` -> `MarketState`.

Two routes to the same numbers:

* `compute_state` cuts every array at ``cutoff_for(origin)`` first, so nothing
  later can leak in;
* `compute_states` (backtests) computes the per-bar arrays once over the whole
  history and evaluates the windows of many origins at once.

They agree bitwise because every per-bar value depends on earlier bars only and
is computed in an order that does not depend on where the array ends (see
`aetheris_ray.features.stationarity`).  The grid is the daily bars: an origin
uses the newest daily bar with ``ts <= cutoff`` and side-series values known at
that bar's close (at most `SIDE_MAX_AGE` old).  Windows count bars, not calendar
days; returns spanning a gap of k days are scaled by ``1/sqrt(k)``.

`derive` is the shared kernel from current inputs plus trailing histories to
descriptors, market-maker indices, regime label and vector; `apply_scenario`
re-runs it on overridden inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from aetheris_ray._typing import FloatArray, IntArray
from aetheris_ray.data.schema import MARKET_RANGE, AssetData, cutoff_for, observed_log_range, ts_ns
from aetheris_ray.errors import DataError, InvalidInput
from aetheris_ray.features import mm_indices as mm
from aetheris_ray.features import regime as rg
from aetheris_ray.features.state import REGIME_LABELS, MarketState
from aetheris_ray.features.stationarity import (
    EW_WINDOW,
    ew_moments,
    past_window_view,
    past_windows,
    row_sum,
    safe_div,
    trailing_sum,
    with_current,
    zscore,
)

#: Fewest daily closes a state needs (one return).
MIN_CLOSES = 2
#: A side-series value (or intraday bar) older than this at the bar's close is absent.
SIDE_MAX_AGE = pd.Timedelta(days=7)
#: Largest distance between a USD basis value and the close it is divided by.
BASIS_CLOSE_AGE = pd.Timedelta(days=3)
#: Bars of the macro / market / on-chain level z-scores (current included).
MACRO_WINDOW = 90
#: Prefixes of side series summarised as level z-scores (descriptor ``<name>_z``).
MACRO_PREFIXES = ("macro_", "market_", "onchain_")
#: Preferred intraday bars for the realised variance.
INTRADAY_KEY = "2h"
#: Intraday coverage of a day (fraction of its expected bars) below which its
#: realised variance falls back to the squared daily return.
MIN_INTRADAY_COVERAGE = 0.5
#: Origins evaluated per vectorised block in `compute_states` (bounds memory).
CHUNK = 256

_DAY_NS = pd.Timedelta(days=1).value
_PAST_PCT = rg.PCT_WINDOW - 1
_PAST_Z = mm.Z_WINDOW - 1
#: Trailing histories the kernel reads, and their widths (bars before the origin).
HISTORY_WIDTHS = {
    "rv_short": _PAST_PCT,
    "iv": _PAST_PCT,
    "funding": _PAST_PCT,
    "basis": _PAST_PCT,
    "g1": _PAST_Z,
    "g2": _PAST_Z,
    "u2": _PAST_Z,
    "b2": _PAST_Z,
}
#: Side inputs, as named in ``MarketState.missing``.
SIDE_INPUTS = ("implied_vol", "funding", "basis")
#: Side input -> (its `derive` base key, the component whose history decides "enough history").
_SIDE_BASE = {"implied_vol": ("iv", "g1"), "funding": ("funding", "u1"), "basis": ("basis", "b1")}
#: Descriptors `derive` produces (others, such as ``<macro>_z``, pass through scenarios).
KERNEL_DESCRIPTORS = (
    "rv_short", "rv_long", "vol_ratio", "vol_pct", "vol_of_vol", "drawdown", "drawdown_pct",
    "trend_t30", "trend_t90", "ret_30d", "implied_vol", "iv_pct", "iv_rv_spread", "iv_change_5d",
    "funding", "funding_pct", "funding_mean_14d", "basis", "basis_pct", "basis_change_5d", "skew",
)  # fmt: skip


@dataclass(frozen=True)
class Derived:
    """Output of `derive` for m origins (NaN = absent)."""

    descriptors: dict[str, FloatArray]  # name -> (m,)
    mm: dict[str, FloatArray]  # index -> (m,)
    vector: FloatArray  # (m, N_REGIME_FEATURES)
    label: IntArray  # (m,) index into REGIME_LABELS
    missing: dict[str, np.ndarray]  # input name -> (m,) bool


def derive(
    base: dict[str, FloatArray],
    history: dict[str, FloatArray],
    prior_for: frozenset[str] = frozenset(),
    fixed_mm: dict[str, float] | None = None,
) -> Derived:
    """Descriptors, market-maker indices, label and vector from current inputs and histories.

    Parameters
    ----------
    base : dict name -> ndarray, shape (m,)
        Current values: ``rv_short``, ``rv_long`` (daily log-return std), ``iv``,
        ``iv_lag`` (annualised %), ``funding``, ``funding_prev_sum``, ``funding_prev_n``
        (fraction/day), ``basis``, ``basis_lag`` (fraction of spot), ``skew``,
        ``drawdown``, ``drawdown_pct``, ``trend_t30``, ``trend_t90``, ``ret_30d``, ``n_obs``
        (extra keys, such as ``mu`` and ``sigma``, are carried but not used).
    history : dict name -> ndarray, shape (m, width)
        The `HISTORY_WIDTHS` series at the bars before the origin, oldest first.
    prior_for : frozenset of str
        Market-maker components standardised with `mm_indices.PRIORS` when their
        history is short (scenario inputs only).
    fixed_mm : dict, optional
        Index values that replace the computed ones (scenario overrides).

    Returns
    -------
    Derived
    """
    comps = mm.components(base)
    comp_hist = {
        "g1": history["g1"],
        "g2": history["g2"],
        "u1": history["funding"][:, -_PAST_Z:],
        "u2": history["u2"],
        "b1": history["basis"][:, -_PAST_Z:],
        "b2": history["b2"],
    }
    mmi = mm.indices(mm.component_zscores(comps, comp_hist, prior_for))
    for name, value in (fixed_mm or {}).items():
        mmi[name] = np.full_like(mmi[name], value)
    rv_s = base["rv_short"]
    pct_keys = (("rv_short", rv_s), ("iv", base["iv"]), ("funding", base["funding"]), ("basis", base["basis"]))
    pcts = np.split(
        rg.percentile(np.concatenate([history[k] for k, _ in pct_keys]), np.concatenate([x for _, x in pct_keys])),
        len(pct_keys),
    )
    d = {
        "rv_short": rv_s,
        "rv_long": base["rv_long"],
        "vol_ratio": rg.log_vol_ratio(rv_s, base["rv_long"]),
        "vol_pct": pcts[0],
        "vol_of_vol": rg.vol_of_vol(with_current(history["rv_short"][:, -(rg.VOV_WINDOW - 1) :], rv_s)),
        "drawdown": base["drawdown"],
        "drawdown_pct": base["drawdown_pct"],
        "trend_t30": base["trend_t30"],
        "trend_t90": base["trend_t90"],
        "ret_30d": base["ret_30d"],
        "implied_vol": base["iv"],
        "iv_pct": pcts[1],
        "iv_rv_spread": comps["g1"],
        "iv_change_5d": comps["g2"],
        "funding": base["funding"],
        "funding_pct": pcts[2],
        "funding_mean_14d": comps["u2"],
        "basis": base["basis"],
        "basis_pct": pcts[3],
        "basis_change_5d": comps["b2"],
        "skew": base["skew"],
    }
    missing = {}
    for name, (key, comp) in _SIDE_BASE.items():
        absent = np.isnan(base[key])
        short = np.count_nonzero(~np.isnan(comp_hist[comp]), axis=1) + 1 < mm.MIN_Z_OBS
        missing[name] = absent
        missing[f"{name}_history"] = ~absent & short
    vector = rg.regime_vector(d, mmi, base["n_obs"])
    return Derived(d, mmi, vector, rg.regime_labels(d["vol_pct"], d["drawdown_pct"]), missing)


# -- extraction ------------------------------------------------------------------


def _cut(ts: np.ndarray, values: np.ndarray, cutoff_ns: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Finite rows with ``ts <= cutoff`` (all when the cutoff is None)."""
    if cutoff_ns is not None:
        k = int(np.searchsorted(ts, cutoff_ns, side="right"))
        ts, values = ts[:k], values[:k]
    ok = np.isfinite(values)
    return (ts, values) if ok.all() else (ts[ok], values[ok])


def _unit_scale(unit: str) -> float:
    """Multiplier from a unit string's numerator to a plain fraction (percent, bp, fraction)."""
    u = unit.lower()
    if "percent" in u or "%" in u or "pct" in u:
        return 0.01
    if "bp" in u or "basis point" in u:
        return 1e-4
    return 1.0


def _align(ts: np.ndarray, values: np.ndarray, bar_ns: np.ndarray, max_age_ns: int = SIDE_MAX_AGE.value) -> FloatArray:
    """The newest value known at each bar's close and at most ``max_age_ns`` (`SIDE_MAX_AGE`) old, else NaN."""
    out = np.full(bar_ns.size, np.nan)
    if ts.size == 0:
        return out
    start = int(np.searchsorted(bar_ns, ts[0], side="left"))
    j = np.searchsorted(ts, bar_ns[start:], side="right") - 1
    ok = bar_ns[start:] - ts[j] <= max_age_ns
    out[start:] = np.where(ok, values[j], np.nan)
    return out


def _settlement_step(name: str, cadence: str) -> pd.Timedelta | None:
    """Spacing of a ``funding_<cadence>[_<venue>]`` series: its `SeriesInfo` cadence, else the name's."""
    for candidate in (cadence, name.removeprefix("funding_").split("_")[0]):
        try:
            step = pd.Timedelta(candidate)
        except ValueError:
            continue
        if pd.Timedelta(0) < step <= pd.Timedelta(days=1):
            return step
    return None


def _per_day_funding(values: np.ndarray, step: pd.Timedelta) -> np.ndarray:
    """Fraction per day from a per-settlement series: the mean of the last day's settlements x settlements/day."""
    per_day = max(1, round(_DAY_NS / step.value))
    total, count = trailing_sum(values, per_day)
    return total / count * per_day


def _side_inputs(
    data: AssetData, cutoff_ns: int | None, bar_ns: np.ndarray, close: np.ndarray
) -> dict[str, FloatArray]:
    """``iv`` (annualised %), ``funding`` (fraction/day), ``basis`` (fraction of spot) and
    macro levels, aligned on the daily bars (NaN = absent)."""
    out: dict[str, FloatArray] = {}

    def series(name: str) -> tuple[np.ndarray, np.ndarray, str, str] | None:
        frame = data.series.get(name)
        if frame is None or frame.empty:
            return None
        ts, v = _cut(ts_ns(frame["ts"]), frame["value"].to_numpy(dtype=float), cutoff_ns)
        info = data.info.get(name)
        return ts, v, (info.unit if info else ""), (info.cadence if info else "")

    iv = series("implied_vol")
    if iv is not None:
        ts, v, unit, _ = iv
        out["iv"] = _align(ts, v * (100.0 if "fraction" in unit.lower() else 1.0), bar_ns)
    funding = np.full(bar_ns.size, np.nan)
    settlement = sorted(k for k in data.series if k.startswith("funding_"))
    for name in ["funding", *settlement]:
        s = series(name)
        if s is None:
            continue
        ts, v, unit, cadence = s
        v = v * _unit_scale(unit)
        if name != "funding":
            step = _settlement_step(name, cadence)
            if step is None:
                continue
            v = _per_day_funding(v, step)
        funding = np.where(np.isnan(funding), _align(ts, v, bar_ns), funding)
    out["funding"] = funding
    basis = series("basis")
    if basis is not None:
        ts, v, unit, _ = basis
        if "usd" in unit.lower():
            j = np.searchsorted(bar_ns, ts, side="right") - 1
            ok = (j >= 0) & (ts - bar_ns[np.maximum(j, 0)] <= BASIS_CLOSE_AGE.value)
            ts, v = ts[ok], v[ok] / close[j[ok]]
        else:
            v = v * _unit_scale(unit)
        out["basis"] = _align(ts, v, bar_ns)
    for name in sorted(data.series):
        if name.startswith(MACRO_PREFIXES) and name != MARKET_RANGE:  # the market's range: `_market_ranges`
            s = series(name)
            if s is not None:
                out[name] = _align(s[0], s[1], bar_ns)
    return out


def _intraday_key(data: AssetData) -> str | None:
    """`INTRADAY_KEY` when present, else the finest plain intraday cadence (``"1h"``...), else None."""
    if INTRADAY_KEY in data.bars:
        return INTRADAY_KEY
    plain = []
    for key in data.bars:
        try:
            step = pd.Timedelta(key)
        except ValueError:
            continue
        if step < pd.Timedelta(days=1):
            plain.append((step, key))
    return min(plain)[1] if plain else None


@dataclass(frozen=True)
class _Intraday:
    rv: FloatArray  # (n,) daily realised variance per bar, NaN at bar 0
    first: int  # first bar with intraday coverage (>= 1); n when none
    newest_ns: np.ndarray  # (n,) ts of the newest intraday bar known at each bar close


def _intraday(data: AssetData, cutoff_ns: int | None, bar_ns: np.ndarray, ret: FloatArray) -> _Intraday | None:
    """Daily realised variance from intraday bars, per daily-bar window ``(ts[i-1], ts[i]]``.

    ``rv[i] = (bars per day) * sum(rho^2) / sum(span)``: squared intraday log-returns
    ``rho`` closing in the window, scaled by their span (in bars) so missing bars do
    not bias it; returns spanning more than a day are dropped.  A day covered less
    than `MIN_INTRADAY_COVERAGE` falls back to the squared (gap-scaled) daily return.
    """
    key = _intraday_key(data)
    if key is None:
        return None
    frame = data.bars[key]
    ts, c = _cut(ts_ns(frame["ts"]), frame["close"].to_numpy(dtype=float), cutoff_ns)
    if not (c > 0).all():
        ts, c = ts[c > 0], c[c > 0]
    n = bar_ns.size
    if ts.size < 2 or n < 2:
        return None
    cad = pd.Timedelta(key).value
    known = np.searchsorted(ts, bar_ns, side="right")  # intraday bars known at each daily close
    # day[j]: the daily bar whose window (ts[i-1], ts[i]] holds intraday bar j (n: after the last)
    day = np.repeat(np.arange(n + 1), np.diff(known, prepend=0, append=ts.size))[1:]
    step = np.diff(ts)
    keep = (step <= _DAY_NS) & (day >= 1) & (day < n)
    rho2 = np.log(c[1:][keep] / c[:-1][keep]) ** 2
    sq = np.bincount(day[keep], weights=rho2, minlength=n)
    span = np.bincount(day[keep], weights=step[keep] / cad, minlength=n)
    expected = np.concatenate([[np.nan], np.diff(bar_ns) / cad])
    coverage = safe_div(span, expected)
    rv = np.where(coverage >= MIN_INTRADAY_COVERAGE, (_DAY_NS / cad) * safe_div(sq, span), ret * ret)
    rv[0] = np.nan
    covered = np.flatnonzero(span > 0)
    first = int(covered[0]) if covered.size else n
    newest = np.where(known > 0, ts[np.maximum(known - 1, 0)], np.iinfo(np.int64).min)
    return _Intraday(rv, first, newest)


# -- per-bar table ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """Per-bar arrays over the (cut) history, all shape (n,), read-only."""

    asset: str
    bar_ns: np.ndarray
    close: FloatArray
    ret: FloatArray  # ret[0] NaN
    drawdown: FloatArray
    base: dict[str, FloatArray]  # per-bar current inputs of `derive`
    hist: dict[str, FloatArray]  # per-bar series behind HISTORY_WIDTHS
    levels: dict[str, FloatArray]  # macro / market / on-chain levels
    intraday: _Intraday | None
    log_hl: FloatArray  # ln(high / low) per bar, NaN where unobserved (`_bar_ranges`)
    log_co: FloatArray  # ln(close / open) per bar, NaN where unobserved
    iv_first: int  # first bar with an implied vol (n when none)
    market_hl: FloatArray | None = None  # the market asset's ln(high / low) of each bar's day (`_market_ranges`)


def _daily(data: AssetData, cutoff_ns: int | None) -> tuple[np.ndarray, FloatArray, FloatArray]:
    """Daily bar closes (ns), closes and gap-scaled log-returns by bar (``ret[0]`` NaN), cut at the cutoff."""
    bars = data.bars["1D"]
    bar_ns, close = _cut(ts_ns(bars["ts"]), bars["close"].to_numpy(dtype=float), cutoff_ns)
    pos = close > 0
    bar_ns, close = bar_ns[pos], close[pos]
    ret = np.full(bar_ns.size, np.nan)
    if bar_ns.size > 1:
        days = np.maximum(np.diff(bar_ns) / _DAY_NS, 1.0)
        ret[1:] = np.log(close[1:] / close[:-1]) / np.sqrt(days)
    return bar_ns, close, ret


def _bar_ranges(data: AssetData, bar_ns: np.ndarray, close: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``ln(high / low)`` and ``ln(close / open)`` of each daily bar in ``bar_ns`` (NaN where unobserved).

    A bar's range is unobserved (NaN, never 0) when high == low (a flat or stale
    bar), when a price is missing or not positive, on the first bar, and on a bar
    that follows a gap (more than 1.5 days after the previous close: its range would
    not cover the gap its gap-scaled return spans).  The open is NaN where it is not
    positive; ``ln(close / open)`` is NaN there.
    """
    n = bar_ns.size
    hl = np.full(n, np.nan)
    co = np.full(n, np.nan)
    bars = data.bars["1D"]
    if n < 2 or not {"high", "low"} <= set(bars.columns):
        return hl, co
    ts = ts_ns(bars["ts"])
    at = np.searchsorted(ts, bar_ns)  # bar_ns is a subset of the bars' times
    high, low = (bars[c].to_numpy(dtype=float)[at] for c in ("high", "low"))
    opn = bars["open"].to_numpy(dtype=float)[at] if "open" in bars.columns else np.full(n, np.nan)
    x, ok = observed_log_range(bar_ns, high, low)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(close / opn)
    hl[ok] = x[ok]
    okc = ok & np.isfinite(y) & (opn > 0)
    co[okc] = y[okc]
    return hl, co


def _market_ranges(data: AssetData, cutoff_ns: int | None, bar_ns: np.ndarray) -> FloatArray | None:
    """The market asset's ``ln(high / low)`` (`MARKET_RANGE`) of the same day as each bar: the value whose
    bar closed at most 12 h before this bar's close, else NaN (never a carried-forward older day).  None
    when the source has no market range."""
    frame = data.series.get(MARKET_RANGE)
    if frame is None or frame.empty:
        return None
    ts, v = _cut(ts_ns(frame["ts"]), frame["value"].to_numpy(dtype=float), cutoff_ns)
    return _align(ts, v, bar_ns, max_age_ns=_DAY_NS // 2)


def _table(data: AssetData, cutoff_ns: int | None, origin: pd.Timestamp | str | None = None) -> _Table:
    """Per-bar arrays; `DataError` when fewer than `MIN_CLOSES` closes are known (``origin`` names it)."""
    bar_ns, close, ret = _daily(data, cutoff_ns)
    n = bar_ns.size
    if n < MIN_CLOSES:
        raise _origin_error(data, origin, n)
    side = _side_inputs(data, cutoff_ns, bar_ns, close)
    nan = np.full(n, np.nan)
    iv, funding, basis = side.pop("iv", nan), side.pop("funding"), side.pop("basis", nan)
    prev_sum, prev_n = trailing_sum(funding, mm.PERSISTENCE_WINDOW - 1, lag=1)
    base = {
        "rv_short": rg.realised_vol(ret, rg.SHORT_WINDOW),
        "iv": iv,
        "iv_lag": _lag(iv, mm.CHANGE_LAG),
        "funding": funding,
        "funding_prev_sum": prev_sum,
        "funding_prev_n": prev_n,
        "basis": basis,
        "basis_lag": _lag(basis, mm.CHANGE_LAG),
    }
    comps = mm.components(base)
    dd = rg.drawdown(close)
    hist = {"rv_short": base["rv_short"], "iv": iv, "funding": funding, "basis": basis, "depth": -dd}
    hist.update({k: comps[k] for k in ("g1", "g2", "u2", "b2")})
    hl, co = _bar_ranges(data, bar_ns, close)
    has_iv = np.flatnonzero(np.isfinite(iv))
    market = _market_ranges(data, cutoff_ns, bar_ns)
    table = _Table(data.asset, bar_ns, close, ret, dd, base, hist, side, _intraday(data, cutoff_ns, bar_ns, ret),
                   hl, co, int(has_iv[0]) if has_iv.size else bar_ns.size, market)
    for arr in (bar_ns, close, ret, dd, hl, co, *base.values(), *hist.values(), *side.values(),
                *(() if market is None else (market,))):
        arr.flags.writeable = False
    if table.intraday is not None:
        table.intraday.rv.flags.writeable = False
    return table


def _lag(x: FloatArray, k: int) -> FloatArray:
    """``x`` shifted ``k`` bars later (NaN in front)."""
    out = np.full(x.size, np.nan)
    if x.size > k:
        out[k:] = x[:-k]
    return out


# -- evaluation at origins ---------------------------------------------------------------


def _evaluate(t: _Table, idx: IntArray, origins: Sequence[pd.Timestamp]) -> list[MarketState]:
    """States at bar indices ``idx`` (each >= 1), vectorised per `CHUNK` origins."""
    states: list[MarketState] = []
    for start in range(0, idx.size, CHUNK):
        e = idx[start : start + CHUNK]
        history = {k: past_windows(t.hist[k], e, w) for k, w in HISTORY_WIDTHS.items()}
        recent = past_windows(t.ret, e + 1, max(*rg.TREND_WINDOWS, rg.LONG_WINDOW))  # up to the origin's return
        r30, r90 = (recent[:, -w:] for w in rg.TREND_WINDOWS)
        r_long = recent[:, -rg.LONG_WINDOW :]
        n_long = np.count_nonzero(~np.isnan(r_long), axis=1)
        mu, sigma = ew_moments(past_windows(t.ret, e + 1, EW_WINDOW))
        base = {k: v[e] for k, v in t.base.items()}
        base.update(
            mu=mu,
            sigma=sigma,
            rv_long=np.sqrt(safe_div(row_sum(np.where(np.isnan(r_long), 0.0, r_long) ** 2), n_long)),
            skew=np.full(e.size, np.nan),
            drawdown=t.drawdown[e],
            drawdown_pct=rg.percentile(past_windows(t.hist["depth"], e, _PAST_PCT), t.hist["depth"][e]),
            trend_t30=rg.trend_tstat(r30),
            trend_t90=rg.trend_tstat(r90),
            ret_30d=row_sum(np.where(np.isnan(r30), 0.0, r30)),
            n_obs=e.astype(float),
        )
        out = derive(base, history)
        out.vector.flags.writeable = False  # states share it (row views), like `returns`
        macro = {}
        if t.levels:
            names = list(t.levels)
            stacked = np.stack([t.levels[k] for k in names])  # (k, n)
            at = e[:, None] + np.arange(-(MACRO_WINDOW - 1), 0)
            past = stacked[:, np.maximum(at, 0)].reshape(len(names) * e.size, -1)
            past[np.tile(at < 0, (len(names), 1))] = np.nan
            z = zscore(past, stacked[:, e].ravel(), mm.MIN_Z_OBS)
            macro = {f"{k}_z": v for k, v in zip(names, np.split(z, len(names)))}
        for j, end in enumerate(e.tolist()):
            states.append(_assemble(t, end, origins[start + j], base, out, macro, j))
    return states


def _assemble(
    t: _Table,
    e: int,
    origin: pd.Timestamp | str,
    base: dict[str, FloatArray],
    out: Derived,
    macro: dict[str, FloatArray],
    j: int,
) -> MarketState:
    """One `MarketState` from row ``j`` of a vectorised block (bar index ``e``)."""
    descriptors = {k: float(v[j]) for k, v in out.descriptors.items() if not np.isnan(v[j])}
    descriptors.update({k: float(v[j]) for k, v in macro.items() if not np.isnan(v[j])})
    missing = [name for name, flag in out.missing.items() if flag[j]]
    rv = None
    if t.intraday is not None and t.intraday.first <= e and t.intraday.newest_ns[e] >= t.bar_ns[e] - SIDE_MAX_AGE.value:
        rv = t.intraday.rv[t.intraday.first : e + 1]
    else:
        missing.append("intraday_bars")
    missing.append("options_chain")
    context = {
        "base": {k: float(v[j]) for k, v in base.items()},
        "history": {k: past_window_view(t.hist[k], e, w) for k, w in HISTORY_WIDTHS.items()},
    }
    return MarketState(
        asset=t.asset,
        origin=pd.Timestamp(origin),
        spot=float(t.close[e]),
        returns=t.ret[1 : e + 1],
        log_hl=t.log_hl[1 : e + 1],
        log_co=t.log_co[1 : e + 1],
        market_log_hl=None if t.market_hl is None else t.market_hl[1 : e + 1],
        implied_vol=t.base["iv"][1 : e + 1] if t.iv_first <= e else None,
        mu=float(base["mu"][j]),
        sigma=float(base["sigma"][j]),
        regime_label=REGIME_LABELS[int(out.label[j])],
        regime_vector=out.vector[j],
        descriptors=descriptors,
        mm_indices={k: (None if np.isnan(v[j]) else float(v[j])) for k, v in out.mm.items()},
        intraday_rv=rv,
        missing=tuple(missing),
        context=context,
    )


def _origin_error(data: AssetData, origin: pd.Timestamp | str | None, n: int) -> DataError:
    where = "in the data" if origin is None else f"at origin {pd.Timestamp(origin)} (cutoff {cutoff_for(origin)})"
    return DataError(f"{data.asset}: {n} daily close(s) known {where}; at least {MIN_CLOSES} needed; "
                     "pick a later origin or give more history")


def compute_state(data: AssetData, origin: pd.Timestamp | str) -> MarketState:
    """The market state at one origin, from data with ``ts <= cutoff_for(origin)`` only.

    Parameters
    ----------
    data : AssetData
        The asset's history (may extend past the origin; it is cut first).
    origin : Timestamp or str
        As-of date (cutoff = that day's 22:00 UTC close) or timestamp.

    Returns
    -------
    MarketState

    Raises
    ------
    DataError
        Fewer than `MIN_CLOSES` daily closes are known at the origin.
    """
    t = _table(data, cutoff_for(origin).value, origin)
    return _evaluate(t, np.array([t.bar_ns.size - 1]), [origin])[0]


def compute_states(data: AssetData, origins: Sequence[pd.Timestamp | str]) -> list[MarketState]:
    """States at many origins (backtests): per-bar arrays once, windows vectorised.

    Equal, field by field and bitwise, to ``[compute_state(data, o) for o in origins]``.

    Parameters
    ----------
    data : AssetData
    origins : sequence of Timestamp or str, length m
        Any order; repeats allowed.

    Returns
    -------
    list of MarketState, length m, in the order of ``origins``.

    Raises
    ------
    DataError
        An origin has fewer than `MIN_CLOSES` daily closes known.
    """
    t = _table(data, None)
    cut = np.array([cutoff_for(o).value for o in origins], dtype=np.int64)
    idx = np.searchsorted(t.bar_ns, cut, side="right") - 1
    short = np.flatnonzero(idx < MIN_CLOSES - 1)
    if short.size:
        k = int(short[0])
        raise _origin_error(data, origins[k], int(idx[k]) + 1)
    return _evaluate(t, idx, list(origins))


def intraday_rv(data: AssetData, origin: pd.Timestamp | str | None = None) -> pd.Series | None:
    """Daily realised variance from intraday (2h) bars, for HAR-RV.

    Each daily bar's window is ``(previous close, this close]`` (closes at 22:00
    UTC); see `_intraday` for gaps and the low-coverage fallback.

    Parameters
    ----------
    data : AssetData
    origin : Timestamp or str, optional
        Use data with ``ts <= cutoff_for(origin)`` only (default: everything).

    Returns
    -------
    Series or None
        Variance of the daily log-return (per day), indexed by bar date, from the
        first day with intraday bars; None when there are no intraday bars.
    """
    bar_ns, _, ret = _daily(data, None if origin is None else cutoff_for(origin).value)
    intra = _intraday(data, None if origin is None else cutoff_for(origin).value, bar_ns, ret)
    if intra is None or intra.first >= bar_ns.size:
        return None
    dates = pd.DatetimeIndex(bar_ns[intra.first :], tz="UTC").tz_localize(None).normalize()
    return pd.Series(intra.rv[intra.first :], index=dates.rename("date"), name="rv")


def input_history(
    data: AssetData, origin: pd.Timestamp | str, indices: Sequence[str] = tuple(mm.INDEX_COMPONENTS)
) -> dict[str, FloatArray]:
    """Per-bar returns, realised vols, side inputs and market-maker indices up to the origin.

    What the scenario sensitivities (`aetheris_ray.sensitivity`) regress on.  The
    data are cut at ``cutoff_for(origin)`` first, so nothing later can leak in;
    row ``i`` holds the values a state at bar ``i`` would have.

    Parameters
    ----------
    data : AssetData
    origin : Timestamp or str
    indices : sequence of str
        Market-maker indices to compute (the z-scores cost most of the time).

    Returns
    -------
    dict name -> ndarray, shape (n_bars,)
        ``ret`` (gap-scaled daily log-return into the bar, NaN at bar 0),
        ``rv_short``, ``rv_long`` (as the descriptors, daily units), ``iv``
        (annualised %), ``funding`` (fraction/day), ``basis`` (fraction of spot)
        and the requested ``indices`` (the values `compute_states` gives; NaN
        where absent).

    Raises
    ------
    DataError
        Fewer than `MIN_CLOSES` daily closes are known at the origin.
    """
    unknown = sorted(set(indices) - set(mm.INDEX_COMPONENTS))
    if unknown:
        raise InvalidInput(f"indices {unknown} are not known; valid: {', '.join(mm.INDEX_COMPONENTS)}")
    t = _table(data, cutoff_for(origin).value, origin)
    n = t.bar_ns.size
    out = {
        "ret": np.array(t.ret),
        "rv_short": np.array(t.base["rv_short"]),
        "rv_long": rg.realised_vol(t.ret, rg.LONG_WINDOW),
        "iv": np.array(t.base["iv"]),
        "funding": np.array(t.base["funding"]),
        "basis": np.array(t.base["basis"]),
    }
    # component -> the per-bar series its z-score window is taken from (as in `derive`)
    sources = {"g1": "g1", "g2": "g2", "u1": "funding", "u2": "u2", "b1": "basis", "b2": "b2"}
    for name in indices:
        keys = mm.INDEX_COMPONENTS[name]
        out[name] = np.full(n, np.nan)
        rows = np.flatnonzero(~np.isnan(out[_SIDE_BASE[mm.INDEX_INPUT[name]][0]]))
        for start in range(0, rows.size, CHUNK):
            e = rows[start : start + CHUNK]
            comps = mm.components({k: v[e] for k, v in t.base.items()})
            comps = {k: comps[k] for k in keys}
            hist = {k: past_windows(t.hist[sources[k]], e, _PAST_Z) for k in keys}
            out[name][e] = mm.indices(mm.component_zscores(comps, hist))[name]
    return out


__all__ = [
    "HISTORY_WIDTHS",
    "KERNEL_DESCRIPTORS",
    "MIN_CLOSES",
    "SIDE_INPUTS",
    "Derived",
    "compute_state",
    "compute_states",
    "derive",
    "input_history",
    "intraday_rv",
]
