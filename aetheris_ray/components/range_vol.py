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
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components._innovations import unit_t
from aetheris_ray.components.base import VAR_FLOOR, Context, SpecBase, seed_variance
from aetheris_ray.components.volatility import ExactGradient, FittedVolatility, garch_filter, garch_step
from aetheris_ray.errors import InvalidInput

__all__ = [
    "ESTIMATORS", "ANCHORS", "range_variance",
    "RangeGarchVolatility", "FittedRangeGarch",
    "RangeHarVolatility", "FittedRangeHar",
    "PooledHarVolatility", "FittedPooledHar", "fit_pooled_prior", "har_design", "EXTRAS",
    "PooledGarchVolatility", "FittedPooledGarch", "fit_garch_prior", "garch_inputs", "theta_of", "level_ratio",
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

    >>> bool(range_variance(np.array([0.02]))[0] == 0.02 ** 2 / (4 * np.log(2)))
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


def _windowed(returns: FloatArray, x: Any, window: int) -> FloatArray:
    """The series ``x`` (right-aligned with ``returns``) on the days of the trailing ``window`` finite returns."""
    r_all = np.asarray(returns, dtype=float)
    return _aligned(x, r_all.size)[np.isfinite(r_all)][-window:]


def _fit_ranges(returns: FloatArray, ranges: Any, window: int, estimator: str) -> tuple[FloatArray, FloatArray]:
    """The trailing ``window`` finite returns and the range variances of the same days (NaN where unobserved)."""
    r_all = np.asarray(returns, dtype=float)
    r = r_all[np.isfinite(r_all)][-window:]
    if ranges is None:
        q = np.full(r.size, np.nan)
    else:
        hl, co = ranges
        q = range_variance(_windowed(r_all, hl, window), _windowed(r_all, co, window), estimator)
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


def _t_loglik(r: FloatArray, v: FloatArray, nu: float) -> float:
    """Sum of unit-variance Student-t log densities of ``r / sqrt(v)`` (with the Jacobian)."""
    from scipy import special

    s2 = v * (nu - 2.0) / nu
    return float(np.sum(special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(np.pi * nu * s2)
                        - (nu + 1) / 2 * np.log1p(r * r / (nu * s2))))


def _logit(u: float) -> float:
    u = min(max(u, 1e-4), 1 - 1e-4)
    return float(np.log(u / (1 - u)))


def theta_of(alpha: float, beta: float, nu: float) -> np.ndarray:
    """The unconstrained parameters of (alpha, beta, nu): logits of persistence, alpha's share, nu in (2.1, 60)."""
    return np.array([_logit(alpha + beta), _logit(alpha / max(alpha + beta, 1e-9)), _logit((nu - 2.1) / 57.9)])


def unpack_theta(th: np.ndarray, var: float = 1.0) -> tuple[float, float, float, float]:
    """``omega, alpha, beta, nu`` of the unconstrained ``th`` (`theta_of`'s inverse) at the variance ``var``."""
    p = 1.0 / (1.0 + np.exp(-th[0]))
    share = 1.0 / (1.0 + np.exp(-th[1]))
    nu = 2.1 + 57.9 / (1.0 + np.exp(-th[2]))
    a, b = p * share, p * (1.0 - share)
    return var * (1.0 - p), a, b, nu


#: Cold start of the range-GARCH fits: persistence 0.95, alpha 15 % of it, nu 5.
START = np.array([_logit(0.95), _logit(0.15), _logit((5.0 - 2.1) / 57.9)])


@dataclass(frozen=True)
class GarchInputs:
    """One asset's range-GARCH likelihood: returns, the lagged range proxy, the variance it targets."""

    r: FloatArray
    x_prev: FloatArray  # the proxy of the day before each return (v0 first)
    var: float  # sample variance: omega = var (1 - alpha - beta)
    v0: FloatArray  # (1,) seed variance
    k: float  # close-to-close over range variance
    range_days: int

    @property
    def n(self) -> int:
        return int(self.r.size)

    def info(self) -> dict[str, Any]:
        return {"n_obs": self.n, "range_days": self.range_days, "close_ratio": self.k}

    def unpack(self, th: np.ndarray) -> tuple[float, float, float, float]:
        """``omega, alpha, beta, nu`` of the unconstrained ``th`` (variance targeting)."""
        return unpack_theta(th, self.var)

    def nll(self, th: np.ndarray) -> float:
        """Mean negative Student-t log likelihood per return."""
        om, a, b, nu = self.unpack(th)
        v = garch_filter(self.x_prev[None, :], np.array([om]), np.array([a]), np.array([b]), self.v0)[0]
        return -_t_loglik(self.r, v, nu) / self.n


def garch_inputs(returns: FloatArray, ranges: Any, window: int, estimator: str) -> GarchInputs:
    """`GarchInputs` of the trailing ``window`` finite returns and their bars' ranges (right-aligned)."""
    r, q = _fit_ranges(returns, ranges, window, estimator)
    n = r.size
    k = _close_ratio(r, q)
    x = np.where(np.isfinite(q), k * q, r * r)
    var = float(np.mean(r * r)) if n else 0.0
    v0 = np.array([float(np.mean(r[: min(30, n)] ** 2)) or var]) if n else np.array([0.0])
    x_prev = np.concatenate([v0, x[:-1]]) if n else np.empty(0)
    return GarchInputs(r, x_prev, var, v0, k, int(np.isfinite(q).sum()))


def _minimise(fun: Any, starts: list[np.ndarray], stop_early: bool = False) -> Any:
    """L-BFGS-B from each start (bounded logits); the best finite result, or None."""
    from scipy.optimize import minimize

    best = None
    bounds = [(-8, 8)] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for th0 in starts:
            # L-BFGS-B's own finite differences (step 1e-8), computed without scipy's overhead
            grad = ExactGradient(fun, bounds, 1e-8)
            res = minimize(grad.value, th0, jac=grad.gradient, method="L-BFGS-B", bounds=bounds)
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
            if best is not None and stop_early and res.success:
                break
    return best


@dataclass(frozen=True, eq=False)
class FittedRangeGarch(FittedVolatility):
    """Range-GARCH: ``v' = omega + alpha q + beta v`` (params ``omega, alpha, beta, nu, k``)."""

    name: ClassVar[str] = "range_garch"
    param_names: ClassVar[tuple[str, ...]] = ("omega", "alpha", "beta", "nu", "k")

    def filter(self, ctx: Context) -> FloatArray:
        om, al, be, k = (np.asarray(self.params[n], dtype=float) for n in ("omega", "alpha", "beta", "k"))
        x = _ctx_proxy(ctx, k, self.spec.estimator)
        v0 = seed_variance(np.square(ctx.returns), ctx.valid)
        return garch_filter(np.where(ctx.valid, x, v0[:, None]), om, al, be, v0)

    def update(self, ps: dict, r: FloatArray) -> None:
        ps["v"] = garch_step(self.p("omega"), self.p("alpha"), self.p("beta"), ps["v"], r)

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
        g = garch_inputs(returns, ranges, self.window, self.estimator)
        info = g.info()
        if g.n < self.min_obs or g.var <= 1e-14:
            info["fallback"] = f"ewma: {g.n} returns < min_obs={self.min_obs}" if g.n < self.min_obs else "ewma: flat"
            return self._ewma_like(info, g.k)
        starts = []
        if warm is not None and "fallback" not in warm.info:
            starts.append(theta_of(*(float(np.asarray(warm.params[n])[-1]) for n in ("alpha", "beta", "nu"))))
        starts.append(START)
        best = _minimise(g.nll, starts, stop_early=warm is not None)
        if best is None:
            info["fallback"] = "ewma: the range-GARCH fit failed"
            return self._ewma_like(info, g.k)
        info["converged"] = bool(best.success)
        return self._params(info, *g.unpack(best.x), g.k)

    def _ewma_like(self, info: dict, k: float) -> FittedRangeGarch:
        lam = self.fallback_lam
        return self._params(info, 0.0, 1.0 - lam, lam, 8.0, k)

    def _params(self, info: dict, om: float, a: float, b: float, nu: float, k: float) -> FittedRangeGarch:
        return FittedRangeGarch(spec=self, params={
            "omega": np.array([om]), "alpha": np.array([a]), "beta": np.array([b]),
            "nu": np.array([nu]), "k": np.array([k])}, info=info)


# -- range-GARCH pooled across assets ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedPooledGarch(FittedRangeGarch):
    """A range-GARCH whose dynamics are shrunk towards a panel fit (``shared["theta"]``: the pooled
    unconstrained persistence, alpha share and nu; `theta_of`).  The registered artefact is one of
    these (its params: the panel's dynamics at unit variance)."""

    name: ClassVar[str] = "pooled_garch"

    @classmethod
    def from_params(cls, spec: Any = None, *, alpha: float = 0.1, beta: float = 0.85, nu: float = 5.0,  # type: ignore[override]
                    seed: int = 0) -> "FittedPooledGarch":
        """A prior artefact with the given dynamics (tests and tools; ``seed`` is unused: nothing is random)."""
        th = theta_of(alpha, beta, nu)
        om, a, b, n = unpack_theta(th)
        return cls(spec=spec or PooledGarchVolatility(), params={
            "omega": np.array([om]), "alpha": np.array([a]), "beta": np.array([b]), "nu": np.array([n]),
            "k": np.array([1.0])}, shared={"theta": th})

    def check_loaded(self) -> None:
        from aetheris_ray.errors import ModelNotFound

        th = self.shared.get("theta")
        if th is None or np.shape(th) != (3,) or not np.all(np.isfinite(th)):
            raise ModelNotFound("pooled_garch artefact: shared 'theta' must be 3 finite numbers; it is corrupt")
        c = self.shared.get("level_ratio")
        if c is not None and (np.shape(c) != (1,) or not np.all(np.isfinite(c)) or float(c[0]) <= 0):
            raise ModelNotFound("pooled_garch artefact: shared 'level_ratio' must be one positive number; "
                                "it is corrupt")


@dataclass(frozen=True)
class PooledGarchVolatility(RangeGarchVolatility):
    """`RangeGarchVolatility` whose dynamics borrow strength across assets.

    The asset's own maximum-likelihood parameters (unconstrained, `theta_of`) are
    averaged with the panel fit's, weights ``n`` and ``n0`` (``n``: the asset's
    returns): a young asset leans on the panel, an old one on itself.  The level is
    always the asset's own (variance targeting on its returns), as is the range-to-close
    ratio.  Below ``min_obs`` returns the panel's dynamics are used as they are.  The
    panel fit (`fit_garch_prior`, ``aetheris pool``) is a registry artefact trained on
    data up to a stated end date; without one the engine falls back to ``range_garch``.

    Parameters
    ----------
    n0 : float
        Prior weight in daily returns.
    own_min : int
        Fewest returns for an own fit (fewer: no own fit; below 20 returns, EWMA).
    market_n0 : float
        Prior weight, in daily returns, of the market-implied variance level (0: the
        level is the asset's own).  With it the level the dynamics revert to is
        ``w v_own + (1 - w) c v_market``, ``w = n / (n + market_n0)``: ``v_market`` the
        market asset's range variance over the asset's window days (the ``market`` fit
        input), ``c`` the panel's median ratio of an asset's variance to it
        (``shared["level_ratio"]`` of the prior, `fit_garch_prior`).  Not applied to
        the market asset itself, nor without the ratio or the market's ranges
        (``info["market_level"]`` says which).
    """

    n0: float = 500.0
    min_obs: int = 60
    own_min: int = 120
    market_n0: float = 0.0

    name: ClassVar[str] = "pooled_garch"
    fitted_cls: ClassVar[type] = FittedPooledGarch
    fit_inputs: ClassVar[tuple[str, ...]] = ("warm", "ranges", "market", "artefact")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.n0 >= 0, f"n0={self.n0!r} must be >= 0")
        self._check(self.market_n0 >= 0, f"market_n0={self.market_n0!r} must be >= 0")

    def fit(self, returns: FloatArray, *, warm: FittedPooledGarch | None = None, ranges: Any = None,
            market: Any = None, artefact: FittedPooledGarch | None = None, **context: Any) -> FittedPooledGarch:
        if artefact is None:
            raise InvalidInput("pooled_garch.fit: no pooled prior given; the engine passes the registered one "
                               "(`aetheris pool` trains it)")
        th_pool = np.asarray(artefact.shared["theta"], dtype=float)
        g = garch_inputs(returns, ranges, self.window, self.estimator)
        info = g.info()
        if self.market_n0 > 0:
            g, info["market_level"] = self._market_level(g, returns, ranges, market, artefact)
        if g.n < 20 or g.var <= 1e-14:
            info["fallback"] = f"ewma: {g.n} returns" if g.n < 20 else "ewma: flat"
            return self._pooled(self._ewma_like(info, g.k), artefact)
        th = th_pool
        w = 0.0
        if g.n >= max(self.own_min, self.min_obs):
            starts = []
            if warm is not None and "fallback" not in warm.info:
                starts.append(theta_of(*(float(np.asarray(warm.params[n])[-1]) for n in ("alpha", "beta", "nu"))))
            starts.append(th_pool)
            best = _minimise(g.nll, starts, stop_early=warm is not None)
            if best is not None:
                w = g.n / (g.n + self.n0)
                th = w * best.x + (1.0 - w) * th_pool
        info["own_weight"] = round(w, 3)
        return self._pooled(self._params(info, *g.unpack(th), g.k), artefact)

    def _market_level(self, g: GarchInputs, returns: FloatArray, ranges: Any, market: Any,
                      artefact: FittedPooledGarch) -> tuple[GarchInputs, Any]:
        """``g`` with its variance level shrunk towards the market-implied one, and what was done."""
        c = artefact.shared.get("level_ratio")
        if c is None:
            return g, "none: the pooled prior has no level ratio (trained before the market factor)"
        if market is None or g.n < 20:
            return g, "none: no market ranges"
        mk = _windowed(returns, market, self.window)
        if _is_market(returns, ranges, mk, self.window):
            return g, "none: the asset is the market"
        q_m = range_variance(mk)
        q_m = np.where(np.isfinite(q_m) & (q_m > 0), q_m, np.nan)
        if np.isfinite(q_m).sum() < 20:
            return g, "none: fewer than 20 market ranges in the window"
        prior = float(c[0]) * float(np.nanmean(q_m))
        w = g.n / (g.n + self.market_n0)
        level = w * g.var + (1.0 - w) * prior
        return replace(g, var=level), {"own_weight": round(w, 3), "own_var": g.var, "market_var": prior}

    def _pooled(self, fit: FittedRangeGarch, artefact: FittedPooledGarch) -> FittedPooledGarch:
        return FittedPooledGarch(spec=self, params=fit.params, info=fit.info, shared=dict(artefact.shared))


