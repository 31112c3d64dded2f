"""Residual components: the standardised innovations ``z`` of ``r = drift + sigma z + jumps``.

Every variant returns unit-variance, zero-mean innovations shaped
``(n_origins, n_paths, horizon)`` (float32: they are multiplied by a float64 sigma).

* ``gaussian``: N(0, 1).
* ``student_t``: unit-variance Student-t; ``nu`` fixed or fitted by maximum
  likelihood on EWMA-standardised returns.
* ``fhs``: filtered historical simulation -- an i.i.d. bootstrap of each origin's
  own past standardised residuals ``r_t / sigma_{t|t-1}`` (EWMA filter), leaving out
  the days flagged as jumps (``|z| > jump_threshold``, the same rule the jump
  component is fitted with, so jumps are not counted twice), re-centred, and
  scaled by the standard deviation of *all* residuals (jumps included): the pool
  carries the diffusive share of the variance (slightly below 1) and the jump
  component adds the rest back.

``draw_tilted(cond, n_paths, horizon, eta, rng)`` draws the same innovations under
an importance-sampling tilt, step by step (``eta``, shape (n_origins, horizon)),
and returns them with the log likelihood ratio ``log p(z) / q(z)`` of each path
(the sum over steps of the per-step density ratio): an exponential tilt for the
Gaussian (a mean shift of ``eta``) and over the bootstrap pool (weights
``exp(eta z_i)``), and for the Student-t, which has no moment generating
function, a hazard-rate twist that makes the tail toward the threshold heavier.
`aetheris_ray.tails` uses it for far threshold probabilities.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components import _innovations
from aetheris_ray.components._innovations import T_CLIP
from aetheris_ray.components.base import Context, FittedBase, SpecBase, ewma_filter, seed_variance

__all__ = [
    "unit_t", "unit_t_ppf",
    "GaussianResiduals", "FittedGaussian",
    "StudentTResiduals", "FittedStudentT",
    "FhsResiduals", "FittedFhs",
    "standardised_residuals",
]


def standardised_residuals(ctx: Context, lam: float = 0.94) -> FloatArray:
    """``r_t / sigma_{t|t-1}`` along each context row (EWMA filter); 0 on padding.

    Returns
    -------
    ndarray, shape (n_origins, lookback)
    """
    v = ewma_filter(ctx.returns, ctx.valid, lam)
    v0 = seed_variance(np.square(ctx.returns), ctx.valid)
    prev = np.concatenate([v0[:, None], v[:, :-1]], axis=1)  # forecast made before each return
    return np.where(ctx.valid, ctx.returns / np.sqrt(prev), 0.0)


class FittedResiduals(FittedBase):
    kind: ClassVar[str] = "residuals"

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        return {"n": np.zeros(ctx.size)}

    #: Whether `draw_tilted` is implemented (importance sampling of far thresholds).
    tiltable: ClassVar[bool] = False
    #: Whether the steps are independent draws of one distribution with `unit_cdf`, so that a
    #: threshold probability can integrate the last step exactly (`aetheris_ray.tails`).
    iid_steps: ClassVar[bool] = False

    def unit_cdf(self, cond: dict, x: FloatArray, side: str) -> FloatArray:
        """``P(z < x)`` (``side="below"``) or ``P(z >= x)`` (``"above"``) of one step's innovation, x (n_origins, n)."""
        raise NotImplementedError(f"residuals {self.name!r} have no closed-form step distribution")

    def draw(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Innovations, shape (n_origins, n_paths, horizon), float32."""
        return self.simulate(cond, n_paths, horizon, rng)

    def draw_tilted(self, cond: dict, n_paths: int, horizon: int, eta: FloatArray,
                    rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """Innovations under the tilt ``eta`` and each path's log likelihood ratio.

        Parameters
        ----------
        eta : ndarray, shape (n_origins, horizon)
            Tilt of each step (0: the component's own distribution).

        Returns
        -------
        z : ndarray, shape (n_origins, n_paths, horizon), float64
        log_lr : ndarray, shape (n_origins, n_paths), float64
            ``sum_t log p(z_t) / q_t(z_t)``: weighting a path by ``exp(log_lr)``
            turns an expectation under the tilt into one under the model.
        """
        raise NotImplementedError(f"residuals {self.name!r} have no importance-sampling tilt")


def _gaussian_tilted(eta: FloatArray, n_paths: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """N(eta, 1) draws (the exponential tilt of N(0, 1)) and ``sum_t (-eta_t z_t + eta_t^2 / 2)``."""
    b, h = eta.shape
    z = rng.standard_normal((b, n_paths, h)) + eta[:, None, :]
    log_lr = (0.5 * np.square(eta).sum(axis=1))[:, None] - np.einsum("bnh,bh->bn", z, eta)
    return z, log_lr


@dataclass(frozen=True, eq=False)
class FittedGaussian(FittedResiduals):
    name: ClassVar[str] = "gaussian"
    has_analytic_moments: ClassVar[bool] = True

    tiltable: ClassVar[bool] = True

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        b = next(iter(cond.values())).shape[0]
        return rng.standard_normal((b, n_paths, horizon), dtype=np.float32)

    def draw_tilted(self, cond: dict, n_paths: int, horizon: int, eta: FloatArray,
                    rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """Exponential tilt of N(0, 1): N(eta_t, 1) at step t."""
        return _gaussian_tilted(np.asarray(eta, dtype=float).reshape(-1, horizon), n_paths, rng)

    iid_steps: ClassVar[bool] = True

    def unit_cdf(self, cond: dict, x: FloatArray, side: str) -> FloatArray:
        from scipy.special import ndtr

        x = np.asarray(x, dtype=float)
        return ndtr(x) if side == "below" else ndtr(-x)


@dataclass(frozen=True)
class GaussianResiduals(SpecBase):
    """Standard normal innovations."""

    kind: ClassVar[str] = "residuals"
    name: ClassVar[str] = "gaussian"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedGaussian

    def fit(self, returns: FloatArray, **context: Any) -> FittedGaussian:
        return FittedGaussian(spec=self, params={}, info={"n_obs": int(np.size(returns))})


@dataclass(frozen=True, eq=False)
class FittedStudentT(FittedResiduals):
    name: ClassVar[str] = "student_t"
    has_analytic_moments: ClassVar[bool] = True
    param_names: ClassVar[tuple[str, ...]] = ("nu",)

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        return {"nu": np.broadcast_to(np.asarray(self.params["nu"], dtype=float), (ctx.size,)).copy()}

    tiltable: ClassVar[bool] = True

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        return unit_t(cond["nu"], n_paths, horizon, rng)

    def draw_tilted(self, cond: dict, n_paths: int, horizon: int, eta: FloatArray,
                    rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """Hazard-rate twist toward the side of ``eta``: the t's CDF raised to a power.

        With ``theta = |eta| / (1 + |eta|)`` the step's CDF is ``F(z)^(1 - theta)``
        for ``eta < 0`` (the mirror image for ``eta > 0``): the tail toward the
        threshold gets heavier (a t has no exponential tilt) and the bulk moves
        along.  Drawn by inversion, ``z = F^-1(W)`` with ``W = U^(1 / (1 - theta))``;
        the ratio is ``W^theta / (1 - theta)``, at most ``1 / (1 - theta)`` per step
        (exact for the clipped draws too: the clip is applied after the inversion).
        """
        nu = np.asarray(cond["nu"], dtype=float).ravel()
        eta = np.asarray(eta, dtype=float).reshape(nu.size, horizon)
        b = nu.size
        z = np.empty((b, n_paths, horizon))
        log_lr = np.empty((b, n_paths))
        for i in range(b):
            theta = np.abs(eta[i]) / (1.0 + np.abs(eta[i]))
            # log W = log U / (1 - theta), U in (0, 1]; kept below 0 so that logit W is finite
            log_w = np.minimum(np.log1p(-rng.random((n_paths, horizon))) / (1.0 - theta), -1e-300)
            x = unit_t_ppf(float(nu[i]), log_w - np.log(-np.expm1(log_w)))
            z[i] = np.where(eta[i] > 0, -x, x)
            log_lr[i] = (theta * log_w).sum(axis=1) - np.log1p(-theta).sum()
        return z, log_lr

    iid_steps: ClassVar[bool] = True

    def unit_cdf(self, cond: dict, x: FloatArray, side: str) -> FloatArray:
        """The clipped unit-variance t of `unit_t`: atoms of ``F(-T_CLIP)`` at -`T_CLIP` and at +`T_CLIP`."""
        nu = np.asarray(cond["nu"], dtype=float).ravel()
        x = np.asarray(x, dtype=float)
        rows = x.reshape(nu.size, -1)
        # P(z < x) = F(x); P(z >= x) = F(-x): the same table, mirrored
        p = np.stack([unit_t_cdf(float(v), r if side == "below" else -r) for v, r in zip(nu, rows)]).reshape(x.shape)
        if side == "below":
            return np.where(x > T_CLIP, 1.0, np.where(x <= -T_CLIP, 0.0, p))
        return np.where(x <= -T_CLIP, 1.0, np.where(x > T_CLIP, 0.0, p))


def unit_t(nu: FloatArray, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
    """Unit-variance Student-t innovations (`aetheris_ray.components._innovations.unit_t`) clipped at +-`T_CLIP`."""
    return _innovations.unit_t(nu, n_paths, horizon, rng, clip=T_CLIP)


#: Knots of the tabulated unit-t quantile function (`unit_t_ppf`).
PPF_KNOTS = 4097


@functools.lru_cache(maxsize=64)
def _ppf_table(nu: float, clip: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Knots of the lower half of the unit-variance t quantile function on a uniform grid of logit(p).

    From ``logit F(-clip)`` to 0: the quantiles (``scipy.special.stdtrit``) and
    their derivatives ``dx / dlogit p = p (1 - p) / f(x)``.
    """
    from scipy import special

    s = np.sqrt(nu / (nu - 2.0))  # a unit-variance t times s is a standard t
    lo = float(special.stdtr(nu, -clip * s))
    y0 = np.log(lo) - np.log1p(-lo)
    y = np.linspace(y0, 0.0, PPF_KNOTS)
    p = 1.0 / (1.0 + np.exp(-y))
    t = special.stdtrit(nu, p)
    log_f = (special.gammaln((nu + 1.0) / 2.0) - special.gammaln(nu / 2.0) - 0.5 * np.log(nu * np.pi)
             - 0.5 * (nu + 1.0) * np.log1p(t * t / nu))
    x = t / s
    x[0] = -clip  # the first knot is the clip point by construction (stdtrit rounds it)
    return y0, -y0 / (PPF_KNOTS - 1), x, p * (1.0 - p) / (s * np.exp(log_f))


def unit_t_ppf(nu: float, logit_p: FloatArray) -> FloatArray:
    """Quantiles of the unit-variance t (``nu`` degrees of freedom) at ``logit(p)``, clipped at +-`T_CLIP`.

    Cubic Hermite interpolation of `PPF_KNOTS` exact quantiles and slopes on a
    uniform grid of logit(p) (the t is symmetric: the upper half mirrors the
    lower): within 1e-10 of ``scipy.special.stdtrit``, about ten times faster.
    Levels beyond the clip (``p <= F(-T_CLIP)``) give ``-T_CLIP`` (the model's atom).
    """
    y0, dy, x, d = _ppf_table(float(nu), float(T_CLIP))
    y = np.asarray(logit_p, dtype=float)
    pos = np.maximum((-np.abs(y) - y0) / dy, 0.0)
    i = np.minimum(pos.astype(np.intp), x.size - 2)
    t = pos - i
    t2 = t * t
    lower = ((2.0 * t - 3.0) * t2 + 1.0) * x[i] + (t2 - 2.0 * t + 1.0) * t * dy * d[i] \
        + (3.0 - 2.0 * t) * t2 * x[i + 1] + (t - 1.0) * t2 * dy * d[i + 1]
    return np.clip(np.where(y > 0, -lower, lower), -T_CLIP, T_CLIP)


#: Knots of the tabulated unit-t CDF (`unit_t_cdf`).
CDF_KNOTS = 4097


@functools.lru_cache(maxsize=64)
def _cdf_table(nu: float, clip: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Knots of ``logit F`` of the unit-variance t's lower half on a uniform grid of ``asinh(x)`` from
    ``-asinh(clip)`` to 0, and the slopes ``d logit F / d asinh x = f cosh(a) / (F (1 - F))``.

    In ``asinh x`` the t's ``logit F`` is nearly linear in the tail (``F ~ |x|^-nu``), so a
    cubic Hermite on 4,097 knots stays within 1e-10 of ``scipy.special.stdtr`` relative to ``F``.
    """
    from scipy import special

    s = np.sqrt(nu / (nu - 2.0))  # a unit-variance t times s is a standard t
    a = np.linspace(-np.arcsinh(clip), 0.0, CDF_KNOTS)
    x = np.sinh(a)
    log_F = np.log(np.maximum(special.stdtr(nu, x * s), 1e-300))
    log_1mF = np.log1p(-np.exp(log_F))
    log_f = (special.gammaln((nu + 1.0) / 2.0) - special.gammaln(nu / 2.0) - 0.5 * np.log(nu * np.pi)
             - 0.5 * (nu + 1.0) * np.log1p((x * s) ** 2 / nu)) + np.log(s)
    return float(a[0]), float(a[1] - a[0]), log_F - log_1mF, np.exp(log_f - log_F - log_1mF) * np.cosh(a)


def unit_t_cdf(nu: float, x: FloatArray) -> FloatArray:
    """``P(z < x)`` of the unit-variance t (``nu`` degrees of freedom), not clipped (the caller puts the
    atoms at +-`T_CLIP`).

    Cubic Hermite interpolation of `CDF_KNOTS` exact values and slopes of ``logit F`` on a
    uniform grid of ``asinh x`` (the t is symmetric: the upper half mirrors the lower):
    within 1e-10 of ``scipy.special.stdtr`` relative to the lower tail's probability, about
    six times faster (the last step of an importance-sampled threshold integrates it per path).
    """
    a0, da, g, d = _cdf_table(float(nu), float(T_CLIP))
    x = np.asarray(x, dtype=float)
    pos = np.maximum((np.arcsinh(-np.abs(x)) - a0) / da, 0.0)
    i = np.minimum(pos.astype(np.intp), g.size - 2)
    t = pos - i
    t2 = t * t
    y = ((2.0 * t - 3.0) * t2 + 1.0) * g[i] + (t2 - 2.0 * t + 1.0) * t * da * d[i] \
        + (3.0 - 2.0 * t) * t2 * g[i + 1] + (t - 1.0) * t2 * da * d[i + 1]
    lower = 1.0 / (1.0 + np.exp(-y))  # F(-|x|)
    return np.where(x > 0, 1.0 - lower, lower)


def _t_nll(nu: float, z: FloatArray) -> float:
    from scipy import special

    s2 = (nu - 2.0) / nu  # unit-variance t: x = z / sqrt(s2) is standard t
    x2 = z * z / s2
    ll = (special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(nu * np.pi * s2)
          - (nu + 1) / 2 * np.log1p(x2 / nu))
    return float(-np.sum(ll))


@dataclass(frozen=True)
class StudentTResiduals(SpecBase):
    """Unit-variance Student-t innovations.

    Parameters
    ----------
    nu : float or None
        Degrees of freedom (> 2); None estimates it (bounded to [2.5, 60]).
    source : {"ewma", "vol"}
        How ``nu`` is estimated: maximum likelihood on EWMA-standardised returns,
        or from the volatility component the engine fits alongside (its own
        ``nu`` for GARCH-t, else maximum likelihood on returns standardised by its
        filter) -- so the innovations are the ones the vol model was fitted with.
    """

    nu: float | None = None
    lam: float = 0.94
    source: str = "ewma"

    kind: ClassVar[str] = "residuals"
    name: ClassVar[str] = "student_t"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedStudentT

    @property
    def fit_inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        """The volatility part when ``nu`` is estimated from it (``source="vol"``)."""
        return ("volatility",) if self.source == "vol" and self.nu is None else ()

    def __post_init__(self) -> None:
        self._check(self.nu is None or self.nu > 2, f"nu={self.nu!r} must be > 2 (finite variance) or None (fitted)")
        self._check(self.source in ("ewma", "vol"), f"source={self.source!r}: use 'ewma' or 'vol'")

    def fit(self, returns: FloatArray, *, volatility: Any = None, **context: Any) -> FittedStudentT:
        """``volatility``: the fitted volatility part (used when ``source="vol"``)."""
        vol = volatility
        info: dict[str, Any] = {"n_obs": int(np.size(returns))}
        # a volatility model driven by its own noise (rough vol) has no returns filter:
        # then nu comes from EWMA-standardised returns
        use_vol = self.source == "vol" and vol is not None and vol.filters_returns
        if self.nu is not None:
            nu = float(self.nu)
        elif use_vol and "nu" in vol.params and getattr(vol.spec, "dist", "") == "t" and "fallback" not in vol.info:
            nu = float(np.clip(np.asarray(vol.params["nu"], dtype=float)[-1], 2.5, 60.0))
            info["nu_from"] = vol.name
        else:
            ctx = Context.from_returns(returns, lookback=max(int(np.size(returns)), 1))
            if use_vol:
                v = vol.filter(ctx)
                v0 = seed_variance(np.square(ctx.returns), ctx.valid)
                prev = np.maximum(np.concatenate([v0[:, None], v[:, :-1]], axis=1), 1e-12)
                z = (ctx.returns / np.sqrt(prev))[ctx.valid]
            else:
                z = standardised_residuals(ctx, self.lam)[ctx.valid]
            if z.size < 50 or not np.any(z != 0):
                nu = 5.0
                info["fallback"] = f"nu=5: {z.size} residuals are too few to fit"
            else:
                from scipy.optimize import minimize_scalar

                z = z / max(float(np.std(z)), 1e-12)
                res = minimize_scalar(_t_nll, bounds=(2.5, 60.0), args=(z,), method="bounded")
                nu = float(res.x)
        return FittedStudentT(spec=self, params={"nu": np.array([nu])}, info=info)


@dataclass(frozen=True, eq=False)
class FittedFhs(FittedResiduals):
    name: ClassVar[str] = "fhs"

    @property
    def needs(self) -> dict[str, str]:
        """Standardised by the volatility part's own one-step variances when ``spec.filter == "model"``."""
        return {"variance": "volatility.filter"} if self.spec.filter == "model" else {}

    def condition(self, ctx: Context, variance: FloatArray | None = None) -> dict[str, np.ndarray]:
        """The bootstrap pool of each origin, compacted to the left: ``{"pool": (B, L) float32, "count": (B,)}``.

        ``variance`` (n_origins, lookback): the volatility component's one-step
        forecasts along the window; when given (and ``spec.filter == "model"``) the
        residuals are standardised by it, so the pool matches the sigma it will be
        multiplied by.  Jump days are always flagged by the EWMA rule the jump
        component is fitted with.
        """
        sp = self.spec
        z_flag = standardised_residuals(ctx, sp.lam)
        keep = ctx.valid & (np.abs(z_flag) <= sp.jump_threshold)
        if variance is not None and sp.filter == "model":
            v = np.asarray(variance, dtype=float)
            v0 = seed_variance(np.square(ctx.returns), ctx.valid)
            prev = np.maximum(np.concatenate([v0[:, None], v[:, :-1]], axis=1), 1e-12)
            z = np.where(ctx.valid, ctx.returns / np.sqrt(prev), 0.0)
        else:
            z = z_flag
        if sp.pool < ctx.lookback:
            keep[:, : ctx.lookback - sp.pool] = False
        cnt = keep.sum(axis=1)
        safe = np.maximum(cnt, 1)
        mean = np.where(keep, z, 0.0).sum(axis=1) / safe
        # scale by the spread of ALL residuals, jumps included: the diffusive pool keeps
        # its share of the variance and the jump component adds the rest back
        allv = ctx.valid.copy()
        if sp.pool < ctx.lookback:
            allv[:, : ctx.lookback - sp.pool] = False
        n_all = np.maximum(allv.sum(axis=1), 1)
        dev_all = np.where(allv, z - mean[:, None], 0.0)
        sd = np.sqrt((dev_all * dev_all).sum(axis=1) / n_all)
        sd = np.where(sd > 1e-12, sd, 1.0)
        zs = np.where(keep, (z - mean[:, None]) / sd[:, None], 0.0)
        order = np.argsort(~keep, axis=1, kind="stable")  # kept entries first, in time order
        pool = np.take_along_axis(zs, order, axis=1).astype(np.float32)
        return {"pool": pool, "count": cnt}

    tiltable: ClassVar[bool] = True

    def draw_tilted(self, cond: dict, n_paths: int, horizon: int, eta: FloatArray,
                    rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """Discrete exponential tilt over the pool: ``P(z_i) ~ exp(eta_t z_i)`` at step t.

        Origins whose pool is shorter than ``min_pool`` draw Gaussian innovations
        (as `simulate` does) under the Gaussian tilt.
        """
        from scipy.special import logsumexp

        pool, cnt = cond["pool"], np.asarray(cond["count"])
        b = pool.shape[0]
        eta = np.asarray(eta, dtype=float).reshape(b, horizon)
        z = np.empty((b, n_paths, horizon))
        log_lr = np.empty((b, n_paths))
        for i in range(b):
            c = int(cnt[i])
            if c < self.spec.min_pool:
                zi, li = _gaussian_tilted(eta[i:i + 1], n_paths, rng)
                z[i], log_lr[i] = zi[0], li[0]
                continue
            p = np.asarray(pool[i, :c], dtype=float)
            logw = eta[i][:, None] * p[None, :]  # (horizon, c)
            log_m = logsumexp(logw, axis=1)  # log sum_i exp(eta p_i)
            cdf = np.cumsum(np.exp(logw - log_m[:, None]), axis=1)
            u = rng.random((n_paths, horizon))
            for t in range(horizon):
                idx = np.minimum(np.searchsorted(cdf[t], u[:, t] * cdf[t, -1], side="right"), c - 1)
                z[i, :, t] = p[idx]
            # p(z) / q(z) = (1 / c) / (exp(eta z) / sum exp(eta p)) = exp(log M(eta) - eta z), M the pool's mean
            log_lr[i] = (log_m - np.log(c)).sum() - z[i] @ eta[i]
        return z, log_lr

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        pool, cnt = cond["pool"], cond["count"]
        b = pool.shape[0]
        u = rng.random((b, n_paths * horizon))
        idx = (u * np.maximum(cnt, 1)[:, None]).astype(np.intp)
        z = np.take_along_axis(pool, idx, axis=1).reshape(b, n_paths, horizon)
        short = cnt < self.spec.min_pool
        if np.any(short):  # too little history: Gaussian innovations for those origins
            rows = np.flatnonzero(short)
            z[rows] = rng.standard_normal((rows.size, n_paths, horizon), dtype=np.float32)
        return z


@dataclass(frozen=True)
class FhsResiduals(SpecBase):
    """Filtered historical bootstrap of standardised residuals, jumps excluded.

    Parameters
    ----------
    lam : float
        EWMA decay of the jump-flagging filter (and of the standardising one when
        ``filter="ewma"`` or no volatility component is given).
    filter : {"model", "ewma"}
        Standardise by the volatility component's own filter (the engine passes
        it) or by the EWMA filter.
    pool : int
        Trailing residuals the bootstrap draws from (at most the context lookback).
    jump_threshold : float
        ``|z|`` above which a day counts as a jump and is left out of the pool.
    min_pool : int
        Fewer pooled residuals than this -> Gaussian innovations for that origin.
    """

    lam: float = 0.94
    pool: int = 1000
    jump_threshold: float = 4.0
    min_pool: int = 60
    filter: str = "model"

    kind: ClassVar[str] = "residuals"
    name: ClassVar[str] = "fhs"
    fitted_cls: ClassVar[type] = FittedFhs

    def __post_init__(self) -> None:
        self._check(0 < self.lam < 1, f"lam={self.lam!r} must be in (0, 1)")
        self._check(self.pool >= 30, f"pool={self.pool!r} must be at least 30")
        self._check(self.jump_threshold > 1, f"jump_threshold={self.jump_threshold!r} must be above 1")
        self._check(self.min_pool >= 10, f"min_pool={self.min_pool!r} must be at least 10")
        self._check(self.filter in ("model", "ewma"), f"filter={self.filter!r}: use 'model' or 'ewma'")

    def fit(self, returns: FloatArray, **context: Any) -> FittedFhs:
        """Nothing to estimate: the pool is each origin's own past (see `FittedFhs.condition`)."""
        return FittedFhs(spec=self, params={}, info={"n_obs": int(np.size(returns))})
