"""The training loop of ``fm_gp`` (imports torch; loaded lazily).

`Trainer` owns the data split, the targets, the GP prior, the network and the
optimiser, and exposes the core step that ``FlowMatchingResiduals.fit`` and the Ray
Tune trainable call:

* targets: each window's next ``H`` returns standardised by a point-in-time
  GARCH(1,1)-t filter (`pit_garch_params`, `garch_variance`), rescaled to unit variance
  and mapped to normal scores through a unit-variance Student-t CDF when
  ``spec.marginal == "t"`` (`component.to_gaussian`);
* ``train(n_steps)`` -- Adam steps on the conditional flow-matching loss
  ``|v(x_t, t, c) - (x1 - x0)|^2``, ``x0`` from the GP prior, ``x_t = (1 - t) x0 + t x1``,
  ``x1`` the target path (sign-flipped at random per path when ``spec.symmetric``);
* ``evaluate()`` -- on the validation windows (the latest origin dates; training
  origins end ``H`` days before the first of them): ``val_ql``, the quantile loss x100
  (EVALUATION.md's QL at its seven levels) of the cumulative standardised residuals
  ``sum_{j<=k} z_j / sqrt(k)``, k = 1..H, from sampled paths, pooled over windows and
  steps -- a proper score of the residual distribution and its dependence over the
  horizon; ``val_es``, the energy score of the H-vector; and the same two for an
  i.i.d. unit-variance Student-t (``nu`` fitted on the training targets,
  ``val_ql_t`` / ``val_es_t``) and for the GP prior alone (``val_ql_gp``);
* ``score(fitted)`` -- ``val_ql`` / ``val_es`` of any fitted ``fm_gp`` through its
  forecast-time path on the same validation windows (a sweep compares a new version
  with the registry's latest with it);
* ``state_dict()`` / ``load_state_dict()`` -- checkpoints (batch ``s`` is drawn from
  ``default_rng([seed, s])`` and its noise from ``make_generator([seed, s, 1])``, so a
  restore continues the same sequence).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aetheris_ray.components.base import Context, seed_variance
from aetheris_ray.components.fm_gp.component import (
    N_BASE_FEATURES,
    FittedFlowMatching,
    FlowMatchingResiduals,
    conditioning_features,
    gp_covariance,
    from_gaussian,
    standardise,
    to_gaussian,
)
from aetheris_ray.components.fm_gp.module import VelocityNet, fit_gp_prior, fm_loss
from aetheris_ray.components.torch_utils import make_generator
from aetheris_ray.components.volatility import GarchVolatility, garch_filter
from aetheris_ray.errors import DataError
from aetheris_ray.windows import split_windows, training_info

__all__ = ["Trainer", "split_windows", "window_returns", "pit_garch_params", "garch_variance", "LEVELS", "MIN_TRAIN"]

LEVELS = np.array([0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95])
MIN_TRAIN = 64
#: Windows (at most) used for the output standardisation and for each validation score.
N_REFERENCE = 2000
_DEAD_STD = 1e-8


def window_returns(w: dict[str, np.ndarray]) -> np.ndarray:
    """Raw daily log-returns of each window's inputs, (b, L) float64."""
    return (np.asarray(w["x_ret"], dtype=float) * np.asarray(w["sigma"], dtype=float)[:, None]
            + np.asarray(w["mu"], dtype=float)[:, None])




def pit_garch_params(windows: dict[str, np.ndarray], refit_days: int) -> dict[str, np.ndarray]:
    """Point-in-time GARCH(1,1)-t parameters of each window, ``omega, alpha, beta`` each (b,).

    Per asset, the daily return series is rebuilt from its windows' inputs; the
    engine's `GarchVolatility` (trailing 1000 returns, EWMA fallback under 250, warm
    start from the previous refit) is fitted at the asset's first origin and every
    ``refit_days`` after it on the returns up to that day, and a window takes the
    last refit on or before its origin: nothing after an origin enters its filter's
    parameters.
    """
    r = window_returns(windows)
    b, lb = r.shape
    day = windows["origin"].astype("datetime64[D]").astype(np.int64)
    out = {k: np.empty(b) for k in ("omega", "alpha", "beta")}
    spec = GarchVolatility(dist="t")
    for asset in np.unique(windows["asset"].astype(str)):
        rows = np.flatnonzero(windows["asset"].astype(str) == asset)
        days = (day[rows, None] - (lb - 1) + np.arange(lb)[None, :]).ravel()
        uniq, first = np.unique(days, return_index=True)
        series = r[rows].ravel()[first]
        block = (day[rows] - day[rows].min()) // int(refit_days)
        warm = None
        for k in np.unique(block):
            fit_day = day[rows].min() + int(k) * int(refit_days)
            warm = spec.fit(series[uniq <= fit_day], warm=warm)
            sel = rows[block == k]
            for name in out:
                out[name][sel] = float(np.asarray(warm.params[name])[-1])
    return out


