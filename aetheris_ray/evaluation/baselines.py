"""The three classical baselines of EVALUATION.md, as `WalkForwardModel`\\ s.

Each forecasts log-return quantiles for all origins of one asset in one call,
vectorised across origins, using at origin ``o`` only the daily closes dated on
or before ``o`` (known at ``cutoff_for(o)``).

* `EwmaNormal`: zero drift, RiskMetrics EWMA variance (lambda 0.94), the h-day
  quantile ``sigma * sqrt(h) * z_level``.
* `GarchT`: GARCH(1,1) with Student-t innovations (``arch``), fitted on the
  trailing 1000 daily log-returns, refitted every 7 days on the calendar (the
  first close with enough history, then every close on a day with
  ``day_number % 7 == 0``: every 7 origins on a series without gaps), each fit
  warm-started from the first fit of its 91-day calendar period (itself cold, or,
  when the cold fit fails, warm-started from the previous period's first fit);
  between refits the parameters are held and the conditional variance is
  filtered forward on the new returns.  The h-day quantile is
  ``sqrt(V_h) * t_nu(level) * sqrt((nu - 2) / nu)`` where ``V_h`` is the sum of the
  analytic 1..h-step variance forecasts: the h-day sum is approximated by a
  scaled Student-t with the exact h-day variance (exact for h = 1).
* `Bootstrap`: empirical quantiles (numpy's default linear interpolation) of the
  overlapping h-day log-returns ``log(close[t] / close[t - h])`` whose two ends
  lie in the trailing 365 days ``[o - 365 days, o]``.

Data gaps.  EWMA and GARCH use `aetheris_ray.history.daily_log_returns`: a return
spanning a k-day gap is scaled by ``1 / sqrt(k)`` (the variance of a one-day move
under a random walk) and counts as one observation; the trailing 1000 returns
are 1000 observations, whatever calendar span they cover.  The bootstrap needs no
rule: it uses true h-day returns between two dated closes, and pairs with a
missing end are simply absent.

Any split of the origins.  Every baseline answers an origin the same whatever
other origins are asked with it (the GARCH schedule and warm starts are tied to
the calendar and the data, not to the first origin asked), so a backtest split into
blocks of origins (`aetheris_ray.distributed.backtest`) gives the numbers of one call.

Too little history.  An origin is skipped (its row is NaN) when the model has
fewer than ``min_returns`` observations at it: 30 daily returns for EWMA, 250
for GARCH (fits use up to 1000), 180 h-day returns in the window for the
bootstrap.  The harness counts skipped origins; nothing raises for a short asset.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import signal, stats

from aetheris_ray._typing import FloatArray, IntArray
from aetheris_ray.data.schema import AssetData
from aetheris_ray.history import daily_log_returns
from aetheris_ray.errors import InvalidInput

__all__ = ["EwmaNormal", "GarchT", "GarchFit", "Bootstrap", "BASELINES", "baseline_models", "origin_positions"]

#: Floor of the EWMA variance (a flat stablecoin stretch must not give a zero-width forecast).
VAR_FLOOR = 1e-12
#: The EWMA recursion starts from the sample variance of the asset's first 30 returns.
EWMA_SEED = 30


# -- shared helpers ----------------------------------------------------------------


def _closes(data: AssetData) -> pd.Series:
    """Positive daily closes, indexed by date."""
    close = data.daily_close().dropna()
    return close[close > 0]


def origin_positions(close: pd.Series, origins: pd.DatetimeIndex) -> IntArray:
    """Position of each origin in ``close.index`` (-1 where the origin has no close).

    Raises `InvalidInput` when the origins are not sorted.
    """
    origins = pd.DatetimeIndex(origins)
    if len(origins) > 1 and not (np.diff(origins.asi8) > 0).all():
        raise InvalidInput("origins must be sorted, increasing dates without repeats")
    idx = close.index
    pos = idx.searchsorted(origins)
    pos = np.minimum(pos, max(len(idx) - 1, 0))
    ok = (len(idx) > 0) & (idx[pos] == origins) if len(idx) else np.zeros(len(origins), dtype=bool)
    return np.where(ok, pos, -1)


def _check_request(horizons: Sequence[int], levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(horizons)
    if h.ndim != 1 or h.size == 0 or not np.issubdtype(h.dtype, np.integer) or (h < 1).any():
        raise InvalidInput(f"horizons {list(horizons)!r} must be positive whole days, e.g. [1, 3, 7, 14]")
    lv = np.asarray(levels, dtype=float)
    if lv.ndim != 1 or lv.size == 0 or ((lv <= 0) | (lv >= 1)).any() or (np.diff(lv) <= 0).any():
        raise InvalidInput(f"levels {list(levels)!r} must be increasing floats in (0, 1)")
    return h.astype(int), lv


# -- EWMA-Normal -------------------------------------------------------------------


def ewma_variance(returns: FloatArray, lam: float = 0.94, seed_len: int = EWMA_SEED) -> FloatArray:
    """RiskMetrics EWMA variance after each return (vectorised, `scipy.signal.lfilter`).

    ``v[t] = lam * v[t-1] + (1 - lam) * r[t]**2`` with ``v[-1]`` the sample variance of
    the first ``seed_len`` returns of the series (known at every origin the baseline forecasts,
    since it needs at least ``seed_len`` returns).

    Parameters
    ----------
    returns : ndarray, shape (n,)
        Daily log-returns.

    Returns
    -------
    ndarray, shape (n,)
        ``v[t]``: the variance forecast for the day after return ``t`` (floored at 1e-12).
    """
    r = np.asarray(returns, dtype=float)
    if r.size == 0:
        return np.empty(0)
    v0 = float(np.var(r[: min(r.size, seed_len)]))
    out, _ = signal.lfilter([1.0 - lam], [1.0, -lam], r * r, zi=[lam * v0])
    return np.maximum(out, VAR_FLOOR)


@dataclass(frozen=True)
class EwmaNormal:
    """EWMA-Normal baseline: zero drift, RiskMetrics variance, ``sigma * sqrt(h) * z``.

    >>> EwmaNormal().name
    'ewma_normal'
    """

    lam: float = 0.94
    min_returns: int = EWMA_SEED
    name: str = "ewma_normal"

    def sigma(self, data: AssetData, origins: pd.DatetimeIndex) -> FloatArray:
        """Daily EWMA volatility at each origin, shape (n_origins,) (NaN where skipped)."""
        close = _closes(data)
        pos = origin_positions(close, origins)
        var = ewma_variance(daily_log_returns(close).to_numpy(), self.lam, EWMA_SEED)
        n_ret = pos  # returns known at an origin: one per close after the first
        ok = (pos >= 0) & (n_ret >= max(self.min_returns, 1))
        out = np.full(len(pos), np.nan)
        out[ok] = np.sqrt(var[n_ret[ok] - 1])
        return out

    def predict(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                levels: Sequence[float]) -> FloatArray:
        """Log-return quantiles, shape (n_origins, n_horizons, n_levels)."""
        h, lv = _check_request(horizons, levels)
        sig = self.sigma(data, origins)
        return sig[:, None, None] * np.sqrt(h)[None, :, None] * stats.norm.ppf(lv)[None, None, :]


# -- GARCH(1,1)-t ------------------------------------------------------------------


@dataclass(frozen=True)
class GarchFit:
    """One GARCH(1,1)-t fit, in percent units (returns x 100).

    Attributes
    ----------
    params : ndarray, shape (4,)
        ``omega, alpha[1], beta[1], nu`` as `arch` names them.
    sigma2_last : float
        Conditional variance of the last return of the window (percent squared).
    end : int
        Number of returns known at the fit origin (the window is ``r[end - n_obs:end]``).
    n_obs : int
        Window length.
    converged : bool
        Whether the optimiser reported success (a failed warm start is retried cold;
        when both fail, the parameters of the fit it warm-started from are kept).
    starting_values : ndarray or None
        The starting values given to `arch` (None: its own, a cold fit).
    """

    params: FloatArray
    sigma2_last: float
    end: int
    n_obs: int
    converged: bool
    starting_values: FloatArray | None = None


def fit_garch_t(window: FloatArray, starting_values: FloatArray | None = None):
    """Fit ``arch_model(window * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t")``.

    Returns the `arch` result (``rescale=False``: the data is already in percent).
    """
    from arch import arch_model

    from aetheris_ray.components.volatility import fit_garch_slsqp

    am = arch_model(np.asarray(window, dtype=float) * 100.0, mean="Zero", vol="GARCH", p=1, q=1, dist="t",
                    rescale=False)
    with warnings.catch_warnings():
        # convergence is checked below through convergence_flag; arch warns on the same event
        warnings.simplefilter("ignore", category=_arch_convergence_warning())
        return fit_garch_slsqp(am, starting_values)


def feasible_start(params: FloatArray, window: FloatArray) -> FloatArray:
    """Previous parameters moved inside `arch`'s bounds and constraints for a new window.

    An optimum on the boundary (``alpha + beta = 1`` up to the optimiser's
    tolerance, as BTC's often is) would otherwise be refused as a start and
    `arch` would silently fall back to its own starting values.
    """
    omega, alpha, beta, nu = (float(x) for x in params)
    v = float(np.mean(np.abs(np.asarray(window, dtype=float) * 100.0) ** 2))
    omega = min(max(omega, 1e-8 * v * (1 + 1e-6)), 10.0 * v)
    alpha, beta = min(max(alpha, 0.0), 1.0), min(max(beta, 0.0), 1.0)
    if alpha + beta > 1.0 - 1e-8:
        scale = (1.0 - 1e-6) / (alpha + beta)
        alpha, beta = alpha * scale, beta * scale
    nu = min(max(nu, 2.05 + 1e-6), 500.0 - 1e-6)
    return np.array([omega, alpha, beta, nu])


def _arch_convergence_warning() -> type[Warning]:
    from arch.utility.exceptions import ConvergenceWarning

    return ConvergenceWarning


def _good(res) -> bool:
    p = np.asarray(res.params, dtype=float)
    return res.convergence_flag == 0 and bool(np.isfinite(p).all()) and bool(
        np.isfinite(res.conditional_volatility[-1]))


def garch_variance_sum(params: FloatArray, sigma2_next: FloatArray, horizons: Sequence[int]) -> FloatArray:
    """Sum of the analytic 1..h-step variance forecasts of a GARCH(1,1).

    ``s_1 = sigma2_next``, ``s_k = omega + (alpha + beta) s_{k-1}``; ``V_h = s_1 + ... + s_h``.

    Parameters
    ----------
    params : ndarray, shape (4,)
        ``omega, alpha, beta, nu``.
    sigma2_next : ndarray, shape (n,)
        One-step-ahead conditional variances.

    Returns
    -------
    ndarray, shape (n, n_horizons)
    """
    omega, alpha, beta = (float(x) for x in params[:3])
    hmax = int(max(horizons))
    s = np.empty((np.size(sigma2_next), hmax))
    s[:, 0] = sigma2_next
    for k in range(1, hmax):
        s[:, k] = omega + (alpha + beta) * s[:, k - 1]
    cum = np.cumsum(s, axis=1)
    return cum[:, np.asarray(horizons, dtype=int) - 1]


def standardized_t_ppf(levels: FloatArray, nu: float) -> FloatArray:
    """Quantiles of the unit-variance Student-t with ``nu`` degrees of freedom."""
    return stats.t.ppf(np.asarray(levels, dtype=float), nu) * np.sqrt((nu - 2.0) / nu)


@dataclass(frozen=True)
class GarchT:
    """GARCH(1,1)-t baseline (see the module docstring).

    >>> GarchT().name, GarchT().window, GarchT().refit_every
    ('garch_t', 1000, 7)
    """

    window: int = 1000
    refit_every: int = 7
    min_returns: int = 250
    warm_start: bool = True
    name: str = "garch_t"

    def predict(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                levels: Sequence[float]) -> FloatArray:
        """Log-return quantiles, shape (n_origins, n_horizons, n_levels)."""
        return self.predict_detail(data, origins, horizons, levels)[0]

    def predict_detail(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                       levels: Sequence[float]) -> tuple[FloatArray, list[GarchFit]]:
        """`predict` plus the fits it computed (those used and their warm-start anchors), in schedule order."""
        from aetheris_ray.calibration import day_number
        from aetheris_ray.walkforward import fit_positions, warm_anchors

        h, lv = _check_request(horizons, levels)
        close = _closes(data)
        pos = origin_positions(close, origins)
        raw = daily_log_returns(close).to_numpy()
        r = raw * 100.0  # percent, exactly as `fit_garch_t` scales its window
        n_ret = pos  # returns known at each origin (and at each close position)
        first = max(self.min_returns, 2)
        eligible = np.flatnonzero((pos >= 0) & (n_ret >= first))
        out = np.full((len(pos), h.size, lv.size), np.nan)
        if eligible.size == 0:
            return out, []
        fp = fit_positions(day_number(close.index), first, self.refit_every)  # a fit at position p knows p returns
        anchor = warm_anchors(day_number(close.index[fp]))
        k_of = np.searchsorted(fp, n_ret[eligible], side="right") - 1
        fits: dict[int, GarchFit | None] = {}

        def fit(k: int) -> GarchFit | None:
            if k not in fits:
                a = int(anchor[k])
                f = self._fit(raw, r, int(fp[k]), fit(a) if a != k else None)
                if f is None and a == k and k > 0:  # a failed cold anchor: start from the previous period's
                    f = self._fit(raw, r, int(fp[k]), fit(int(anchor[k - 1])), cold=False)
                fits[k] = f
            return fits[k]

        for k in np.unique(k_of).tolist():
            f = fit(k)
            if f is None:
                continue
            block = eligible[k_of == k]
            omega, alpha, beta, nu = (float(x) for x in f.params)
            # filter the variance forward from the fit's window end to each origin of the block
            ends = n_ret[block]
            s2 = np.empty(int(ends.max()) - f.end + 1)
            s2[0] = f.sigma2_last  # variance of r[end - 1]
            for i in range(1, s2.size):
                t = f.end - 1 + i
                s2[i] = omega + alpha * r[t - 1] ** 2 + beta * s2[i - 1]
            last = ends - 1  # index of each origin's last return
            s2_last = s2[ends - f.end]
            sigma2_next = omega + alpha * r[last] ** 2 + beta * s2_last
            v = garch_variance_sum(f.params, sigma2_next, h)  # (n_block, n_h), percent^2
            z = standardized_t_ppf(lv, nu)
            out[block] = (np.sqrt(v)[:, :, None] * z[None, None, :]) / 100.0
        return out, [fits[k] for k in sorted(fits) if fits[k] is not None]

    def _fit(self, raw: FloatArray, r: FloatArray, end: int, warm: GarchFit | None,
             cold: bool = True) -> GarchFit | None:
        """The fit on the window ending at ``end`` (warm-started from ``warm`` when allowed).

        A failed warm start is retried cold (unless ``cold`` is False); when that fails
        too, ``warm``'s parameters are kept, the variance re-filtered to this window's
        end (None without ``warm``).
        """
        start = max(0, end - self.window)
        w = raw[start:end]
        tries = ([feasible_start(warm.params, w)] if (self.warm_start and warm is not None) else []) + (
            [None] if cold else [])
        for sv in tries:
            res = fit_garch_t(w, starting_values=sv)
            if _good(res):
                return GarchFit(np.asarray(res.params, dtype=float), float(res.conditional_volatility[-1] ** 2),
                                end, end - start, True, sv)
        if warm is None:
            return None
        omega, alpha, beta = (float(x) for x in warm.params[:3])
        s2 = warm.sigma2_last
        for t in range(warm.end, end):
            s2 = omega + alpha * r[t - 1] ** 2 + beta * s2
        return GarchFit(warm.params, float(s2), end, end - start, False, None)


# -- Bootstrap ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap baseline: empirical quantiles of overlapping h-day log-returns, trailing 365 days.

    >>> Bootstrap().name, Bootstrap().lookback_days
    ('bootstrap', 365)
    """

    lookback_days: int = 365
    min_returns: int = 180
    name: str = "bootstrap"

    def windows(self, data: AssetData, origins: pd.DatetimeIndex, horizon: int) -> FloatArray:
        """The h-day log-returns each origin draws from, shape (n_origins, lookback + 1 - h), NaN-padded.

        Entry ``[i, j]`` is ``log(close[t] / close[t - h])`` for the j-th end date ``t`` of
        ``[o_i - lookback + h, o_i]`` (NaN where a close is missing); all NaN for an origin
        without a close.
        """
        close = _closes(data)
        pos = origin_positions(close, origins)
        n_win = self.lookback_days + 1 - int(horizon)
        out = np.full((len(pos), max(n_win, 0)), np.nan)
        if n_win <= 0 or not (pos >= 0).any():
            return out
        first = close.index[0]
        day = ((close.index - first).days).to_numpy()
        grid = np.full(int(day[-1]) + 1, np.nan)
        grid[day] = close.to_numpy()
        ret = np.full(grid.size, np.nan)
        ret[horizon:] = np.log(grid[horizon:] / grid[:-horizon])  # the target's own formula
        padded = np.concatenate([np.full(n_win - 1, np.nan), ret])
        view = np.lib.stride_tricks.sliding_window_view(padded, n_win)  # row d: ends d - n_win + 1 .. d
        ok = pos >= 0
        out[ok] = view[day[pos[ok]]]
        return out

    def predict(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                levels: Sequence[float]) -> FloatArray:
        """Log-return quantiles, shape (n_origins, n_horizons, n_levels)."""
        h, lv = _check_request(horizons, levels)
        out = np.full((len(origins), h.size, lv.size), np.nan)
        for j, hz in enumerate(h):
            win = self.windows(data, origins, int(hz))
            if win.shape[1] == 0:
                continue
            srt = np.sort(win, axis=1)  # NaN last: the first n entries of a row are its returns, sorted
            n = (~np.isnan(win)).sum(axis=1)
            for m in np.unique(n[n >= max(self.min_returns, 1)]):
                rows = np.flatnonzero(n == m)
                out[rows, j, :] = np.quantile(srt[rows, :m], lv, axis=1).T
        return out


#: Registry of the baselines by name.
BASELINES = {"ewma_normal": EwmaNormal, "garch_t": GarchT, "bootstrap": Bootstrap}


def baseline_models() -> list:
    """One instance of each baseline, with the settings of EVALUATION.md."""
    return [cls() for cls in BASELINES.values()]
