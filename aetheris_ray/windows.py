"""Point-in-time rolling windows per asset (the Ray-free core of training and backtest data).

One asset's history becomes a dict of columns (the window schema, `window_schema`):

============  =====================  ==========================================================
column        shape, dtype           meaning
============  =====================  ==========================================================
asset         (n,) str               ticker
origin        (n,) datetime64[ns]    origin date D (tz-naive); inputs are known at cutoff_for(D)
x_ret         (n, lookback) float32  normalised daily log-returns ending at D: (r - mu) / sigma
x_logvol      (n, lookback) float32  log daily realised vol ending at D (2h bars, else Parkinson)
x_has_rv      (n, lookback) bool     which x_logvol days come from 2h bars (the rest: Parkinson)
mu, sigma     (n,) float32           mean / std of the raw input returns (past-only statistics)
y_ret         (n, horizon) float32   raw daily log-returns of days D+1 .. D+horizon
y_logvol      (n, horizon) float32   log daily realised vol of days D+1 .. D+horizon
regime        (n, n_regime) float32  the origin's regime vector (`compute_states`), when spec.regime
============  =====================  ==========================================================

Days are calendar days (UTC daily closes at 22:00); a return or realised vol of a
missing day is NaN, and a window with any NaN in its inputs or targets is dropped,
so windows never bridge a gap silently.  Each day's value uses only the bars of
that day, and the normalisation statistics use only the input window, so a window's
inputs depend on nothing after its origin (tests alter the future and check).

The Ray Data pipeline (`data_pipelines.windows`) calls `make_windows` once per asset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import DAILY_CLOSE_HOUR, AssetData
from aetheris_ray.errors import DataError, InvalidInput

__all__ = ["WindowSpec", "window_schema", "daily_frame", "make_windows", "empty_windows", "concat_windows",
           "split_windows", "training_info"]

#: Daily variances at or below this (a flat day, a frozen feed) count as missing.
VAR_FLOOR = 1e-10
#: Minimum 2h bars in a day for the intraday realised variance to be used (of 12).
MIN_INTRADAY_BARS = 8
_PARKINSON = 1.0 / (4.0 * np.log(2.0))


@dataclass(frozen=True)
class WindowSpec:
    """Window geometry.

    Attributes
    ----------
    lookback : int
        Input days (returns and log-vols) ending at the origin, >= 2.
    horizon : int
        Target days after the origin, >= 1 (0 for inference-only windows without targets).
    stride : int
        Days between consecutive origins, >= 1.
    regime : bool
        Add the origin's regime vector (``aetheris_ray.features.compute_states``, point
        in time) as column ``regime``.
    """

    lookback: int = 64
    horizon: int = 14
    stride: int = 1
    regime: bool = False

    def __post_init__(self) -> None:
        for name, lo in (("lookback", 2), ("horizon", 0), ("stride", 1)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise InvalidInput(f"WindowSpec.{name}={v!r}: must be an integer >= {lo}")


def window_schema(spec: WindowSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Column name -> (numpy dtype, per-row shape): the one declaration of the window schema.

    >>> sorted(window_schema(WindowSpec(lookback=5, horizon=2)))[:3]
    ['asset', 'mu', 'origin']
    """
    out = {
        "asset": ("str", ()),
        "origin": ("datetime64[ns]", ()),
        "x_ret": ("float32", (spec.lookback,)),
        "x_logvol": ("float32", (spec.lookback,)),
        "x_has_rv": ("bool", (spec.lookback,)),
        "mu": ("float32", ()),
        "sigma": ("float32", ()),
        "y_ret": ("float32", (spec.horizon,)),
        "y_logvol": ("float32", (spec.horizon,)),
    }
    if spec.regime:
        from aetheris_ray.features import N_REGIME_FEATURES

        out["regime"] = ("float32", (N_REGIME_FEATURES,))
    return out


def empty_windows(spec: WindowSpec) -> dict[str, np.ndarray]:
    """A zero-row batch with the window schema."""
    out: dict[str, np.ndarray] = {}
    for name, (dtype, shape) in window_schema(spec).items():
        out[name] = np.empty((0, *shape), dtype=object if dtype == "str" else dtype)
    return out