def _is_market(returns: FloatArray, ranges: Any, market_window: FloatArray, window: int) -> bool:
    """Whether the asset's own ``ln(high/low)`` over the ``window`` is the market's (the asset is the market)."""
    return ranges is not None and np.array_equal(_windowed(returns, ranges[0], window), market_window,
                                                 equal_nan=True)


def level_ratio(histories: Any, markets: Any, days: int = 365, min_days: int = 200) -> float | None:
    """The panel's median ratio of an asset's mean squared return to the market's mean range variance
    over the asset's last ``days`` returns (days where both are observed, at least ``min_days``; the
    market asset itself left out); None when no asset qualifies."""
    ratios = []
    for (r_all, rg), m in zip(histories, markets):
        if m is None:
            continue
        r = np.asarray(r_all, dtype=float)
        mk = _windowed(r, m, days)
        if _is_market(r, rg, mk, days):
            continue
        q = range_variance(mk)
        rr = r[np.isfinite(r)][-days:]
        both = np.isfinite(q) & (q > 0)
        if both.sum() >= min_days and float(np.mean(q[both])) > 0:
            ratios.append(float(np.mean(rr[both] ** 2)) / float(np.mean(q[both])))
    return float(np.median(ratios)) if ratios else None


def fit_garch_prior(histories: Any, spec: PooledGarchVolatility | None = None, info: dict | None = None,
                    markets: Any = None) -> FittedPooledGarch:
    """The panel fit of the range-GARCH dynamics: one (alpha, beta, nu) maximising the summed Student-t
    likelihood of every asset's returns, each asset at its own variance level (variance targeting);
    with ``markets``, also the panel's level ratio to the market (`level_ratio`, ``shared["level_ratio"]``).

    Parameters
    ----------
    histories : iterable of ``(returns, (log_hl, log_co))``, one per asset, cut at the end date by the caller
    markets : iterable of the market's ``log_hl`` aligned with each asset's returns (or None), optional
    """
    histories = list(histories)
    sp = spec or PooledGarchVolatility()
    panel = [g for g in (garch_inputs(r, rg, sp.window, sp.estimator) for r, rg in histories)
             if g.n >= 60 and g.var > 1e-14]
    if not panel:
        raise InvalidInput("pooled prior: no asset has 60 or more daily returns before the end date")
    total = float(sum(g.n for g in panel))

    def nll(th: np.ndarray) -> float:
        return float(sum(g.nll(th) * g.n for g in panel) / total)

    best = _minimise(nll, [START])
    if best is None:
        raise InvalidInput("pooled prior: the panel range-GARCH fit failed")
    om, a, b, nu = unpack_theta(best.x)
    meta = {"n_assets": len(panel), "n_obs": int(total), "converged": bool(best.success), **(info or {})}
    shared = {"theta": np.asarray(best.x, dtype=float)}
    ratio = None if markets is None else level_ratio(histories, list(markets))
    if ratio is not None:
        shared["level_ratio"] = np.array([ratio])
        meta["level_ratio"] = ratio
    return FittedPooledGarch(spec=sp, params={"omega": np.array([om]), "alpha": np.array([a]),
                                              "beta": np.array([b]), "nu": np.array([nu]), "k": np.array([1.0])},
                             info=meta, shared=shared)


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


