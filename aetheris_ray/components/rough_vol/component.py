"""The neural rough volatility part (kind ``volatility``, variant ``rough_vol``): spec and fitted class.

One spec, one fitted class (STYLE.md 5): ``RoughVolatility(...)`` is a frozen config;
``spec.fit(windows)`` trains and returns a `FittedRoughVol`, which is also what the
engine uses at every origin.  The engine never retrains it per forecast: the part
declares the ``artefact`` fit input, the engine resolves the registered version once
(`aetheris_ray.model.resolve_config`) and the composer hands the loaded artefact to
``fit(returns, artefact=...)``.

What was learned (the network's ``state_dict`` as arrays, ``hurst``, ``vol_bias``,
the feature scaling) is held once in ``shared``; nothing is copied per origin.  The
per-origin conditioning (``x0, m, nu, kappa``) comes from ``condition(ctx)``.

The model (see `module`): log daily vol ``X`` follows a rough fractional OU with
Hurst ``H`` estimated from the training data (Gatheral-Jaisson-Rosenbaum scaling);
a small network maps HAR-style summaries of recent log realised vol and returns, plus
the regime vector when the training windows carry one (``WindowSpec(regime=True)``),
to the start level ``x0``, long-run level ``m``, vol-of-vol ``nu`` and mean reversion
``kappa``.  Paths are drawn with exact fBm increments (cached Cholesky, `fbm`), and
``exp(X + vol_bias)`` is the daily log-return standard deviation.

One featuriser: training windows become a `Context` (``Context.from_windows``) and
the network's inputs are computed from a `Context` only (`network_inputs`), so the
network sees the same inputs in training and in use.

torch is imported lazily (inside methods): importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray.components.base import VAR_FLOOR, Context, SpecBase
from aetheris_ray.components.offload import network
from aetheris_ray.components.rough_vol.fbm import fbm_factor, fgn_autocovariance
from aetheris_ray.components.volatility import FittedVolatility
from aetheris_ray.errors import InvalidInput

__all__ = [
    "RoughVolatility",
    "FittedRoughVol",
    "conditioning_inputs",
    "network_inputs",
    "fit_regime",
    "feature_scale",
    "standardise",
    "rfou_mean_var",
]

NAME = "rough_vol"
_LOG_ABS_NORMAL = 0.6351814227307391  # -E[log |Z|], Z ~ N(0, 1)
_VAR_FLOOR = 1e-10


def conditioning_inputs(x_ret: np.ndarray, x_logvol: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                        regime: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw conditioning features and the (x0, m) anchors from window inputs.

    Parameters
    ----------
    x_ret : (b, L) normalised log-returns;  x_logvol : (b, L) log daily vol;  mu, sigma : (b,)
    regime : (b, n_regime) regime vectors, appended to the features when given

    Returns
    -------
    feats : ndarray (b, 8 + n_regime) float64 (unstandardised);
    anchors : ndarray (b, 2): 5-day and 22-day mean log vol
    """
    xv = np.asarray(x_logvol, dtype=float)
    r = np.asarray(x_ret, dtype=float) * np.asarray(sigma, dtype=float)[:, None] + np.asarray(mu, dtype=float)[:, None]
    k = min(22, xv.shape[1])
    lv1, lv5, lv22, lvl = xv[:, -1], xv[:, -5:].mean(1), xv[:, -k:].mean(1), xv.mean(1)
    lr5 = 0.5 * np.log(np.mean(r[:, -5:] ** 2, axis=1) + _VAR_FLOOR)
    lr22 = 0.5 * np.log(np.mean(r[:, -k:] ** 2, axis=1) + _VAR_FLOOR)
    lsig = np.log(np.maximum(np.asarray(sigma, dtype=float), 1e-5))
    feats = np.stack([lv1 - lv22, lv5 - lv22, lv22 - lvl, lr5 - lv22, lr22 - lv22, lv22, lsig - lv22, lvl], axis=1)
    if regime is not None:
        reg = np.asarray(regime, dtype=float).reshape(feats.shape[0], -1)
        feats = np.concatenate([feats, np.where(np.isfinite(reg), reg, 0.0)], axis=1)
    return feats, np.stack([lv5, lv22], axis=1)


#: Number of conditioning features before the regime vector.
N_BASE_FEATURES = 8
#: A feature whose training standard deviation is below this was constant in training
#: (e.g. a regime entry from a side series that did not exist yet): it is stored with
#: std 0 and always fed to the network as 0, so a later non-zero value cannot blow up.
DEAD_FEATURE_STD = 1e-8


