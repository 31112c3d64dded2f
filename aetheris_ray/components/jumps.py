"""Jump components: rare large moves added on top of ``drift + sigma z``.

A day is flagged as a jump when its EWMA-standardised residual exceeds
``threshold`` in absolute value (the same rule with which the `fhs` residuals
leave those days out of their pool).  Sizes are in units of the origin's EWMA
volatility: ``J = sign * (threshold + excess) * sigma_ref`` with a heavy-tailed
(generalised Pareto, shape ``xi``) excess, a down-jump probability fitted with a
Beta(1, 1) prior, and ``|J|`` capped at `MAX_JUMP` log-return units.

* ``none``: no jumps.
* ``poisson``: daily counts ~ Poisson(lambda), ``lambda = lambda0 exp(beta . x)``,
  where ``x`` is the regime vector plus the market-maker indices (absent = 0) and
  ``beta`` a ridge-penalised Poisson regression (zero without training features).
* ``hawkes``: self-exciting counts, ``lambda_t = (mu + alpha E_t) exp(beta . x)``
  with ``E_{t+1} = delta (E_t + N_t)``; ``mu, alpha`` by maximum likelihood with
  the branching ratio kept below 0.9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components.base import Context, FittedBase, SpecBase, ewma_filter
from aetheris_ray.components.residuals import standardised_residuals

__all__ = ["NoJumps", "FittedNoJumps", "PoissonJumps", "FittedPoisson", "HawkesJumps", "FittedHawkes",
           "jump_flags", "MAX_JUMP"]

#: Largest absolute size of one jump, in log-return units (e^-3 = -95%).
MAX_JUMP = 3.0


def jump_flags(returns: FloatArray, threshold: float, lam: float = 0.94) -> tuple[np.ndarray, FloatArray]:
    """Jump flags and standardised residuals of a 1-d return series (EWMA filter)."""
    r = np.asarray(returns, dtype=float)
    r = np.where(np.isfinite(r), r, 0.0)
    ctx = Context.from_returns(r, lookback=max(r.size, 1))
    z = standardised_residuals(ctx, lam)[0, -r.size:] if r.size else np.zeros(0)
    return np.abs(z) > threshold, z


def _features(regime_vector: FloatArray, mm: FloatArray) -> FloatArray:
    """Conditioning features ``[regime_vector, mm]`` with absent entries as 0, shape (n, d + 3)."""
    rv = np.where(np.isfinite(regime_vector), regime_vector, 0.0)
    m = np.where(np.isfinite(mm), mm, 0.0)
    return np.concatenate([rv, m], axis=1)


def _fit_ridge_poisson(X: FloatArray, y: FloatArray, offset: FloatArray, ridge: float, iters: int = 25,
                       beta0: FloatArray | None = None) -> FloatArray:
    """Poisson regression ``y ~ exp(offset + X beta)`` with penalty ``ridge/2 |beta|^2`` (Newton)."""
    beta = np.zeros(X.shape[1]) if beta0 is None or np.shape(beta0) != (X.shape[1],) else np.array(beta0, dtype=float)
    for _ in range(iters):
        eta = np.clip(offset + X @ beta, -30.0, 5.0)
        mu = np.exp(eta)
        grad = X.T @ (mu - y) + ridge * beta
        hess = (X * mu[:, None]).T @ X + ridge * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        beta = beta - step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return beta


class FittedJumps(FittedBase):
    kind: ClassVar[str] = "jumps"

    def add_jumps(self, out: FloatArray, cond: dict, rng: np.random.Generator) -> None:
        """Add the jump log-returns of ``cond``'s origins to ``out`` (n_origins, n_paths, horizon) in place."""
        out += self.simulate(cond, out.shape[1], out.shape[2], rng)

    def _intensity_mult(self, ctx: Context) -> FloatArray:
        """``exp(beta . x)`` per origin, clipped to [e^-2, e^2]; shape (n_origins,)."""
        beta = np.asarray(self.params["beta"], dtype=float)
        x = _features(ctx.regime_vector, ctx.mm)
        d = min(beta.shape[1], x.shape[1])
        s = np.einsum("bd,bd->b", np.broadcast_to(beta[:, :d], (ctx.size, d)), x[:, :d])
        return np.exp(np.clip(s, -2.0, 2.0))

    def _ref_sigma(self, ctx: Context) -> FloatArray:
        return np.sqrt(ewma_filter(ctx.returns, ctx.valid, self.spec.lam)[:, -1])

    def _sizes(self, cond: dict, counts: np.ndarray, rng: np.random.Generator) -> FloatArray:
        """Sum of ``counts`` jump sizes per cell, shape = counts.shape, float32.

        Sizes are drawn in one call, cell by cell in C order (origin-major), so an
        origin's sizes never depend on the counts of later origins.
        """
        out = np.zeros(counts.shape, dtype=np.float32)
        flat = counts.reshape(-1)
        cells = np.flatnonzero(flat)
        if cells.size == 0:
            return out
        k = flat[cells]
        owner = np.repeat(np.arange(cells.size), k)
        b = (cells // (counts.shape[1] * counts.shape[2]))[owner]
        nb = counts.shape[0]
        xi = self.spec.xi
        scale = np.broadcast_to(np.asarray(cond["scale"], dtype=float), (nb,))[b]
        pdown = np.broadcast_to(np.asarray(cond["p_down"], dtype=float), (nb,))[b]
        sig = np.asarray(cond["sigma_ref"], dtype=float)[b]
        u = rng.random((owner.size, 2))
        excess = scale / xi * ((1.0 - u[:, 0]) ** (-xi) - 1.0)
        size = np.minimum((self.spec.threshold + excess) * sig, MAX_JUMP)
        signed = np.where(u[:, 1] < pdown, -size, size)
        out.reshape(-1)[cells] = np.bincount(owner, weights=signed, minlength=cells.size)
        return out


def poisson_inverse(lam: FloatArray, u: FloatArray) -> np.ndarray:
    """Poisson counts by inversion of uniforms (``lam`` broadcasts against ``u``).

    Inversion consumes exactly one uniform per cell whatever the intensity, so the
    random stream never depends on the data.

    >>> poisson_inverse(np.array(2.0), np.array([0.1, 0.5, 0.99])).tolist()
    [0, 2, 6]
    """
    lam = np.asarray(lam, dtype=float)
    p = np.exp(-lam)
    cdf = p
    n = (u > cdf).astype(np.int64)
    k = 1
    while k < 200:
        p = p * lam / k
        if float(np.max(p)) < 1e-17:
            break
        cdf = cdf + p
        more = u > cdf
        if not more.any():
            break
        n += more
        k += 1
    return n


# -- none ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedNoJumps(FittedJumps):
    name: ClassVar[str] = "none"
    has_analytic_moments: ClassVar[bool] = True

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        return {"n": np.zeros(ctx.size)}

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        return np.zeros((cond["n"].shape[0], n_paths, horizon), dtype=np.float32)

    def add_jumps(self, out: FloatArray, cond: dict, rng: np.random.Generator) -> None:
        """No jumps: ``out`` is left as it is."""


@dataclass(frozen=True)
class NoJumps(SpecBase):
    """No jump component."""

    kind: ClassVar[str] = "jumps"
    name: ClassVar[str] = "none"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedNoJumps

    def fit(self, returns: FloatArray, **context: Any) -> FittedNoJumps:
        return FittedNoJumps(spec=self, params={})


# -- shared fitting --------------------------------------------------------------------------


def _size_params(z: FloatArray, flags: np.ndarray, threshold: float, xi: float) -> dict[str, float]:
    """Down-jump probability and GPD scale of the excess over the threshold, with weak priors."""
    zj = z[flags]
    n = zj.size
    p_down = (float(np.sum(zj < 0)) + 1.0) / (n + 2.0)
    prior_n, prior_excess = 2.0, 1.0
    mean_excess = (float(np.sum(np.abs(zj) - threshold)) + prior_n * prior_excess) / (n + prior_n)
    return {"p_down": p_down, "scale": max((1.0 - xi) * mean_excess, 1e-3)}


def _training_features(features: FloatArray | None, n: int) -> FloatArray | None:
    if features is None:
        return None
    f = np.asarray(features, dtype=float)
    if f.ndim != 2 or f.shape[0] < n:
        return None
    return f[-n:]


@dataclass(frozen=True)
class _JumpSpec(SpecBase):
    threshold: float = 4.0
    lam: float = 0.94
    window: int = 1000
    xi: float = 0.25
    prior_jumps: float = 1.0
    prior_days: float = 250.0
    ridge: float = 50.0

    kind: ClassVar[str] = "jumps"
    #: ``features``: regime vector + MM indices of the past ``window`` days (the intensity regression)
    fit_inputs: ClassVar[tuple[str, ...]] = ("features", "warm")

    def __post_init__(self) -> None:
        self._check(self.threshold > 1, f"threshold={self.threshold!r} must be above 1 (standardised units)")
        self._check(0 < self.lam < 1, f"lam={self.lam!r} must be in (0, 1)")
        self._check(0 < self.xi < 1, f"xi={self.xi!r} (GPD shape) must be in (0, 1)")
        self._check(self.window >= 50, f"window={self.window!r} must be at least 50")
        self._check(self.ridge > 0, f"ridge={self.ridge!r} must be positive")

    def _common(self, returns: FloatArray, features: FloatArray | None) -> tuple[dict, np.ndarray, FloatArray, dict]:
        r = np.asarray(returns, dtype=float)[-self.window:]
        flags, z = jump_flags(r, self.threshold, self.lam)
        flags[: min(30, flags.size)] = False  # the EWMA seed period is not trusted
        n = int(r.size)
        base = (float(flags.sum()) + self.prior_jumps) / (n + self.prior_days)
        params = {"lambda0": base, **_size_params(z, flags, self.threshold, self.xi)}
        info = {"n_obs": n, "n_jumps": int(flags.sum())}
        return params, flags, z, info

    def _glm(self, flags: np.ndarray, features: FloatArray | None, offset: FloatArray, dim: int,
             warm: Any = None) -> np.ndarray:
        """Ridge Poisson coefficients on the training features (zeros without them)."""
        X = _training_features(features, flags.size)
        if X is None:
            return np.zeros(dim)
        Xp, yp, off = X[:-1], flags[1:].astype(float), offset[1:]
        ok = np.all(np.isfinite(Xp), axis=1)
        if ok.sum() < 100 or yp[ok].sum() < 3:
            return np.zeros(X.shape[1])
        beta0 = np.asarray(warm.params["beta"], dtype=float)[-1] if warm is not None and "beta" in warm.params else None
        return _fit_ridge_poisson(Xp[ok], yp[ok], np.log(np.maximum(off[ok], 1e-12)), self.ridge, beta0=beta0)


# -- poisson ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedPoisson(FittedJumps):
    """Compound Poisson jumps (params ``lambda0, p_down, scale, beta``)."""

    name: ClassVar[str] = "poisson"
    param_names: ClassVar[tuple[str, ...]] = ("lambda0", "p_down", "scale", "beta")
    row_params: ClassVar[tuple[str, ...]] = ("beta",)

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        lam0 = np.broadcast_to(np.asarray(self.params["lambda0"], dtype=float), (ctx.size,))
        return {"lambda": lam0 * self._intensity_mult(ctx), "sigma_ref": self._ref_sigma(ctx),
                "p_down": np.asarray(self.params["p_down"], dtype=float),
                "scale": np.asarray(self.params["scale"], dtype=float)}

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        lam = cond["lambda"][:, None, None]
        counts = poisson_inverse(lam, rng.random((lam.shape[0], n_paths, horizon)))
        return self._sizes(cond, counts, rng)


@dataclass(frozen=True)
class PoissonJumps(_JumpSpec):
    """Compound Poisson jumps with heavy-tailed sizes, intensity conditioned on regime and MM indices.

    Parameters
    ----------
    threshold : float
        ``|z|`` above which a day is a jump (keep equal to the residuals' ``jump_threshold``).
    window : int
        Trailing days the intensity and sizes are estimated on.
    xi : float
        Shape of the generalised Pareto excess (heavier tail for larger xi).
    prior_jumps, prior_days : float
        Gamma prior on the daily intensity (``prior_jumps / prior_days``).
    ridge : float
        Penalty of the regime / MM regression.
    """

    name: ClassVar[str] = "poisson"
    fitted_cls: ClassVar[type] = FittedPoisson

    def fit(self, returns: FloatArray, *, features: FloatArray | None = None, warm: Any = None,
            **context: Any) -> FittedPoisson:
        """``features``: (n_returns, n_features) aligned with ``returns`` (row t known at day t; NaN rows skipped)."""
        params, flags, z, info = self._common(returns, features)
        dim = 0 if features is None else int(np.shape(features)[1])
        beta = self._glm(flags, features, np.full(flags.size, params["lambda0"]), dim, warm)
        return FittedPoisson(spec=self, params={
            "lambda0": np.array([params["lambda0"]]), "p_down": np.array([params["p_down"]]),
            "scale": np.array([params["scale"]]), "beta": beta[None, :]}, info=info)


# -- hawkes ----------------------------------------------------------------------------------


def _excitation(flags: FloatArray, delta: float) -> FloatArray:
    """``E_t = sum_{s < t} delta^(t - s) N_s`` along the last axis (E_0 = 0); shape = flags.shape + 1 on that axis."""
    from scipy import signal

    x = np.asarray(flags, dtype=float)
    y = signal.lfilter([delta], [1.0, -delta], x, axis=-1)  # y_t = delta (y_{t-1} + x_t)
    return np.concatenate([np.zeros(x.shape[:-1] + (1,)), y], axis=-1)


def _hawkes_nll(theta: np.ndarray, y: FloatArray, e: FloatArray, g: FloatArray) -> float:
    mu, alpha = theta
    lam = np.maximum((mu + alpha * e) * g, 1e-12)
    return float(np.sum(lam - y * np.log(lam)))


@dataclass(frozen=True, eq=False)
class FittedHawkes(FittedJumps):
    """Discrete-time Hawkes jumps (params ``mu, alpha, delta, p_down, scale, beta``)."""

    name: ClassVar[str] = "hawkes"
    param_names: ClassVar[tuple[str, ...]] = ("mu", "alpha", "delta", "p_down", "scale", "beta")
    row_params: ClassVar[tuple[str, ...]] = ("beta",)

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        z = standardised_residuals(ctx, self.spec.lam)
        flags = (np.abs(z) > self.spec.threshold) & ctx.valid
        delta = np.broadcast_to(np.asarray(self.params["delta"], dtype=float), (ctx.size,))
        e = np.empty(ctx.size)
        for u in np.unique(delta):
            rows = np.flatnonzero(delta == u)
            e[rows] = _excitation(flags[rows], float(u))[:, -1]
        return {"e0": e, "g": self._intensity_mult(ctx), "sigma_ref": self._ref_sigma(ctx),
                "mu": np.broadcast_to(np.asarray(self.params["mu"], dtype=float), (ctx.size,)),
                "alpha": np.broadcast_to(np.asarray(self.params["alpha"], dtype=float), (ctx.size,)),
                "delta": delta,
                "p_down": np.asarray(self.params["p_down"], dtype=float),
                "scale": np.asarray(self.params["scale"], dtype=float)}

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        b = cond["e0"].shape[0]
        mu, al, de, g = (cond[k][:, None] for k in ("mu", "alpha", "delta", "g"))
        e = np.broadcast_to(cond["e0"][:, None], (b, n_paths)).astype(float)
        counts = np.empty((b, n_paths, horizon), dtype=np.int64)
        u = rng.random((b, n_paths, horizon))
        for t in range(horizon):
            n_t = poisson_inverse((mu + al * e) * g, u[:, :, t])
            counts[:, :, t] = n_t
            e = de * (e + n_t)
        return self._sizes(cond, counts, rng)


@dataclass(frozen=True)
class HawkesJumps(_JumpSpec):
    """Self-exciting (Hawkes) jumps; ``delta`` is the daily decay of the excitation."""

    delta: float = 0.9
    max_branching: float = 0.9

    name: ClassVar[str] = "hawkes"
    fitted_cls: ClassVar[type] = FittedHawkes

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(0 < self.delta < 1, f"delta={self.delta!r} must be in (0, 1)")
        self._check(0 < self.max_branching < 1, f"max_branching={self.max_branching!r} must be in (0, 1)")

    def fit(self, returns: FloatArray, *, features: FloatArray | None = None, warm: Any = None,
            **context: Any) -> FittedHawkes:
        params, flags, z, info = self._common(returns, features)
        dim = 0 if features is None else int(np.shape(features)[1])
        beta = self._glm(flags, features, np.full(flags.size, params["lambda0"]), dim, warm)
        X = _training_features(features, flags.size)
        g = np.ones(flags.size)
        if X is not None and beta.size:
            xs = np.where(np.isfinite(X), X, 0.0) @ beta[: X.shape[1]]
            g = np.exp(np.clip(np.concatenate([[0.0], xs[:-1]]), -2.0, 2.0))
        y = flags.astype(float)
        e = _excitation(y, self.delta)[:-1]  # excitation before each day
        a_max = self.max_branching * (1.0 - self.delta) / self.delta  # branching = alpha delta / (1 - delta)
        mu, alpha = params["lambda0"], 0.0
        if y.sum() >= 3:
            from scipy.optimize import minimize

            # weak prior: the Gamma prior of the Poisson rate as pseudo-observations
            yy = np.concatenate([y, [self.prior_jumps]])
            ee = np.concatenate([e, [0.0]])
            gg = np.concatenate([g, [self.prior_days]])
            res = minimize(_hawkes_nll, x0=np.array([params["lambda0"], 0.1 * a_max]), args=(yy, ee, gg),
                           method="L-BFGS-B", bounds=[(1e-6, 1.0), (0.0, a_max)])
            if res.success and np.all(np.isfinite(res.x)):
                mu, alpha = float(res.x[0]), float(res.x[1])
        info["branching"] = alpha * self.delta / (1.0 - self.delta)
        return FittedHawkes(spec=self, params={
            "mu": np.array([mu]), "alpha": np.array([alpha]), "delta": np.array([self.delta]),
            "p_down": np.array([params["p_down"]]), "scale": np.array([params["scale"]]),
            "beta": beta[None, :]}, info=info)