#: Optional regressors of the range-HAR: intraday realised variance (2h bars), the implied-vol index and
#: the market volatility factor (the market asset's range variance).
EXTRAS = ("rv", "iv", "market")


def _premium(x: Any, s: FloatArray) -> FloatArray:
    """``x`` as an array broadcastable against ``s`` (a per-origin value gets trailing axes)."""
    a = np.asarray(x, dtype=float)
    return a.reshape(a.shape + (1,) * (s.ndim - a.ndim)) if a.ndim else a


def _market_weekly(market: Any, s: FloatArray) -> FloatArray:
    """Weekly (5-day) mean of the market's range variance, shaped like ``s`` (NaN where unobserved)."""
    x = np.full(s.shape, np.nan) if market is None else range_variance(market)
    xw, _ = _trailing_mean(np.where(x > 0, x, np.nan), 5)
    return xw


def _extra_x(s: FloatArray, k: Any, extras: tuple[str, ...], rv: Any = None, iv: Any = None,
             iv_premium: Any = 0.0, market: Any = None, market_premium: Any = 0.0) -> tuple[FloatArray, FloatArray]:
    """The ``extras`` columns (range units, logs) and where each was observed, each ``s.shape + (E,)``.

    * ``rv``: log weekly mean of intraday realised variance / ``k``; where absent, the
      log weekly mean range variance (the column then repeats what the range says).
    * ``iv``: log of the implied daily variance ``(iv / 100)^2 / 365`` / ``k``; where
      absent, the log monthly mean range variance plus ``iv_premium`` (the fit's mean
      log gap between the two), so an asset or day without the index is unaffected.
    * ``market``: log weekly mean of the market asset's range variance (its own units:
      the intercept carries the asset's level); where absent, the asset's own log weekly
      mean plus ``market_premium`` (the fit's mean log gap between the two).
    """
    shape = s.shape + (len(extras),)
    cols, obs = np.empty(shape), np.zeros(shape, dtype=bool)
    if not extras:
        return cols, obs
    k = np.asarray(k, dtype=float)
    kk = k.reshape(k.shape + (1,) * (s.ndim - k.ndim)) if k.ndim else k
    w, _ = _trailing_mean(s, 5)
    m, _ = _trailing_mean(s, 22)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, name in enumerate(extras):
            if name == "rv":
                x = np.full(s.shape, np.nan) if rv is None else np.asarray(rv, dtype=float) / kk
                xw, _ = _trailing_mean(np.where(x > 0, x, np.nan), 5)
                ok = np.isfinite(xw) & (xw > 0)
                cols[..., j] = np.where(ok, np.log(np.where(ok, xw, 1.0)), np.log(np.maximum(w, 0.05 * m)))
            elif name == "iv":
                x = np.full(s.shape, np.nan) if iv is None else (np.asarray(iv, dtype=float) / 100.0) ** 2 / 365.0 / kk
                ok = np.isfinite(x) & (x > 0)
                cols[..., j] = np.where(ok, np.log(np.where(ok, x, 1.0)), np.log(m) + _premium(iv_premium, s))
            else:
                xw = _market_weekly(market, s)
                ok = np.isfinite(xw) & (xw > 0)
                own = np.log(np.maximum(w, 0.05 * m)) + _premium(market_premium, s)
                cols[..., j] = np.where(ok, np.log(np.where(ok, xw, 1.0)), own)
            obs[..., j] = ok
    return cols, obs


