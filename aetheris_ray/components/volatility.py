"""Volatility components: EWMA, GARCH(1,1)-t, HAR-RV and a blend of them (daily log-return units).

A fitted volatility component produces per-path sigma given the innovations, one
step at a time, through three verbs that every variant implements:

* ``init_paths(cond, n_paths, horizon, rng) -> dict``: the per-path state at the origin;
* ``variance(ps) -> ndarray (n_origins, n_paths)``: the variance of the current step;
* ``update(ps, r)``: advance with the step's simulated (diffusive) log-return ``r``.

``sample_vol(cond, z, rng)`` runs the loop ``sigma_t = sqrt(variance)``,
``r_t = sigma_t z_t``, ``update(r_t)`` and returns the sigma paths.  A model that
feeds on its own returns (GARCH, EWMA) uses ``r``; one that is driven by its own
noise (rough volatility) draws its whole path in ``init_paths`` and ignores it.
A blend updates every member with the blended return, so each member filters the
same simulated series.

``filter(ctx)`` gives the one-step variance forecasts along each context window
(``v[:, t]`` is the forecast for the day after return ``t``); its last column is
the forecast for the first simulated day.  Variances are floored at 1e-12.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components._innovations import unit_t
from aetheris_ray.components.base import (
    VAR_FLOOR,
    Context,
    FittedBase,
    SpecBase,
    ewma_filter,
    seed_variance,
)

__all__ = [
    "EwmaVolatility", "FittedEwma",
    "GarchVolatility", "FittedGarch",
    "HarVolatility", "FittedHar",
    "BlendVolatility", "FittedBlend",
    "fit_garch_arch", "fit_garch_slsqp", "garch_filter", "forward_difference", "forward_steps", "ExactGradient",
]


class FittedVolatility(FittedBase):
    """Shared loop of the volatility components (see the module docstring)."""

    kind: ClassVar[str] = "volatility"
    has_analytic_moments: ClassVar[bool] = True
    #: ``filter`` runs on past returns (False for a model driven by its own noise, e.g. rough vol).
    filters_returns: ClassVar[bool] = True

    # -- to implement ---------------------------------------------------------------------
    def filter(self, ctx: Context) -> FloatArray:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_paths(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> dict:
        return {"v": np.broadcast_to(cond["v1"][:, None], (cond["v1"].shape[0], n_paths)).astype(float)}

    def variance(self, ps: dict) -> FloatArray:
        return ps["v"]

    def update(self, ps: dict, r: FloatArray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        """``{"v1": (n_origins,)}``: the variance forecast for the first simulated day."""
        v = self.filter(ctx)
        return {"v1": v[:, -1].copy()}

    def sample_vol(self, cond: dict, z: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Sigma paths given innovations.

        Parameters
        ----------
        z : ndarray, shape (n_origins, n_paths, horizon)
            Standardised innovations (unit variance).

        Returns
        -------
        ndarray, shape (n_origins, n_paths, horizon), float64
            Daily volatility of each step of each path.
        """
        b, n, h = z.shape
        ps = self.init_paths(cond, n, h, rng)
        sigma = np.empty((b, n, h))
        for t in range(h):
            s = np.maximum(self.variance(ps), VAR_FLOOR)
            np.sqrt(s, out=s)  # s is new: the variance state is never written
            sigma[:, :, t] = s
            if t + 1 < h:
                np.multiply(s, z[:, :, t], out=s)
                self.update(ps, s)
        return sigma

    def innovations(self, n_origins: int, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Unit-variance innovations of the standalone model (Gaussian; GARCH-t overrides)."""
        return rng.standard_normal((n_origins, n_paths, horizon))

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Standalone log-return paths ``sigma_t z_t``, shape (n_origins, n_paths, horizon)."""
        b = cond["v1"].shape[0]
        z = self.innovations(b, n_paths, horizon, rng)
        return self.sample_vol(cond, z, rng) * z

    def expected_variance(self, cond: dict, horizon: int) -> FloatArray:
        """E[sigma_t^2] for t = 1..horizon, shape (n_origins, horizon).

        Exact for models whose update is linear in r^2 (EWMA, GARCH, HAR, blends of
        them): the recursion is run once with r^2 replaced by its expectation.
        """
        ps = self.init_paths(cond, 1, horizon, np.random.default_rng(0))
        out = np.empty((cond["v1"].shape[0], horizon))
        for t in range(horizon):
            v = np.maximum(self.variance(ps), VAR_FLOOR)
            out[:, t] = v[:, 0]
            if t + 1 < horizon:
                self.update(ps, np.sqrt(v))
        return out


def garch_step(omega: FloatArray, alpha: FloatArray, beta: FloatArray, v: FloatArray, r: FloatArray) -> FloatArray:
    """One GARCH step along paths, ``omega + alpha r^2 + beta v``, as a new array.

    The same float64 operations in the same order as that expression (the one addition
    whose operands swap is exact either way), with two temporaries instead of five:
    about 2 % of a 10,000 x 14 forecast.

    >>> v, r = np.array([[1e-4, 2e-4]]), np.array([[0.01, -0.02]])
    >>> bool(np.array_equal(garch_step(1e-6, 0.1, 0.85, v, r), 1e-6 + 0.1 * r * r + 0.85 * v))
    True
    """
    out = np.multiply(alpha, r)
    out *= r
    out += omega
    bv = np.multiply(beta, v)
    if out.shape != bv.shape or out.dtype != np.result_type(out, bv):  # r narrower than v: broadcast
        return out + bv
    out += bv
    return out


def garch_filter(x: FloatArray, omega: FloatArray, alpha: FloatArray, beta: FloatArray,
                 v0: FloatArray) -> FloatArray:
    """``v[:, t] = omega + alpha x[:, t] + beta v[:, t-1]`` (``v[:, -1] = v0``), each row with its own
    parameters (one `scipy.signal.lfilter` per distinct parameter set), floored at `VAR_FLOOR`."""
    from scipy import signal

    if x.shape[0] == 1 and np.ndim(omega) == np.ndim(alpha) == np.ndim(beta) == 1:  # one row: nothing to group
        y, _ = signal.lfilter([1.0], [1.0, -float(beta[0])], omega[0] + alpha[0] * x, axis=1,
                              zi=(beta * v0)[:, None])
        return np.maximum(y, VAR_FLOOR)
    out = np.empty(x.shape)
    keys = np.stack([omega, alpha, beta], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    for g, (o, a, b) in enumerate(uniq):
        rows = np.flatnonzero(inv.ravel() == g)
        y, _ = signal.lfilter([1.0], [1.0, -b], o + a * x[rows], axis=1, zi=(b * v0[rows])[:, None])
        out[rows] = y
    return np.maximum(out, VAR_FLOOR)


# -- EWMA ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedEwma(FittedVolatility):
    """EWMA variance: ``v' = lam v + (1 - lam) r^2`` (params ``lam``)."""

    name: ClassVar[str] = "ewma"
    param_names: ClassVar[tuple[str, ...]] = ("lam",)

    def filter(self, ctx: Context) -> FloatArray:
        lam = np.asarray(self.params["lam"], dtype=float)
        if np.all(lam == lam[0]):
            return ewma_filter(ctx.returns, ctx.valid, float(lam[0]))
        out = np.empty(ctx.returns.shape)
        for u in np.unique(lam):
            rows = np.flatnonzero(lam == u)
            out[rows] = ewma_filter(ctx.returns[rows], ctx.valid[rows], float(u))
        return out

    def update(self, ps: dict, r: FloatArray) -> None:
        if self.spec.path_dependent:
            lam = self.p("lam")
            ps["v"] = lam * ps["v"] + (1.0 - lam) * r * r


@dataclass(frozen=True)
class EwmaVolatility(SpecBase):
    """RiskMetrics EWMA volatility.

    Parameters
    ----------
    lam : float in (0, 1)
        Decay.
    path_dependent : bool
        Update the variance along each simulated path (True) or hold it (the
        square-root-of-time rule, False).  Both have the same expected variance.
    """

    lam: float = 0.94
    path_dependent: bool = True

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = "ewma"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedEwma

    def __post_init__(self) -> None:
        self._check(0.0 < self.lam < 1.0, f"lam={self.lam!r} must be in (0, 1), e.g. 0.94")

    def fit(self, returns: FloatArray, **context: Any) -> FittedEwma:
        """Nothing to estimate: the decay is the hyperparameter."""
        return FittedEwma(spec=self, params={"lam": np.array([self.lam])}, info={"n_obs": int(np.size(returns))})


# -- GARCH(1,1)-t ----------------------------------------------------------------------------


#: SLSQP's default finite-difference step (its ``eps`` option), the one `arch` fits use.
SLSQP_STEP = float(np.sqrt(np.finfo(np.float64).eps))


def forward_steps(x0: FloatArray, lb: FloatArray, ub: FloatArray, step: float) -> FloatArray:
    """The steps of scipy's 2-point differences at ``x0``: ``step``, turned or shortened at the bounds.

    ``approx_derivative(..., "2-point", abs_step=step, bounds=(lb, ub))``'s own rule
    (`forward_difference`).
    """
    sign = (x0 >= 0).astype(float) * 2 - 1
    h = np.where((x0 + step) - x0 == 0, SLSQP_STEP * sign * np.maximum(1.0, np.abs(x0)), step)
    if not np.all((lb == -np.inf) & (ub == np.inf)):
        lower, upper = x0 - lb, ub - x0
        violated = (x0 + h < lb) | (x0 + h > ub)
        fitting = np.abs(h) <= np.maximum(lower, upper)
        h[violated & fitting] *= -1
        forward = (upper >= lower) & ~fitting
        h[forward] = upper[forward]
        backward = (upper < lower) & ~fitting
        h[backward] = -lower[backward]
    return h


def forward_difference(fun: Any, x0: FloatArray, f0: float, lb: FloatArray, ub: FloatArray, step: float,
                       args: tuple = (), h: FloatArray | None = None) -> FloatArray:
    """Forward-difference gradient of a scalar ``fun`` at ``x0``, bit for bit scipy's, minus its overhead.

    The very steps, points and arithmetic of ``scipy.optimize._numdiff.approx_derivative(fun,
    x0, "2-point", abs_step=step, f0=f0, bounds=(lb, ub))`` -- what `minimize` uses
    when it is given no Jacobian -- so an optimiser fed these gradients takes exactly
    the path it takes without them; the scipy bookkeeping it skips is about a third of a
    small GARCH fit's time.  Unit tests compare whole fits with scipy's own bit for bit.

    Parameters
    ----------
    fun : callable ``fun(x, *args) -> float``
    x0 : ndarray, shape (n,), inside the bounds
    f0 : float
        ``fun(x0, *args)``.
    lb, ub : ndarray, shape (n,)
        Bounds (infinite where none); a step that would leave them is turned or shortened as scipy does.
    step : float
        The absolute step.
    args : tuple
        Extra arguments of ``fun``.
    h : ndarray, optional
        ``forward_steps(x0, lb, ub, step)`` when already known.
    """
    if h is None:
        h = forward_steps(x0, lb, ub, step)
    out = np.empty(x0.size)
    for i in range(x0.size):
        x1 = x0.copy()
        x1[i] = x0[i] + h[i]
        out[i] = (fun(x1, *args) - f0) / ((x0[i] + h[i]) - x0[i])
    return out


class ExactGradient:
    """``fun`` and its `forward_difference` gradient as the ``fun, jac`` pair of `scipy.optimize.minimize`.

    Gives the optimiser what its own finite differences would (same value at the
    same points), reusing the value at the last point evaluated, as scipy does.

    Parameters
    ----------
    fun : callable ``fun(x, *args) -> float``
    bounds : sequence of (low, high) or None
        Those given to `minimize` (None: unbounded).
    step : float
        The method's finite-difference step: `SLSQP_STEP` for SLSQP, 1e-8 for L-BFGS-B.
    """

    def __init__(self, fun: Any, bounds: Any, step: float) -> None:
        self.fun, self.step = fun, float(step)
        self.lb, self.ub = bound_arrays(bounds)
        self._x: np.ndarray | None = None
        self._f = 0.0

    def value(self, x: FloatArray, *args: Any) -> float:
        f = self.fun(x, *args)
        self._x, self._f = np.array(x, dtype=float), f
        return f

    def gradient(self, x: FloatArray, *args: Any) -> FloatArray:
        x0 = np.array(x, dtype=float)
        if self.lb is not None:
            x0 = np.clip(x0, self.lb, self.ub)
        f0 = self._f if self._x is not None and np.array_equal(self._x, x0) else self.fun(x0, *args)
        lb = np.full(x0.size, -np.inf) if self.lb is None else self.lb
        ub = np.full(x0.size, np.inf) if self.ub is None else self.ub
        return forward_difference(self.fun, x0, f0, lb, ub, self.step, args)


def bound_arrays(bounds: Any) -> tuple[FloatArray | None, FloatArray | None]:
    """`minimize`'s ``[(low, high), ...]`` bounds as two arrays (None for low / high: infinite); None, None without."""
    if not bounds:
        return None, None
    return (np.array([-np.inf if lo is None else float(lo) for lo, _ in bounds]),
            np.array([np.inf if up is None else float(up) for _, up in bounds]))


class _ConstraintJacobians:
    """The Jacobians SLSQP builds for constraints given without one (`forward_difference` at SLSQP's
    step), the steps computed once per point for all of them."""

    def __init__(self, lb: FloatArray, ub: FloatArray) -> None:
        self.lb, self.ub = lb, ub
        self._x: np.ndarray | None = None
        self._h = np.empty(0)

    def of(self, fun: Any) -> Any:
        """The ``jac`` of the constraint ``fun``."""

        def jac(x: FloatArray, *args: Any) -> FloatArray:
            x0 = np.clip(np.array(x, dtype=float), self.lb, self.ub)
            if self._x is None or not np.array_equal(self._x, x0):
                self._x, self._h = x0, forward_steps(x0, self.lb, self.ub, SLSQP_STEP)
            return forward_difference(fun, x0, fun(x0, *args), self.lb, self.ub, SLSQP_STEP, args, self._h)

        return jac


def _slsqp(fun: Any, x0: Any, *, args: tuple = (), bounds: Any = None, constraints: Any = (), jac: Any = None,
           **kwargs: Any) -> Any:
    """`scipy.optimize.minimize` (as `arch` calls it) with `ExactGradient` / `_ConstraintJacobians`
    in place of scipy's own finite differences: the same optimisation, step for step."""
    from scipy.optimize import minimize

    if isinstance(constraints, dict):
        constraints = (constraints,)
    lb, ub = bound_arrays(bounds)
    if jac is None:
        grad = ExactGradient(fun, bounds, kwargs.get("options", {}).get("eps", SLSQP_STEP))
        fun, jac = grad.value, grad.gradient
    if lb is not None:
        jacobians = _ConstraintJacobians(lb, ub)
        constraints = [c if "jac" in c else {**c, "jac": jacobians.of(c["fun"])} for c in constraints]
    return minimize(fun, x0, args=args, bounds=bounds, constraints=constraints, jac=jac, **kwargs)


#: `arch`'s own ``minimize`` (scipy's), kept at the first `fit_garch_slsqp` before it is swapped.
_ARCH_MINIMIZE: dict[str, Any] = {}


def fit_garch_slsqp(model: Any, starting_values: FloatArray | None = None) -> Any:
    """``model.fit(disp="off", starting_values=..., show_warning=False)`` of an `arch` model, faster.

    The same call, with the objective's gradient and the constraints' Jacobians from
    `forward_difference` instead of scipy's generic finite differences: the same
    result bit for bit, in about a third less time.  `arch` looks ``minimize`` up in its
    module at each fit, so it is swapped there for the call and scipy's put back after
    (even on an error).  Concurrent calls from several threads can only make one of them
    use scipy's own (same numbers, slower); the module always ends with scipy's.

    Two more pieces of `arch`'s fit are work nobody reads, and are skipped on ``model``
    (which is fitted once): with ``starting_values`` given, the grid search for the
    volatility's own starting values (64 likelihoods; `arch` uses it only to scale
    residuals for the distribution's bounds, which are constants for the t and the
    normal, and the optimiser starts from the given values either way), and the deep
    copy of the model kept in the result (the result refers to ``model`` itself).  Both
    shortcuts are instance attributes, removed again after the fit.
    """
    import arch.univariate.base as arch_base

    vol = model.volatility
    if starting_values is not None:
        first = model.num_params
        given = np.asarray(starting_values, dtype=float)[first:first + vol.num_params]
        if given.size == vol.num_params:
            vol.starting_values = lambda resids: given
    model.__deepcopy__ = lambda memo: model
    original = _ARCH_MINIMIZE.setdefault("minimize", arch_base.minimize)
    arch_base.minimize = _slsqp
    try:
        return model.fit(disp="off", starting_values=starting_values, show_warning=False)
    finally:
        arch_base.minimize = original
        vars(vol).pop("starting_values", None)
        vars(model).pop("__deepcopy__", None)


def fit_garch_arch(returns: FloatArray, starting_values: FloatArray | None = None,
                   dist: str = "t") -> tuple[np.ndarray | None, bool]:
    """Fit ``arch_model(100 r, mean="Zero", vol="GARCH", p=1, q=1, dist=dist)``.

    Returns
    -------
    params : ndarray or None
        ``omega, alpha, beta[, nu]`` in *percent* units (None when the fit failed).
    converged : bool
    """
    from arch import arch_model
    from arch.utility.exceptions import ConvergenceWarning

    x = np.asarray(returns, dtype=float) * 100.0
    am = arch_model(x, mean="Zero", vol="GARCH", p=1, q=1, dist="studentst" if dist == "t" else "normal",
                    rescale=False)
    with warnings.catch_warnings():
        # arch's optimiser may probe infeasible points; the result is checked below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            res = fit_garch_slsqp(am, starting_values)
        except (ValueError, np.linalg.LinAlgError):
            return None, False
    p = np.asarray(res.params, dtype=float)
    ok = res.convergence_flag == 0 and bool(np.all(np.isfinite(p))) and p[0] > 0
    return (p if ok else None), ok


def _feasible(p: np.ndarray, var_pct: float, dist: str) -> np.ndarray:
    """Previous percent-unit parameters moved strictly inside arch's constraints (for a warm start)."""
    q = np.array(p, dtype=float)
    q[0] = min(max(q[0], 1e-6 * var_pct), 10.0 * var_pct)
    q[1] = min(max(q[1], 1e-6), 0.99)
    q[2] = min(max(q[2], 1e-6), 0.999)
    if q[1] + q[2] > 1.0 - 1e-5:
        q[1:3] *= (1.0 - 1e-5) / (q[1] + q[2])
    if dist == "t":
        q[3] = min(max(q[3], 2.1), 400.0)
    return q


@dataclass(frozen=True, eq=False)
class FittedGarch(FittedVolatility):
    """GARCH(1,1): ``v' = omega + alpha r^2 + beta v`` (params ``omega, alpha, beta, nu``; log-return units)."""

    name: ClassVar[str] = "garch"
    param_names: ClassVar[tuple[str, ...]] = ("omega", "alpha", "beta", "nu")

    def filter(self, ctx: Context) -> FloatArray:
        om, al, be = (np.asarray(self.params[k], dtype=float) for k in ("omega", "alpha", "beta"))
        r2 = np.square(ctx.returns)
        v0 = seed_variance(r2, ctx.valid)
        return garch_filter(np.where(ctx.valid, r2, v0[:, None]), om, al, be, v0)

    def update(self, ps: dict, r: FloatArray) -> None:
        ps["v"] = garch_step(self.p("omega"), self.p("alpha"), self.p("beta"), ps["v"], r)

    def innovations(self, n_origins: int, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        if self.spec.dist != "t":
            return rng.standard_normal((n_origins, n_paths, horizon))
        nu = np.broadcast_to(np.asarray(self.params["nu"], dtype=float), (n_origins,))
        return unit_t(nu, n_paths, horizon, rng)


@dataclass(frozen=True)
class GarchVolatility(SpecBase):
    """GARCH(1,1) with Student-t (or normal) innovations, fitted by `arch` (zero mean).

    Parameters
    ----------
    dist : {"t", "normal"}
    window : int
        Trailing daily returns the fit uses (at most).
    min_obs : int
        Fewer returns than this -> EWMA-equivalent parameters (``omega=0,
        alpha=1-lam, beta=lam``), recorded in ``info["fallback"]``.
    """

    dist: str = "t"
    window: int = 1000
    min_obs: int = 250
    fallback_lam: float = 0.94

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = "garch"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedGarch

    def __post_init__(self) -> None:
        self._check(self.dist in ("t", "normal"), f"dist={self.dist!r} is not valid; use 't' or 'normal'")
        self._check(self.window >= 50, f"window={self.window!r} must be at least 50")
        self._check(self.min_obs >= 50, f"min_obs={self.min_obs!r} must be at least 50")

    fit_inputs: ClassVar[tuple[str, ...]] = ("warm",)

    def fit(self, returns: FloatArray, *, warm: FittedGarch | None = None, **context: Any) -> FittedGarch:
        """MLE on the trailing `window` returns, warm-started from ``warm`` (a previous fit) when given.

        A failed warm start is retried cold; when that fails too the previous
        parameters are kept (``info["fallback"]``).
        """
        r = np.asarray(returns, dtype=float)
        r = r[np.isfinite(r)][-self.window:]
        n = r.size
        info: dict[str, Any] = {"n_obs": int(n)}
        if n < self.min_obs:
            info["fallback"] = f"ewma: {n} returns < min_obs={self.min_obs}"
            return self._ewma_like(info)
        var_pct = float(np.mean(r * r)) * 1e4
        tries: list[np.ndarray | None] = []
        if warm is not None and "fallback" not in warm.info:
            wp = [float(np.asarray(warm.params[k])[-1]) for k in ("omega", "alpha", "beta")]
            wp = [wp[0] * 1e4, wp[1], wp[2]] + ([float(np.asarray(warm.params["nu"])[-1])] if self.dist == "t" else [])
            tries.append(_feasible(np.array(wp), max(var_pct, 1e-8), self.dist))
        tries.append(None)
        for sv in tries:
            if var_pct <= 1e-10:
                break
            p, ok = fit_garch_arch(r, sv, self.dist)
            if p is not None:
                nu = float(p[3]) if self.dist == "t" else np.inf
                info["warm_start"] = sv is not None
                return FittedGarch(spec=self, params={
                    "omega": np.array([p[0] * 1e-4]), "alpha": np.array([p[1]]), "beta": np.array([p[2]]),
                    "nu": np.array([nu if np.isfinite(nu) else 1e6]),
                }, info=info)
        if warm is not None:
            info["fallback"] = "kept previous parameters: the fit did not converge"
            return FittedGarch(spec=self, params={k: np.asarray(warm.params[k])[-1:] for k in warm.params}, info=info)
        info["fallback"] = "ewma: the GARCH fit did not converge" if var_pct > 1e-10 else "ewma: flat returns"
        return self._ewma_like(info)

    def _ewma_like(self, info: dict) -> FittedGarch:
        lam = self.fallback_lam
        return FittedGarch(spec=self, params={"omega": np.array([0.0]), "alpha": np.array([1.0 - lam]),
                                              "beta": np.array([lam]), "nu": np.array([8.0])}, info=info)


# -- HAR-RV ----------------------------------------------------------------------------------


def _rv_series(ctx: Context) -> FloatArray:
    """Daily realised variance per context entry: intraday RV where present, else r^2 (0 on padding)."""
    r2 = np.square(ctx.returns)
    if ctx.rv is None:
        return r2
    return np.where(np.isfinite(ctx.rv), ctx.rv, r2)


def _har_regressors(rv: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Daily, weekly (5) and monthly (22) trailing means of ``rv`` along the last axis."""
    c = np.cumsum(np.concatenate([np.zeros(rv.shape[:-1] + (1,)), rv], axis=-1), axis=-1)

    def mean(k: int) -> FloatArray:
        lo = np.maximum(np.arange(1, rv.shape[-1] + 1) - k, 0)
        return (c[..., 1:] - c[..., lo]) / np.minimum(np.arange(1, rv.shape[-1] + 1), k)

    return rv, mean(5), mean(22)


@dataclass(frozen=True, eq=False)
class FittedHar(FittedVolatility):
    """HAR-RV: ``RV_{t+1} = b0 + b1 RV_t + b5 RV_week + b22 RV_month`` (params ``b0, b1, b5, b22``).

    The variance term structure is the HAR forecast iterated in expectation; it
    does not react to the simulated returns (a deterministic variance path).
    """

    name: ClassVar[str] = "har"
    param_names: ClassVar[tuple[str, ...]] = ("b0", "b1", "b5", "b22")

    def filter(self, ctx: Context) -> FloatArray:
        d, w, m = _har_regressors(_rv_series(ctx))
        v = self.p("b0") + self.p("b1") * d + self.p("b5") * w + self.p("b22") * m
        v0 = seed_variance(np.square(ctx.returns), ctx.valid)[:, None]
        # before 22 valid observations the monthly mean is not defined: use the seed variance
        enough = np.cumsum(ctx.valid, axis=1) >= 22
        return np.maximum(np.where(enough, v, v0), VAR_FLOOR)

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        rv = _rv_series(ctx)
        hist = rv[:, -22:]
        v1 = self.filter(ctx)[:, -1]
        return {"v1": v1, "hist": hist}

    def init_paths(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> dict:
        hist = np.array(cond["hist"], dtype=float)
        b = hist.shape[0]
        path = np.empty((b, horizon))
        path[:, 0] = cond["v1"]
        for t in range(1, horizon):
            hist = np.concatenate([hist[:, 1:], path[:, t - 1:t]], axis=1)
            path[:, t] = np.maximum(self.p("b0")[:, 0] + self.p("b1")[:, 0] * hist[:, -1]
                                    + self.p("b5")[:, 0] * hist[:, -5:].mean(axis=1)
                                    + self.p("b22")[:, 0] * hist.mean(axis=1), VAR_FLOOR)
        return {"path": path, "t": 0, "n": n_paths}

    def variance(self, ps: dict) -> FloatArray:
        col = ps["path"][:, ps["t"]][:, None]
        return np.broadcast_to(col, (col.shape[0], ps["n"]))

    def update(self, ps: dict, r: FloatArray) -> None:
        ps["t"] += 1


@dataclass(frozen=True)
class HarVolatility(SpecBase):
    """HAR-RV volatility (Corsi), from `MarketState.intraday_rv` where present, else squared daily returns.

    Fitted by OLS over the trailing `window` days; coefficients are clipped to be
    non-negative with ``b1 + b5 + b22 <= max_persistence``.
    """

    window: int = 1000
    min_obs: int = 200
    max_persistence: float = 0.995

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = "har"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedHar

    def __post_init__(self) -> None:
        self._check(self.window >= 60, f"window={self.window!r} must be at least 60")
        self._check(0 < self.max_persistence < 1, f"max_persistence={self.max_persistence!r} must be in (0, 1)")

    fit_inputs: ClassVar[tuple[str, ...]] = ("rv",)

    def fit(self, returns: FloatArray, *, rv: FloatArray | None = None, **context: Any) -> FittedHar:
        r = np.asarray(returns, dtype=float)[-self.window:]
        r = np.where(np.isfinite(r), r, 0.0)
        x = np.square(r)
        used_rv = False
        if rv is not None:
            rvw = np.asarray(rv, dtype=float)[-r.size:]
            rvw = np.concatenate([np.full(r.size - rvw.size, np.nan), rvw])
            ok = np.isfinite(rvw) & (rvw >= 0)
            used_rv = bool(ok.sum() >= self.min_obs)
            x = np.where(ok, rvw, x)
        info: dict[str, Any] = {"n_obs": int(r.size), "intraday_rv": used_rv}
        mean_v = float(np.mean(x)) if x.size else VAR_FLOOR
        if r.size < self.min_obs:
            info["fallback"] = f"constant variance: {r.size} returns < min_obs={self.min_obs}"
            return self._params(info, mean_v * (1 - 0.94), 0.94, 0.0, 0.0)
        d, w, m = _har_regressors(x)
        X = np.stack([np.ones(x.size - 22), d[21:-1], w[21:-1], m[21:-1]], axis=1)
        y = x[22:]
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        b = np.maximum(coef[1:], 0.0)
        s = float(b.sum())
        if s > self.max_persistence:
            b *= self.max_persistence / s
            s = self.max_persistence
        b0 = max(mean_v * (1.0 - s), VAR_FLOOR)  # intercept that keeps the sample mean as the long-run level
        return self._params(info, b0, *b)

    def _params(self, info: dict, b0: float, b1: float, b5: float, b22: float) -> FittedHar:
        return FittedHar(spec=self, params={"b0": np.array([b0]), "b1": np.array([b1]), "b5": np.array([b5]),
                                            "b22": np.array([b22])}, info=info)


# -- blend -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedBlend(FittedVolatility):
    """Weighted mean of member variances; every member is updated with the blended return.

    Params ``weights`` (n_origins, n_members) when fixed; online weights are
    recomputed at each origin from the members' recent one-step QLIKE losses.
    """

    name: ClassVar[str] = "blend"
    row_params: ClassVar[tuple[str, ...]] = ("weights",)

    def weights(self, ctx: Context) -> FloatArray:
        """Member weights per origin, shape (n_origins, n_members)."""
        base = np.broadcast_to(np.asarray(self.params["weights"], dtype=float), (ctx.size, len(self.children)))
        if self.spec.weighting == "fixed":
            return np.array(base)
        # online: exponentially discounted QLIKE of each member's one-step forecasts
        r2 = np.square(ctx.returns)
        n = min(self.spec.eval_days, ctx.lookback - 1)  # a short context scores the days it has
        losses = []
        for c in self.children:
            v = c.filter(ctx)
            vf = v[:, -n - 1:-1]  # forecasts for the last n returns
            q = np.log(vf) + r2[:, -n:] / vf
            losses.append(q)
        ok = ctx.valid[:, -n:] & ctx.valid[:, -n - 1:-1]
        disc = self.spec.decay ** np.arange(n - 1, -1, -1)
        L = np.stack([np.where(ok, q, 0.0) @ disc for q in losses], axis=1)  # (B, K)
        logw = np.log(np.maximum(base, 1e-12)) - self.spec.eta * (L - L.min(axis=1, keepdims=True))
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        return w / w.sum(axis=1, keepdims=True)

    def filter(self, ctx: Context) -> FloatArray:
        w = self.weights(ctx)
        return sum(w[:, k:k + 1] * c.filter(ctx) for k, c in enumerate(self.children))

    def condition(self, ctx: Context) -> dict[str, Any]:
        w = self.weights(ctx)
        members = [c.condition(ctx) for c in self.children]
        v1 = sum(w[:, k] * m["v1"] for k, m in enumerate(members))
        # members keyed "0", "1", ...: a nested dict of arrays (what the state cache keeps on disk)
        return {"v1": v1, "w": w, "members": {str(k): m for k, m in enumerate(members)}}

    def init_paths(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> dict:
        return {"w": cond["w"], "members": [c.init_paths(cond["members"][str(k)], n_paths, horizon, rng)
                                            for k, c in enumerate(self.children)]}

    def variance(self, ps: dict) -> FloatArray:
        w = ps["w"]
        out = None
        for k, (c, s) in enumerate(zip(self.children, ps["members"])):
            term = w[:, k:k + 1] * c.variance(s)
            if out is None:
                out = term
            else:  # in place into the first product (a fresh array): the same sums, no temporaries
                out += term
        return out

    def update(self, ps: dict, r: FloatArray) -> None:
        for c, s in zip(self.children, ps["members"]):
            c.update(s, r)


def _member_spec(x: Any) -> SpecBase:
    if isinstance(x, SpecBase):
        return x
    from aetheris_ray.components.registry import spec_from_dict

    return spec_from_dict("volatility", x)


@dataclass(frozen=True)
class BlendVolatility(SpecBase):
    """A blend of volatility members (by default EWMA and GARCH(1,1)-t).

    Parameters
    ----------
    members : tuple of specs (or names / dicts resolved through the registry)
    weights : tuple of float or None
        Prior weights (equal when None).
    weighting : {"fixed", "online"}
        ``online`` multiplies the prior weights by ``exp(-eta * QLIKE)`` of each
        member's one-step forecasts over the last ``eval_days`` (discounted by ``decay``).
    """

    members: tuple = (EwmaVolatility(), GarchVolatility())
    weights: tuple | None = None
    weighting: str = "fixed"
    eta: float = 1.0
    eval_days: int = 250
    decay: float = 0.99

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = "blend"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedBlend

    @classmethod
    def coerce_params(cls, params: dict) -> dict:
        out = dict(params)
        if "members" in out:
            out["members"] = tuple(_member_spec(m) for m in out["members"])
        if out.get("weights") is not None:
            out["weights"] = tuple(float(w) for w in out["weights"])
        return out

    def __post_init__(self) -> None:
        self._check(len(self.members) >= 1, "members: give at least one volatility spec")
        self._check(all(isinstance(m, SpecBase) and m.kind == "volatility" for m in self.members),
                    f"members={self.members!r}: every member must be a volatility spec")
        self._check(not any(isinstance(m, BlendVolatility) for m in self.members), "members: blends do not nest")
        if self.weights is not None:
            self._check(len(self.weights) == len(self.members) and all(w >= 0 for w in self.weights)
                        and sum(self.weights) > 0, f"weights={self.weights!r}: one non-negative weight per member")
        self._check(self.weighting in ("fixed", "online"), f"weighting={self.weighting!r}: use 'fixed' or 'online'")
        self._check(0 < self.decay <= 1, f"decay={self.decay!r} must be in (0, 1]")
        self._check(self.eval_days >= 10, f"eval_days={self.eval_days!r} must be at least 10")

    fit_inputs: ClassVar[tuple[str, ...]] = ("warm", "rv", "ranges", "iv", "market")

    def fit(self, returns: FloatArray, *, warm: FittedBlend | None = None, rv: FloatArray | None = None,
            ranges: Any = None, iv: Any = None, market: Any = None, **context: Any) -> FittedBlend:
        members = list(self.members)
        w = list(self.weights) if self.weights is not None else [1.0] * len(members)
        children = []
        for i, m in enumerate(members):
            prev = warm.children[i] if (warm is not None and i < len(warm.children)
                                        and type(warm.children[i].spec) is type(m)) else None
            given = {"warm": prev, "rv": rv, "ranges": ranges, "iv": iv, "market": market}
            children.append(m.fit(returns, **{k: given[k] for k in m.fit_inputs if k in given}))
        w_arr = np.asarray(w, dtype=float)
        info = {"members": [c.name for c in children],
                "fallbacks": [c.info.get("fallback") for c in children if c.info.get("fallback")]}
        return FittedBlend(spec=self, params={"weights": (w_arr / w_arr.sum())[None, :]}, info=info,
                           children=tuple(children))

