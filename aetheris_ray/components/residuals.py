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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components.base import Context, FittedBase, SpecBase, ewma_filter, seed_variance
from aetheris_ray.components.volatility import FittedVolatility

__all__ = [
    "unit_t",
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

    def draw(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Innovations, shape (n_origins, n_paths, horizon), float32."""
        return self.simulate(cond, n_paths, horizon, rng)


@dataclass(frozen=True, eq=False)
class FittedGaussian(FittedResiduals):
    name: ClassVar[str] = "gaussian"
    has_analytic_moments: ClassVar[bool] = True

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        b = next(iter(cond.values())).shape[0]
        return rng.standard_normal((b, n_paths, horizon), dtype=np.float32)


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

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        return unit_t(cond["nu"], n_paths, horizon, rng)


#: Largest absolute unit-variance Student-t innovation drawn (a 40-sigma day).
T_CLIP = 40.0


def unit_t(nu: FloatArray, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
    """Unit-variance Student-t innovations, shape (n_origins, n_paths, horizon), float32.

    ``t = z sqrt((nu - 2) / chi2_nu)`` with all normals drawn first and the
    chi-square (gamma) draws last, origin by origin, so an origin's draws never
    depend on the ``nu`` of later origins.  Clipped at +-`T_CLIP`.

    Parameters
    ----------
    nu : ndarray, shape (n_origins,)
        Degrees of freedom (> 2) per origin.
    """
    nu = np.asarray(nu, dtype=float).ravel()
    b = nu.size
    z = rng.standard_normal((b, n_paths, horizon), dtype=np.float32)
    out = np.empty_like(z)
    starts = np.flatnonzero(np.concatenate([[True], nu[1:] != nu[:-1]]))
    for a, e in zip(starts, np.append(starts[1:], b)):
        k = float(nu[a])
        g = rng.standard_gamma(np.float32(k / 2.0), size=(e - a, n_paths, horizon), dtype=np.float32)
        out[a:e] = z[a:e] * np.sqrt(np.float32(k - 2.0) / np.maximum(2.0 * g, np.float32(1e-30)))
    return np.clip(out, -T_CLIP, T_CLIP, out=out)


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

    def __post_init__(self) -> None:
        self._check(self.nu is None or self.nu > 2, f"nu={self.nu!r} must be > 2 (finite variance) or None (fitted)")
        self._check(self.source in ("ewma", "vol"), f"source={self.source!r}: use 'ewma' or 'vol'")

    def fit(self, returns: FloatArray, *, vol: Any = None, **context: Any) -> FittedStudentT:
        """``vol``: the fitted volatility component (used when ``source="vol"``)."""
        info: dict[str, Any] = {"n_obs": int(np.size(returns))}
        # a volatility model driven by its own noise (rough vol) has no returns filter:
        # then nu comes from EWMA-standardised returns
        use_vol = self.source == "vol" and vol is not None and type(vol).filter is not FittedVolatility.filter
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
