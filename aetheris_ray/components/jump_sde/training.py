"""Likelihood training of ``jump_sde`` on training windows (`aetheris_ray.windows`): the `contract.Trainer`.

Each window becomes a `Context` (``Context.from_windows``, the featuriser forecasts
use); the filter runs over its last ``lookback`` input returns from ``x = a, j = 0``
and then through its ``horizon`` target returns, whose one-step-ahead negative log
densities are the loss (the anchor and conditioning are known at the origin).  The
input days' 2h-bar realised variances enter the filter's news (`module.update`).

Validation: the latest ``val_fraction`` of origin dates; training origins end
``horizon`` days before the first validation origin, so no training target overlaps
a validation day.  ``val_ql`` is the validation NLL per target day (lower is better);
``val_nll_ewma`` is the same score of a Gaussian with the RiskMetrics variance
(lambda 0.94, updated through the target days) as a reference.  ``score(fitted)`` gives
any fitted version's ``val_ql`` on the same windows through its forecast-time
featuriser and filter (`target_nll`; ``evaluate`` scores the current network that way),
which is how a sweep compares a new version with the registry's ``latest``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aetheris_ray.components.base import Context
from aetheris_ray.components.jump_sde.component import FittedJumpSde, JumpSdePaths, context_inputs
from aetheris_ray.components.jump_sde.module import JumpSdeNet, run_filter
from aetheris_ray.components.rough_vol.component import feature_scale, standardise
from aetheris_ray.components.torch_utils import make_generator
from aetheris_ray.errors import DataError
from aetheris_ray.windows import split_windows, training_info

__all__ = ["Trainer", "split_windows", "ewma_gaussian_nll", "target_nll"]

#: Fewest training windows a fit accepts.
MIN_TRAIN = 32




def _sequences(inp: dict[str, Any], y: np.ndarray) -> dict[str, Any]:
    """The filter's inputs followed by the targets: returns, valid, rv (b, L + h) as tensors."""
    b, h = y.shape
    rv = None
    if inp["rv"] is not None:
        rv = torch.as_tensor(np.concatenate([inp["rv"], np.full((b, h), np.nan)], axis=1))
    return {
        "returns": torch.as_tensor(np.concatenate([inp["returns"], y], axis=1)),
        "valid": torch.as_tensor(np.concatenate([inp["valid"], np.ones((b, h), dtype=bool)], axis=1)),
        "rv": rv,
    }


def target_nll(fitted: FittedJumpSde, windows: dict[str, np.ndarray]) -> float:
    """NLL per target day of any fitted ``jump_sde`` on ``windows``, through its forecast-time featuriser and filter."""
    inp = context_inputs(Context.from_windows(windows), fitted.spec.lookback, fitted.n_regime)
    y = np.asarray(windows["y_ret"], dtype=float)
    seq = _sequences(inp, y)
    c = torch.as_tensor(standardise(inp["cond"], fitted.feat_mean, fitted.feat_std))
    with torch.no_grad():
        _, _, nll = run_filter(fitted._net(), c, torch.as_tensor(inp["anchor"]), seq["returns"], seq["valid"],
                               seq["rv"], substeps=int(fitted.spec.substeps), decay=float(fitted.spec.jump_decay),
                               max_jumps=int(fitted.spec.max_jumps), score_from=inp["returns"].shape[1])
    return float(nll.sum()) / y.size


def ewma_gaussian_nll(returns: np.ndarray, valid: np.ndarray, y: np.ndarray, lam: float = 0.94) -> float:
    """NLL per target day of ``N(0, v_t)``, ``v`` the RiskMetrics variance seeded with the inputs' mean square.

    returns, valid : (b, L) the inputs;  y : (b, h) the targets (the variance is updated through them).
    """
    v = np.square(returns).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    v = np.maximum(v, 1e-10)
    for t in range(returns.shape[1]):
        v = np.where(valid[:, t], lam * v + (1 - lam) * returns[:, t] ** 2, v)
    total = 0.0
    for t in range(y.shape[1]):
        total += float(np.sum(0.5 * (np.log(2 * np.pi * v) + y[:, t] ** 2 / v)))
        v = np.maximum(lam * v + (1 - lam) * y[:, t] ** 2, 1e-10)
    return total / y.size


