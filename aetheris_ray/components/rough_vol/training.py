"""The training loop of the rough volatility component (imports torch; loaded lazily).

`Trainer` owns the data split, the network and the optimiser, and exposes the core
training step that both ``RoughVolatility.fit`` and the Ray Tune trainable call:

* ``train(n_steps)`` -- Adam steps on the Gaussian NLL of future log realised vol;
* ``evaluate()`` -- ``val_nll`` and ``val_ql`` (the quantile loss of cumulative
  log-returns at every step of the horizon, x100, EVALUATION.md's QL), plus the
  same QL for EWMA(0.94)-Normal on the same windows (``val_ql_ewma``) for reference;
* ``state_dict()`` / ``load_state_dict()`` -- for checkpoints (restore continues the
  same batch sequence: batch ``s`` is drawn from ``default_rng([seed, s])``, its
  dropout masks from ``make_generator([seed, s, 1])``).

Randomness is explicit (no global ``torch.manual_seed``): the initial weights come
from ``make_generator(spec.seed)`` (`aetheris_ray.components.torch_utils`).

Validation windows are the latest origins; training windows end ``horizon`` days
before the first validation origin, so no training target overlaps a validation one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import norm

from aetheris_ray.components.base import Context
from aetheris_ray.components.rough_vol.component import (
    FittedRoughVol,
    RoughVolatility,
    feature_scale,
    network_inputs,
    standardise,
)
from aetheris_ray.components.rough_vol.fbm import fgn_autocovariance
from aetheris_ray.components.rough_vol.module import RoughVolNet, gaussian_nll, rfou_moments
from aetheris_ray.components.torch_utils import make_generator, set_dropout_generator
from aetheris_ray.errors import DataError
from aetheris_ray.windows import split_windows, training_info

__all__ = ["Trainer", "split_windows", "estimate_hurst_windows", "resolve_device", "LEVELS"]

LEVELS = np.array([0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95])
MIN_TRAIN = 64


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)




def estimate_hurst_windows(x_logvol: np.ndarray, max_lag: int = 20) -> float:
    """H from the GJR moment scaling pooled over the windows' input log-vol (pairs within a window)."""
    x = np.asarray(x_logvol, dtype=float)
    lags = tuple(range(1, min(max_lag, x.shape[1] - 1) + 1))
    qs = (0.5, 1.0, 1.5, 2.0, 3.0)
    logm = np.empty((len(qs), len(lags)))
    for j, d in enumerate(lags):
        a = np.abs(x[:, d:] - x[:, :-d]).ravel()
        for i, q in enumerate(qs):
            logm[i, j] = np.log(np.mean(a**q))
    logd = np.log(np.asarray(lags, dtype=float))
    zeta = np.array([np.polyfit(logd, row, 1)[0] for row in logm])
    q = np.asarray(qs)
    return float(np.clip(np.sum(q * zeta) / np.sum(q**2), 0.01, 0.49))


def _pinball_ql(y: np.ndarray, q: np.ndarray) -> float:
    """EVALUATION.md QL x100: mean over rows of (2/7) sum of pinball losses; y (n,), q (n, 7)."""
    diff = y[:, None] - q
    loss = np.maximum(LEVELS * diff, (LEVELS - 1.0) * diff)
    return float(100.0 * np.mean(2.0 * loss.sum(axis=1) / len(LEVELS)))


def _gauss_ql(y_cum: np.ndarray, cum_var: np.ndarray) -> float:
    """QL of zero-mean Normal quantiles of cumulative returns, pooled over windows and steps; arrays (n, h)."""
    z = norm.ppf(LEVELS)
    q = np.sqrt(cum_var).reshape(-1, 1) * z[None, :]
    return _pinball_ql(y_cum.reshape(-1), q)


