"""Past-only rolling statistics: the RevIN-like normalisation and the window kernels.

Every statistic here at position ``i`` depends on values at positions ``<= i``
only, and is computed so that it is *bitwise* the same whether the array ends
at ``i`` or years later.  That is what lets `compute_states` (whole history,
indexed per origin) equal `compute_state` (history cut at the origin) exactly:

* exponential weights are applied over a fixed trailing window (`EW_WINDOW`
  observations, 10 half-lives), not by a recursion from the first value;
* window sums are sequential sums of the window alone (`row_sum` takes the last
  column of a cumulative sum, whose order of additions is fixed, instead of
  ``ndarray.sum`` whose pairwise/blocked order is an implementation detail);
* ranks are counts, which are exact.

Windows are rows of a 2-D array, one row per origin (axis 0) and the window
oldest first (axis 1); positions before the first value are NaN and ignored.
"""

from __future__ import annotations

import numpy as np
from aetheris_ray._typing import FloatArray, IntArray

#: Half-life (observations) of the exponentially weighted mean and scale of daily log-returns.
HALFLIFE = 30.0
#: Observations the exponential weights run over: 10 half-lives (the dropped tail is < 0.1% of the weight).
EW_WINDOW = 300
#: Smallest normalisation scale (daily log-return units); a flat stablecoin gets this.
SIGMA_FLOOR = 1e-6
#: A standard deviation below this fraction of ``|mean|`` is rounding noise and counts as zero.
REL_STD_TOL = 1e-10


def ew_moments(window: FloatArray, halflife: float = HALFLIFE) -> tuple[FloatArray, FloatArray]:
    """Exponentially weighted mean and scale of each row of daily log-returns (newest last).

    Weights are ``lam**k`` on the value ``k`` steps before the newest,
    ``lam = 2**(-1/halflife)``, normalised by their sum over the finite values
    (pandas ``ewm(adjust=True)`` on the window), so short histories are not
    biased towards zero.  ``sigma = sqrt(E_w[r^2] - mu^2)``, floored at `SIGMA_FLOOR`.

    Parameters
    ----------
    window : ndarray, shape (m, w)
        Trailing daily log-returns, oldest first, NaN = none (typically ``w = EW_WINDOW``).
    halflife : float
        Half-life in observations, > 0.

    Returns
    -------
    mu, sigma : ndarray, shape (m,)
        Daily log-return units; ``mu = 0``, ``sigma = SIGMA_FLOOR`` for an empty row.

    Examples
    --------
    >>> mu, sigma = ew_moments(np.array([[np.nan, 0.01, -0.01, 0.0]]))
    >>> bool(abs(mu[0]) < 0.01 and sigma[0] > 0.005)
    True
    """
    x = np.asarray(window, dtype=float)
    valid = ~np.isnan(x)
    lam = 2.0 ** (-1.0 / float(halflife))
    weight = np.where(valid, lam ** np.arange(x.shape[1] - 1, -1, -1, dtype=float), 0.0)
    filled = np.where(valid, x, 0.0)
    total = row_sum(weight)
    mean = safe_div(row_sum(weight * filled), total)
    second = safe_div(row_sum(weight * filled * filled), total)
    var = np.maximum(second - mean * mean, 0.0)
    return mean, np.maximum(np.sqrt(var), SIGMA_FLOOR)


def normalise(x: FloatArray | float, mu: float, sigma: float) -> FloatArray:
    """RevIN forward map ``(x - mu) / sigma`` of daily log-returns (any shape).

    >>> float(normalise(0.05, 0.01, 0.02))
    2.0
    """
    return (np.asarray(x, dtype=float) - mu) / max(float(sigma), SIGMA_FLOOR)


def denormalise(z: FloatArray | float, mu: float, sigma: float) -> FloatArray:
    """Inverse of `normalise`: ``mu + sigma * z`` back in daily log-return units.

    >>> float(denormalise(normalise(0.05, 0.01, 0.02), 0.01, 0.02))
    0.05
    """
    return mu + max(float(sigma), SIGMA_FLOOR) * np.asarray(z, dtype=float)


def trailing_sum(values: FloatArray, width: int, lag: int = 0) -> tuple[FloatArray, FloatArray]:
    """Sum and count of the finite values in ``values[i - lag - width + 1 : i - lag + 1]``, at every ``i``.

    Adds the window oldest first, one lag at a time, so each position gets
    exactly the additions `row_sum` would make on its window (and the same bits
    whatever the array length).  For short windows; use `past_windows` at a few
    positions for long ones.

    Parameters
    ----------
    values : ndarray, shape (n,)
        NaN = missing.
    width : int
    lag : int
        0: the window ends at ``i``; 1: at ``i - 1`` (strictly past).

    Returns
    -------
    total, count : ndarray, shape (n,)
    """
    x = np.asarray(values, dtype=float)
    valid = ~np.isnan(x)
    filled = np.where(valid, x, 0.0)
    total = np.zeros(x.size)
    count = np.zeros(x.size)
    for k in range(lag + width - 1, lag - 1, -1):
        if k < x.size:
            total[k:] += filled[: x.size - k]
            count[k:] += valid[: x.size - k]
    return total, count