class Trainer:
    """The core training step of ``jump_sde`` (used by ``fit`` and by the Tune trainable).

    Parameters
    ----------
    windows : dict of window columns (`aetheris_ray.windows`), any assets, pooled
    spec : JumpSdePaths
    """

    device = "cpu"  # a sequential filter of tiny networks: the CPU is the right place

    def __init__(self, windows: dict[str, np.ndarray], spec: JumpSdePaths) -> None:
        self.spec = spec
        train, val = split_windows(windows, spec.val_fraction, "jump_sde")
        if len(train["origin"]) < MIN_TRAIN or len(val["origin"]) < 1:
            raise DataError(
                f"jump_sde training: {len(train['origin'])} training and {len(val['origin'])} validation windows; "
                f"need >= {MIN_TRAIN} and >= 1 (more assets or a longer history)"
            )
        self.n_regime = 0 if windows.get("regime") is None else int(np.shape(windows["regime"])[1])
        self.train_np, self.val_np = train, val
        inp = self._inputs(train)
        self.feat_mean, self.feat_std = feature_scale(inp["cond"])
        self.net = JumpSdeNet(self.feat_mean.size, spec.hidden, spec.layers,
                              generator=make_generator(spec.seed)).double()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        self.train_t = self._tensors(train, inp)
        self.val_inputs = self._inputs(val)
        self.val_ewma = ewma_gaussian_nll(self.val_inputs["returns"], self.val_inputs["valid"],
                                          np.asarray(val["y_ret"], dtype=float))
        self.step = 0

    # -- data ------------------------------------------------------------------------

    def _inputs(self, w: dict[str, np.ndarray]) -> dict[str, Any]:
        return context_inputs(Context.from_windows(w), self.spec.lookback, self.n_regime)

    def _tensors(self, w: dict[str, np.ndarray], inp: dict[str, Any]) -> dict[str, Any]:
        """Inputs followed by the targets (`_sequences`); anchor (b,); standardised cond (b, n_c)."""
        y = np.asarray(w["y_ret"], dtype=float)
        return dict(_sequences(inp, y), anchor=torch.as_tensor(inp["anchor"]),
                    cond=torch.as_tensor(standardise(inp["cond"], self.feat_mean, self.feat_std)),
                    score_from=inp["returns"].shape[1], n_days=y.shape[1])

    # -- the core step ------------------------------------------------------------------

    def _nll(self, t: dict[str, Any], idx: Any = slice(None)) -> torch.Tensor:
        """Summed NLL per window (b,) of the rows ``idx``."""
        _, _, nll = run_filter(
            self.net, t["cond"][idx], t["anchor"][idx], t["returns"][idx], t["valid"][idx],
            None if t["rv"] is None else t["rv"][idx], substeps=int(self.spec.substeps),
            decay=float(self.spec.jump_decay), max_jumps=int(self.spec.max_jumps), score_from=t["score_from"])
        return nll

    def train(self, n_steps: int) -> float:
        """Run ``n_steps`` Adam steps on minibatches; returns the mean training NLL per target day over them."""
        self.net.train()
        n = self.train_t["anchor"].shape[0]
        bs = min(int(self.spec.batch_size), n)
        total = 0.0
        for _ in range(int(n_steps)):
            rng = np.random.default_rng([self.spec.seed, self.step])
            idx = torch.as_tensor(rng.choice(n, size=bs, replace=False))
            loss = self._nll(self.train_t, idx).mean() / self.train_t["n_days"]
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
            self.opt.step()
            self.step += 1
            total += float(loss.detach())
        return total / max(1, int(n_steps))

    def score(self, fitted: FittedJumpSde) -> dict[str, float]:
        """``val_ql`` (NLL per target day) of any fitted ``jump_sde`` on this trainer's validation windows,
        through the part's forecast-time path: how a sweep compares a new version with the registry's ``latest``."""
        return {"val_ql": target_nll(fitted, self.val_np)}

    def evaluate(self) -> dict[str, float]:
        """Validation metrics: ``val_ql`` = ``val_nll`` (NLL per target day), ``val_nll_ewma`` (reference)."""
        self.net.eval()
        val_nll = self.score(self._fitted({}))["val_ql"]
        return {"val_ql": val_nll, "val_nll": val_nll, "val_nll_ewma": self.val_ewma, "step": float(self.step)}

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])

    def fit_all(self) -> FittedJumpSde:
        """Train for the spec's ``max_steps`` (from where it is) and return the fitted part."""
        self.train(max(0, int(self.spec.max_steps) - self.step))
        return self.fitted()

    def fitted(self, extra_info: dict[str, Any] | None = None) -> FittedJumpSde:
        """The fitted component (validation metrics and training range in ``info``)."""
        info = {
            "metrics": self.evaluate(),
            **training_info(self.train_np, self.val_np),
            "steps": self.step,
        }
        info.update(extra_info or {})
        return self._fitted(info)

    def _fitted(self, info: dict[str, Any]) -> FittedJumpSde:
        weights = {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()}
        return FittedJumpSde.from_weights(self.spec, self.feat_mean.copy(), self.feat_std.copy(), weights, info)