@dataclass(frozen=True, eq=False)
class FittedRangeHar(FittedVolatility):
    """Direct log-HAR on range variance (params ``coef`` (A, 4) and ``scale`` (A,) per `ANCHORS` horizon, ``k``).

    The mean close-to-close variance over the next h days is ``scale_h exp(x' coef_h)``
    (``x``: the regressors of `_har_x` at the origin); ``scale_h`` is the in-sample
    ratio of realised close-to-close to predicted range variance.
    """

    name: ClassVar[str] = "range_har"
    param_names: ClassVar[tuple[str, ...]] = ("coef", "scale", "k", "iv_premium", "market_premium")
    row_params: ClassVar[tuple[str, ...]] = ("coef", "scale")

    def _mean_var(self, ctx: Context) -> FloatArray:
        """Mean daily close-to-close variance over each anchor horizon, at every context day: (B, L, A)."""
        k = np.asarray(self.params["k"], dtype=float)
        # the HAR reads range units: the proxy divided back by k (r^2 / k where the range is unobserved)
        s = _ctx_proxy(ctx, k, self.spec.estimator) / k[:, None]
        x = _har_x(s)  # (B, L, 4)
        if self.spec.extras:
            ex, _ = _extra_x(s, k, self.spec.extras, ctx.rv, ctx.iv, self.params["iv_premium"], ctx.market,
                             self.params.get("market_premium", 0.0))
            x = np.concatenate([x, ex], axis=-1)
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
    extras : tuple of {"rv", "iv", "market"}
        Extra regressors where the asset has them (`_extra_x`): intraday realised
        variance from 2h bars, the implied-vol index, the market's range variance.  One with fewer than ``min_obs``
        observed days in the fit's rows gets coefficient 0 (``info["extras_used"]``).
    """

    estimator: str = "parkinson"
    window: int = 1000
    min_obs: int = 250
    ridge: float = 0.0
    extras: tuple = ()

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = "range_har"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedRangeHar

    @property
    def fit_inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("ranges",) + tuple(self.extras)

    @classmethod
    def coerce_params(cls, params: dict) -> dict:
        out = dict(params)
        if "extras" in out:
            out["extras"] = tuple(out["extras"])
        return out

    def __post_init__(self) -> None:
        self._check(self.estimator in ESTIMATORS, f"estimator={self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        self._check(self.window >= 60, f"window={self.window!r} must be at least 60")
        self._check(self.min_obs >= 60, f"min_obs={self.min_obs!r} must be at least 60")
        self._check(self.ridge >= 0, f"ridge={self.ridge!r} must be >= 0")
        self._check(all(x in EXTRAS for x in self.extras) and len(set(self.extras)) == len(self.extras),
                    f"extras={self.extras!r}: use any of {', '.join(EXTRAS)}, each once")

    def fit(self, returns: FloatArray, *, ranges: Any = None, rv: Any = None, iv: Any = None, market: Any = None,
            **context: Any) -> FittedRangeHar:
        design = har_design(returns, ranges, self.window, self.estimator, self.extras, rv, iv, market)
        info = design.info()
        coef, scale = design.fallback_coef()
        if design.n < self.min_obs:
            info["fallback"] = f"monthly mean range variance: {design.n} returns < min_obs={self.min_obs}"
            return self._params(info, coef, scale, design)
        used = set()
        for i, h in enumerate(ANCHORS):
            X, y, realised, obs = design.rows(h, with_obs=True)
            if y.size < 60:
                continue
            cols = [0, 1, 2, 3] + [4 + j for j in range(len(self.extras)) if obs[:, j].sum() >= self.min_obs]
            used |= {self.extras[c - 4] for c in cols[4:]}
            coef[i, cols] = _stable(_ols(X[:, cols], y, self.ridge), X[:, cols], y)
            scale[i] = _scale(X, coef[i], realised)
        if self.extras:
            info["extras_used"] = sorted(used)
        return self._params(info, coef, scale, design)

    def _params(self, info: dict, coef: np.ndarray, scale: np.ndarray, design: "HarDesign") -> FittedRangeHar:
        return FittedRangeHar(spec=self, params={"coef": coef[None], "scale": scale[None], "k": np.array([design.k]),
                                                 "iv_premium": np.array([design.iv_premium]),
                                                 "market_premium": np.array([design.market_premium])}, info=info)


@dataclass(frozen=True)
class HarDesign:
    """The range-HAR regression of one asset's trailing window (what a fit and the pooled prior share)."""

    r: FloatArray  # returns, oldest first
    q: FloatArray  # range variances of the same days (NaN where unobserved)
    k: float  # close-to-close over range variance
    x: FloatArray  # (n, 4 + E) regressors (`_har_x`, then `_extra_x`), row t from days <= t
    cs: FloatArray  # cumulative range-unit variance (r^2 / k where the range is unobserved)
    cr: FloatArray  # cumulative squared returns
    obs: FloatArray  # (n, E) where each extra regressor was observed
    iv_premium: float = 0.0  # mean log gap of implied over monthly range variance (0 without the index)
    market_premium: float = 0.0  # mean log gap of the market's over the asset's weekly range variance

    @property
    def n(self) -> int:
        return int(self.r.size)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_obs": self.n, "range_days": int(np.isfinite(self.q).sum()), "close_ratio": self.k}
        if np.isfinite(self.q).sum() < 20:
            out["no_ranges"] = "fitted on squared returns: the source has no usable high / low"
        return out

    def fallback_coef(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients of the monthly mean range variance, scaled by ``k``: shapes (A, 4 + E) and (A,)."""
        coef = np.zeros((len(ANCHORS), self.x.shape[1]))
        coef[:, 3] = 1.0
        return coef, np.full(len(ANCHORS), self.k)

    def rows(self, h: int, with_obs: bool = False) -> tuple[FloatArray, ...]:
        """Regressors, log mean range variance of the next ``h`` days, their mean squared return
        (and, ``with_obs``, where each extra regressor was observed)."""
        t = np.arange(self.n)
        rows = t[(t + h < self.n) & np.all(np.isfinite(self.x), axis=1)]
        y = np.log(np.maximum((self.cs[rows + h + 1] - self.cs[rows + 1]) / h, VAR_FLOOR))
        realised = (self.cr[rows + h + 1] - self.cr[rows + 1]) / h
        return (self.x[rows], y, realised) + ((self.obs[rows],) if with_obs else ())


def har_design(returns: FloatArray, ranges: Any, window: int, estimator: str, extras: tuple[str, ...] = (),
               rv: Any = None, iv: Any = None, market: Any = None) -> HarDesign:
    """`HarDesign` of the trailing ``window`` finite returns and their bars' ranges, intraday realised
    variances, implied vol and the market's ranges (each right-aligned with the returns)."""
    r, q = _fit_ranges(returns, ranges, window, estimator)
    k = _close_ratio(r, q)
    s = np.where(np.isfinite(q), q, r * r / k)  # range units
    x = _har_x(s)
    prem = 0.0
    rv_w = _windowed(returns, rv, window) if "rv" in extras else None
    iv_w = _windowed(returns, iv, window) if "iv" in extras else None
    if iv_w is not None:
        m, _ = _trailing_mean(s, 22)
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.log((iv_w / 100.0) ** 2 / 365.0 / k) - np.log(m)
        prem = float(np.mean(gap[np.isfinite(gap)])) if np.isfinite(gap).any() else 0.0
    mk_w = _windowed(returns, market, window) if "market" in extras and market is not None else None
    mprem = 0.0
    if mk_w is not None:
        own_w, _ = _trailing_mean(s, 5)
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.log(_market_weekly(mk_w, s)) - np.log(own_w)
        mprem = float(np.mean(gap[np.isfinite(gap)])) if np.isfinite(gap).any() else 0.0
    ex, obs = _extra_x(s, k, tuple(extras), rv_w, iv_w, prem, mk_w, mprem)
    return HarDesign(r, q, k, np.concatenate([x, ex], axis=-1), np.concatenate([[0.0], np.cumsum(s)]),
                     np.concatenate([[0.0], np.cumsum(r * r)]), obs, prem, mprem)


def _scale(X: FloatArray, coef: FloatArray, realised: FloatArray) -> float:
    """In-sample mean squared return over mean predicted range variance (the level and log-to-level correction)."""
    pred = np.exp(X @ coef)
    den = float(np.sum(pred))
    return float(np.sum(realised) / den) if den > 0 and np.isfinite(den) else 1.0


# -- pooled across assets: a panel prior and shrinkage towards it ----------------------------


@dataclass(frozen=True, eq=False)
class FittedPooledHar(FittedRangeHar):
    """A range-HAR whose slopes are shrunk towards a panel fit across assets (``shared["prior"]``, (A, 3)).

    The registered artefact is one of these: its ``params`` are the panel's average
    model (batch 1) and ``shared`` the pooled slopes; each origin's fit keeps the
    same ``shared`` and its own shrunk coefficients.
    """

    name: ClassVar[str] = "pooled_har"

    @classmethod
    def from_params(cls, spec: Any = None, *, prior: Any = None, seed: int = 0) -> "FittedPooledHar":  # type: ignore[override]
        """A prior artefact with the given slopes (A, 3) (default 0.35 / 0.35 / 0.2 at every horizon; tests
        and tools; ``seed`` is unused: nothing is random)."""
        b = np.tile([0.35, 0.35, 0.2], (len(ANCHORS), 1)) if prior is None else np.asarray(prior, dtype=float)
        coef = np.concatenate([np.zeros((len(ANCHORS), 1)), b], axis=1)
        return cls(spec=spec or PooledHarVolatility(), params={
            "coef": coef[None], "scale": np.ones((1, len(ANCHORS))), "k": np.array([1.0]),
            "iv_premium": np.array([0.0]), "market_premium": np.array([0.0])}, shared={"prior": b})

    def check_loaded(self) -> None:
        from aetheris_ray.errors import ModelNotFound

        prior = self.shared.get("prior")
        if prior is None or np.shape(prior) != (len(ANCHORS), 3) or not np.all(np.isfinite(prior)):
            raise ModelNotFound(f"pooled_har artefact: shared 'prior' must be finite with shape ({len(ANCHORS)}, 3); "
                                "it is corrupt")


@dataclass(frozen=True)
class PooledHarVolatility(RangeHarVolatility):
    """`RangeHarVolatility` with its slopes shrunk towards the pooled (panel) fit of many assets.

    Each anchor's slopes are ``(m b_own + n0 b_pool) / (m + n0)`` with ``m`` the
    asset's own regression rows, so a young asset leans on the panel and an old one
    on itself; the intercept (the asset's level) and the close-to-close scale are
    always the asset's own, re-estimated given the shrunk slopes.  The panel fit
    (`fit_pooled_prior`, ``aetheris pool``) is a registry artefact trained on data up
    to a stated end date; without one the engine falls back to ``range_har``.

    Parameters
    ----------
    n0 : float
        Prior weight in regression rows (the history length at which own and pooled
        slopes weigh the same).
    """

    n0: float = 500.0
    min_obs: int = 60

    name: ClassVar[str] = "pooled_har"
    fitted_cls: ClassVar[type] = FittedPooledHar

    @property
    def fit_inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("ranges", "artefact")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.n0 >= 0, f"n0={self.n0!r} must be >= 0")
        self._check(not self.extras, "extras: the pooled prior covers the range regressors only; use range_har")

    def fit(self, returns: FloatArray, *, ranges: Any = None, artefact: FittedPooledHar | None = None,
            **context: Any) -> FittedPooledHar:
        if artefact is None:
            raise InvalidInput("pooled_har.fit: no pooled prior given; the engine passes the registered one "
                               "(`aetheris pool` trains it)")
        prior = np.asarray(artefact.shared["prior"], dtype=float)
        design = har_design(returns, ranges, self.window, self.estimator)
        info = design.info()
        coef, scale = design.fallback_coef()
        if design.n < self.min_obs:
            info["fallback"] = f"monthly mean range variance: {design.n} returns < min_obs={self.min_obs}"
        else:
            own_rows = []
            for i, h in enumerate(ANCHORS):
                X, y, realised = design.rows(h)
                m = y.size
                own_rows.append(m)
                if m < 20:
                    continue
                b = prior[i]
                if m >= 60:
                    b_own = _stable(_ols(X, y, self.ridge), X, y)[1:]
                    b = (m * b_own + self.n0 * prior[i]) / (m + self.n0)
                a = float(np.mean(y - X[:, 1:] @ b))  # the asset's own level given the slopes
                coef[i] = np.concatenate([[a], b])
                scale[i] = _scale(X, coef[i], realised)
            info["own_weight"] = [round(m / (m + self.n0), 3) for m in own_rows]
        return FittedPooledHar(spec=self, params={"coef": coef[None], "scale": scale[None], "k": np.array([design.k]),
                                                  "iv_premium": np.array([0.0]), "market_premium": np.array([0.0])},
                               info=info, shared=dict(artefact.shared))


