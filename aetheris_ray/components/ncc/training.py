"""The training loop of the ``ncc`` network (imports torch; loaded lazily).

Rows come from `component.training_windows` (a baseline walk-forward's buffers, point in
time): the network's features, the base conformal map's raw levels ``u0`` at the eight
anchor levels (0.005, 0.05, 0.1, 0.25, 0.75, 0.9, 0.95, 0.995) and the realised raw PIT.
The network's adjustment ``d`` moves them to ``logit u = logit u0 * exp(d)``.

* ``train(n_steps)`` -- Adam steps on the pinball loss of ``logit u`` against the raw
  PIT's logit at the eight levels (quantile equivariance: its minimiser is the
  conditional quantile of the raw PIT, i.e. calibrated levels), rows weighted (below);
* ``evaluate()`` -- on the validation rows (the latest ``val_fraction`` of origin days;
  training rows end 14 days before, so no outcome overlaps): ``val_ql`` the pinball loss
  of the calibrated levels on the PIT scale (x100, the mean over the eight levels of twice
  the loss, rows weighted as in training: lower is better), ``val_ql_base`` the same for
  the base map alone (d = 0), ``val_cov80`` / ``val_cov80_base`` the share of raw PITs
  inside the 80 % interval.

Row weights: the raw forecast's 10-90 % width when the rows carry ``scale``
(`component.walk_forward_windows` adds it): the price-scale quantile loss of a level is
about the PIT-scale one times the forecast's spread, so wide (volatile) origins count
more, as they do in the backtest's QL; times a regime x bucket balance when
``spec.balance_regimes``.

The initial weights come from ``make_generator(spec.seed)``; batch ``s`` is drawn from
``default_rng([seed, s])``, so a restored checkpoint continues the same sequence.
The artefact (`Trainer.fitted`) is the best validation checkpoint, the zero adjustment
(step 0) included: the network never makes the conformal map worse on the later pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from aetheris_ray.components.ncc.component import (
    ANCHORS,
    N_FEATURES,
    FittedNcc,
    NeuralConformalCalibration,
)
from aetheris_ray.components.torch_utils import init_module, make_generator
from aetheris_ray.errors import DataError, InvalidInput

__all__ = ["Trainer", "LEVELS", "split_rows"]

#: The eight levels of ``u0``: the lower anchors mirrored, then the anchors.
LEVELS = np.concatenate([1.0 - ANCHORS[::-1], ANCHORS])
#: Longest horizon of a training pair (days): the gap between training and validation origins.
GAP_DAYS = 14
MIN_TRAIN = 64
_KEYS = ("feats", "u0", "raw", "day")


def split_rows(w: dict[str, np.ndarray], val_fraction: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Time split: the latest ``val_fraction`` of origin days validate; training days end `GAP_DAYS` earlier."""
    days = np.unique(w["day"])
    if days.size < 2:
        raise DataError(f"ncc training: {days.size} distinct origin day(s); need a longer walk-forward")
    cut = days[min(days.size - 1, int(np.floor(days.size * (1.0 - val_fraction))))]
    val = w["day"] >= cut
    train = w["day"] < cut - GAP_DAYS
    return ({k: v[train] for k, v in w.items()}, {k: v[val] for k, v in w.items()})


def _network(hidden: int, seed: int) -> nn.Sequential:
    """``Linear -> tanh -> Linear``: the layers `component.network_forward` evaluates; zero output layer."""
    net = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, len(ANCHORS)))
    init_module(net, make_generator(seed))
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.zero_()
    return net


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1.0 - 1e-9)
    return np.log(p / (1.0 - p))


