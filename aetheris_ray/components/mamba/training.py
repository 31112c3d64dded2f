"""The training loop of the ``mamba`` trend (imports torch; loaded lazily).

`Trainer` owns the time split, the network and the optimiser (the `contract.Trainer`
that ``MambaTrend.fit`` and the Tune trainable drive):

* ``train(n_steps)`` -- Adam steps on the mean squared error of the standardised
  cumulative return ``Y_k / (s sqrt(k))`` (``Y_k`` the sum of the first ``k`` target
  returns, ``s`` the origin's daily vol, `component.sequence_inputs`) against the
  network's ``D_k / (s sqrt(k))``, over ``k = 1..H``; the targets are clipped at
  +-``target_clip`` (a crash window must not steer the whole fit).  This is the
  Gaussian NLL of the cumulative returns with the known scale ``s sqrt(k)`` up to
  constants: a drift is judged against the noise it hides in;
* ``evaluate()`` -- on the validation windows, through the fitted part's forecast-time
  route (``condition`` on ``Context.from_windows``, shrinkage included): ``val_ql`` (the
  QL x100 of EVALUATION.md for the cumulative log-return at every step, with Normal
  quantiles centred on the drift and scaled by ``s sqrt(k)``), the same for zero drift
  (``val_ql_zero``), and the unclipped standardised MSE for both (``val_mse``,
  ``val_mse_zero``) and ``val_skill = 1 - val_mse / val_mse_zero`` (> 0: better than no drift);
* ``state_dict()`` / ``load_state_dict()`` -- checkpoints (batch ``s`` is drawn from
  ``default_rng([seed, s])``, so a restore continues the same batch sequence).

Validation windows are the latest origin dates; training windows end ``horizon``
days before the first validation origin, so no training target overlaps a validation one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import norm

from aetheris_ray.components.base import Context
from aetheris_ray.components.mamba.component import (
    FittedMamba,
    MambaTrend,
    feature_scale,
    sequence_inputs,
    standardise,
)
from aetheris_ray.components.mamba.module import MambaDriftNet
from aetheris_ray.components.torch_utils import make_generator
from aetheris_ray.errors import DataError
from aetheris_ray.windows import split_windows, training_info
from aetheris_ray.evaluation.scores import pinball_quantile

__all__ = ["Trainer", "split_windows", "LEVELS", "drift_scores"]

LEVELS = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)
MIN_TRAIN = 64




def drift_scores(y_ret: np.ndarray, drift: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """Scores of a drift path on realised returns, pooled over windows and steps.

    Parameters
    ----------
    y_ret : (n, h) realised daily log-returns;  drift : (n, h) daily drift;  scale : (n,) daily vol ``s``

    Returns
    -------
    dict: ``ql`` (QL x100 of the cumulative return, Normal quantiles centred on the cumulative
    drift with std ``s sqrt(k)``) and ``mse`` (mean of ``((Y_k - D_k) / (s sqrt(k)))^2``).
    """
    h = y_ret.shape[1]
    sd = scale[:, None] * np.sqrt(np.arange(1, h + 1))[None, :]
    y_cum, d_cum = np.cumsum(y_ret, axis=1), np.cumsum(drift, axis=1)
    q = d_cum[..., None] + sd[..., None] * norm.ppf(LEVELS)
    return {"ql": float(100.0 * pinball_quantile(y_cum, q, LEVELS).mean()),
            "mse": float(np.mean(((y_cum - d_cum) / sd) ** 2))}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """The core training step of ``mamba`` (used by ``fit`` and by the Tune trainable).

    Parameters
    ----------
    windows : dict of window columns (`aetheris_ray.windows`), any assets, pooled; their
        lookback must be at least ``spec.lookback``
    spec : MambaTrend
    """

    def __init__(self, windows: dict[str, np.ndarray], spec: MambaTrend) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        train, val = split_windows(windows, spec.val_fraction, "mamba")
        if len(train["origin"]) < MIN_TRAIN or len(val["origin"]) < 1:
            raise DataError(
                f"mamba training: {len(train['origin'])} training and {len(val['origin'])} validation windows; "
                f"need >= {MIN_TRAIN} and >= 1 (more assets or a longer history)"
            )
        self.train_np, self.val_np = train, val
        self.horizon = int(train["y_ret"].shape[1])
        self.n_regime = 0 if windows.get("regime") is None else int(np.shape(windows["regime"])[1])
        seq, static, scale = self._inputs(train)
        self.seq_mean, self.seq_std = feature_scale(seq)
        self.static_mean, self.static_std = feature_scale(static)
        self.net = MambaDriftNet(seq.shape[2], static.shape[1], self.horizon, spec.d_model, spec.d_state, spec.expand,
                                 spec.layers, spec.max_sigma, generator=make_generator(spec.seed),
                                 backend=spec.backend).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        self.train_t = self._tensors(train, seq, static, scale)
        self.step = 0

    # -- data ------------------------------------------------------------------------

    def _inputs(self, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw inputs of windows, through a `Context` (the featuriser forecasts use); every window has full history."""
        seq, static, scale, _ = sequence_inputs(Context.from_windows(w), self.spec.lookback, self.n_regime)
        return seq, static, scale

    def _tensors(self, w: dict[str, np.ndarray], seq: np.ndarray, static: np.ndarray,
                 scale: np.ndarray) -> dict[str, torch.Tensor]:
        h = self.horizon
        sd = scale[:, None] * np.sqrt(np.arange(1, h + 1))[None, :]
        target = np.clip(np.cumsum(w["y_ret"].astype(float), axis=1) / sd, -self.spec.target_clip,
                         self.spec.target_clip)
        dev = self.device
        return {
            "seq": torch.as_tensor(standardise(seq, self.seq_mean, self.seq_std), dtype=torch.float32, device=dev),
            "static": torch.as_tensor(standardise(static, self.static_mean, self.static_std), dtype=torch.float32,
                                      device=dev),
            "target": torch.as_tensor(target, dtype=torch.float32, device=dev),
        }

    # -- the core step ------------------------------------------------------------------

    def _loss(self, t: dict[str, torch.Tensor], idx: Any) -> torch.Tensor:
        a = self.net(t["seq"][idx], t["static"][idx])  # daily drift / s, (b, H)
        k = torch.arange(1, self.horizon + 1, dtype=a.dtype, device=a.device)
        pred = torch.cumsum(a, dim=1) / torch.sqrt(k)
        return torch.mean((t["target"][idx] - pred) ** 2)

    def train(self, n_steps: int) -> float:
        """Run ``n_steps`` Adam steps; returns the mean training loss over them."""
        self.net.train()
        n = self.train_t["target"].shape[0]
        bs = min(self.spec.batch_size, n)
        total = 0.0
        for _ in range(int(n_steps)):
            rng = np.random.default_rng([self.spec.seed, self.step])
            idx = torch.as_tensor(rng.choice(n, size=bs, replace=False), device=self.device)
            loss = self._loss(self.train_t, idx)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
            self.opt.step()
            self.step += 1
            total += float(loss.detach())
        return total / max(1, int(n_steps))

    def score(self, fitted: FittedMamba) -> dict[str, float]:
        """Validation scores of any fitted ``mamba`` on this trainer's validation windows, as the engine uses it.

        The forecast-time route (``condition`` on a `Context` of the windows): how `evaluate`
        scores the network being trained and how a sweep compares a new version with the
        registry's ``latest`` (`tune.sweep.compare_with_latest`).
        """
        ctx = Context.from_windows(self.val_np)
        y = self.val_np["y_ret"].astype(float)
        h = y.shape[1]
        drift = fitted.condition(ctx)["drift"][:, :h]
        _, _, scale, _ = sequence_inputs(ctx, fitted.spec.lookback, fitted.n_regime)
        model, zero = drift_scores(y, drift, scale), drift_scores(y, np.zeros_like(y), scale)
        return {"val_ql": model["ql"], "val_ql_zero": zero["ql"], "val_mse": model["mse"], "val_mse_zero": zero["mse"],
                "val_skill": 1.0 - model["mse"] / zero["mse"]}

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (`score` of the current network) and the step."""
        return dict(self.score(self._fitted({})), step=float(self.step))

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])

    def fit_all(self) -> FittedMamba:
        """Train for the spec's ``max_steps`` (from where it is) and return the fitted part."""
        self.train(max(0, int(self.spec.max_steps) - self.step))
        return self.fitted()

    def _fitted(self, info: dict[str, Any]) -> FittedMamba:
        weights = {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}
        return FittedMamba.from_weights(self.spec, self.seq_mean.copy(), self.seq_std.copy(), self.static_mean.copy(),
                                        self.static_std.copy(), weights, info)

    def fitted(self, extra_info: dict[str, Any] | None = None) -> FittedMamba:
        """The fitted component (validation metrics and training range in ``info``)."""
        info = {
            "metrics": self.evaluate(),
            **training_info(self.train_np, self.val_np),
            "steps": self.step,
            "device": str(self.device),
            "horizon": self.horizon,
        }
        info.update(extra_info or {})
        return self._fitted(info)
