"""Trend components: the daily drift of log-returns (deterministic per origin).

* ``zero``: no drift.
* ``ar_es``: an ensemble of simple experts -- zero, the rolling mean, exponential
  smoothing of returns at a few rates, AR(p) fitted by rolling least squares --
  whose weights are re-set at every origin by exponentially weighted (EWA)
  scores of their recent one-step errors (standardised by EWMA volatility,
  discounted).  The combination is then shrunk hard towards zero
  (``shrink``) and capped at ``max_sigma`` daily volatilities: daily crypto
  drift is mostly noise, and a wrong drift costs more than a missing one.

Everything an origin uses is in its own context window, so the walk-forward
and the single forecast compute identical drifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components.base import Context, FittedBase, SpecBase, ewma_filter

__all__ = ["ZeroTrend", "FittedZeroTrend", "ArEsTrend", "FittedArEs", "MAX_DRIFT_STEPS"]

#: Steps of the drift path computed by `condition` (the longest horizon served).
MAX_DRIFT_STEPS = 90


class FittedTrend(FittedBase):
    kind: ClassVar[str] = "trend"
    has_analytic_moments: ClassVar[bool] = True

    def drift(self, cond: dict, horizon: int) -> FloatArray:
        """Daily drift per step, shape (n_origins, 1, horizon) (broadcasts against paths)."""
        return cond["drift"][:, None, :horizon]

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        d = self.drift(cond, horizon)
        return np.broadcast_to(d, (d.shape[0], n_paths, horizon))


@dataclass(frozen=True, eq=False)
class FittedZeroTrend(FittedTrend):
    name: ClassVar[str] = "zero"

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        return {"drift": np.zeros((ctx.size, MAX_DRIFT_STEPS))}


@dataclass(frozen=True)
class ZeroTrend(SpecBase):
    """Zero drift."""

    kind: ClassVar[str] = "trend"
    name: ClassVar[str] = "zero"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedZeroTrend

    def fit(self, returns: FloatArray, **context: Any) -> FittedZeroTrend:
        return FittedZeroTrend(spec=self, params={})


def _rolling_sum(x: FloatArray, w: int) -> FloatArray:
    """Trailing sums over ``w`` entries along axis 1 (fewer at the start)."""
    c = np.cumsum(x, axis=1)
    out = c.copy()
    out[:, w:] = c[:, w:] - c[:, :-w]
    return out


@dataclass(frozen=True, eq=False)
class FittedArEs(FittedTrend):
    """The AR / exponential-smoothing ensemble (no stored parameters: it re-weights at every origin)."""

    name: ClassVar[str] = "ar_es"

    def experts(self, ctx: Context) -> tuple[FloatArray, FloatArray, list[str]]:
        """One-step forecasts of every expert at the last ``eval_days + 1`` positions, and AR coefficients.

        Returns
        -------
        f : ndarray, shape (n_origins, n_experts, eval_days + 1)
            ``f[:, k, j]`` forecasts the return after position ``L - eval_days - 1 + j``.
        ar : ndarray, shape (n_origins, n_ar, max_p + 1)
            Intercept and lag coefficients of each AR expert at the origin.
        names : list of str
        """
        sp = self.spec
        r = ctx.returns
        b, L = r.shape
        pmax = max(sp.ar_orders) if sp.ar_orders else 0
        E = max(min(sp.eval_days, L - 2 - pmax), 1)
        pos = np.arange(L - E - 1, L)  # positions t where a forecast of r[t+1] is made
        W = sp.window
        fs, names = [np.zeros((b, pos.size))], ["zero"]
        cnt = _rolling_sum(ctx.valid.astype(float), W)
        fs.append((_rolling_sum(r, W) / np.maximum(cnt, 1.0))[:, pos])
        names.append("mean")
        from scipy import signal

        for a in sp.es_alphas:
            m = signal.lfilter([a], [1.0, -(1.0 - a)], r, axis=1)
            fs.append(m[:, pos])
            names.append(f"es{a:g}")
        ar = np.zeros((b, len(sp.ar_orders), pmax + 1))
        if sp.ar_orders:
            # lagged design rows x_s = [1, r_{s-1}, ..., r_{s-pmax}] for target r_s
            lags = np.stack([np.concatenate([np.zeros((b, i)), r[:, : L - i]], axis=1)
                             for i in range(1, pmax + 1)], axis=2)
            X = np.concatenate([np.ones((b, L, 1)), lags], axis=2)  # (b, L, pmax + 1)
            XX = np.cumsum(X[:, :, :, None] * X[:, :, None, :], axis=1)
            Xy = np.cumsum(X * r[:, :, None], axis=1)
            XXw = XX[:, pos] - np.where((pos - W >= 0)[None, :, None, None], XX[:, np.maximum(pos - W, 0)], 0.0)
            Xyw = Xy[:, pos] - np.where((pos - W >= 0)[None, :, None], Xy[:, np.maximum(pos - W, 0)], 0.0)
            for i, p in enumerate(sp.ar_orders):
                k = p + 1
                sub = XXw[:, :, :k, :k]
                diag = np.diagonal(sub, axis1=2, axis2=3)
                # a whisper of ridge keeps flat or padded windows solvable without biasing real fits
                tiny = 1e-12 * diag.sum(axis=2, keepdims=True) / k + 1e-30
                A = sub + (1e-9 * diag + tiny)[..., None] * np.eye(k)
                coef = np.linalg.solve(A, Xyw[:, :, :k, None])[..., 0]  # (b, P, k)
                xnext = np.concatenate([np.ones((b, pos.size, 1)), np.stack(
                    [r[:, pos - j] for j in range(p)], axis=2)], axis=2)  # regressors of r[t+1]
                fs.append(np.einsum("bpk,bpk->bp", coef, xnext))
                names.append(f"ar{p}")
                ar[:, i, :k] = coef[:, -1]
        return np.stack(fs, axis=1), ar, names

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        sp = self.spec
        r = ctx.returns
        f, ar, names = self.experts(ctx)
        E = f.shape[2] - 1
        v = ewma_filter(r, ctx.valid, 0.94)
        L = r.shape[1]
        pos = np.arange(L - E - 1, L - 1)
        err = (r[:, pos + 1][:, None, :] - f[:, :, :-1]) / np.sqrt(v[:, pos])[:, None, :]
        ok = (ctx.valid[:, pos + 1] & ctx.valid[:, pos])[:, None, :]
        disc = sp.decay ** np.arange(E - 1, -1, -1)
        loss = np.where(ok, err * err, 0.0) @ disc  # (b, K)
        logw = -sp.eta * (loss - loss.min(axis=1, keepdims=True))
        w = np.exp(logw)
        w /= w.sum(axis=1, keepdims=True)
        # drift path: constant experts hold their forecast, AR experts are iterated
        n_const = len(names) - len(sp.ar_orders)
        path = np.broadcast_to((w[:, :n_const] * f[:, :n_const, -1]).sum(axis=1)[:, None],
                               (ctx.size, MAX_DRIFT_STEPS)).copy()
        for i, p in enumerate(sp.ar_orders):
            c = ar[:, i]
            hist = list(r[:, L - p:].T)[::-1] if p else []  # most recent first
            steps = np.empty((ctx.size, MAX_DRIFT_STEPS))
            for t in range(MAX_DRIFT_STEPS):
                x = c[:, 0] + sum(c[:, j + 1] * hist[j] for j in range(p))
                steps[:, t] = x
                hist = [x] + hist[:-1] if p else hist
            path += w[:, n_const + i][:, None] * steps
        sigma = np.sqrt(v[:, -1])[:, None]
        drift = np.clip(sp.shrink * path, -sp.max_sigma * sigma, sp.max_sigma * sigma)
        return {"drift": drift, "weights": w}


@dataclass(frozen=True)
class ArEsTrend(SpecBase):
    """AR / exponential-smoothing ensemble with EWA weights, shrunk towards zero drift.

    Parameters
    ----------
    ar_orders : tuple of int
        AR experts (with intercept), fitted by least squares on the trailing ``window`` days.
    es_alphas : tuple of float
        Smoothing rates of the exponential-smoothing experts.
    window : int
        Days of the rolling mean and of the AR fits.
    eval_days, decay, eta : the EWA scoring window, discount per day and learning rate.
    shrink : float in [0, 1]
        Multiplier of the combined drift (0 = zero drift).
    max_sigma : float
        Cap of the absolute daily drift, in daily EWMA volatilities.
    """

    ar_orders: tuple = (1, 2)
    es_alphas: tuple = (0.02, 0.1)
    window: int = 250
    eval_days: int = 250
    decay: float = 0.99
    eta: float = 0.5
    shrink: float = 0.25
    max_sigma: float = 0.1

    kind: ClassVar[str] = "trend"
    name: ClassVar[str] = "ar_es"
    has_analytic_moments: ClassVar[bool] = True
    fitted_cls: ClassVar[type] = FittedArEs

    @classmethod
    def coerce_params(cls, params: dict) -> dict:
        out = dict(params)
        for k in ("ar_orders", "es_alphas"):
            if k in out:
                out[k] = tuple(out[k])
        return out

    def __post_init__(self) -> None:
        self._check(all(isinstance(p, int) and 1 <= p <= 5 for p in self.ar_orders),
                    f"ar_orders={self.ar_orders!r}: AR orders are whole numbers in 1..5")
        self._check(all(0 < a < 1 for a in self.es_alphas), f"es_alphas={self.es_alphas!r}: each in (0, 1)")
        self._check(self.window >= 20, f"window={self.window!r} must be at least 20")
        self._check(self.eval_days >= 10, f"eval_days={self.eval_days!r} must be at least 10")
        self._check(0 < self.decay <= 1, f"decay={self.decay!r} must be in (0, 1]")
        self._check(self.eta >= 0, f"eta={self.eta!r} must be non-negative")
        self._check(0 <= self.shrink <= 1, f"shrink={self.shrink!r} must be in [0, 1]")
        self._check(self.max_sigma >= 0, f"max_sigma={self.max_sigma!r} must be non-negative")

    def fit(self, returns: FloatArray, **context: Any) -> FittedArEs:
        """Nothing global to estimate: experts and weights are computed per origin from its window."""
        return FittedArEs(spec=self, params={}, info={"n_obs": int(np.size(returns))})