def fit_pooled_prior(histories: Any, spec: PooledHarVolatility | None = None, info: dict | None = None
                     ) -> FittedPooledHar:
    """The panel fit: each anchor's slopes by least squares over every asset's rows, with asset fixed effects.

    Parameters
    ----------
    histories : iterable of ``(returns, (log_hl, log_co))``
        One entry per asset, each cut at the training end date by the caller.
    spec : the `PooledHarVolatility` the prior is for (window and estimator)
    info : extra metadata (training range, assets)

    Returns
    -------
    FittedPooledHar
        ``shared["prior"]`` (A, 3) pooled slopes; ``params`` the panel's average model.
    """
    sp = spec or PooledHarVolatility()
    designs = [har_design(r, rg, sp.window, sp.estimator) for r, rg in histories]
    designs = [d for d in designs if d.n >= 60]
    if not designs:
        raise InvalidInput("pooled prior: no asset has 60 or more daily returns before the end date")
    A = len(ANCHORS)
    prior = np.zeros((A, 3))
    coef = np.zeros((A, 4))
    scale = np.ones(A)
    n_rows = np.zeros(A, dtype=int)
    for i, h in enumerate(ANCHORS):
        xs, ys, parts = [], [], []
        for d in designs:
            X, y, realised = d.rows(h)
            if y.size < 20:
                continue
            mx, my = X[:, 1:].mean(axis=0), y.mean()
            xs.append(X[:, 1:] - mx)
            ys.append(y - my)
            parts.append((X, y, realised, mx, my))
        if not xs:
            raise InvalidInput(f"pooled prior: no asset has rows for the {h}-day regression")
        Xc, yc = np.concatenate(xs), np.concatenate(ys)
        b = np.linalg.lstsq(Xc, yc, rcond=None)[0]
        prior[i], n_rows[i] = b, yc.size
        a = float(np.mean([my - mx @ b for *_, mx, my in parts]))
        coef[i] = np.concatenate([[a], b])
        scale[i] = float(np.mean([_scale(X, np.concatenate([[my - mx @ b], b]), rl) for X, y, rl, mx, my in parts]))
    meta = {"n_assets": len(designs), "n_rows": n_rows.tolist(), **(info or {})}
    return FittedPooledHar(spec=sp, params={"coef": coef[None], "scale": scale[None],
                                            "k": np.array([float(np.mean([d.k for d in designs]))]),
                                            "iv_premium": np.array([0.0]), "market_premium": np.array([0.0])},
                           info=meta, shared={"prior": prior})