def concat_windows(batches: list[dict[str, np.ndarray]], spec: WindowSpec) -> dict[str, np.ndarray]:
    """Stack window batches (e.g. one per asset) along axis 0."""
    batches = [b for b in batches if len(b["origin"])]
    if not batches:
        return empty_windows(spec)
    return {k: np.concatenate([b[k] for b in batches]) for k in window_schema(spec)}


def _intraday_var(bars: pd.DataFrame) -> pd.Series:
    """Daily realised variance from 2h bars, indexed by tz-naive day (day D = bars closing in (D-1 22:00, D 22:00])."""
    if bars is None or len(bars) < 2:
        return pd.Series(dtype=float)
    ts = pd.DatetimeIndex(bars["ts"]).tz_convert("UTC")
    logc = np.log(np.clip(bars["close"].to_numpy(dtype=float), 1e-300, None))
    ok = np.zeros(len(ts), dtype=bool)
    ok[1:] = np.diff(ts.asi8) == pd.Timedelta(hours=2).value
    r2 = np.zeros(len(ts))
    r2[1:] = np.diff(logc) ** 2
    shift = pd.Timedelta(hours=DAILY_CLOSE_HOUR) + pd.Timedelta(1, unit="ns")
    day = ((ts - shift).floor("D") + pd.Timedelta(days=1)).tz_localize(None)
    frame = pd.DataFrame({"r2": np.where(ok, r2, 0.0), "n": ok.astype(int)}, index=day)
    g = frame.groupby(level=0).sum()
    var = g["r2"] * (12.0 / g["n"].clip(lower=1))
    return var[g["n"] >= MIN_INTRADAY_BARS]


def daily_frame(data: AssetData) -> pd.DataFrame:
    """One row per calendar day: ``close``, ``ret`` (log-return from the previous day), ``logvol``, ``vol_source``.

    ``logvol = 0.5 log(var)`` where ``var`` is the realised variance of the day's 2h
    bars (scaled to 12 bars) when at least `MIN_INTRADAY_BARS` exist, else
    Parkinson's ``ln(high/low)^2 / (4 ln 2)``.  Missing days and days with a variance
    at or below `VAR_FLOOR` are NaN.  Every value of day D uses only bars that closed by D 22:00 UTC.
    """
    bars = data.bars["1D"]
    if len(bars) == 0:
        return pd.DataFrame(columns=["close", "ret", "logvol", "vol_source"], index=pd.DatetimeIndex([], name="date"))
    days = pd.DatetimeIndex(bars["ts"]).tz_convert("UTC").tz_localize(None).normalize()
    full = pd.date_range(days[0], days[-1], freq="D", name="date")
    close = pd.Series(bars["close"].to_numpy(dtype=float), index=days).reindex(full)
    hi = pd.Series(bars["high"].to_numpy(dtype=float), index=days).reindex(full)
    lo = pd.Series(bars["low"].to_numpy(dtype=float), index=days).reindex(full)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.log(close).diff()
        park = _PARKINSON * np.log(hi / lo) ** 2
    var = park.copy()
    source = pd.Series(np.where(park.notna(), "parkinson", ""), index=full, dtype=object)
    for key in sorted(k for k in data.bars if k.startswith("2h")):  # "2h" first, then other venues
        intra = _intraday_var(data.bars[key]).reindex(full)
        has = intra.notna().to_numpy() & (source != "2h").to_numpy()
        var[has] = intra[has]
        source[has] = "2h"
    var = var.where(var > VAR_FLOOR)  # a flat day (high == low, frozen feed) is unobserved, not zero vol
    with np.errstate(divide="ignore", invalid="ignore"):
        logvol = 0.5 * np.log(var)
    return pd.DataFrame({"close": close, "ret": ret, "logvol": logvol, "vol_source": source})


