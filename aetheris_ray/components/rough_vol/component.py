"""The fit/sample adapter of the neural rough volatility component (variant ``rough_vol``).

Spec and fitted are separate (STYLE.md 5): ``RoughVolatility(...)`` is a frozen
config; ``spec.fit(windows)`` trains and returns a new `FittedRoughVolatility`,
which exposes the component verbs ``sample``, ``save``, ``load``, ``from_params``.
``spec.fit(returns)`` is the engine's route: it loads the registered model and wraps
it as `FittedRoughVol`, the engine's `FittedVolatility` (see `RoughVolatility.fit`).

The model (see `module`): log daily vol ``X`` follows a rough fractional OU with
Hurst ``H`` estimated from the training data (Gatheral-Jaisson-Rosenbaum scaling);
a small network maps HAR-style summaries of recent log realised vol and returns, plus
the regime vector when the training windows carry one (``WindowSpec(regime=True)``),
to the start level ``x0``, long-run level ``m``, vol-of-vol ``nu`` and mean reversion
``kappa``.  Paths are drawn with exact fBm increments (cached
Cholesky, `fbm`), and ``exp(X + vol_bias)`` is returned: ``vol_bias`` is a single
moment-matching constant fitted on the training windows so that the vol paths are in
units of the daily log-return standard deviation.

torch is imported lazily (inside methods): importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aetheris_ray.components.base import VAR_FLOOR, Context, SpecBase
from aetheris_ray.components.rough_vol.fbm import fbm_factor, fgn_autocovariance
from aetheris_ray.components.volatility import FittedVolatility
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.registry import jsonable

__all__ = [
    "RoughVolatility",
    "FittedRoughVolatility",
    "FittedRoughVol",
    "conditioning_inputs",
    "context_inputs",
    "state_inputs",
    "feature_logvol",
    "fit_regime",
    "feature_scale",
    "standardise",
    "rfou_mean_var",
    "SCHEMA_VERSION",
]

NAME = "rough_vol"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
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


def feature_logvol(x_ret: np.ndarray, x_logvol: np.ndarray, sigma: np.ndarray, has_rv: np.ndarray | None) -> np.ndarray:
    """The log vol the network conditions on, as the engine can see it at inference.

    The engine's `Context` carries intraday realised variance (2h bars) but no daily
    ranges, so where a day has no 2h-bar RV the feature is the returns proxy
    ``log|r - mean| + 0.635`` (as in `context_inputs`), not Parkinson; training uses
    the same rule through the windows' ``x_has_rv`` mask.  ``has_rv=None`` keeps
    ``x_logvol`` as given.
    """
    if has_rv is None:
        return np.asarray(x_logvol, dtype=float)
    dev = np.abs(np.asarray(x_ret, dtype=float) * np.asarray(sigma, dtype=float)[:, None])
    proxy = np.log(np.maximum(dev, 1e-5)) + _LOG_ABS_NORMAL
    return np.where(np.asarray(has_rv, dtype=bool), np.asarray(x_logvol, dtype=float), proxy)


def state_inputs(state: Any, lookback: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Window-shaped inputs (batch of 1) from a `MarketState`, and the log-vol source used.

    Log realised vol comes from, in order: a ``daily_logvol`` attribute of the state
    (when the feature layer provides one), ``intraday_rv`` (2h realised variances),
    else a returns proxy ``log|r - mean| + 0.635`` (unbiased for log vol under
    normality, but much noisier than the training inputs; reported as the source).
    """
    r = np.asarray(state.returns, dtype=float)[-lookback:]
    if r.size < lookback:
        raise InvalidInput(
            f"state.returns: {r.size} returns, rough_vol needs at least lookback={lookback}; "
            "use a longer history or a component with a shorter lookback"
        )
    lv = getattr(state, "daily_logvol", None)
    source = "daily_logvol"
    if lv is None or len(lv) < lookback:
        rv = getattr(state, "intraday_rv", None)
        if rv is not None and len(rv) >= lookback:
            lv, source = 0.5 * np.log(np.maximum(np.asarray(rv, dtype=float)[-lookback:], _VAR_FLOOR)), "intraday_rv"
        else:
            dev = np.abs(r - r.mean())
            lv, source = np.log(np.maximum(dev, 1e-5)) + _LOG_ABS_NORMAL, "returns_proxy"
    lv = np.asarray(lv, dtype=float)[-lookback:]
    mu = r.mean()
    sigma = max(float(r.std()), 1e-5)
    return ((r - mu) / sigma)[None], lv[None], np.array([mu]), np.array([sigma]), source


