"""Per-forecast scores: pure functions, one score per forecast, no averaging inside.

Averages live in `aetheris_ray.evaluation.aggregate` (mergeable accumulators), so
shards of a backtest can be scored separately and merged exactly.

Every function takes an explicit ``nan_policy``:

* ``"propagate"`` (default, as scoringrules): a forecast whose inputs hold a NaN
  scores NaN;
* ``"raise"``: any NaN input raises `InvalidInput` naming the argument.

Units are those of the inputs (the backtest passes log-returns).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.errors import InvalidInput

__all__ = ["pinball_quantile", "pinball_loss", "crps_ensemble", "coverage_interval", "width", "NAN_POLICIES"]

NAN_POLICIES = ("propagate", "raise")


def _check_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise InvalidInput(f"nan_policy={nan_policy!r} is not valid: use one of {', '.join(map(repr, NAN_POLICIES))}")


def _check_nan(nan_policy: str, **arrays: np.ndarray) -> None:
    _check_policy(nan_policy)
    if nan_policy == "raise":
        for name, a in arrays.items():
            if np.isnan(a).any():
                raise InvalidInput(f"{name} holds {int(np.isnan(a).sum())} NaN value(s) and nan_policy='raise'; "
                                   "drop those forecasts or pass nan_policy='propagate'")


def pinball_loss(obs: FloatArray | float, fct: FloatArray | float, level: FloatArray | float) -> FloatArray:
    """Pinball (quantile) loss of one quantile forecast: ``(1{y < q} - level) * (q - y)``.

    Elementwise with broadcasting; NaN in, NaN out.

    >>> round(float(pinball_loss(0.3, 0.5, 0.2)), 12)  # (1 - 0.2) * (0.5 - 0.3)
    0.16
    """
    y = np.asarray(obs, dtype=float)
    q = np.asarray(fct, dtype=float)
    a = np.asarray(level, dtype=float)
    d = q - y
    return np.where(d > 0, (1.0 - a) * d, -a * d)


def pinball_quantile(
    obs: FloatArray | float,
    fct: FloatArray,
    levels: Sequence[float],
    *,
    axis: int = -1,
    nan_policy: str = "propagate",
) -> FloatArray:
    """Quantile loss QL of a set of quantile forecasts: ``(2 / n_levels) * sum of pinball losses``.

    With the 7 levels of EVALUATION.md this is its QL, ``(2/7) x sum``; it
    approximates the CRPS of the forecast distribution (scoringrules'
    ``crps_quantile``).

    Parameters
    ----------
    obs : array_like, shape (...)
        Observations (e.g. realised log-returns).
    fct : ndarray, shape (..., n_levels, ...)
        Quantile forecasts, the levels along ``axis``.
    levels : sequence of float, length n_levels
        The levels in (0, 1) of ``fct`` along ``axis``.
    axis : int
        Axis of ``fct`` holding the levels.
    nan_policy : {"propagate", "raise"}

    Returns
    -------
    ndarray, shape (...)
        One QL per forecast (``fct`` with ``axis`` removed, broadcast with ``obs``).

    Examples
    --------
    >>> round(float(pinball_quantile(0.0, np.array([-1.0, 0.0, 1.0]), [0.1, 0.5, 0.9])), 12)  # (2/3) * 0.2
    0.133333333333
    """
    _check_policy(nan_policy)
    q = np.moveaxis(np.asarray(fct, dtype=float), axis, -1)
    lv = np.asarray(levels, dtype=float)
    if lv.ndim != 1 or q.shape[-1] != lv.size:
        raise InvalidInput(f"levels: {lv.size} level(s) given but fct has {q.shape[-1]} along axis {axis}; "
                           "pass one level per quantile forecast")
    if ((lv <= 0) | (lv >= 1)).any():
        raise InvalidInput(f"levels {lv.tolist()} must lie in (0, 1)")
    y = np.asarray(obs, dtype=float)
    _check_nan(nan_policy, obs=y, fct=q)
    losses = pinball_loss(y[..., None], q, lv)
    return (2.0 / lv.size) * losses.sum(axis=-1)


def crps_ensemble(
    obs: FloatArray | float,
    paths: FloatArray,
    *,
    m_axis: int = -1,
    estimator: str = "nrg",
    nan_policy: str = "propagate",
) -> FloatArray:
    """CRPS of an ensemble (samples) forecast: ``E|X - y| - 0.5 E|X - X'|``.

    Computed from the sorted ensemble in ``O(m log m)``.

    Parameters
    ----------
    obs : array_like, shape (...)
        Observations.
    paths : ndarray, shape (..., m, ...)
        Ensemble members along ``m_axis`` (e.g. simulated h-day log-returns).
    m_axis : int
        Axis of ``paths`` holding the members.
    estimator : {"nrg", "fair"}
        ``"nrg"``: the energy form with ``1/m**2`` in the spread term (the CRPS of
        the empirical distribution); ``"fair"``: ``1/(m (m - 1))`` (unbiased for the
        distribution the members are drawn from).  Same names as scoringrules.
    nan_policy : {"propagate", "raise"}

    Returns
    -------
    ndarray, shape (...)
        One CRPS per forecast.

    Examples
    --------
    >>> round(float(crps_ensemble(0.3, np.array([0.1, 0.5, 0.9]))), 6)
    0.155556
    """
    _check_policy(nan_policy)
    if estimator not in ("nrg", "fair"):
        raise InvalidInput(f"estimator={estimator!r} is not valid: use 'nrg' or 'fair'")
    x = np.sort(np.moveaxis(np.asarray(paths, dtype=float), m_axis, -1), axis=-1)
    y = np.asarray(obs, dtype=float)
    _check_nan(nan_policy, obs=y, paths=x)
    m = x.shape[-1]
    if m < (2 if estimator == "fair" else 1):
        raise InvalidInput(f"paths: {m} ensemble member(s) along m_axis={m_axis}; the {estimator!r} estimator needs "
                           f"at least {2 if estimator == 'fair' else 1}")
    e_xy = np.abs(x - y[..., None]).mean(axis=-1)
    # sum_{i,j} |x_i - x_j| = 2 * sum_i (2i - m - 1) x_(i), i = 1..m on the sorted members
    weights = 2.0 * np.arange(1, m + 1) - m - 1
    pair_sum = 2.0 * (x * weights).sum(axis=-1)
    spread = pair_sum / (m * m if estimator == "nrg" else m * (m - 1))
    out = e_xy - 0.5 * spread
    if nan_policy == "propagate":
        out = np.where(np.isnan(x).any(axis=-1) | np.isnan(y), np.nan, out)
    return out


def coverage_interval(
    obs: FloatArray | float,
    lower: FloatArray | float,
    upper: FloatArray | float,
    *,
    nan_policy: str = "propagate",
) -> FloatArray:
    """Whether each observation lies in its interval, ``lower <= y <= upper``.

    Returned as a float indicator (1.0 inside, 0.0 outside), so that NaN can
    propagate and the mean of the indicators is the coverage.  Use
    ``nan_policy="raise"`` and ``.astype(bool)`` for a boolean array.

    Parameters
    ----------
    obs, lower, upper : array_like, broadcastable
        Observations and interval bounds.
    nan_policy : {"propagate", "raise"}

    Returns
    -------
    ndarray of float (1.0 / 0.0, NaN where an input is NaN)

    Examples
    --------
    >>> coverage_interval(np.array([0.0, 2.0, np.nan]), -1.0, 1.0).tolist()
    [1.0, 0.0, nan]
    """
    y, lo, hi = (np.asarray(a, dtype=float) for a in (obs, lower, upper))
    _check_nan(nan_policy, obs=y, lower=lo, upper=hi)
    inside = ((lo <= y) & (y <= hi)).astype(float)
    return np.where(np.isnan(y) | np.isnan(lo) | np.isnan(hi), np.nan, inside)


def width(lower: FloatArray | float, upper: FloatArray | float, *, nan_policy: str = "propagate") -> FloatArray:
    """Width ``upper - lower`` of each interval (same units as the bounds).

    >>> width(np.array([-1.0, 0.0]), np.array([1.0, 0.5])).tolist()
    [2.0, 0.5]
    """
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    _check_nan(nan_policy, lower=lo, upper=hi)
    return hi - lo