#: Largest sum of the log-HAR slopes: at 1 or more the log variance has no level to return to.
MAX_PERSISTENCE = 0.99


def _stable(coef: FloatArray, X: FloatArray, y: FloatArray) -> FloatArray:
    """``coef`` with its slopes scaled down to sum to at most `MAX_PERSISTENCE` (the intercept refitted
    to the sample mean).  Stale or tick-bound prices (many zero returns, discrete ranges) can give an
    explosive least-squares fit that a forecast would extrapolate."""
    b = coef[1:]
    total = float(b.sum())
    if total <= MAX_PERSISTENCE:
        return coef
    b = b * (MAX_PERSISTENCE / total)
    return np.concatenate([[float(np.mean(y - X[:, 1:] @ b))], b])


def _ols(X: FloatArray, y: FloatArray, ridge: float) -> FloatArray:
    """Least squares with an optional ridge on the slopes (scaled by each column's variance)."""
    if ridge <= 0:
        return np.linalg.lstsq(X, y, rcond=None)[0]
    mu = X[:, 1:].mean(axis=0)
    Xc = X[:, 1:] - mu
    pen = ridge * np.diag(np.var(Xc, axis=0) * X.shape[0])
    b = np.linalg.solve(Xc.T @ Xc + pen, Xc.T @ (y - y.mean()))
    return np.concatenate([[y.mean() - mu @ b], b])
