"""Volatility parts that read the daily high / low: range-GARCH and a log-HAR on range variance.

A daily bar's range carries several times the information on its variance that the
squared close-to-close return does (Parkinson 1980; Garman & Klass 1980); range-GARCH
and HAR on range variance are the published improvements over GARCH (Molnar 2016,
Applied Economics 48(51)).

* `range_variance(log_hl, log_co, estimator)`: per-day variance from ``ln(H/L)`` (and
  ``ln(C/O)`` for Garman-Klass).  Unobserved bars (flat, across a gap: NaN in the
  inputs, `aetheris_ray.features.build._bar_ranges`) stay NaN, never 0.
* The range of a bar measures the variance of its *path*, not of its close-to-close
  return: drift, discrete trading and the 22:00 UTC close make the two differ.  Each
  part estimates the ratio of close-to-close variance to range variance point in
  time, on the days its fit sees, and works in close-to-close units.
* ``range_garch``: ``v' = omega + alpha q + beta v`` with ``q = k * range variance``
  (``r^2`` where the range is unobserved), Student-t likelihood of the returns.  In
  simulation a path has no range: the update uses ``r^2``, which has the same
  expectation, so the expected variance path is the same recursion.
* ``range_har``: log-HAR (daily, weekly, monthly means of range variance) fitted
  *directly* for each of `ANCHORS` horizons on the log of the mean range variance of
  the next h days, then scaled to the mean close-to-close variance over those days
  (the in-sample ratio, which also carries the log-to-level correction).  The
  variance path between anchors interpolates the mean daily variance in log h.  A
  deterministic variance path: it does not react to the simulated returns.

Both take the ``ranges`` fit input (`contract.FIT_INPUTS`); without any range
(a source without high / low) they fit on squared returns and say so in ``info``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components._innovations import unit_t
from aetheris_ray.components.base import VAR_FLOOR, Context, SpecBase, seed_variance
from aetheris_ray.components.volatility import FittedVolatility

__all__ = [
    "ESTIMATORS", "ANCHORS", "range_variance",
    "RangeGarchVolatility", "FittedRangeGarch",
    "RangeHarVolatility", "FittedRangeHar",
]

#: Range estimators: Parkinson needs high / low only; Garman-Klass also the open.
ESTIMATORS = ("parkinson", "garman_klass")
#: Horizons (days) of the direct range-HAR regressions; others interpolate in log h.
ANCHORS = (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90)
_LN2 = float(np.log(2.0))


def range_variance(log_hl: Any, log_co: Any = None, estimator: str = "parkinson") -> FloatArray:
    """Per-day variance of the log price from a bar's range (NaN where the range is unobserved).

    Parameters
    ----------
    log_hl : array, ``ln(high / low)``
    log_co : array, ``ln(close / open)`` (Garman-Klass only)
    estimator : {"parkinson", "garman_klass"}
        Parkinson: ``ln(H/L)^2 / (4 ln 2)``.  Garman-Klass: ``0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2``;
        a bar without an open is NaN.

    >>> float(range_variance(np.array([0.02]))[0]) == 0.02 ** 2 / (4 * np.log(2))
    True
    """
    hl = np.asarray(log_hl, dtype=float)
    if estimator == "parkinson":
        return hl * hl / (4.0 * _LN2)
    if estimator == "garman_klass":
        co = np.full(hl.shape, np.nan) if log_co is None else np.asarray(log_co, dtype=float)
        return 0.5 * hl * hl - (2.0 * _LN2 - 1.0) * co * co
    raise ValueError(f"estimator={estimator!r}: use one of {ESTIMATORS}")


def _aligned(x: Any, n: int) -> FloatArray:
    """The last ``n`` values of ``x`` right-aligned to length ``n`` (NaN in front)."""
    out = np.full(n, np.nan)
    if x is None or n == 0:
        return out
    a = np.asarray(x, dtype=float)[-n:]
    out[n - a.size:] = a
    return out


def _fit_ranges(returns: FloatArray, ranges: Any, window: int, estimator: str) -> tuple[FloatArray, FloatArray]:
    """The trailing ``window`` finite returns and the range variances of the same days (NaN where unobserved)."""
    r_all = np.asarray(returns, dtype=float)
    keep = np.isfinite(r_all)
    if ranges is None:
        q_all = np.full(r_all.size, np.nan)
    else:
        hl, co = ranges
        q_all = range_variance(_aligned(hl, r_all.size), _aligned(co, r_all.size), estimator)
    r, q = r_all[keep][-window:], q_all[keep][-window:]
    q = np.where(np.isfinite(q) & (q > 0), q, np.nan)
    return r, q


def _close_ratio(r: FloatArray, q: FloatArray) -> float:
    """Mean close-to-close variance over mean range variance on the days with both (1 without ranges)."""
    both = np.isfinite(q)
    if both.sum() < 20:
        return 1.0
    num, den = float(np.mean(r[both] ** 2)), float(np.mean(q[both]))
    return float(np.clip(num / den, 0.25, 4.0)) if den > 0 and num > 0 else 1.0


def _ctx_proxy(ctx: Context, k: FloatArray, estimator: str) -> FloatArray:
    """Per-day variance in close-to-close units along each context row: ``k * range variance``
    where observed, else ``r^2``; NaN on padding.  ``k``: shape (n_origins,)."""
    r2 = np.square(ctx.returns)
    if ctx.log_hl is None:
        q = np.full(r2.shape, np.nan)
    else:
        q = range_variance(ctx.log_hl, ctx.log_co, estimator)
    x = np.where(np.isfinite(q) & (q > 0), np.asarray(k, dtype=float).reshape(-1, 1) * q, r2)
    return np.where(ctx.valid, x, np.nan)


# -- range-GARCH ---------------------------------------------------------------------------


def _garch_filter(x: FloatArray, omega: FloatArray, alpha: FloatArray, beta: FloatArray,
                  v0: FloatArray) -> FloatArray:
    """``v[:, t] = omega + alpha x[:, t] + beta v[:, t-1]`` (``v[:, -1] = v0``), rows with their own parameters."""
    from scipy import signal

    out = np.empty(x.shape)
    keys = np.stack([omega, alpha, beta], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    for g, (o, a, b) in enumerate(uniq):
        rows = np.flatnonzero(inv.ravel() == g)
        y, _ = signal.lfilter([1.0], [1.0, -b], o + a * x[rows], axis=1, zi=(b * v0[rows])[:, None])
        out[rows] = y
    return np.maximum(out, VAR_FLOOR)


def _t_loglik(r: FloatArray, v: FloatArray, nu: float) -> float:
    """Sum of unit-variance Student-t log densities of ``r / sqrt(v)`` (with the Jacobian)."""
    from scipy import special

    s2 = v * (nu - 2.0) / nu
    return float(np.sum(special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(np.pi * nu * s2)
                        - (nu + 1) / 2 * np.log1p(r * r / (nu * s2))))


@dataclass(frozen=True, eq=False)
class FittedRangeGarch(FittedVolatility):
    """Range-GARCH: ``v' = omega + alpha q + beta v`` (params ``omega, alpha, beta, nu, k``)."""

    name: ClassVar[str] = "range_garch"
    param_names: ClassVar[tuple[str, ...]] = ("omega", "alpha", "beta", "nu", "k")

    def filter(self, ctx: Context) -> FloatArray:
        om, al, be, k = (np.asarray(self.params[n], dtype=float) for n in ("omega", "alpha", "beta", "k"))
        x = _ctx_proxy(ctx, k, self.spec.estimator)
        v0 = seed_variance(np.square(ctx.returns), ctx.valid)
        return _garch_filter(np.where(ctx.valid, x, v0[:, None]), om, al, be, v0)

    def update(self, ps: dict, r: FloatArray) -> None:
        ps["v"] = self.p("omega") + self.p("alpha") * r * r + self.p("beta") * ps["v"]

    def innovations(self, n_origins: int, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        nu = np.broadcast_to(np.asarray(self.params["nu"], dtype=float), (n_origins,))
        return unit_t(nu, n_paths, horizon, rng)


@dataclass(frozen=True)
class RangeGarchVolatility(SpecBase):
    """GARCH(1,1)-t with the day's range variance in the recursion (a range-GARCH).

    Parameters
    ----------
    estimator : {"parkinson", "garman_klass"}
    window : int
        Trailing daily returns the fit uses (at most).
    min_obs : int
        Fewer returns -> EWMA-equivalent parameters, recorded in ``info["fallback"]``.
    """

    estimator: str = "parkinson"
    window: int = 1000
    min_obs: int = 250
    fallback_lam: float = 0.94

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = "range_garch"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedRangeGarch
    fit_inputs: ClassVar[tuple[str, ...]] = ("warm", "ranges")

    def __post_init__(self) -> None:
        self._check(self.estimator in ESTIMATORS, f"estimator={self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        self._check(self.window >= 50, f"window={self.window!r} must be at least 50")
        self._check(self.min_obs >= 50, f"min_obs={self.min_obs!r} must be at least 50")

    def fit(self, returns: FloatArray, *, warm: FittedRangeGarch | None = None, ranges: Any = None,
            **context: Any) -> FittedRangeGarch:
        """Student-t maximum likelihood of the returns given the range-driven variance, warm-started."""
        from scipy.optimize import minimize

        r, q = _fit_ranges(returns, ranges, self.window, self.estimator)
        n = r.size
        k = _close_ratio(r, q)
        info: dict[str, Any] = {"n_obs": int(n), "range_days": int(np.isfinite(q).sum()), "close_ratio": k}
        if n < self.min_obs or float(np.mean(r * r)) <= 1e-14:
            info["fallback"] = f"ewma: {n} returns < min_obs={self.min_obs}" if n < self.min_obs else "ewma: flat"
            lam = self.fallback_lam
            return self._params(info, 0.0, 1.0 - lam, lam, 8.0, k)
        x = np.where(np.isfinite(q), k * q, r * r)
        var = float(np.mean(r * r))
        v0 = np.array([float(np.mean(r[: min(30, n)] ** 2)) or var])
        x_prev = np.concatenate([v0, x[:-1]])  # v[t] is forecast from data up to t-1

        def unpack(th: np.ndarray) -> tuple[float, float, float, float]:
            # persistence p = alpha + beta in (0, 1), share a / p, nu in (2.1, 60); omega targets the variance
            p = 1.0 / (1.0 + np.exp(-th[0]))
            share = 1.0 / (1.0 + np.exp(-th[1]))
            nu = 2.1 + 57.9 / (1.0 + np.exp(-th[2]))
            a, b = p * share, p * (1.0 - share)
            return var * (1.0 - p), a, b, nu

        def nll(th: np.ndarray) -> float:
            om, a, b, nu = unpack(th)
            v = _garch_filter(x_prev[None, :], np.array([om]), np.array([a]), np.array([b]), v0)[0]
            return -_t_loglik(r, v, nu) / n

        def logit(u: float) -> float:
            u = min(max(u, 1e-4), 1 - 1e-4)
            return float(np.log(u / (1 - u)))

        starts = []
        if warm is not None and "fallback" not in warm.info:
            a, b, nu = (float(np.asarray(warm.params[n])[-1]) for n in ("alpha", "beta", "nu"))
            starts.append(np.array([logit(a + b), logit(a / max(a + b, 1e-9)), logit((nu - 2.1) / 57.9)]))
        starts.append(np.array([logit(0.95), logit(0.15), logit((5.0 - 2.1) / 57.9)]))
        best = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for th0 in starts:
                res = minimize(nll, th0, method="L-BFGS-B", bounds=[(-8, 8)] * 3)
                if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                    best = res
                if best is not None and warm is not None and res.success:
                    break
        if best is None:
            info["fallback"] = "ewma: the range-GARCH fit failed"
            lam = self.fallback_lam
            return self._params(info, 0.0, 1.0 - lam, lam, 8.0, k)
        om, a, b, nu = unpack(best.x)
        info["converged"] = bool(best.success)
        return self._params(info, om, a, b, nu, k)

    def _params(self, info: dict, om: float, a: float, b: float, nu: float, k: float) -> FittedRangeGarch:
        return FittedRangeGarch(spec=self, params={
            "omega": np.array([om]), "alpha": np.array([a]), "beta": np.array([b]),
            "nu": np.array([nu]), "k": np.array([k])}, info=info)


# -- log-HAR on range variance, direct per horizon ------------------------------------------


def _trailing_mean(x: FloatArray, width: int) -> tuple[FloatArray, FloatArray]:
    """Mean of the finite values of ``x`` over the trailing ``width`` entries (last axis) and their count."""
    ok = np.isfinite(x)
    z = np.where(ok, x, 0.0)
    pad = np.zeros(x.shape[:-1] + (1,))
    cs = np.cumsum(np.concatenate([pad, z], axis=-1), axis=-1)
    cn = np.cumsum(np.concatenate([pad, ok.astype(float)], axis=-1), axis=-1)
    n = x.shape[-1]
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - width, 0)
    s = cs[..., hi] - cs[..., lo]
    c = cn[..., hi] - cn[..., lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan), c


def _har_x(s: FloatArray) -> FloatArray:
    """Regressors ``[1, log d, log w, log m]`` along the last axis of the per-day variance series ``s``
    (NaN where unobserved): daily value (the weekly mean where the day is unobserved, floored at 5 % of
    the monthly mean), weekly (5) and monthly (22) means of the observed days.  NaN rows: fewer than 5
    observed days in the month.  Shape ``s.shape + (4,)``."""
    w, _ = _trailing_mean(s, 5)
    m, cm = _trailing_mean(s, 22)
    d = np.where(np.isfinite(s), s, w)
    d = np.maximum(d, 0.05 * m)
    w = np.maximum(w, 0.05 * m)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.stack([np.ones(s.shape), np.log(d), np.log(w), np.log(m)], axis=-1)
    x[cm < 5] = np.nan
    return x


@dataclass(frozen=True, eq=False)
class FittedRangeHar(FittedVolatility):
    """Direct log-HAR on range variance (params ``coef`` (A, 4) and ``scale`` (A,) per `ANCHORS` horizon, ``k``).

    The mean close-to-close variance over the next h days is ``scale_h exp(x' coef_h)``
    (``x``: the regressors of `_har_x` at the origin); ``scale_h`` is the in-sample
    ratio of realised close-to-close to predicted range variance.
    """

    name: ClassVar[str] = "range_har"
    param_names: ClassVar[tuple[str, ...]] = ("coef", "scale", "k")
    row_params: ClassVar[tuple[str, ...]] = ("coef", "scale")

    def _mean_var(self, ctx: Context) -> FloatArray:
        """Mean daily close-to-close variance over each anchor horizon, at every context day: (B, L, A)."""
        k = np.asarray(self.params["k"], dtype=float)
        # the HAR reads range units: the proxy divided back by k (r^2 / k where the range is unobserved)
        s = _ctx_proxy(ctx, k, self.spec.estimator) / k[:, None]
        x = _har_x(s)  # (B, L, 4)
        coef = np.asarray(self.params["coef"], dtype=float)  # (B, A, 4)
        scale = np.asarray(self.params["scale"], dtype=float)  # (B, A)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.exp(np.einsum("blj,baj->bla", x, coef)) * scale[:, None, :]

    def filter(self, ctx: Context) -> FloatArray:
        v = self._mean_var(ctx)[:, :, 0]
        v0 = seed_variance(np.square(ctx.returns), ctx.valid)[:, None]
        return np.maximum(np.where(np.isfinite(v), v, v0), VAR_FLOOR)

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        mv = self._mean_var(ctx)[:, -1, :]  # (B, A)
        v0 = seed_variance(np.square(ctx.returns), ctx.valid)[:, None]
        mv = np.maximum(np.where(np.isfinite(mv), mv, v0), VAR_FLOOR)
        return {"v1": mv[:, 0].copy(), "mean_var": mv}

    def init_paths(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> dict:
        return {"path": variance_path(cond["mean_var"], horizon), "t": 0, "n": n_paths}

    def variance(self, ps: dict) -> FloatArray:
        col = ps["path"][:, ps["t"]][:, None]
        return np.broadcast_to(col, (col.shape[0], ps["n"]))

    def update(self, ps: dict, r: FloatArray) -> None:
        ps["t"] += 1


def variance_path(mean_var: FloatArray, horizon: int, anchors: tuple[int, ...] = ANCHORS) -> FloatArray:
    """Daily variances ``v_1..v_H`` whose running means match the anchors' mean variances.

    The mean variance over the first h days is interpolated linearly in ``log h``
    (in logs) between anchors and held beyond the last; the cumulative variance is
    made non-decreasing, and each day's variance is its increment (floored at 1 % of
    the day's mean variance).  Shape (n_origins, horizon).
    """
    a = np.log(np.asarray(anchors, dtype=float))
    h = np.arange(1, horizon + 1, dtype=float)
    lmv = np.log(np.maximum(np.asarray(mean_var, dtype=float), VAR_FLOOR))
    interp = np.stack([np.interp(np.log(h), a, row) for row in lmv])  # (B, H)
    mean = np.exp(interp)
    cum = np.maximum.accumulate(mean * h, axis=1)
    v = np.diff(cum, axis=1, prepend=0.0)
    return np.maximum(v, 0.01 * mean)


@dataclass(frozen=True)
class RangeHarVolatility(SpecBase):
    """Log-HAR on daily range variance, fitted directly per horizon (`ANCHORS`), scaled to close-to-close.

    Parameters
    ----------
    estimator : {"parkinson", "garman_klass"}
    window : int
        Trailing daily returns the fit uses (at most).
    min_obs : int
        Fewer returns -> the monthly mean range variance, scaled (``info["fallback"]``).
    ridge : float
        Ridge penalty on the slope coefficients (relative to the regressors' variance).
    """

    estimator: str = "parkinson"
    window: int = 1000
    min_obs: int = 250
    ridge: float = 0.0

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = "range_har"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedRangeHar
    fit_inputs: ClassVar[tuple[str, ...]] = ("ranges",)

    def __post_init__(self) -> None:
        self._check(self.estimator in ESTIMATORS, f"estimator={self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        self._check(self.window >= 60, f"window={self.window!r} must be at least 60")
        self._check(self.min_obs >= 60, f"min_obs={self.min_obs!r} must be at least 60")
        self._check(self.ridge >= 0, f"ridge={self.ridge!r} must be >= 0")

    def fit(self, returns: FloatArray, *, ranges: Any = None, **context: Any) -> FittedRangeHar:
        r, q = _fit_ranges(returns, ranges, self.window, self.estimator)
        n = r.size
        k = _close_ratio(r, q)
        info: dict[str, Any] = {"n_obs": int(n), "range_days": int(np.isfinite(q).sum()), "close_ratio": k}
        if np.isfinite(q).sum() < 20:
            info["no_ranges"] = "fitted on squared returns: the source has no usable high / low"
        s = np.where(np.isfinite(q), q, r * r / k)  # range units
        A = len(ANCHORS)
        coef = np.zeros((A, 4))
        coef[:, 3] = 1.0  # fallback: the monthly mean
        scale = np.full(A, k)
        if n < self.min_obs:
            info["fallback"] = f"monthly mean range variance: {n} returns < min_obs={self.min_obs}"
            return self._params(info, coef, scale, k)
        x = _har_x(s)  # (n, 4); row t uses days <= t
        cs = np.concatenate([[0.0], np.cumsum(s)])
        cr = np.concatenate([[0.0], np.cumsum(r * r)])
        t = np.arange(n)
        for i, h in enumerate(ANCHORS):
            rows = t[(t + h < n) & np.all(np.isfinite(x), axis=1)]
            if rows.size < 60:
                continue
            y = np.log(np.maximum((cs[rows + h + 1] - cs[rows + 1]) / h, VAR_FLOOR))
            X = x[rows]
            c = _ols(X, y, self.ridge)
            pred = np.exp(X @ c)
            realised = (cr[rows + h + 1] - cr[rows + 1]) / h
            coef[i], scale[i] = c, float(np.sum(realised) / np.sum(pred))
        return self._params(info, coef, scale, k)

    def _params(self, info: dict, coef: np.ndarray, scale: np.ndarray, k: float) -> FittedRangeHar:
        return FittedRangeHar(spec=self, params={"coef": coef[None], "scale": scale[None], "k": np.array([k])},
                              info=info)


def _ols(X: FloatArray, y: FloatArray, ridge: float) -> FloatArray:
    """Least squares with an optional ridge on the slopes (scaled by each column's variance)."""
    if ridge <= 0:
        return np.linalg.lstsq(X, y, rcond=None)[0]
    mu = X[:, 1:].mean(axis=0)
    Xc = X[:, 1:] - mu
    pen = ridge * np.diag(np.var(Xc, axis=0) * X.shape[0])
    b = np.linalg.solve(Xc.T @ Xc + pen, Xc.T @ (y - y.mean()))
    return np.concatenate([[y.mean() - mu @ b], b])