def past_windows(values: FloatArray, ends: IntArray, width: int) -> FloatArray:
    """The ``width`` values strictly before each end: ``values[e - width : e]``.

    Parameters
    ----------
    values : ndarray, shape (n,)
    ends : ndarray of int, shape (m,)
        Positions in ``[0, n)``.
    width : int

    Returns
    -------
    ndarray, shape (m, width)
        A copy; positions before 0 are NaN.
    """
    idx = np.asarray(ends, dtype=np.intp)[:, None] + np.arange(-width, 0)
    out = np.asarray(values, dtype=float).take(np.maximum(idx, 0))
    out[idx < 0] = np.nan
    return out


def past_window_view(values: FloatArray, end: int, width: int) -> FloatArray:
    """One past window ``values[end - width : end]`` as a view (shorter at the start).

    Equivalent to the valid part of ``past_windows(values, [end], width)[0]``.
    """
    return values[max(0, end - width) : end]


def row_sum(a: FloatArray) -> FloatArray:
    """Sum along axis 1 in a fixed sequential order (the last column of a cumulative sum).

    ``ndarray.sum`` may group additions differently for different array shapes;
    this order depends on the row alone, so a row gives the same bits whether it
    is summed alone or among thousands.
    """
    if a.shape[1] == 0:
        return np.zeros(a.shape[0])
    return np.cumsum(a, axis=1)[:, -1]


def with_current(past: FloatArray, x: FloatArray) -> FloatArray:
    """Append the current values as the last column: shape (m, w) + (m,) -> (m, w + 1)."""
    return np.concatenate([past, np.asarray(x, dtype=float)[:, None]], axis=1)


def window_moments(a: FloatArray, ddof: int = 0) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Count, mean and standard deviation of the finite values of each row (two-pass).

    Parameters
    ----------
    a : ndarray, shape (m, w)
        NaN marks a missing value.
    ddof : int
        0 for the population, 1 for the sample standard deviation.

    Returns
    -------
    n, mean, std : ndarray, shape (m,)
        ``mean = 0`` where ``n == 0``; ``std = 0`` where ``n <= ddof`` or where it
        is below ``REL_STD_TOL * |mean|`` (rounding noise of a constant window).
    """
    valid = ~np.isnan(a)
    n = np.count_nonzero(valid, axis=1).astype(float)
    filled = np.where(valid, a, 0.0)
    mean = safe_div(row_sum(filled), n)
    dev = np.where(valid, a - mean[:, None], 0.0)
    ss = row_sum(dev * dev)
    std = np.sqrt(safe_div(ss, n - ddof))
    std = np.where(std > REL_STD_TOL * np.abs(mean), std, 0.0)
    return n, mean, std


def pct_rank(past: FloatArray, x: FloatArray) -> FloatArray:
    """Mid-rank percentile of ``x`` among ``past`` and itself.

    ``p = (#{past < x} + 0.5 #{past == x} + 0.5) / (n_past + 1)``: in ``(0, 1)``,
    0.5 with no history or when every value ties (a flat stablecoin).

    Parameters
    ----------
    past : ndarray, shape (m, w)
        NaN entries are ignored.
    x : ndarray, shape (m,)

    Returns
    -------
    ndarray, shape (m,)
        NaN where ``x`` is NaN.

    Examples
    --------
    >>> pct_rank(np.array([[1.0, 2.0, np.nan]]), np.array([3.0])).tolist()
    [0.8333333333333334]
    """
    x = np.asarray(x, dtype=float)
    n = np.count_nonzero(~np.isnan(past), axis=1)
    less = np.count_nonzero(past < x[:, None], axis=1)
    equal = np.count_nonzero(past == x[:, None], axis=1)
    p = (less + 0.5 * equal + 0.5) / (n + 1.0)
    return np.where(np.isnan(x), np.nan, p)


def zscore(
    past: FloatArray,
    x: FloatArray,
    min_obs: int,
    prior: tuple[FloatArray, FloatArray] | None = None,
) -> FloatArray:
    """z-score of ``x`` against ``past`` and itself (population moments).

    Parameters
    ----------
    past : ndarray, shape (m, w)
        Trailing history, NaN = missing.
    x : ndarray, shape (m,)
    min_obs : int
        Fewer finite values (history plus ``x``) give NaN ...
    prior : (center, scale), optional
        ... or, when given, ``(x - center) / scale`` (floats or arrays of shape (m,);
        a NaN center means no prior for that row).

    Returns
    -------
    ndarray, shape (m,)
        0 where the window is constant; NaN where ``x`` is NaN.
    """
    x = np.asarray(x, dtype=float)
    n, mean, std = window_moments(with_current(past, x))
    z = np.where(n < min_obs, np.nan, safe_div(x - mean, std))
    if prior is not None:
        center, scale = np.broadcast_arrays(np.asarray(prior[0], dtype=float), np.asarray(prior[1], dtype=float))
        use = (n < min_obs) & ~np.isnan(center)
        z = np.where(use, safe_div(x - center, scale), z)
    return np.where(np.isnan(x), np.nan, z)


def safe_div(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a / b``, 0 where ``b == 0``, NaN where ``b`` is NaN; never warns."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    out = np.zeros(a.shape)
    np.divide(a, b, out=out, where=b != 0)
    return out


def safe_log_ratio(a: FloatArray, b: FloatArray) -> FloatArray:
    """``log(a / b)`` where both are finite and > 0, NaN elsewhere, without warnings."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = (a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.log(np.where(ok, a, 1.0) / np.where(ok, b, 1.0), out=out, where=ok)
    return out