def make_windows(
    data: AssetData,
    spec: WindowSpec,
    start: Any = None,
    end: Any = None,
) -> dict[str, np.ndarray]:
    """Rolling windows of one asset as a dict of columns (see the module docstring).

    Parameters
    ----------
    data : AssetData
        The asset's history (anything after an origin is used only for its targets).
    spec : WindowSpec
    start, end : date-like, optional
        Inclusive bounds on the origin dates.

    Returns
    -------
    dict of str -> ndarray, the `window_schema` columns, ``n`` rows (possibly 0).
    """
    frame = daily_frame(data)
    n_days, lb, hz = len(frame), spec.lookback, spec.horizon
    if n_days < lb + hz + 1:
        return empty_windows(spec)
    ret = frame["ret"].to_numpy(dtype=float)
    logvol = frame["logvol"].to_numpy(dtype=float)
    has_rv = (frame["vol_source"] == "2h").to_numpy()
    dates = frame.index.to_numpy()
    # origin index i uses inputs [i-lb+1, i] and targets [i+1, i+hz]
    idx = np.arange(lb, n_days - hz)
    if start is not None:
        idx = idx[dates[idx] >= np.datetime64(pd.Timestamp(start).normalize())]
    if end is not None:
        idx = idx[dates[idx] <= np.datetime64(pd.Timestamp(end).normalize())]
    idx = idx[:: spec.stride]
    if idx.size == 0:
        return empty_windows(spec)
    sw = np.lib.stride_tricks.sliding_window_view
    xr = sw(ret, lb)[idx - lb + 1]
    xv = sw(logvol, lb)[idx - lb + 1]
    xh = sw(has_rv, lb)[idx - lb + 1]
    if hz:
        yr = sw(ret, hz)[idx + 1]
        yv = sw(logvol, hz)[idx + 1]
    else:
        yr = np.empty((idx.size, 0))
        yv = np.empty((idx.size, 0))
    keep = np.isfinite(xr).all(1) & np.isfinite(xv).all(1) & np.isfinite(yr).all(1) & np.isfinite(yv).all(1)
    xr, xv, xh, yr, yv, idx = xr[keep], xv[keep], xh[keep], yr[keep], yv[keep], idx[keep]
    mu = xr.mean(axis=1)
    sigma = np.maximum(xr.std(axis=1), np.sqrt(VAR_FLOOR))
    out = {
        "asset": np.full(idx.size, data.asset, dtype=object),
        "origin": dates[idx].astype("datetime64[ns]"),
        "x_ret": ((xr - mu[:, None]) / sigma[:, None]).astype(np.float32),
        "x_logvol": xv.astype(np.float32),
        "x_has_rv": xh.copy(),
        "mu": mu.astype(np.float32),
        "sigma": sigma.astype(np.float32),
        "y_ret": yr.astype(np.float32),
        "y_logvol": yv.astype(np.float32),
    }
    if spec.regime:
        from aetheris_ray.features import compute_states

        states = compute_states(data, list(pd.DatetimeIndex(dates[idx])))
        reg = np.stack([np.asarray(st.regime_vector, dtype=float) for st in states])
        out["regime"] = np.where(np.isfinite(reg), reg, 0.0).astype(np.float32)
    return out


def split_windows(windows: dict[str, np.ndarray], val_fraction: float,
                  part: str = "training") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Time split of a trainer's windows: the latest ``val_fraction`` of origin dates validate.

    Training origins end ``horizon`` days before the first validation origin, so no
    training target overlaps a validation window.  ``part`` names the trainer in the
    `DataError` raised when there are fewer than two origin dates.
    """
    origins = np.asarray(windows["origin"]).astype("datetime64[D]")
    days = np.unique(origins)
    if days.size < 2:
        raise DataError(f"{part} training: {days.size} distinct origin date(s); need a longer history")
    cut = days[min(days.size - 1, int(np.floor(days.size * (1.0 - val_fraction))))]
    horizon = np.shape(windows["y_ret"])[1]
    val = origins >= cut
    train = origins < cut - np.timedelta64(horizon, "D")
    return ({k: v[train] for k, v in windows.items()}, {k: v[val] for k, v in windows.items()})


def training_info(train: dict[str, np.ndarray], val: dict[str, np.ndarray]) -> dict[str, Any]:
    """What a trained part records of its windows: date ranges, counts and assets (its ``info``)."""
    origins, v_origins = train["origin"], val["origin"]
    return {
        "train_range": [str(origins.min())[:10], str(origins.max())[:10]],
        "val_range": [str(v_origins.min())[:10], str(v_origins.max())[:10]],
        "n_train": int(len(origins)),
        "n_val": int(len(v_origins)),
        "assets": sorted({str(a) for a in train["asset"]}),
    }