def garch_variance(returns: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """One-step GARCH variances along each row (``v[:, t]`` forecasts the day after ``returns[:, t]``), (b, T).

    Seeded as `FittedGarch.filter` is (mean square of the first 30 returns), so on a
    window's inputs it is the filter the engine's GARCH part would run on that context.
    """
    r2 = np.square(returns)
    valid = np.ones(r2.shape, dtype=bool)
    v0 = seed_variance(r2, valid)
    return garch_filter(r2, params["omega"], params["alpha"], params["beta"], v0)


def _pinball_ql(y: np.ndarray, q: np.ndarray) -> float:
    """EVALUATION.md QL x100: mean over rows of (2/7) sum of pinball losses; y (N,), q (N, 7)."""
    diff = y[:, None] - q
    loss = np.maximum(LEVELS * diff, (LEVELS - 1.0) * diff)
    return float(100.0 * np.mean(2.0 * loss.sum(axis=1) / len(LEVELS)))


def path_scores(paths: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """``ql`` and ``es`` of sampled residual paths ``paths`` (b, m, H) against realised ``z`` (b, H).

    ``ql``: the QL x100 of ``S_k / sqrt(k)`` (``S_k`` the cumulative sum to step k) at `LEVELS`,
    pooled over windows and steps; ``es``: the energy score of the H-vector (pairs of
    consecutive paths for the spread term).
    """
    h = z.shape[1]
    norm = np.sqrt(np.arange(1, h + 1))
    cum = np.cumsum(paths, axis=2) / norm
    q = np.quantile(cum, LEVELS, axis=1)  # (7, b, H)
    ql = _pinball_ql((np.cumsum(z, axis=1) / norm).reshape(-1), q.reshape(len(LEVELS), -1).T)
    fit = np.linalg.norm(paths - z[:, None, :], axis=2).mean(axis=1)
    spread = np.linalg.norm(paths - np.roll(paths, 1, axis=1), axis=2).mean(axis=1)
    return {"ql": ql, "es": float(np.mean(fit - 0.5 * spread))}


class Trainer:
    """The core training step of ``fm_gp`` (used by ``fit`` and by the Tune trainable).

    Parameters
    ----------
    windows : dict of window columns (`aetheris_ray.windows`), any assets, pooled
    spec : FlowMatchingResiduals
    """

    def __init__(self, windows: dict[str, np.ndarray], spec: FlowMatchingResiduals) -> None:
        from aetheris_ray.components.rough_vol.training import resolve_device

        self.spec = spec
        self.device = resolve_device(spec.device)
        if windows["x_ret"].shape[1] < spec.lookback:
            raise DataError(f"fm_gp training: windows of {windows['x_ret'].shape[1]} input days; the spec's "
                            f"lookback={spec.lookback} needs at least that many (make longer windows)")
        windows = dict(windows, **{f"garch_{k}": v for k, v in pit_garch_params(windows, spec.refit_days).items()})
        train, val = split_windows(windows, spec.val_fraction, "fm_gp")
        if len(train["origin"]) < MIN_TRAIN or len(val["origin"]) < 1:
            raise DataError(f"fm_gp training: {len(train['origin'])} training and {len(val['origin'])} validation "
                            f"windows; need >= {MIN_TRAIN} and >= 1 (more assets or a longer history)")
        self.horizon = int(windows["y_ret"].shape[1])
        self.n_regime = 0 if windows.get("regime") is None else int(np.shape(windows["regime"])[1])
        self.train_np, self.val_np = train, val
        feats, z = self._inputs(train)
        self.nu_t = _fit_unit_t(z)
        self.marginal_nu = self.nu_t if spec.marginal == "t" else 0.0
        x = to_gaussian(z / max(float(np.std(z)), 1e-12), self.nu_t) if self.marginal_nu else z
        self.feat_mean = feats.mean(axis=0)
        std = feats.std(axis=0)
        self.feat_std = np.where(std > _DEAD_STD, std, 0.0)
        self.gp = fit_gp_prior(x, spec.kernel)
        self.chol = np.linalg.cholesky(gp_covariance(self.horizon, spec.kernel, self.gp["lengthscale"],
                                                     self.gp["outputscale"], self.gp["noise"]) + 1e-9 * np.eye(self.horizon))
        self.net = VelocityNet(self.horizon, feats.shape[1], spec.hidden, spec.layers,
                               generator=make_generator(spec.seed)).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        dev = self.device
        self.c_train = torch.as_tensor(standardise(feats, self.feat_mean, self.feat_std), dtype=torch.float32, device=dev)
        self.x_train = torch.as_tensor(x, dtype=torch.float32, device=dev)
        self.chol_t = torch.as_tensor(self.chol.T, dtype=torch.float32, device=dev)
        self.out_shift, self.out_scale = np.zeros(self.horizon), np.ones(self.horizon)
        self.step = 0

    # -- data ------------------------------------------------------------------------

    @staticmethod
    def _targets(w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The point-in-time GARCH variances along the inputs (b, L) and the standardised targets z (b, H)."""
        x = window_returns(w)
        y = np.asarray(w["y_ret"], dtype=float)
        params = {k: np.asarray(w[f"garch_{k}"]) for k in ("omega", "alpha", "beta")}
        v = garch_variance(np.concatenate([x, y], axis=1), params)
        lb = x.shape[1]
        return v[:, :lb], y / np.sqrt(v[:, lb - 1: lb - 1 + y.shape[1]])

    def _inputs(self, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw features (through a `Context`, the featuriser forecasts use) and clipped targets z (b, H)."""
        v, z = self._targets(w)
        feats = conditioning_features(Context.from_windows(w), v, self.spec.lookback, self.n_regime)
        return feats, np.clip(z, -self.spec.z_clip, self.spec.z_clip)

    # -- the core step ------------------------------------------------------------------

    def train(self, n_steps: int) -> float:
        """Run ``n_steps`` Adam steps; returns the mean flow-matching loss over them."""
        self.net.train()
        n = self.x_train.shape[0]
        bs = min(self.spec.batch_size, n)
        total = 0.0
        for _ in range(int(n_steps)):
            idx = torch.as_tensor(np.random.default_rng([self.spec.seed, self.step]).choice(n, size=bs, replace=False),
                                  device=self.device)
            g = make_generator([self.spec.seed, self.step, 1], self.device)
            eps = torch.randn((bs, self.horizon), generator=g, device=self.device)
            t = torch.rand((bs,), generator=g, device=self.device)
            x1 = self.x_train[idx]
            if self.spec.symmetric:
                x1 = x1 * (2.0 * torch.randint(0, 2, (bs, 1), generator=g, device=self.device) - 1.0)
            loss = fm_loss(self.net, eps @ self.chol_t, x1, t, self.c_train[idx])
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
            self.opt.step()
            self.step += 1
            total += float(loss.detach())
        return total / max(1, int(n_steps))

    def _part(self) -> FittedFlowMatching:
        weights = {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}
        return FittedFlowMatching.from_weights(self.spec, self.gp, self.feat_mean.copy(), self.feat_std.copy(),
                                               self.out_shift.copy(), self.out_scale.copy(), weights, self.marginal_nu)

    def _subset(self, n: int, salt: int) -> np.ndarray:
        return np.sort(np.random.default_rng([self.spec.seed, salt]).permutation(n)[: min(n, N_REFERENCE)])

    def _standardisation(self) -> None:
        """Per-step ``out_shift`` / ``out_scale`` from flow samples over (up to N_REFERENCE) training conditions."""
        self.out_shift, self.out_scale = np.zeros(self.horizon), np.ones(self.horizon)
        idx = self._subset(self.x_train.shape[0], 1)
        c = self.c_train[idx].cpu().numpy().astype(float)
        x = self._part().simulate({"c": c}, 32, self.horizon, np.random.default_rng([self.spec.seed, 2]))
        x = x.reshape(-1, self.horizon).astype(float)
        shift = np.zeros(self.horizon) if self.spec.symmetric else x.mean(axis=0)
        self.out_shift, self.out_scale = shift, np.maximum(np.sqrt(np.mean(np.square(x - shift), axis=0)), 1e-3)

    def _val_batch(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The scored validation windows (up to N_REFERENCE, fixed), their input variances and targets z (unclipped)."""
        idx = self._subset(len(self.val_np["origin"]), 3)
        w = {k: v[idx] for k, v in self.val_np.items()}
        v, z = self._targets(w)
        return w, v, z

    def score(self, fitted: FittedFlowMatching) -> dict[str, float]:
        """``val_ql`` and ``val_es`` of any fitted ``fm_gp`` on this trainer's validation windows, as the engine uses it.

        The part's forecast-time path (``condition`` on a `Context` of the windows with the
        point-in-time GARCH variances as the volatility part's filter, then ``draw``): how a
        sweep compares a new version with the registry's ``latest`` (`tune.sweep.compare_with_latest`).
        """
        w, v, z = self._val_batch()
        cond = fitted.condition(Context.from_windows(w), variance=v)
        paths = fitted.draw(cond, int(self.spec.val_paths), self.horizon, np.random.default_rng([self.spec.seed, 4]))
        out = path_scores(paths.astype(float), z)
        return {"val_ql": out["ql"], "val_es": out["es"]}

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (lower is better): ``val_ql`` (what Tune optimises), ``val_es``, and the references."""
        self._standardisation()
        flow = self.score(self._part())
        _, _, z = self._val_batch()
        m, h = int(self.spec.val_paths), self.horizon
        rng = np.random.default_rng([self.spec.seed, 5])
        from aetheris_ray.components.residuals import unit_t

        t_paths = unit_t(np.full(len(z), self.nu_t), m, h, rng).astype(float)
        tt = path_scores(t_paths, z)
        gp = rng.standard_normal((len(z), m, h)) @ self.chol.T  # the prior alone: the flow's identity map
        if self.marginal_nu:
            gp = from_gaussian(gp, self.marginal_nu)
        gp = gp / gp.reshape(-1, h).std(axis=0)
        return {"val_ql": flow["val_ql"], "val_es": flow["val_es"], "val_ql_t": tt["ql"], "val_es_t": tt["es"],
                "val_ql_gp": path_scores(gp, z)["ql"], "nu_t": self.nu_t, "step": float(self.step),
                **{f"gp_{k}": v for k, v in self.gp.items()}}

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])

    def fit_all(self) -> FittedFlowMatching:
        """Train for the spec's ``max_steps`` (from where it is) and return the fitted part."""
        self.train(max(0, int(self.spec.max_steps) - self.step))
        return self.fitted()

    def fitted(self, extra_info: dict[str, Any] | None = None) -> FittedFlowMatching:
        """The fitted part (validation metrics, GP hyperparameters and training range in ``info``)."""
        metrics = self.evaluate()
        info = {
            "metrics": metrics,
            **training_info(self.train_np, self.val_np),
            "steps": self.step,
            "device": str(self.device),
            "n_regime": self.n_regime,
            "base_features": N_BASE_FEATURES,
        }
        info.update(extra_info or {})
        part = self._part()
        return FittedFlowMatching(spec=part.spec, params={}, info=info, shared=part.shared)


def _fit_unit_t(z: np.ndarray) -> float:
    """Degrees of freedom of a unit-variance t by maximum likelihood on ``z`` rescaled to unit variance, in [2.5, 60]."""
    from scipy.optimize import minimize_scalar

    from aetheris_ray.components.residuals import _t_nll

    x = np.asarray(z, dtype=float).ravel()
    x = x / max(float(np.std(x)), 1e-12)
    return float(minimize_scalar(_t_nll, bounds=(2.5, 60.0), args=(x,), method="bounded").x)