@dataclass(frozen=True)
class RoughVolatility(SpecBase):
    """Spec of the neural rough volatility component (what the model is).

    Attributes
    ----------
    lookback : int      input days the network sees (<= the windows' lookback)
    hidden, layers, dropout : network size
    lr, weight_decay, batch_size, max_steps : training
    hurst : float or None   fixed H; None = estimate from the training windows
    val_fraction : float    share of the latest origins held out for validation
    seed : int
    device : str            "auto" (cuda when available), "cpu" or "cuda"
    version : str           registry version the engine route loads ("latest" or an id)
    fallback : str          volatility baseline used when that version is missing or corrupt
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
    version: str = "latest"
    fallback: str = "garch"

    kind: ClassVar[str] = "volatility"
    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True
    has_analytic_moments: ClassVar[bool] = True
    #: the engine-route fitted class (set below, once it is defined)
    fitted_cls: ClassVar[type]

    def fit(self, data: Any, **context: Any) -> Any:
        """Two routes, chosen by the input type.

        * ``data`` is a dict of window columns (`aetheris_ray.windows`): train the
          network (pooled over the windows' assets) and return a
          `FittedRoughVolatility`.  This is what ``aetheris tune`` runs per trial.
        * ``data`` is an array of daily returns (the engine's component route): the
          network is not retrained per forecast; the registry version ``self.version``
          is loaded and wrapped as `FittedRoughVol`.  A missing or corrupt artefact
          falls back to the ``self.fallback`` baseline fitted on ``data``, with a
          `FallbackWarning` and the message in ``info["warnings"]``.
        """
        if isinstance(data, dict):
            from aetheris_ray.components.rough_vol.training import Trainer

            trainer = Trainer(data, self)
            trainer.train(self.max_steps)
            return trainer.fitted()
        from aetheris_ray.registry import Registry

        loaded = _load_registered(str(Registry().root), self.version, self.fallback)
        if not loaded.fallback:
            return FittedRoughVol.from_core(loaded.model, version=loaded.version)
        import dataclasses

        if loaded.model is None:
            raise ModelNotFound(loaded.warnings[0])
        fitted = loaded.model.fit(data, **context)
        info = dict(fitted.info)
        info["warnings"] = list(info.get("warnings", [])) + list(loaded.warnings)
        info["fallback"] = loaded.version
        return dataclasses.replace(fitted, info=info)


def _load_registered(root: str, version: str, fallback: str) -> Any:
    """Registry load (memoised per process for healthy versions; a fallback is retried next time)."""
    import warnings

    from aetheris_ray.registry import Registry

    key = (root, version)
    hit = _LOADED.get(key)
    if hit is not None:
        return hit
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        loaded = Registry(root).load_or_fallback(NAME, version, fallback)
    if not loaded.fallback:
        _LOADED[key] = loaded
    return loaded


_LOADED: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True, eq=False)
class FittedRoughVolatility:
    """A trained rough volatility component.

    Attributes
    ----------
    spec : RoughVolatility
    hurst : float
    n_features : int
    feat_mean, feat_std : ndarray (n_features,), feature standardisation (training windows)
    vol_bias : float, added to log vol so that ``exp(X + vol_bias)`` is the daily return std
    weights : dict of str -> ndarray, the network's state_dict as numpy arrays
    info : dict, training metadata (metrics, data range, steps)
    """

    spec: RoughVolatility
    hurst: float
    n_features: int
    feat_mean: np.ndarray
    feat_std: np.ndarray
    vol_bias: float
    weights: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    kind = "volatility"
    name = NAME
    requires_torch = True
    has_analytic_moments = False

    @property
    def n_regime(self) -> int:
        """Regime-vector length the network takes (0: not conditioned on the regime)."""
        return int(self.n_features) - N_BASE_FEATURES

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_params(
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
    ) -> "FittedRoughVolatility":
        """A fitted component from fixed parameters (tests, the registry); ``weights=None`` = seeded initial network."""
        if not (0.0 < float(hurst) < 1.0):
            raise InvalidInput(f"hurst={hurst!r}: must lie in (0, 1)")
        sp = RoughVolatility(seed=seed, **spec)
        n_features = N_BASE_FEATURES + int(n_regime)
        if weights is None:
            import torch

            from aetheris_ray.components.rough_vol.module import RoughVolNet

            torch.manual_seed(seed)
            net = RoughVolNet(n_features, sp.hidden, sp.layers, sp.dropout)
            weights = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        return cls(
            spec=sp,
            hurst=float(hurst),
            n_features=n_features,
            feat_mean=np.zeros(n_features) if feat_mean is None else np.asarray(feat_mean, dtype=float),
            feat_std=np.ones(n_features) if feat_std is None else np.asarray(feat_std, dtype=float),
            vol_bias=float(vol_bias),
            weights=weights,
            info=dict(info or {}),
        )

    # -- parameters -----------------------------------------------------------------

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

    def params_from_inputs(self, x_ret, x_logvol, mu, sigma, has_rv=None, regime=None) -> dict[str, np.ndarray]:
        """Rough fOU parameters ``x0, m, nu, kappa`` (each (b,)) for a batch of window inputs.

        ``has_rv`` (b, L) bool: which ``x_logvol`` days are 2h-bar RV (others are
        replaced by the returns proxy, `feature_logvol`); None = use ``x_logvol`` as is.
        ``regime`` (b, n) regime vectors: used (cut / zero-padded) when the network
        was trained with them, ignored otherwise.
        """
        import torch

        lb = self.spec.lookback
        x_ret, x_logvol = np.asarray(x_ret)[:, -lb:], np.asarray(x_logvol)[:, -lb:]
        x_logvol = feature_logvol(x_ret, x_logvol, sigma, None if has_rv is None else np.asarray(has_rv)[:, -lb:])
        feats, anchors = conditioning_inputs(x_ret, x_logvol, mu, sigma, fit_regime(regime, self.n_regime, x_ret.shape[0]))
        z = standardise(feats, self.feat_mean, self.feat_std)
        with torch.no_grad():
            out = self._net()(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(anchors, dtype=torch.float32))
        return {k: v.numpy().astype(float) for k, v in out.items()}

    def params(self, state: Any) -> dict[str, float]:
        """Parameters for one `MarketState` (plus ``source`` of the log realised vol used)."""
        x_ret, x_logvol, mu, sigma, source = state_inputs(state, self.spec.lookback)
        regime = np.asarray(state.regime_vector, dtype=float)[None]
        p = {k: float(v[0]) for k, v in self.params_from_inputs(x_ret, x_logvol, mu, sigma, regime=regime).items()}
        p["source"] = source  # type: ignore[assignment]
        return p

    # -- sampling ---------------------------------------------------------------------

    def sample_params(self, params: dict[str, np.ndarray], n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Vol paths for a batch of parameter sets: shape (n_origins, n_paths, horizon), daily return std.

        Exact fBm increments (cached Cholesky of the fBm covariance) drive
        ``X_k - m = (1 - kappa)(X_{k-1} - m) + nu dB_H(k)``.
        """
        if not (isinstance(n_paths, (int, np.integer)) and n_paths >= 1):
            raise InvalidInput(f"n_paths={n_paths!r}: must be an integer >= 1")
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise InvalidInput(f"horizon={horizon!r}: must be an integer >= 1")
        x0 = np.asarray(params["x0"], dtype=float)[:, None]
        m = np.asarray(params["m"], dtype=float)[:, None]
        nu = np.asarray(params["nu"], dtype=float)[:, None]
        phi = 1.0 - np.asarray(params["kappa"], dtype=float)[:, None]
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

    def sample(self, state: Any, n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Daily volatility paths for one market state.

        Returns
        -------
        ndarray, shape (n_paths, horizon): std of each day's log-return (> 0).
        """
        p = self.params(state)
        batch = {k: np.array([p[k]]) for k in ("x0", "m", "nu", "kappa")}
        return self.sample_params(batch, n_paths, horizon, rng)[0]

    def sample_windows(self, windows: dict[str, np.ndarray], n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Vol paths for every window's origin (backtests): shape (n_origins, n_paths, horizon)."""
        p = self.params_from_inputs(windows["x_ret"], windows["x_logvol"], windows["mu"], windows["sigma"],
                                    windows.get("x_has_rv"), windows.get("regime"))
        return self.sample_params(p, n_paths, horizon, rng)

    # -- persistence --------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        from aetheris_ray import __version__

        return {
            "type": f"volatility/{NAME}",
            "component": NAME,
            "schema_version": SCHEMA_VERSION,
            "package_version": __version__,
            "spec": asdict(self.spec),
            "hurst": self.hurst,
            "n_features": self.n_features,
            "feat_mean": [float(v) for v in self.feat_mean],
            "feat_std": [float(v) for v in self.feat_std],
            "vol_bias": self.vol_bias,
            "weights": WEIGHTS,
            "info": jsonable(self.info),
        }

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``manifest.json`` + ``weights.pt`` (a torch state_dict) atomically into ``directory``."""
        import torch

        final = Path(directory)
        if final.exists() and any(final.iterdir()) and not overwrite:
            raise InvalidInput(f"save: {final} exists and is not empty; pass overwrite=True to replace it")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            torch.save({k: torch.as_tensor(np.asarray(v)) for k, v in self.weights.items()}, tmp / WEIGHTS)
            (tmp / MANIFEST).write_text(json.dumps(self.manifest(), indent=2, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "FittedRoughVolatility":
        """Read a directory written by `save`; `ModelNotFound` names what is missing or wrong."""
        path = Path(directory)
        try:
            man = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise ModelNotFound(f"{path}: no {MANIFEST}; not a saved rough_vol component") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelNotFound(f"{path / MANIFEST}: not valid JSON ({e}); the artifact is corrupt") from None
        if man.get("component") != NAME:
            raise ModelNotFound(f"{path}: component {man.get('component')!r}, expected {NAME!r}")
        if man.get("schema_version") != SCHEMA_VERSION:
            raise ModelNotFound(
                f"{path}: schema version {man.get('schema_version')!r}, this version reads {SCHEMA_VERSION}; retrain the model"
            )
        import torch

        try:
            state = torch.load(path / man.get("weights", WEIGHTS), map_location="cpu", weights_only=True)
            weights = {k: v.numpy().copy() for k, v in state.items()}
            obj = cls(
                spec=RoughVolatility(**man["spec"]),
                hurst=float(man["hurst"]),
                n_features=int(man["n_features"]),
                feat_mean=np.asarray(man["feat_mean"], dtype=float),
                feat_std=np.asarray(man["feat_std"], dtype=float),
                vol_bias=float(man["vol_bias"]),
                weights=weights,
                info=man.get("info", {}),
            )
            obj._net()  # shape check now, not at the first forecast
        except Exception as e:  # noqa: BLE001 - unpickling / shape / key errors all mean "corrupt"
            raise ModelNotFound(f"{path}: cannot load the weights ({type(e).__name__}: {e}); the artifact is corrupt") from None
        return obj




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


def context_inputs(ctx: Context, lookback: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Window-shaped inputs from an engine `Context` (batch of origins) and a mask of rows with full history.

    Log realised vol per day: ``0.5 log(rv)`` where the context has intraday realised
    variance, else the returns proxy ``log|r - mean| + 0.635`` (see `state_inputs`).
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
    return (r - mu[:, None]) / sigma[:, None], lv, mu, sigma, ok


@dataclass(frozen=True, eq=False)
class FittedRoughVol(FittedVolatility):
    """`FittedRoughVolatility` as an engine volatility component (E's `FittedVolatility` verbs).

    ``params`` hold the whole model with a leading batch axis of 1 (``hurst``,
    ``vol_bias``, ``feat_mean``, ``feat_std`` and the network as ``w.<name>``), so
    `FittedBase.save` / `load_component` round-trip it as ``params.npz``.  The rough
    model draws its whole vol path in ``init_paths`` (driven by its own fBm noise)
    and ignores the simulated returns in ``update``.  Origins with fewer than
    ``lookback`` returns get a neutral start (``x0 = m`` = log of the seed variance's
    root, ``nu`` 0.3, ``kappa`` 0.05) and are listed in ``info``.
    """

    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True
    has_analytic_moments: ClassVar[bool] = True
    param_names: ClassVar[tuple[str, ...]] = ("hurst", "vol_bias", "feat_mean", "feat_std")
    row_params: ClassVar[tuple[str, ...]] = ("feat_mean", "feat_std")

    @classmethod
    def from_core(cls, core: FittedRoughVolatility, version: str = "") -> "FittedRoughVol":
        params = {
            "hurst": np.array([core.hurst]),
            "vol_bias": np.array([core.vol_bias]),
            "feat_mean": np.asarray(core.feat_mean, dtype=float)[None],
            "feat_std": np.asarray(core.feat_std, dtype=float)[None],
        }
        params.update({f"w.{k}": np.asarray(v)[None] for k, v in core.weights.items()})
        info = {"model_version": version, "hurst": core.hurst, **{k: v for k, v in core.info.items() if k != "metrics"}}
        return cls(spec=core.spec, params=params, info=info)

    def core(self) -> FittedRoughVolatility:
        c = self.__dict__.get("_core")
        if c is None:
            p = self.params
            c = FittedRoughVolatility(
                spec=self.spec,
                hurst=float(np.asarray(p["hurst"]).ravel()[0]),
                n_features=int(np.asarray(p["feat_mean"]).shape[-1]),
                feat_mean=np.asarray(p["feat_mean"], dtype=float).reshape(-1, np.asarray(p["feat_mean"]).shape[-1])[0],
                feat_std=np.asarray(p["feat_std"], dtype=float).reshape(-1, np.asarray(p["feat_std"]).shape[-1])[0],
                vol_bias=float(np.asarray(p["vol_bias"]).ravel()[0]),
                weights={k[2:]: np.asarray(v)[0] for k, v in p.items() if k.startswith("w.")},
                info=dict(self.info),
            )
            object.__setattr__(self, "_core", c)
        return c

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        """Per-origin rough fOU parameters ``x0, m, nu, kappa`` and ``v1`` (E[sigma_1^2]), each (n_origins,)."""
        core = self.core()
        x_ret, x_lv, mu, sigma, ok = context_inputs(ctx, core.spec.lookback)
        p = core.params_from_inputs(x_ret, x_lv, mu, sigma, regime=ctx.regime_vector)
        if not ok.all():
            r2 = np.where(ctx.valid, np.square(ctx.returns), 0.0).sum(1) / np.maximum(ctx.valid.sum(1), 1)
            neutral = 0.5 * np.log(np.maximum(r2, VAR_FLOOR)) - core.vol_bias
            p = {k: v.copy() for k, v in p.items()}
            p["x0"][~ok] = neutral[~ok]
            p["m"][~ok] = neutral[~ok]
            p["nu"][~ok] = 0.3
            p["kappa"][~ok] = 0.05
        cond = {k: np.asarray(v, dtype=float) for k, v in p.items()}
        cond["v1"] = self.expected_variance(cond, 1)[:, 0]
        return cond

    def init_paths(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> dict:
        sigma = self.core().sample_params(cond, n_paths, horizon, rng)
        return {"var": np.square(sigma), "t": 0}

    def variance(self, ps: dict) -> np.ndarray:
        return ps["var"][:, :, ps["t"]]

    def update(self, ps: dict, r: np.ndarray) -> None:
        ps["t"] += 1

    def expected_variance(self, cond: dict, horizon: int) -> np.ndarray:
        """``E[sigma_t^2] = exp(2 (mean_t + vol_bias) + 2 var_t)`` (log-normal), shape (n_origins, horizon)."""
        core = self.core()
        mean, var = rfou_mean_var(cond, int(horizon), core.hurst)
        return np.exp(np.clip(2.0 * (mean + core.vol_bias) + 2.0 * var, -60.0, 10.0))


RoughVolatility.fitted_cls = FittedRoughVol