class Trainer:
    """The core training step of ``ncc`` (used by ``spec.fit`` and by Tune's generic trainable).

    Parameters
    ----------
    windows : dict of arrays from `component.training_windows`
    spec : NeuralConformalCalibration
    """

    def __init__(self, windows: dict[str, np.ndarray], spec: NeuralConformalCalibration) -> None:
        missing = [k for k in _KEYS if k not in windows]
        if missing:
            raise InvalidInput(f"ncc training: windows lack {missing}; ncc trains on calibration pairs, built with "
                               "NeuralConformalCalibration.training_windows(walk-forward calibrators), "
                               "not price windows")
        self.spec = spec
        self.device = torch.device(spec.device if spec.device != "auto" else "cpu")
        train, val = split_rows(windows, spec.val_fraction)
        if train["raw"].size < MIN_TRAIN or val["raw"].size < 1:
            raise DataError(f"ncc training: {train['raw'].size} training and {val['raw'].size} validation pairs; "
                            f"need >= {MIN_TRAIN} and >= 1 (more assets or a longer walk-forward)")
        self.train_np, self.val_np = train, val
        f = train["feats"]
        self.feat_mean = f.mean(axis=0)
        std = f.std(axis=0)
        self.feat_std = np.where(std > 1e-8, std, 0.0)
        self.net = _network(spec.hidden, spec.seed).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        self.train_t = self._tensors(train)
        self.val_t = self._tensors(val)
        self.levels = torch.as_tensor(LEVELS, dtype=torch.float32, device=self.device)
        self.step = 0
        self.best: dict[str, Any] = {}
        self.evaluate()  # step 0, the zero adjustment: the first best

    def _tensors(self, w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        live = self.feat_std > 0
        z = np.where(live, (w["feats"] - self.feat_mean) / np.where(live, self.feat_std, 1.0), 0.0)
        dev = self.device
        return {"z": torch.as_tensor(z, dtype=torch.float32, device=dev),
                "x0": torch.as_tensor(_logit(w["u0"]), dtype=torch.float32, device=dev),
                "y": torch.as_tensor(_logit(w["raw"]), dtype=torch.float32, device=dev),
                "wt": torch.as_tensor(self._weights(w), dtype=torch.float32, device=dev)}

    def _weights(self, w: dict[str, np.ndarray]) -> np.ndarray:
        """Row weights (mean 1): each regime x bucket cell counts equally when ``balance_regimes``, else 1."""
        n = w["raw"].size
        out = np.ones(n)
        if n == 0:
            return out
        if self.spec.balance_regimes and "regime" in w:
            cell = np.asarray(w["regime"]) * 100 + np.asarray(w["bucket"])
            _, inv, counts = np.unique(cell, return_inverse=True, return_counts=True)
            out = out / counts[inv]
        if "scale" in w:
            sc = np.asarray(w["scale"], dtype=float)
            ok = np.isfinite(sc) & (sc > 0)
            out = out * np.where(ok, sc, np.median(sc[ok]) if ok.any() else 1.0)
        return out * n / out.sum()

    def _logits(self, t: dict[str, torch.Tensor], idx: Any = slice(None)) -> torch.Tensor:
        """Adjusted level logits (n, 8)."""
        d = self.spec.max_adjust * torch.tanh(self.net(t["z"][idx]))  # (n, 4)
        d8 = torch.cat([torch.flip(d, dims=[1]), d], dim=1)
        return t["x0"][idx] * torch.exp(d8)

    def _loss(self, t: dict[str, torch.Tensor], idx: Any = slice(None)) -> torch.Tensor:
        diff = t["y"][idx][:, None] - self._logits(t, idx)
        loss = torch.maximum(self.levels * diff, (self.levels - 1.0) * diff).mean(dim=1)
        wt = t["wt"][idx]
        return (wt * loss).sum() / wt.sum()

    def train(self, n_steps: int) -> float:
        """Run ``n_steps`` Adam steps; returns the mean training loss over them."""
        self.net.train()
        n = self.train_t["y"].shape[0]
        bs = min(self.spec.batch_size, n)
        total = 0.0
        for _ in range(int(n_steps)):
            rng = np.random.default_rng([self.spec.seed, self.step])
            idx = torch.as_tensor(rng.choice(n, size=bs, replace=False), device=self.device)
            loss = self._loss(self.train_t, idx)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.step += 1
            total += float(loss.detach())
        return total / max(1, int(n_steps))

    def _scores(self, raw: np.ndarray, u: np.ndarray) -> tuple[float, float]:
        """(QL x100 on the PIT scale, 80 % coverage) of levels ``u`` (n, 8) for the validation PITs ``raw`` (n,).

        The QL rows carry the training loss's weights (the raw 10-90 % width when the rows
        have one: a proxy of the price-scale loss).
        """
        diff = raw[:, None] - u
        per_row = np.mean(2.0 * np.maximum(LEVELS * diff, (LEVELS - 1.0) * diff), axis=1)
        wt = self.val_t["wt"].cpu().numpy().astype(float)
        ql = 100.0 * float(np.sum(wt * per_row) / np.sum(wt))
        cov = float(np.mean((raw >= u[:, 2]) & (raw <= u[:, 5])))
        return ql, cov

    def evaluate(self) -> dict[str, float]:
        """Validation metrics: ``val_ql`` (lower is better), ``val_ql_base``, ``val_cov80``, ``val_cov80_base``."""
        self.net.eval()
        with torch.no_grad():
            u = torch.sigmoid(self._logits(self.val_t)).cpu().numpy().astype(float)
        raw = self.val_np["raw"].astype(float)
        ql, cov = self._scores(raw, u)
        ql0, cov0 = self._scores(raw, self.val_np["u0"].astype(float))
        out = {"val_ql": ql, "val_ql_base": ql0, "val_cov80": cov, "val_cov80_base": cov0, "step": float(self.step)}
        if not self.best or ql < self.best["metrics"]["val_ql"]:
            self.best = {"metrics": dict(out),
                         "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}
        return out

    def score(self, fitted: FittedNcc) -> dict[str, float]:
        """``val_ql`` of any ``ncc`` artefact on this trainer's validation rows, through its numpy forward pass.

        How a sweep compares a new version with the registry's ``latest``
        (`tune.sweep.compare_with_latest`).
        """
        d = fitted.adjustments(self.val_np["feats"])
        d8 = np.concatenate([d[:, ::-1], d], axis=1)
        u = 1.0 / (1.0 + np.exp(-_logit(self.val_np["u0"]) * np.exp(d8)))
        return {"val_ql": self._scores(self.val_np["raw"].astype(float), u)[0]}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "best_net": self.best["net"], "best_metrics": self.best["metrics"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.best = {"net": state["best_net"], "metrics": dict(state["best_metrics"])}

    def fit_all(self) -> FittedNcc:
        """Train for the spec's ``max_steps`` (from where it is) and return the artefact."""
        self.train(max(0, int(self.spec.max_steps) - self.step))
        return self.fitted()

    def fitted(self, extra_info: dict[str, Any] | None = None) -> FittedNcc:
        """The artefact of the best validation ``val_ql`` seen so far (step 0, no adjustment, included).

        The network only adds to the conformal map: when no step beats the map alone on
        the later pairs, the artefact is the zero adjustment (``info["metrics"]["step"]`` 0).
        """
        self.evaluate()
        days = self.train_np["day"]
        info = {"metrics": dict(self.best["metrics"]), "train_days": [int(days.min()), int(days.max())],
                "n_train": int(days.size), "n_val": int(self.val_np["day"].size), "steps_run": self.step,
                **(extra_info or {})}
        shared = {"feat_mean": self.feat_mean.copy(), "feat_std": self.feat_std.copy()}
        shared.update({f"w.{k}": v.detach().cpu().numpy().astype(float).copy() for k, v in self.best["net"].items()})
        return FittedNcc(spec=self.spec, params={}, info=info, shared=shared)
