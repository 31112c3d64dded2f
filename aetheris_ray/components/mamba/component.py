"""The ``mamba`` trend (kind ``trend``): a selective state-space model over the recent multi-series history.

One spec, one fitted class (STYLE.md 5): ``MambaTrend(...)`` is a frozen config;
``spec.fit(windows)`` trains and returns a `FittedMamba`, which the engine uses at every
origin.  It is an artefact variant: the engine resolves the registered version once
(`aetheris_ray.model.resolve_config`) and hands it to ``fit(returns, artefact=...)``;
it is never retrained per forecast (the registered fallback is ``ar_es``).

Inputs (one featuriser, `sequence_inputs`, for training windows through
``Context.from_windows`` and forecasts through ``Context.from_states``):

* per day, the last ``lookback`` days, in units of the origin's daily vol ``s`` (EWMA
  0.94 of the last ``lookback`` returns, so both routes compute the same ``s``):
  ``r_t / s`` (clipped at +-10); log daily vol ``lv_t - log s`` with ``lv_t`` =
  ``0.5 log rv`` where the context has a 2h-bar realised variance, else Parkinson's
  ``log(ln(H/L) / sqrt(4 ln 2))`` where the daily range is observed, else the return
  proxy ``log|r_t - mean| + 0.635`` (the windows' ``x_logvol`` follows the same order);
  log implied vol ``log(iv / 100 / sqrt(365)) - log s`` where the context has one
  (0 elsewhere);
* at the origin: ``log s``, the regime vector (when the training windows carry one,
  ``WindowSpec(regime=True)``) and the three MM indices (0 where absent).

Each channel and origin feature is standardised by its training mean and std; one that
was constant in training (implied vol and the MM indices: the training windows do not
carry them today) is stored with std 0 and fed as 0, so a value seen only at forecast
time cannot move the drift.  Funding, basis and macro series per day are not in a
`Context` today, so the model does not see them.

Output: `MambaDriftNet` gives ``a_k`` in ``[-max_sigma, max_sigma]`` for the trained
horizon ``k = 1..H``; the daily drift is ``shrink * a_k * s``.  Beyond ``H`` (up to
`MAX_DRIFT_STEPS`) the last step is held.  Origins with fewer than ``lookback`` valid
returns get zero drift.  Inference runs the network in float64 (batch-size independent
to rounding, so a walk-forward batch equals single forecasts).

torch is imported lazily (inside methods): importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray.components.base import MM_KEYS, VAR_FLOOR, Context, SpecBase, ewma_filter
from aetheris_ray.components.offload import network
from aetheris_ray.components.trend import MAX_DRIFT_STEPS, FittedTrend
from aetheris_ray.errors import InvalidInput, ModelNotFound

__all__ = ["MambaTrend", "FittedMamba", "sequence_inputs", "feature_scale", "standardise", "N_CHANNELS"]

NAME = "mamba"
#: Per-day channels: scaled return, log vol, log implied vol.
N_CHANNELS = 3
#: Origin features before the regime vector (``log s``) and after it (the MM indices).
N_STATIC_BASE = 1 + len(MM_KEYS)
_LOG_ABS_NORMAL = 0.6351814227307391  # -E[log |Z|], Z ~ N(0, 1)
_LOG_PARKINSON = 0.5 * np.log(4.0 * np.log(2.0))  # log vol = log ln(H/L) - this
#: A feature whose training std is below this was constant in training: stored with std 0, fed as 0.
DEAD_FEATURE_STD = 1e-8
#: Standardised inputs are clipped to +-Z_CLIP.
Z_CLIP = 5.0
#: Daily returns enter as ``r / s`` clipped to +-RET_CLIP.
RET_CLIP = 10.0
#: Origins per network call at inference (bounds the scan's memory on long walk-forward batches).
INFER_CHUNK = 256


def sequence_inputs(ctx: Context, lookback: int,
                    n_regime: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The network's raw inputs from a `Context` (the one featuriser of training and use; see the module docstring).

    Parameters
    ----------
    ctx : Context, n origins
    lookback : int        days fed to the network
    n_regime : int        regime-vector entries used (cut or zero-padded)

    Returns
    -------
    seq : ndarray (n, lookback, N_CHANNELS);  static : ndarray (n, 1 + n_regime + 3);
    scale : ndarray (n,), the daily vol ``s``;  ok : ndarray (n,) bool (``lookback`` valid returns)
    """
    lb = int(lookback)
    if ctx.lookback < lb:
        raise InvalidInput(f"mamba: the context holds {ctx.lookback} days, the model reads lookback={lb}; "
                           "build the context (or the windows) with at least that many days")
    r = np.asarray(ctx.returns, dtype=float)[:, -lb:]
    valid = np.asarray(ctx.valid, dtype=bool)[:, -lb:]
    ok = valid.all(axis=1)
    scale = np.sqrt(ewma_filter(r, valid, 0.94)[:, -1])
    log_s = np.log(scale)
    mean = np.where(valid, r, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    lv = np.log(np.maximum(np.abs(r - mean[:, None]), 1e-5)) + _LOG_ABS_NORMAL
    if ctx.log_hl is not None:
        hl = np.asarray(ctx.log_hl, dtype=float)[:, -lb:]
        good = np.isfinite(hl) & (hl > 0)
        lv = np.where(good, np.log(np.where(good, hl, 1.0)) - _LOG_PARKINSON, lv)
    if ctx.rv is not None:
        rv = np.asarray(ctx.rv, dtype=float)[:, -lb:]
        good = np.isfinite(rv) & (rv > VAR_FLOOR)
        lv = np.where(good, 0.5 * np.log(np.where(good, rv, 1.0)), lv)
    iv = np.zeros_like(r)
    if ctx.iv is not None:
        x = np.asarray(ctx.iv, dtype=float)[:, -lb:]
        good = np.isfinite(x) & (x > 0)
        iv = np.where(good, np.log(np.where(good, x, 1.0) / (100.0 * np.sqrt(365.0))) - log_s[:, None], 0.0)
    seq = np.stack([np.clip(r / scale[:, None], -RET_CLIP, RET_CLIP), lv - log_s[:, None], iv], axis=2)
    seq = np.where(valid[:, :, None], seq, 0.0)
    regime = np.zeros((ctx.size, int(n_regime)))
    if n_regime > 0:
        reg = np.asarray(ctx.regime_vector, dtype=float).reshape(ctx.size, -1)[:, :n_regime]
        regime[:, : reg.shape[1]] = np.where(np.isfinite(reg), reg, 0.0)
    mm = np.asarray(ctx.mm, dtype=float)
    static = np.concatenate([log_s[:, None], regime, np.where(np.isfinite(mm), mm, 0.0)], axis=1)
    return seq, static, scale, ok


def feature_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over every axis but the last (std 0 marks a feature constant in training)."""
    flat = x.reshape(-1, x.shape[-1])
    std = flat.std(axis=0)
    return flat.mean(axis=0), np.where(std > DEAD_FEATURE_STD, std, 0.0)


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` along the last axis, clipped to +-`Z_CLIP`; 0 for dead features (std 0)."""
    live = np.asarray(std) > 0
    return np.clip(np.where(live, (x - mean) / np.where(live, std, 1.0), 0.0), -Z_CLIP, Z_CLIP)


@dataclass(frozen=True)
class MambaTrend(SpecBase):
    """Spec of the Mamba trend (what the model is).

    Attributes
    ----------
    lookback : int          days the network reads (<= the windows' lookback)
    d_model, d_state, expand, layers : network size (`module.MambaDriftNet`)
    max_sigma : float       bound of the network's daily drift, in daily vols
    shrink : float in [0, 1]  multiplier of the drift at use and in validation (0 = zero drift); default 0.25
                            (as ar_es): on 2022 (one trained net) its QL matched zero drift's; 0.5 and 1 were worse
    lr, weight_decay, batch_size, max_steps : training (Adam)
    target_clip : float     standardised cumulative returns are clipped to +-this in the training loss
    val_fraction : float    share of the latest origin dates held out for validation
    seed : int
    device : str            "auto" (cuda when available), "cpu" or "cuda"
    backend : str           selective-scan backend: "auto" (mamba-ssm on CUDA when installed), "torch"
    """

    lookback: int = 64
    d_model: int = 16
    d_state: int = 8
    expand: int = 2
    layers: int = 2
    max_sigma: float = 0.1
    shrink: float = 0.25
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    max_steps: int = 300
    target_clip: float = 5.0
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    backend: str = "auto"

    kind: ClassVar[str] = "trend"
    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True
    has_analytic_moments: ClassVar[bool] = True
    fit_inputs: ClassVar[tuple[str, ...]] = ("artefact",)
    fitted_cls: ClassVar[type]

    def __post_init__(self) -> None:
        for name in ("lookback", "d_model", "d_state", "expand", "layers", "batch_size"):
            v = getattr(self, name)
            self._check(isinstance(v, (int, np.integer)) and v >= (2 if name == "lookback" else 1),
                        f"{name}={v!r} must be a whole number >= {2 if name == 'lookback' else 1}")
        self._check(0 <= self.shrink <= 1, f"shrink={self.shrink!r} must be in [0, 1]")
        self._check(self.max_sigma > 0, f"max_sigma={self.max_sigma!r} must be positive")
        self._check(self.target_clip > 0, f"target_clip={self.target_clip!r} must be positive")
        self._check(0 < self.val_fraction < 1, f"val_fraction={self.val_fraction!r} must be in (0, 1)")
        self._check(self.device in ("auto", "cpu", "cuda"), f"device={self.device!r}: use auto, cpu or cuda")
        self._check(self.backend in ("auto", "torch", "mamba_ssm"),
                    f"backend={self.backend!r}: use auto, torch or mamba_ssm")

    def fit(self, data: Any, *, artefact: "FittedMamba | None" = None, **inputs: Any) -> "FittedMamba":
        """Two routes, chosen by the input.

        * ``data`` is a dict of window columns (`aetheris_ray.windows`): train the network
          (pooled over the windows' assets); what ``aetheris tune`` runs per trial.
        * the engine's route: ``data`` are an origin's daily returns and ``artefact`` the
          registered `FittedMamba` the engine resolved; it is used as it is.
        """
        if isinstance(data, dict):
            return self.trainer(data).fit_all()
        if artefact is None:
            raise InvalidInput("mamba.fit(returns): no trained artefact given; the engine passes the registered "
                               "version (train one with `aetheris tune --component mamba`)")
        return artefact

    def trainer(self, windows: dict[str, np.ndarray]) -> Any:
        """The training loop over ``windows`` (`training.Trainer`, the `contract.Trainer` Tune drives)."""
        from aetheris_ray.components.mamba.training import Trainer

        return Trainer(windows, self)


#: Keys of ``shared`` besides the network weights (``w.<name>``).
_SHARED = ("seq_mean", "seq_std", "static_mean", "static_std")


@dataclass(frozen=True, eq=False)
class FittedMamba(FittedTrend):
    """A trained Mamba trend.

    ``shared`` holds the whole learned model once: the standardisation of the per-day
    channels (``seq_mean``, ``seq_std``, each (N_CHANNELS,)) and of the origin features
    (``static_mean``, ``static_std``), and the network's ``state_dict`` as ``w.<name>``
    arrays.  No per-fit ``params``: the same network serves every origin; the drift
    path comes from `condition`.
    """

    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True

    @classmethod
    def from_weights(cls, spec: MambaTrend, seq_mean: np.ndarray, seq_std: np.ndarray, static_mean: np.ndarray,
                     static_std: np.ndarray, weights: dict[str, np.ndarray],
                     info: dict[str, Any] | None = None) -> "FittedMamba":
        shared = {"seq_mean": np.asarray(seq_mean, dtype=float), "seq_std": np.asarray(seq_std, dtype=float),
                  "static_mean": np.asarray(static_mean, dtype=float),
                  "static_std": np.asarray(static_std, dtype=float)}
        shared.update({f"w.{k}": np.asarray(v) for k, v in weights.items()})
        return cls(spec=spec, params={}, info=dict(info or {}), shared=shared)

    @classmethod
    def from_params(  # type: ignore[override]
        cls,
        *,
        horizon: int = 14,
        n_regime: int = 0,
        weights: dict[str, np.ndarray] | None = None,
        seed: int = 0,
        info: dict[str, Any] | None = None,
        **spec: Any,
    ) -> "FittedMamba":
        """A fitted part with unit standardisation (tests); ``weights=None``: the seeded initial net (zero drift)."""
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise InvalidInput(f"horizon={horizon!r}: must be an integer >= 1")
        sp = MambaTrend(seed=seed, **spec)
        n_static = N_STATIC_BASE + int(n_regime)
        if weights is None:
            from aetheris_ray.components.torch_utils import make_generator

            net = _build_net(sp, n_static, int(horizon), generator=make_generator(seed))
            weights = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        return cls.from_weights(sp, np.zeros(N_CHANNELS), np.ones(N_CHANNELS), np.zeros(n_static),
                                np.ones(n_static), weights, info)

    # -- what was learned -----------------------------------------------------------

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return {k[2:]: v for k, v in self.shared.items() if k.startswith("w.")}

    @property
    def n_static(self) -> int:
        return int(np.size(self.shared["static_mean"]))

    @property
    def n_regime(self) -> int:
        """Regime-vector length the network takes (0: not conditioned on the regime)."""
        return self.n_static - N_STATIC_BASE

    @property
    def horizon(self) -> int:
        """The trained horizon ``H`` (drift steps the network produces)."""
        return int(np.shape(self.shared["w.head.bias"])[0])

    def _net(self) -> Any:
        """The network in float64 on the CPU, built once per object."""
        net = self.__dict__.get("_net_cache")
        if net is None:
            import torch

            net = _build_net(self.spec, self.n_static, self.horizon, backend="torch")
            net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in self.weights.items()})
            net = net.double().eval()
            object.__setattr__(self, "_net_cache", net)
        return net

    def check_loaded(self) -> None:
        """Build the network from the loaded weights now (a shape or key mismatch is a corrupt artefact)."""
        self.check_artefact((*_SHARED, "w.head.bias"), lambda: None)
        if np.size(self.shared["seq_mean"]) != N_CHANNELS or self.n_regime < 0:
            raise ModelNotFound(f"mamba artefact: {np.size(self.shared['seq_mean'])} channels and "
                                f"{self.n_static} origin features; this version reads {N_CHANNELS} and at least "
                                f"{N_STATIC_BASE}; the artefact is corrupt")
        self.check_artefact((), self._net, "the network from the weights")

    # -- the verbs ----------------------------------------------------------------------

    def drift_units(self, ctx: Context) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The net's drift per step in daily vols (n, H) before shrinkage, vol ``s`` (n,) and mask ``ok`` (n,)."""
        seq, static, scale, ok = sequence_inputs(ctx, self.spec.lookback, self.n_regime)
        x = standardise(seq, self.shared["seq_mean"], self.shared["seq_std"])
        z = standardise(static, self.shared["static_mean"], self.shared["static_std"])
        return self._forward(x, z), scale, ok

    @network(merge=True)
    def _forward(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The network on standardised sequences ``x`` (n, lookback, channels) and origin features ``z``: (n, H)."""
        import torch

        net = self._net()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), INFER_CHUNK):  # the scan holds (chunk, lookback, d_inner, d_state) floats
                out.append(net(torch.as_tensor(x[i:i + INFER_CHUNK], dtype=torch.float64),
                               torch.as_tensor(z[i:i + INFER_CHUNK], dtype=torch.float64)).numpy())
        return np.concatenate(out, axis=0)

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        """The daily drift path ``shrink * a_k * s`` (n, `MAX_DRIFT_STEPS`); the last trained step held beyond ``H``."""
        a, scale, ok = self.drift_units(ctx)
        d = self.spec.shrink * a * scale[:, None]
        d[~ok] = 0.0
        steps = np.minimum(np.arange(MAX_DRIFT_STEPS), d.shape[1] - 1)
        return {"drift": d[:, steps]}


def _build_net(spec: MambaTrend, n_static: int, horizon: int, generator: Any = None, backend: str | None = None) -> Any:
    from aetheris_ray.components.mamba.module import MambaDriftNet

    return MambaDriftNet(N_CHANNELS, n_static, horizon, spec.d_model, spec.d_state, spec.expand, spec.layers,
                         spec.max_sigma, generator=generator, backend=backend or spec.backend)


MambaTrend.fitted_cls = FittedMamba
