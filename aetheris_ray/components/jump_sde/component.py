"""The neural jump SDE (kind ``paths``, variant ``jump_sde``): a whole-path generator, spec and fitted class.

It draws complete daily log-return paths itself and needs none of the four parts
(``parts = ()``).  Like ``rough_vol`` it is a trained artefact: the engine resolves
the registered version once and the composer hands it to ``fit(returns,
artefact=...)``; ``spec.fit(windows)`` / ``spec.trainer(windows)`` train it.

The model (`module` has the equations)
--------------------------------------
State ``(x, j)``: ``x`` the log of the diffusion's daily variance, ``j`` the recent
jump activity.  Conditioning per origin: the regime vector (``n_regime`` entries,
zero-padded or cut) and the MM indices (NaN -> 0), standardised with the training
windows' mean and std (a feature constant in training is fed as 0), and the
anchor ``a``: the log mean square of the origin's last ``lookback`` returns, which
scales the drift and the jump sizes (``s_a = exp(a / 2)``) and centres ``x``.

One small MLP of ``(x - a, j, conditioning)`` gives every part of the SDE:

* drift of the state between jumps, ``dx/ds = kappa (m - x)``, and of the returns,
  ``mu``; diffusion ``exp(x / 2) dW`` (``x`` moves by the network between jumps and by
  the day's news at its end: the vol of vol);
* jump intensity ``lam`` (below ``LAM_MAX = 1`` per day) and jump sizes
  ``N(jump_mean, jump_sd^2)``;
* self-excitation: a jump raises ``x`` by ``raise`` and ``j`` by 1 (``j`` decays at
  ``jump_decay`` per day and feeds back into ``lam``), and the news gain ``gain``.

Between the daily updates the state follows the ODE, integrated with
``torchdiffeq.odeint`` (fixed-step ``rk4``, torchdiffeq's 3/8-rule RK4, ``substeps``
steps per day, default 1: ``kappa <= 0.5`` per day, so one RK4 step errs by about
``kappa^5 / 120 < 3e-4`` of the state's deviation, while each sub-step costs five
network evaluations per path (four stages and the intensity at its end; one more per
day at the start), which the speed target does not allow more of; explicit Euler at
one step would instead get the day's integrated variance wrong by ``O(kappa)``).  Jump
times come from thinning: ``Poisson(LAM_MAX)`` candidates per day at uniform times,
each kept with probability ``lam(t) / LAM_MAX`` on the ODE path (``lam`` linear
between the sub-step grid values).  A jump's effect on the state is applied at the
day's end, through the same update the likelihood uses.

Likelihood (what training maximises)
------------------------------------
Given the day's start state the return is a Poisson mixture of normals over ``0..K``
jumps (``K = max_jumps``), closed form.  The state is updated with the day's return
only through ``E[N | r]`` (jump rise) and ``E[diffusive part^2 | r]`` (news), so it
is a deterministic function of the past returns: the likelihood is exact, and the
simulation applies the same update to the simulated returns.  2h bars: on days with
intraday realised variance (training windows' ``x_has_rv`` days, ``Context.rv`` at
forecast time) the filter's news is the realised variance instead of the posterior
squared diffusive part; the density is always that of the daily return.  Training
windows: the filter runs over the window's last ``lookback`` input returns from
``x = a, j = 0`` and the NLL is scored on its ``horizon`` target days (one-step-ahead
densities, the anchor known at the origin); ``val_ql`` is that NLL per day on the
validation windows, whose origins come after the training windows' targets.

Float64 in training and in ``condition``; the simulation runs a float32 copy of the
network (returned paths are float64).  torch is imported lazily (inside methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components.base import MM_KEYS, Context, FittedBase, SpecBase
from aetheris_ray.components.offload import network
from aetheris_ray.components.rough_vol.component import fit_regime, standardise
from aetheris_ray.errors import InvalidInput, ModelNotFound

__all__ = ["JumpSdePaths", "FittedJumpSde", "context_inputs"]

NAME = "jump_sde"
#: Floor of the anchor's mean square (a flat or empty context).
_VAR_FLOOR = 1e-10
#: Keys of ``shared`` besides the network weights (``w.<name>``).
_SHARED = ("feat_mean", "feat_std")


def context_inputs(ctx: Context, lookback: int, n_regime: int) -> dict[str, Any]:
    """What the filter takes from a `Context` (the one featuriser of training and use).

    Returns
    -------
    dict with ``returns``, ``valid`` (n, L) (the last ``L = min(lookback, ctx.lookback)``
    days), ``rv`` (n, L) or None (2h-bar realised variance, NaN where absent),
    ``anchor`` (n,) (log mean square of the valid returns, floored), ``cond`` (n,
    n_regime + 3) raw conditioning (regime vector, MM indices with NaN -> 0).
    """
    lb = min(int(lookback), ctx.lookback)
    r = np.asarray(ctx.returns, dtype=float)[:, -lb:]
    valid = np.asarray(ctx.valid, dtype=bool)[:, -lb:]
    r = np.where(valid, r, 0.0)
    ms = np.square(r).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    rv = None
    if ctx.rv is not None:
        x = np.asarray(ctx.rv, dtype=float)[:, -lb:]
        rv = np.where(valid & np.isfinite(x) & (x > _VAR_FLOOR), x, np.nan)
    mm = np.nan_to_num(np.asarray(ctx.mm, dtype=float).reshape(ctx.size, len(MM_KEYS)), nan=0.0)
    reg = fit_regime(ctx.regime_vector, n_regime, ctx.size)
    cond = mm if reg is None else np.concatenate([reg, mm], axis=1)
    return {"returns": r, "valid": valid, "rv": rv, "anchor": np.log(np.maximum(ms, _VAR_FLOOR)), "cond": cond}


@dataclass(frozen=True)
class JumpSdePaths(SpecBase):
    """Spec of the neural jump SDE (see the module docstring).

    Attributes
    ----------
    lookback : int      days the filter runs over before the origin (<= the windows' lookback in training)
    hidden, layers : network size
    substeps : int      RK4 steps per day (torchdiffeq ``rk4``)
    max_jumps : int     largest jump count of the daily Poisson mixture
    jump_decay : float  decay per day of the jump activity ``j``
    lr, weight_decay, batch_size, max_steps : training
    val_fraction : float share of the latest origin dates held out for validation
    seed : int
    """

    lookback: int = 64
    hidden: int = 16
    layers: int = 1
    substeps: int = 1
    max_jumps: int = 5
    jump_decay: float = 0.1
    lr: float = 5e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_steps: int = 300
    val_fraction: float = 0.2
    seed: int = 0

    kind: ClassVar[str] = "paths"
    name: ClassVar[str] = NAME
    parts: ClassVar[tuple[str, ...]] = ()
    requires_torch: ClassVar[bool] = True
    fit_inputs: ClassVar[tuple[str, ...]] = ("artefact",)
    fitted_cls: ClassVar[type]

    def __post_init__(self) -> None:
        self._check(int(self.lookback) >= 2, f"lookback={self.lookback!r} must be at least 2")
        self._check(int(self.hidden) >= 1 and int(self.layers) >= 1,
                    f"hidden={self.hidden!r}, layers={self.layers!r} must be at least 1")
        self._check(1 <= int(self.substeps) <= 16, f"substeps={self.substeps!r} must lie in 1..16")
        self._check(1 <= int(self.max_jumps) <= 20, f"max_jumps={self.max_jumps!r} must lie in 1..20")
        self._check(0.0 <= float(self.jump_decay) <= 5.0, f"jump_decay={self.jump_decay!r} must lie in [0, 5]")
        self._check(0.0 < float(self.val_fraction) < 1.0, f"val_fraction={self.val_fraction!r} must lie in (0, 1)")

    def fit(self, data: Any, *, artefact: "FittedJumpSde | None" = None, **inputs: Any) -> "FittedJumpSde":
        """Two routes, chosen by the input.

        * ``data`` is a dict of window columns (`aetheris_ray.windows`): train the
          network by likelihood (pooled over the windows' assets).
        * the engine's route: ``data`` are an origin's daily returns and ``artefact``
          the registered `FittedJumpSde`; it is used as it is (never retrained per origin).
        """
        if isinstance(data, dict):
            return self.trainer(data).fit_all()
        if artefact is None:
            raise InvalidInput("jump_sde.fit(returns): no trained artefact given; the engine passes the "
                               "registered version (train one with `aetheris tune --component jump_sde`)")
        return artefact

    def trainer(self, windows: dict[str, np.ndarray]) -> Any:
        """The training loop over ``windows`` (`training.Trainer`, the `contract.Trainer` Tune drives)."""
        from aetheris_ray.components.jump_sde.training import Trainer

        return Trainer(windows, self)


@dataclass(frozen=True, eq=False)
class FittedJumpSde(FittedBase):
    """A trained jump SDE: ``shared`` holds ``feat_mean`` / ``feat_std`` and the network (``w.<name>``).

    No per-fit ``params``: the same network serves every origin; the per-origin state
    ``(x, j)``, anchor and conditioning come from `condition`.
    """

    kind: ClassVar[str] = "paths"
    name: ClassVar[str] = NAME
    parts: ClassVar[tuple[str, ...]] = ()
    requires_torch: ClassVar[bool] = True

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_weights(cls, spec: JumpSdePaths, feat_mean: np.ndarray, feat_std: np.ndarray,
                     weights: dict[str, np.ndarray], info: dict[str, Any] | None = None) -> "FittedJumpSde":
        shared = {"feat_mean": np.asarray(feat_mean, dtype=float), "feat_std": np.asarray(feat_std, dtype=float)}
        shared.update({f"w.{k}": np.asarray(v) for k, v in weights.items()})
        return cls(spec=spec, params={}, info=dict(info or {}), shared=shared)

    @classmethod
    def from_params(  # type: ignore[override]
        cls,
        *,
        weights: dict[str, np.ndarray] | None = None,
        feat_mean: np.ndarray | None = None,
        feat_std: np.ndarray | None = None,
        seed: int = 0,
        n_regime: int = 0,
        info: dict[str, Any] | None = None,
        **spec: Any,
    ) -> "FittedJumpSde":
        """A fitted part from given weights (tests); ``weights=None`` = the seeded untrained network."""
        sp = JumpSdePaths(seed=seed, **spec)
        n_cond = int(n_regime) + len(MM_KEYS)
        if weights is None:
            from aetheris_ray.components.jump_sde.module import JumpSdeNet
            from aetheris_ray.components.torch_utils import make_generator

            net = JumpSdeNet(n_cond, sp.hidden, sp.layers, generator=make_generator(seed)).double()
            weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
        return cls.from_weights(sp, np.zeros(n_cond) if feat_mean is None else feat_mean,
                                np.ones(n_cond) if feat_std is None else feat_std, weights, info)

    # -- what was learned -----------------------------------------------------------

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
    def n_regime(self) -> int:
        """Regime-vector length the network takes (0: not conditioned on the regime)."""
        return int(self.feat_mean.size) - len(MM_KEYS)

    @property
    def tiltable(self) -> bool:
        """Importance sampling tilts the diffusion innovation ``z`` of each day (a Gaussian mean shift)."""
        return True

    def _net(self, single: bool = False) -> Any:
        """The network (float64; ``single``: a float32 copy for simulation), built once."""
        key = "_net32" if single else "_net64"
        net = self.__dict__.get(key)
        if net is None:
            import torch

            from aetheris_ray.components.jump_sde.module import JumpSdeNet

            net = JumpSdeNet(int(self.feat_mean.size), self.spec.hidden, self.spec.layers)
            net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in self.weights.items()})
            net = net.float() if single else net.double()
            net.eval()
            object.__setattr__(self, key, net)
        return net

    def check_loaded(self) -> None:
        """Build the network from the loaded weights now (a shape or key mismatch is a corrupt artefact)."""
        self.check_artefact(_SHARED, self._net, "the network from the weights")
        if self.n_regime < 0:
            raise ModelNotFound("jump_sde artefact: fewer conditioning entries than this version reads; "
                                "the artefact is corrupt")

    def _kw(self) -> dict[str, Any]:
        return {"substeps": int(self.spec.substeps), "decay": float(self.spec.jump_decay)}

    # -- the verbs ------------------------------------------------------------------

    def condition(self, ctx: Context) -> dict[str, np.ndarray]:
        """The filtered state at each origin: ``x``, ``j``, ``anchor`` (n,) and the standardised ``cond`` (n, n_c)."""
        inp = context_inputs(ctx, self.spec.lookback, self.n_regime)
        c = standardise(inp["cond"], self.feat_mean, self.feat_std)
        x, j = self._filter(c, np.asarray(inp["anchor"], dtype=float), inp["returns"], inp["valid"], inp["rv"])
        return {"x": x, "j": j, "anchor": np.asarray(inp["anchor"], dtype=float), "cond": c}

    @network(merge=True)
    def _filter(self, c: np.ndarray, anchor: np.ndarray, returns: np.ndarray, valid: np.ndarray,
                rv: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The observation-driven filter over each origin's past (n rows): the state ``x`` and ``j`` at the origin."""
        import torch

        from aetheris_ray.components.jump_sde.module import as_tensor, run_filter

        with torch.no_grad():
            x, j, _ = run_filter(self._net(), as_tensor(c), as_tensor(anchor), as_tensor(returns),
                                 torch.as_tensor(valid), None if rv is None else as_tensor(rv),
                                 max_jumps=int(self.spec.max_jumps), score_from=returns.shape[1], **self._kw())
        return x.numpy(), j.numpy()

    def _rows(self, cond: dict, n_paths: int, horizon: int) -> tuple[Any, ...]:
        """Per-path float32 tensors ``c, anchor, x, j`` (n m rows, origin-major) for the simulation."""
        import torch

        if not (isinstance(n_paths, (int, np.integer)) and n_paths >= 1):
            raise InvalidInput(f"n_paths={n_paths!r}: must be an integer >= 1")
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise InvalidInput(f"horizon={horizon!r}: must be an integer >= 1")
        m = int(n_paths)

        def rows(a: Any) -> Any:
            return torch.as_tensor(np.repeat(np.asarray(a, dtype=np.float32), m, axis=0))

        return rows(cond["cond"]), rows(cond["anchor"]), rows(cond["x"]), rows(cond["j"])

    @network()
    def _simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator,
                  eta: FloatArray | None) -> tuple[FloatArray, FloatArray]:
        import torch

        from aetheris_ray.components.jump_sde.module import simulate_days

        c, anchor, x, j = self._rows(cond, n_paths, horizon)
        n = int(np.shape(cond["x"])[0])
        with torch.no_grad():
            out, log_lr = simulate_days(self._net(single=True), c, anchor, x, j, int(horizon), rng,
                                        max_jumps=int(self.spec.max_jumps), eta=eta, **self._kw())
        return out.reshape(n, int(n_paths), int(horizon)), log_lr.reshape(n, int(n_paths))

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Daily log-return paths, shape (n_origins, n_paths, horizon), float64."""
        return self._simulate(cond, n_paths, horizon, rng, None)[0]

    def simulate_tilted(self, cond: dict, n_paths: int, horizon: int, eta: FloatArray,
                        rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """`simulate` with each day's diffusion innovation drawn from ``N(eta_t, 1)``; ``eta`` (n, h).

        The jumps and the state's feedback run unchanged on the tilted returns, so the
        paths' log likelihood ratio (n, m) is that of the innovations alone:
        ``sum_t (eta_t^2 / 2 - eta_t z_t)``.
        """
        n = int(np.shape(cond["x"])[0])
        e = np.broadcast_to(np.asarray(eta, dtype=float).reshape(-1, int(horizon)), (n, int(horizon)))
        return self._simulate(cond, n_paths, horizon, rng, np.repeat(e, int(n_paths), axis=0))

    @network()
    def _skeleton(self, cond: dict, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from aetheris_ray.components.jump_sde.module import as_tensor, skeleton

        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise InvalidInput(f"horizon={horizon!r}: must be an integer >= 1")
        with torch.no_grad():
            return skeleton(self._net(), as_tensor(cond["cond"]), as_tensor(cond["anchor"]), as_tensor(cond["x"]),
                            as_tensor(cond["j"]), int(horizon), **self._kw())

    def drift(self, cond: dict, horizon: int) -> FloatArray:
        """Mean daily return along the noise-free path (state moved by the ODE and the expected jumps), (n, 1, h)."""
        return self._skeleton(cond, horizon)[0][:, None, :]

    def tilt_profile(self, cond: dict, horizon: int) -> tuple[float, FloatArray]:
        """``(sum of the daily drift, daily return sd along the noise-free path (h,))`` of origin 0."""
        mean, sd = self._skeleton(cond, horizon)
        return float(mean[0].sum()), sd[0]

    def day_params(self, cond: dict) -> dict[str, np.ndarray]:
        """The first forecast day's ``Lam`` (expected jumps), ``jump_mean``, ``jump_sd``, ``V``, ``M``,
        ``raise`` and ``gain`` per origin, each (n,)."""
        import torch

        from aetheris_ray.components.jump_sde.module import Dynamics, as_tensor, day_step

        anchor = as_tensor(cond["anchor"])
        net = self._net()
        with torch.no_grad():
            dyn = Dynamics(net, net.embed(as_tensor(cond["cond"])), anchor, torch.exp(0.5 * anchor),
                           float(self.spec.jump_decay))
            d = day_step(dyn, as_tensor(cond["x"]), as_tensor(cond["j"]), int(self.spec.substeps))
        return {k: d[k].numpy().copy() for k in ("Lam", "jump_mean", "jump_sd", "V", "M", "raise", "gain")}


JumpSdePaths.fitted_cls = FittedJumpSde