def ewma_var(x_ret: np.ndarray, mu: np.ndarray, sigma: np.ndarray, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics variance after each window's input returns (seeded with the first 30 returns' variance); (b,)."""
    r = x_ret.astype(float) * sigma[:, None].astype(float) + mu[:, None].astype(float)
    var = r[:, : min(30, r.shape[1])].var(axis=1)
    for t in range(r.shape[1]):
        var = lam * var + (1 - lam) * r[:, t] ** 2
    return np.maximum(var, 1e-12)


class Trainer:
    """The core training step of ``rough_vol`` (used by ``fit`` and by the Tune trainable).

    Parameters
    ----------
    windows : dict of window columns (`aetheris_ray.windows`), any assets, pooled
    spec : RoughVolatility
    """

    def __init__(self, windows: dict[str, np.ndarray], spec: RoughVolatility) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        train, val = split_windows(windows, spec.val_fraction, "rough_vol")
        if len(train["origin"]) < MIN_TRAIN or len(val["origin"]) < 1:
            raise DataError(
                f"rough_vol training: {len(train['origin'])} training and {len(val['origin'])} validation windows; "
                f"need >= {MIN_TRAIN} and >= 1 (more assets or a longer history)"
            )
        lb = min(spec.lookback, windows["x_ret"].shape[1])
        self.lookback = lb
        self.hurst = float(spec.hurst) if spec.hurst is not None else estimate_hurst_windows(train["x_logvol"])
        self.horizon = train["y_logvol"].shape[1]
        self.train_np, self.val_np = train, val
        feats, anchors = self._inputs(train)
        self.feat_mean, self.feat_std = feature_scale(feats)
        # initial weights from a generator seeded by the spec (the values the old global seeding gave)
        self.net = RoughVolNet(feats.shape[1], spec.hidden, spec.layers, spec.dropout,
                               generator=make_generator(spec.seed)).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        self.fgn_cov = torch.as_tensor(self._fgn_cov(), dtype=torch.float32, device=self.device)
        self.train_t = self._tensors(train)
        self.val_t = self._tensors(val)
        self.step = 0
        self.vol_bias = 0.0

    # -- data ------------------------------------------------------------------------

    def _inputs(self, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The network's features from the windows, through a `Context` (the featuriser forecasts use)."""
        n_regime = 0 if w.get("regime") is None else int(np.shape(w["regime"])[1])
        feats, anchors, _ = network_inputs(Context.from_windows(w), self.lookback, n_regime)
        return feats, anchors

    def _fgn_cov(self) -> np.ndarray:
        g = fgn_autocovariance(self.horizon, self.hurst)
        k = np.arange(self.horizon)
        return g[np.abs(k[:, None] - k[None, :])]

    def _tensors(self, w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        feats, anchors = self._inputs(w)
        f = standardise(feats, self.feat_mean, self.feat_std)
        dev = self.device
        return {
            "feats": torch.as_tensor(f, dtype=torch.float32, device=dev),
            "anchors": torch.as_tensor(anchors, dtype=torch.float32, device=dev),
            "y": torch.as_tensor(w["y_logvol"], dtype=torch.float32, device=dev),
        }

    # -- the core step ------------------------------------------------------------------

    def _loss(self, t: dict[str, torch.Tensor], idx: Any = slice(None)) -> torch.Tensor:
        p = self.net(t["feats"][idx], t["anchors"][idx])
        mean, cov = rfou_moments(p, self.fgn_cov)
        return gaussian_nll(t["y"][idx], mean, cov, torch.exp(self.net.log_obs_sd))

    def train(self, n_steps: int) -> float:
        """Run ``n_steps`` Adam steps; returns the mean training NLL over them."""
        self.net.train()
        n = self.train_t["y"].shape[0]
        bs = min(self.spec.batch_size, n)
        total = 0.0
        for _ in range(int(n_steps)):
            rng = np.random.default_rng([self.spec.seed, self.step])
            idx = torch.as_tensor(rng.choice(n, size=bs, replace=False), device=self.device)
            if self.spec.dropout > 0:  # dropout masks of step s: their own stream, so a restore replays them
                set_dropout_generator(self.net, make_generator([self.spec.seed, self.step, 1], self.device))
            loss = self._loss(self.train_t, idx)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
            self.opt.step()
            self.step += 1
            total += float(loss.detach())
        return total / max(1, int(n_steps))

    @torch.no_grad()
    def _moments(self, t: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        p = self.net(t["feats"], t["anchors"])
        mean, cov = rfou_moments(p, self.fgn_cov)
        return mean.cpu().numpy().astype(float), torch.diagonal(cov, dim1=1, dim2=2).cpu().numpy().astype(float)

    def _fit_vol_bias(self) -> float:
        """One constant c with mean(r^2) = mean(E[exp(2(X + c))]) over the training windows."""
        mean, var = self._moments(self.train_t)
        ev2 = np.exp(2 * mean + 2 * var)
        r2 = self.train_np["y_ret"].astype(float) ** 2
        return float(0.5 * np.log(np.mean(r2) / np.mean(ev2)))

    def evaluate(self) -> dict[str, float]:
        """Validation metrics: ``val_nll``, ``val_ql`` (x100, lower is better), ``val_ql_ewma``, ``hurst``."""
        self.vol_bias = self._fit_vol_bias()
        with torch.no_grad():
            self.net.eval()
            val_nll = float(self._loss(self.val_t))
        mean, var = self._moments(self.val_t)
        step_var = np.exp(2 * (mean + self.vol_bias) + 2 * var)
        y_cum = np.cumsum(self.val_np["y_ret"].astype(float), axis=1)
        val_ql = _gauss_ql(y_cum, np.cumsum(step_var, axis=1))
        ew = ewma_var(self.val_np["x_ret"], self.val_np["mu"], self.val_np["sigma"])
        ew_cum = ew[:, None] * np.arange(1, self.horizon + 1)[None, :]
        return {
            "val_ql": val_ql,
            "val_nll": val_nll,
            "val_ql_ewma": _gauss_ql(y_cum, ew_cum),
            "hurst": self.hurst,
            "vol_bias": self.vol_bias,
            "step": float(self.step),
        }

    def score(self, fitted: FittedRoughVol) -> dict[str, float]:
        """``val_ql`` of any fitted ``rough_vol`` on this trainer's validation windows, as the engine uses it.

        The part's forecast-time path (``condition`` on a `Context` of the windows, then
        ``expected_variance``): how a sweep compares a new version with the registry's
        ``latest`` on the same windows (`tune.sweep.compare_with_latest`).
        """
        cond = fitted.condition(Context.from_windows(self.val_np))
        step_var = fitted.expected_variance(cond, self.horizon)
        y_cum = np.cumsum(self.val_np["y_ret"].astype(float), axis=1)
        return {"val_ql": _gauss_ql(y_cum, np.cumsum(step_var, axis=1))}

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step, "hurst": self.hurst}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.hurst = float(state["hurst"])

    def fit_all(self) -> FittedRoughVol:
        """Train for the spec's ``max_steps`` (from where it is) and return the fitted part."""
        self.train(max(0, int(self.spec.max_steps) - self.step))
        return self.fitted()

    def fitted(self, extra_info: dict[str, Any] | None = None) -> FittedRoughVol:
        """The fitted component (validation metrics and training range in ``info``)."""
        metrics = self.evaluate()
        info = {
            "metrics": metrics,
            **training_info(self.train_np, self.val_np),
            "steps": self.step,
            "device": str(self.device),
        }
        info.update(extra_info or {})
        weights = {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}
        return FittedRoughVol.from_weights(self.spec, self.hurst, self.vol_bias, self.feat_mean.copy(),
                                           self.feat_std.copy(), weights, info)