def feature_scale(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training mean and std of each feature (std 0 marks a constant, "dead" feature)."""
    mean = feats.mean(axis=0)
    std = feats.std(axis=0)
    return mean, np.where(std > DEAD_FEATURE_STD, std, 0.0)


#: Standardised features are clipped to +-Z_CLIP: a feature that was rare in training (a
#: side series present for one asset only) must not drive the network far outside its data.
Z_CLIP = 5.0


def standardise(feats: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(feats - mean) / std`` clipped to +-`Z_CLIP`, and 0 for dead features (std 0)."""
    live = np.asarray(std) > 0
    return np.clip(np.where(live, (feats - mean) / np.where(live, std, 1.0), 0.0), -Z_CLIP, Z_CLIP)


def fit_regime(regime: Any, n_regime: int, batch: int) -> np.ndarray | None:
    """Regime vectors cut or zero-padded to ``n_regime`` columns (None when the model uses none)."""
    if n_regime <= 0:
        return None
    out = np.zeros((batch, n_regime))
    if regime is not None:
        reg = np.asarray(regime, dtype=float).reshape(batch, -1)[:, :n_regime]
        out[:, : reg.shape[1]] = np.where(np.isfinite(reg), reg, 0.0)
    return out


def network_inputs(ctx: Context, lookback: int, n_regime: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's raw features, anchors and a full-history mask from a `Context` (the one featuriser).

    Log realised vol per day: ``0.5 log(rv)`` where the context has intraday realised
    variance (2h bars), else the returns proxy ``log|r - mean| + 0.635`` (unbiased for
    log vol under normality).  Training windows reach it through
    ``Context.from_windows``, forecasts through ``Context.from_states``.

    Returns
    -------
    feats : ndarray (n, 8 + n_regime);  anchors : ndarray (n, 2);  ok : ndarray (n,) bool
        (``ok``: the origin has ``lookback`` valid returns)
    """
    lb = min(int(lookback), ctx.lookback)
    r = np.asarray(ctx.returns, dtype=float)[:, -lb:]
    ok = np.asarray(ctx.valid, dtype=bool)[:, -lb:].all(axis=1) & (lb == int(lookback))
    mu = r.mean(axis=1)
    sigma = np.maximum(r.std(axis=1), 1e-5)
    lv = np.log(np.maximum(np.abs(r - mu[:, None]), 1e-5)) + _LOG_ABS_NORMAL
    if ctx.rv is not None:
        rv = np.asarray(ctx.rv, dtype=float)[:, -lb:]
        good = np.isfinite(rv) & (rv > _VAR_FLOOR)
        lv = np.where(good, 0.5 * np.log(np.where(good, rv, 1.0)), lv)
    x_ret = (r - mu[:, None]) / sigma[:, None]
    feats, anchors = conditioning_inputs(x_ret, lv, mu, sigma, fit_regime(ctx.regime_vector, n_regime, ctx.size))
    return feats, anchors, ok


@dataclass(frozen=True)
class RoughVolatility(SpecBase):
    """Spec of the neural rough volatility part (what the model is).

    Attributes
    ----------
    lookback : int      input days the network sees (<= the windows' lookback)
    hidden, layers, dropout : network size
    lr, weight_decay, batch_size, max_steps : training
    hurst : float or None   fixed H; None = estimate from the training windows
    val_fraction : float    share of the latest origins held out for validation
    seed : int
    device : str            "auto" (cuda when available), "cpu" or "cuda"
    """

    lookback: int = 64
    hidden: int = 32
    layers: int = 2
    dropout: float = 0.0
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_steps: int = 400
    hurst: float | None = None
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True
    has_analytic_moments: ClassVar[bool] = True
    fit_inputs: ClassVar[tuple[str, ...]] = ("artefact",)
    fitted_cls: ClassVar[type]

    def fit(self, data: Any, *, artefact: "FittedRoughVol | None" = None, **inputs: Any) -> "FittedRoughVol":
        """Two routes, chosen by the input.

        * ``data`` is a dict of window columns (`aetheris_ray.windows`): train the
          network (pooled over the windows' assets).  This is what ``aetheris tune``
          runs per trial.
        * the engine's route: ``data`` are an origin's daily returns and ``artefact``
          the registered `FittedRoughVol` the engine resolved; it is used as it is
          (the network is not retrained per origin).
        """
        if isinstance(data, dict):
            return self.trainer(data).fit_all()
        if artefact is None:
            raise InvalidInput("rough_vol.fit(returns): no trained artefact given; the engine passes the "
                               "registered version (train one with `aetheris tune --component rough_vol`)")
        return artefact

    def trainer(self, windows: dict[str, np.ndarray]) -> Any:
        """The training loop over ``windows`` (`training.Trainer`, the `contract.Trainer` Tune drives)."""
        from aetheris_ray.components.rough_vol.training import Trainer

        return Trainer(windows, self)


#: Keys of ``shared`` besides the network weights (``w.<name>``).
_SHARED = ("hurst", "vol_bias", "feat_mean", "feat_std")


@dataclass(frozen=True, eq=False)
class FittedRoughVol(FittedVolatility):
    """A trained rough volatility part.

    ``shared`` holds the whole learned model once: ``hurst``, ``vol_bias``,
    ``feat_mean`` / ``feat_std`` (feature standardisation of the training windows) and
    the network's ``state_dict`` as ``w.<name>`` arrays.  It has no per-fit ``params``:
    the same network serves every origin; its per-origin parameters come from
    `condition`.  The rough model draws its whole vol path in ``init_paths`` (driven by
    its own fBm noise) and ignores the simulated returns in ``update``.  Origins with
    fewer than ``lookback`` returns get a neutral start (``x0 = m`` = log of the seed
    variance's root, ``nu`` 0.3, ``kappa`` 0.05).
    """

    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True
    has_analytic_moments: ClassVar[bool] = True
    filters_returns: ClassVar[bool] = False

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_weights(cls, spec: RoughVolatility, hurst: float, vol_bias: float, feat_mean: np.ndarray,
                     feat_std: np.ndarray, weights: dict[str, np.ndarray],
                     info: dict[str, Any] | None = None) -> "FittedRoughVol":
        shared = {"hurst": np.asarray(float(hurst)), "vol_bias": np.asarray(float(vol_bias)),
                  "feat_mean": np.asarray(feat_mean, dtype=float), "feat_std": np.asarray(feat_std, dtype=float)}
        shared.update({f"w.{k}": np.asarray(v) for k, v in weights.items()})
        return cls(spec=spec, params={}, info=dict(info or {}), shared=shared)

    @classmethod
    def from_params(  # type: ignore[override]
        cls,
        hurst: float = 0.1,
        *,
        vol_bias: float = 0.0,
        weights: dict[str, np.ndarray] | None = None,
        feat_mean: np.ndarray | None = None,
        feat_std: np.ndarray | None = None,
        seed: int = 0,
        n_regime: int = 0,
        info: dict[str, Any] | None = None,
        **spec: Any,
    ) -> "FittedRoughVol":
        """A fitted part from fixed parameters (tests); ``weights=None`` = the seeded initial network."""
        if not (0.0 < float(hurst) < 1.0):
            raise InvalidInput(f"hurst={hurst!r}: must lie in (0, 1)")
        sp = RoughVolatility(seed=seed, **spec)
        n_features = N_BASE_FEATURES + int(n_regime)
        if weights is None:
            from aetheris_ray.components.rough_vol.module import RoughVolNet
            from aetheris_ray.components.torch_utils import make_generator

            net = RoughVolNet(n_features, sp.hidden, sp.layers, sp.dropout, generator=make_generator(seed))
            weights = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        return cls.from_weights(sp, hurst, vol_bias,
                                np.zeros(n_features) if feat_mean is None else feat_mean,
                                np.ones(n_features) if feat_std is None else feat_std, weights, info)

    # -- what was learned -----------------------------------------------------------

    @property
    def hurst(self) -> float:
        return float(self.shared["hurst"])

    @property
    def vol_bias(self) -> float:
        return float(self.shared["vol_bias"])

    @property
    def feat_mean(self) -> np.ndarray:
        return np.asarray(self.shared["feat_mean"], dtype=float)

    @property
    def feat_std(self) -> np.ndarray:
        return np.asarray(self.shared["feat_std"], dtype=float)

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return {k[2:]: v for k, v in self.shared.items() if k.startswith("w.")}

    @property
    def n_features(self) -> int:
        return int(self.feat_mean.size)

    @property
    def n_regime(self) -> int:
        """Regime-vector length the network takes (0: not conditioned on the regime)."""
        return self.n_features - N_BASE_FEATURES

    def _net(self) -> Any:
        net = self.__dict__.get("_net_cache")
        if net is None:
            import torch

            from aetheris_ray.components.rough_vol.module import RoughVolNet

            net = RoughVolNet(self.n_features, self.spec.hidden, self.spec.layers, self.spec.dropout)
            net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in self.weights.items()})
            net.eval()
            object.__setattr__(self, "_net_cache", net)
        return net

    def check_loaded(self) -> None:
        """Build the network from the loaded weights now (a shape or key mismatch is a corrupt artefact)."""
        self.check_artefact(_SHARED, self._net, "the network from the weights")

    # -- parameters -----------------------------------------------------------------

    def params_from_context(self, ctx: Context) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Rough fOU parameters ``x0, m, nu, kappa`` (each (n,)) of a context batch, and its full-history mask."""
        feats, anchors, ok = network_inputs(ctx, self.spec.lookback, self.n_regime)
        return self._forward(standardise(feats, self.feat_mean, self.feat_std), anchors), ok

    @network(merge=True)
    def _forward(self, z: np.ndarray, anchors: np.ndarray) -> dict[str, np.ndarray]:
        """The network on standardised features ``z`` (n, n_features) and log-vol anchors (n,): each parameter (n,)."""
        import torch

        with torch.no_grad():
            out = self._net()(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(anchors, dtype=torch.float32))
        return {k: v.numpy().astype(float) for k, v in out.items()}

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        """Per-origin rough fOU parameters ``x0, m, nu, kappa`` and ``v1`` (E[sigma_1^2]), each (n_origins,)."""
        p, ok = self.params_from_context(ctx)
        if not ok.all():
            r2 = np.where(ctx.valid, np.square(ctx.returns), 0.0).sum(1) / np.maximum(ctx.valid.sum(1), 1)
            neutral = 0.5 * np.log(np.maximum(r2, VAR_FLOOR)) - self.vol_bias
            p = {k: v.copy() for k, v in p.items()}
            p["x0"][~ok] = neutral[~ok]
            p["m"][~ok] = neutral[~ok]
            p["nu"][~ok] = 0.3
            p["kappa"][~ok] = 0.05
        cond = {k: np.asarray(v, dtype=float) for k, v in p.items()}
        cond["v1"] = self.expected_variance(cond, 1)[:, 0]
        return cond

    # -- sampling ---------------------------------------------------------------------

    def vol_paths(self, cond: dict[str, np.ndarray], n_paths: int, horizon: int,
                  rng: np.random.Generator) -> np.ndarray:
        """Vol paths for a batch of parameter sets: shape (n_origins, n_paths, horizon), daily return std.

        Exact fBm increments (cached Cholesky of the fBm covariance) drive
        ``X_k - m = (1 - kappa)(X_{k-1} - m) + nu dB_H(k)``.
        """
        if not (isinstance(n_paths, (int, np.integer)) and n_paths >= 1):
            raise InvalidInput(f"n_paths={n_paths!r}: must be an integer >= 1")
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise InvalidInput(f"horizon={horizon!r}: must be an integer >= 1")
        x0 = np.asarray(cond["x0"], dtype=float)[:, None]
        m = np.asarray(cond["m"], dtype=float)[:, None]
        nu = np.asarray(cond["nu"], dtype=float)[:, None]
        phi = 1.0 - np.asarray(cond["kappa"], dtype=float)[:, None]
        n_orig = x0.shape[0]
        lower = fbm_factor(int(horizon), self.hurst)
        z = rng.standard_normal((n_orig, int(n_paths), int(horizon)))
        b = z @ lower.T
        db = np.diff(b, axis=-1, prepend=0.0)
        out = np.empty_like(db)
        x = np.broadcast_to(x0, (n_orig, int(n_paths))).copy()
        for k in range(int(horizon)):
            x = m + phi * (x - m) + nu * db[:, :, k]
            out[:, :, k] = x
        return np.exp(np.clip(out + self.vol_bias, -30.0, 5.0))

    def init_paths(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> dict:
        return {"var": np.square(self.vol_paths(cond, n_paths, horizon, rng)), "t": 0}

    def variance(self, ps: dict) -> np.ndarray:
        return ps["var"][:, :, ps["t"]]

    def update(self, ps: dict, r: np.ndarray) -> None:
        ps["t"] += 1

    def expected_variance(self, cond: dict, horizon: int) -> np.ndarray:
        """``E[sigma_t^2] = exp(2 (mean_t + vol_bias) + 2 var_t)`` (log-normal), shape (n_origins, horizon)."""
        mean, var = rfou_mean_var(cond, int(horizon), self.hurst)
        return np.exp(np.clip(2.0 * (mean + self.vol_bias) + 2.0 * var, -60.0, 10.0))


def rfou_mean_var(params: dict[str, np.ndarray], horizon: int, hurst: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form mean and variance of ``X_1..X_h`` (numpy twin of `module.rfou_moments`); each (b, h)."""
    g = fgn_autocovariance(horizon, hurst)
    k = np.arange(horizon)
    cov_b = g[np.abs(k[:, None] - k[None, :])]
    phi = 1.0 - np.asarray(params["kappa"], dtype=float)[:, None]
    kk = np.arange(1, horizon + 1)
    m = np.asarray(params["m"], dtype=float)[:, None]
    mean = m + (np.asarray(params["x0"], dtype=float)[:, None] - m) * phi**kk[None, :]
    lag = kk[:, None] - kk[None, :]
    mm = np.where(lag[None] >= 0, phi[:, :, None] ** np.maximum(lag, 0)[None], 0.0)
    var = np.einsum("bkj,jl,bkl->bk", mm, cov_b, mm) * np.asarray(params["nu"], dtype=float)[:, None] ** 2
    return mean, var


RoughVolatility.fitted_cls = FittedRoughVol
