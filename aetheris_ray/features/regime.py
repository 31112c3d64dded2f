"""Regime descriptors, the regime label and the fixed-length regime vector.

Everything is relative to the asset's *own* trailing history (percentiles and
ratios), so one rule set serves BTC, a stablecoin and a microcap alike; no
threshold is tuned per asset.  Formulas and the vector layout are in
docs/features.md.

Label rule (`regime_labels`), with ``v`` the percentile of the 10-day realised
vol within the trailing 3 years (`PCT_WINDOW` bars) and ``d`` the percentile of
the drawdown depth within the same window:

* ``crisis``   when ``v >= 0.90`` and ``d >= 0.80``;
* ``volatile`` when ``v >= 0.75`` (and not crisis);
* ``calm``     when ``v < 0.25``;
* ``normal``   otherwise.

Percentile buckets keep every label populated in every asset's history, which
the regime x horizon conformal buffers need.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from aetheris_ray._typing import FloatArray, IntArray
from aetheris_ray.features.state import REGIME_LABELS
from aetheris_ray.features.stationarity import (
    pct_rank,
    safe_div,
    safe_log_ratio,
    trailing_sum,
    window_moments,
)

#: Short and long realised-vol windows (returns).
SHORT_WINDOW = 10
LONG_WINDOW = 90
#: Window (bars) of the vol-of-vol statistic.
VOV_WINDOW = 90
#: Trailing window (bars) of the drawdown's reference maximum.
DRAWDOWN_WINDOW = 365
#: Trend t-statistic windows (returns).
TREND_WINDOWS = (30, 90)
#: Trailing window (bars, the current one included) of every percentile: 3 years.
PCT_WINDOW = 1095
#: Fewest past values a percentile rests on (fewer: NaN, i.e. unknown / neutral).
MIN_PCT_OBS = 20

CALM_BELOW = 0.25
VOLATILE_FROM = 0.75
CRISIS_VOL_FROM = 0.90
CRISIS_DRAWDOWN_FROM = 0.80
#: |t| and |log ratio| clip of the vector's trend and ratio elements.
CLIP = 3.0
_STANDARD_NORMAL = NormalDist()

#: The regime vector, element by element: (name, definition).  Every element is
#: finite, 0 means "neutral or absent", and the length is the same for every asset.
REGIME_FEATURES: tuple[tuple[str, str], ...] = (
    ("vol_pct_z", "normal score Phi^-1(p) of the 10-day realised-vol percentile in the trailing 3 years, clip +-3"),
    ("vol_ratio", "log(rv_short / rv_long), clip +-3; 0 when either is 0"),
    ("vol_of_vol", "std / mean of the 10-day realised vol over 90 bars, clip [0, 3]; 0 when the mean is 0"),
    ("drawdown", "close / max(close over 365 bars) - 1, in (-1, 0]"),
    ("drawdown_pct_z", "normal score of the drawdown-depth percentile in the trailing 3 years, clip +-3"),
    ("trend_30", "t-statistic of the mean daily log-return over 30 returns, clip +-3"),
    ("trend_90", "t-statistic of the mean daily log-return over 90 returns, clip +-3"),
    ("iv_pct_z", "normal score of the implied-vol percentile in its trailing 3 years; 0 absent"),
    ("iv_rv_spread", "log(daily implied vol / rv_short), clip +-3; 0 absent"),
    ("funding_pct_z", "normal score of the funding-rate percentile in its trailing 3 years; 0 absent"),
    ("basis_pct_z", "normal score of the basis percentile in its trailing 3 years; 0 absent"),
    ("gamma_squeeze", "market-maker index in [-3, 3]; 0 absent"),
    ("inventory_unwind", "market-maker index in [-3, 3]; 0 absent"),
    ("basis_pressure", "market-maker index in [-3, 3]; 0 absent"),
    ("skew", "25-delta risk-reversal proxy in [-1, 1] (scenario input only); 0 absent"),
    ("derivatives_coverage", "share of implied vol, funding, basis present at the origin: 0, 1/3, 2/3 or 1"),
    ("history", "min(1, n_returns / 1095): how much history the percentiles rest on"),
)
N_REGIME_FEATURES = len(REGIME_FEATURES)


def realised_vol(ret: FloatArray, width: int) -> FloatArray:
    """Root-mean-square daily log-return over the trailing ``width`` returns, at every bar.

    Parameters
    ----------
    ret : ndarray, shape (n,)
        Gap-scaled daily log-returns by bar, ``ret[0]`` NaN (no return at the first bar).
    width : int

    Returns
    -------
    ndarray, shape (n,)
        Daily log-return units; fewer returns at the start use what exists; NaN at bar 0.
    """
    ss, n = trailing_sum(np.asarray(ret, dtype=float) ** 2, width)
    return np.where(n > 0, np.sqrt(safe_div(ss, n)), np.nan)


def drawdown(close: FloatArray, width: int = DRAWDOWN_WINDOW) -> FloatArray:
    """``close / max(close over the trailing width bars) - 1`` at every bar, in (-1, 0].

    >>> drawdown(np.array([1.0, 2.0, 1.0]), width=2).tolist()
    [0.0, 0.0, -0.5]
    """
    return np.minimum(close / trailing_max(close, width) - 1.0, 0.0)


def trailing_max(x: FloatArray, width: int) -> FloatArray:
    """``max(x[i - width + 1 : i + 1])`` at every ``i`` (shorter at the start), in O(n log width).

    Doubles a window of maxima up to the largest power of two ``p <= width``, then
    joins two overlapping windows: ``max(M_p[i], M_p[i - (width - p)])``.

    >>> trailing_max(np.array([3.0, 1.0, 2.0, 0.0, 0.0]), 3).tolist()
    [3.0, 3.0, 3.0, 2.0, 2.0]
    """
    m = np.asarray(x, dtype=float).copy()
    span = 1
    while 2 * span <= width:
        m[span:] = np.maximum(m[span:], m[:-span])
        span *= 2
    rest = width - span
    if 0 < rest < m.size:
        m[rest:] = np.maximum(m[rest:], m[:-rest])
    return m


def trend_tstat(returns_window: FloatArray) -> FloatArray:
    """t-statistic of the mean of each row of returns (sample std); 0 with < 2 returns or zero spread.

    A row of identical non-zero returns (a perfect trend) gets ``+-CLIP``.

    Parameters
    ----------
    returns_window : ndarray, shape (m, w)
        NaN = no return.

    Returns
    -------
    ndarray, shape (m,)
    """
    n, mean, std = window_moments(returns_window, ddof=1)
    t = safe_div(mean * np.sqrt(n), std)
    perfect = (std == 0) & (n >= 2) & (mean != 0)
    return np.where(perfect, np.sign(mean) * CLIP, np.where(n >= 2, t, 0.0))


def vol_of_vol(rv_window: FloatArray) -> FloatArray:
    """Coefficient of variation (std / mean) of each row of realised vols; 0 when the mean is 0."""
    _, mean, std = window_moments(rv_window)
    return safe_div(std, mean)


def percentile(past: FloatArray, x: FloatArray) -> FloatArray:
    """`pct_rank` of ``x`` in its trailing history; NaN with fewer than `MIN_PCT_OBS` past values.

    Parameters
    ----------
    past : ndarray, shape (m, w)
        Previous values, NaN = missing.
    x : ndarray, shape (m,)

    Returns
    -------
    ndarray, shape (m,)
        In (0, 1), or NaN.
    """
    enough = np.count_nonzero(~np.isnan(past), axis=1) >= MIN_PCT_OBS
    return np.where(enough, pct_rank(past, x), np.nan)


def regime_labels(vol_pct: FloatArray, drawdown_pct: FloatArray) -> IntArray:
    """Index into `REGIME_LABELS` per origin (rule in the module docstring).

    >>> [REGIME_LABELS[i] for i in regime_labels(np.array([0.1, 0.5, 0.8, 0.95]), np.array([0.9, 0.9, 0.9, 0.9]))]
    ['calm', 'normal', 'volatile', 'crisis']
    """
    crisis = (vol_pct >= CRISIS_VOL_FROM) & (drawdown_pct >= CRISIS_DRAWDOWN_FROM)
    return np.where(crisis, 3, np.where(vol_pct >= VOLATILE_FROM, 2, np.where(vol_pct < CALM_BELOW, 0, 1)))


def normal_score(p: FloatArray) -> FloatArray:
    """Standard normal quantile of ``p`` clipped to +-`CLIP`, 0 where ``p`` is NaN (absent).

    >>> normal_score(np.array([0.5, 0.975, np.nan])).round(2).tolist()
    [0.0, 1.96, 0.0]
    """
    p = np.asarray(p, dtype=float)
    out = np.zeros(p.shape)
    ok = (p > 0) & (p < 1)
    inv = _STANDARD_NORMAL.inv_cdf
    out[ok] = np.clip([inv(float(v)) for v in p[ok]], -CLIP, CLIP)
    return out


def regime_vector(d: dict[str, FloatArray], mm: dict[str, FloatArray], n_obs: FloatArray) -> FloatArray:
    """Assemble the `REGIME_FEATURES` vector for each origin.

    Parameters
    ----------
    d : dict name -> ndarray, shape (m,)
        Descriptors (NaN = absent): ``vol_pct``, ``vol_ratio``, ``vol_of_vol``,
        ``drawdown``, ``drawdown_pct``, ``trend_t30``, ``trend_t90``, ``iv_pct``,
        ``iv_rv_spread``, ``funding_pct``, ``basis_pct``, ``skew``, ``implied_vol``,
        ``funding``, ``basis``.
    mm : dict name -> ndarray, shape (m,)
        ``gamma_squeeze``, ``inventory_unwind``, ``basis_pressure`` (NaN = None).
    n_obs : ndarray, shape (m,)
        Number of daily returns up to the origin.

    Returns
    -------
    ndarray, shape (m, N_REGIME_FEATURES)
        Finite.
    """

    def clip(x: FloatArray, lo: float = -CLIP, hi: float = CLIP) -> FloatArray:
        return np.where(np.isnan(x), 0.0, np.clip(x, lo, hi))

    present = sum((~np.isnan(d[k])).astype(float) for k in ("implied_vol", "funding", "basis"))
    cols = [
        normal_score(d["vol_pct"]),
        clip(d["vol_ratio"]),
        clip(d["vol_of_vol"], 0.0, CLIP),
        clip(d["drawdown"], -1.0, 0.0),
        normal_score(d["drawdown_pct"]),
        clip(d["trend_t30"]),
        clip(d["trend_t90"]),
        normal_score(d["iv_pct"]),
        clip(d["iv_rv_spread"]),
        normal_score(d["funding_pct"]),
        normal_score(d["basis_pct"]),
        clip(mm["gamma_squeeze"]),
        clip(mm["inventory_unwind"]),
        clip(mm["basis_pressure"]),
        clip(d["skew"], -1.0, 1.0),
        present / 3.0,
        np.minimum(np.asarray(n_obs, dtype=float) / PCT_WINDOW, 1.0),
    ]
    return np.stack(cols, axis=1)


def log_vol_ratio(rv_short: FloatArray, rv_long: FloatArray) -> FloatArray:
    """``log(rv_short / rv_long)``; 0 when either is 0 (flat price), NaN only for NaN input."""
    ratio = safe_log_ratio(rv_short, rv_long)
    flat = ((rv_short == 0) | (rv_long == 0)) & ~np.isnan(rv_short) & ~np.isnan(rv_long)
    return np.where(flat, 0.0, ratio)


__all__ = [
    "MIN_PCT_OBS",
    "N_REGIME_FEATURES",
    "PCT_WINDOW",
    "REGIME_FEATURES",
    "REGIME_LABELS",
    "drawdown",
    "log_vol_ratio",
    "normal_score",
    "percentile",
    "realised_vol",
    "regime_labels",
    "regime_vector",
    "trailing_max",
    "trend_tstat",
    "vol_of_vol",
]
