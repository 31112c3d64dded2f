"""Drivers of a forecast by integrated gradients (explainer variant ``integrated_gradients``).

The fitted model at the origin is re-expressed in torch as a function of its input
blocks, with every fitted parameter held fixed, and each output is attributed to
the blocks by integrated gradients (Sundararajan et al. 2017).

Differentiable forecast (`DifferentiableForecast`)
--------------------------------------------------
The inputs reach the cone through two things only, which the forecast computes first
(the *interface*, shape (k, h + sum of the members' dims)):

* the trend part's drift path (h,): ``ar_es`` re-run in torch over the context (rolling
  mean, exponential-smoothing and AR experts, EWA weights, shrink and clip at
  ``max_sigma`` EWMA volatilities); a ``mamba`` trend's network, already torch, run in
  float64 on its inputs recomputed in torch (`mamba.component.sequence_inputs`: the
  window's returns scaled by their EWMA volatility, the log-vol channel from returns,
  ranges or intraday rv, log implied vol, and the origin's volatility, regime vector and
  MM indices), so implied vol and the MM indices get attributions through it; or zero;
* each volatility member's variance for the first simulated day (K,): the GARCH,
  range-GARCH (pooled included) and EWMA filters are linear recursions, so their last
  value is a closed-form weighted sum of the squared returns / the range proxy
  ``k * range variance`` (which bars count as observed is the actual input's, held
  fixed); a fixed-weight blend keeps its weights, an online one's weights are
  recomputed from its members' discounted one-step QLIKE over the context and become
  interface columns;
* a range-HAR member's (``range_har``, ``pooled_har``) whole variance path (h,): each
  day's log-HAR regressors (trailing means of the range proxy), its extra regressors
  (the weekly mean of intraday rv, the implied vol, the weekly mean of the market
  asset's range variance, or the fitted stand-ins where one is unobserved), one direct
  regression per anchor horizon and the interpolation of `range_vol.variance_path`;
* a ``rough_vol`` member's four rough-fOU parameters (x0, m, nu, kappa): its network,
  already torch, run in float64 on its features recomputed in torch from the last
  ``lookback`` returns, intraday realised variance and the regime vector
  (`rough_vol.component.network_inputs`); its variance path ``exp(2 X)`` is driven by
  fBm increments drawn once from the volatility stream, as ``vol_paths`` draws them.

From the interface, the paths are ``drift + sigma z`` with the volatility recursion's
feedback re-run in torch on innovations ``z`` drawn once by the fitted residual part
(common random numbers: `N_PATHS` paths, seeded by the origin's day number, drawn
exactly as the composed path model draws them, so at the actual input the paths are
the engine's own for that stream).  Outputs, in log-return units:

* ``p50`` (h,): the calibrated median of the cumulative log-return per step;
* ``width80`` (h,): calibrated ``q90 - q10`` per step;
* ``upside`` / ``downside`` (scalars): ``q95 - q50`` and ``q50 - q05`` at the last step;
* ``p_below`` / ``p_above`` (one per request threshold): calibrated P(price < K) and
  P(price >= K) at the last step.  The raw probability is the conditional Monte Carlo
  estimate ``mean_paths F((log(K / spot) - C_{h-1} - d_h) / sigma_h)``, ``F`` the
  residuals' unit-variance CDF: smooth in the inputs, unlike the indicator.

The calibration level map enters as fixed raw levels (quantiles: the conditional quantile
at the map's raw level of each step) and, for thresholds, after the attribution: the
differentiable forecast gives raw probabilities, and the calibrated value and its
attributions follow through the map (`DifferentiableForecast.calibrate`: attributions
times the map's secant slope between the baseline's and the input's raw probability,
which keeps completeness exact and keeps the map's kinks out of the quadrature).  The
regime label selects the map and is held at the actual state's, so no block is credited
with a change of regime.  Monotone
rearrangement of quantile levels and the variance floor inside the engine's
recursions are not modelled (they bind only in degenerate cases).

Agreement with the engine: at the actual input the torch paths equal the composed
model's ``simulate`` on the same stream to float rounding (a test checks 1e-10), and
its quantiles and threshold probabilities agree with the engine's Monte Carlo answer
within Monte Carlo error (a test checks the median and the 80 % width within 10 % of
the width, probabilities within 0.03).

Input blocks, baselines and what is not in the model
----------------------------------------------------
`BLOCKS`: ``price_history`` (daily log-returns of the context), ``realised_vol`` (the
daily bars' ``ln(H/L)``, ``ln(C/O)``, and intraday realised variance where a rough-vol
network, a mamba trend or a range-HAR reads it), ``implied_vol``, ``funding_basis``,
``mm_indices``, ``macro`` (and the market asset's range a range-HAR reads), ``onchain``.
A rough-vol network also reads the regime vector; each entry counts to its block
(`REGIME_BLOCK`: implied-vol percentile and spread, funding / basis percentiles, the
three MM indices, the realised-vol and price descriptors), the vector taken as an input
in its own right.  Baseline (neutral) input:

* returns: the mean return plus deviations of one magnitude per sign with the actual
  signs (balanced: the mean is kept), at the context's standard deviation: the same up /
  down days at constant volatility, no clustering, no recent-volatility level (per
  segment, `baseline_inputs`: a deviation keeps its sign along the path);
* intraday realised variance (rough-vol only): its mean on the days that have it;
* regime vector (rough-vol and mamba only): 0, the vector's neutral value;
* implied vol (mamba and a range-HAR's ``iv`` regressor): its mean over the days read;
  MM indices: 0;
* ranges: on observed bars, ``ln(H/L)`` and ``ln(C/O)`` at their root-mean-square over
  the context (constant range variance at its average); the market asset's ``ln(H/L)``
  (a range-HAR's ``market`` regressor) likewise.

The market's range counts to ``macro`` (market-wide, as in the surrogate), except for
the market asset itself, whose own range it is (``realised_vol``).

Blocks that no configured part reads get attribution 0 and are listed in
``inputs.not_in_model``: nothing is invented for them.  With the default model that is
implied vol, funding / basis, MM indices, macro and on-chain (they shape only the
regime vector, which GARCH / range-GARCH / ar_es ignore, and the regime label, held
fixed); macro and on-chain are in no supported part at all.

Integrated gradients and completeness
-------------------------------------
``IG_j = (x_j - x0_j) * integral_0^1 dF/dx_j(x0 + t (x - x0)) dt`` by Gauss-Legendre
with ``steps`` nodes (8 to start), all nodes in one batch; the Jacobian is the chain rule
through the interface: one reverse-mode pass per interface entry (h + K) for d interface
/ d inputs, and d outputs / d interface by forward tangents (`DifferentiableForecast.jacobian`).
Conditional-MC quantiles and probabilities make F smooth, so 8 nodes usually meet the
tolerance.  Completeness error per output: ``|sum_j IG_j - (F(x) - F(x0))|``; tolerance
``RTOL * |F(x) - F(x0)| + ATOL`` (1 % + 1e-6).  When an output exceeds it, the nodes are
doubled up to ``max_steps`` (64); what remains is reported (``completeness_within_tolerance``
False and a warning).

Speed (one thread, 14-day horizon, two thresholds, 8 nodes, BTC-USD 2024-06-30, on a
2-core machine shared at load 6-9, so upper bounds): 0.6-1.2 s with 1,000 paths,
1.0-1.9 s with `N_PATHS` = 2,000, 4-8 s with 10,000; about half of it is the quantile
roots (Newton on the conditional mixtures).

Fallback
--------
A configured part with no torch expression here (jumps other than ``none``, an
online-weighted blend with a rough-vol member, a rough-vol member with less than its
lookback of returns, residuals other than Student-t and Gaussian (``fhs``, ``fm_gp``),
a path model other than ``composed`` (``jump_sde``)) or a missing torch: the surrogate explainer answers,
``method = "surrogate"``, ``completeness_error = None``, and a warning says why.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from aetheris_ray._typing import FloatArray
from aetheris_ray.components.base import MM_KEYS, VAR_FLOOR, Context
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.state import MarketState

__all__ = [
    "BLOCKS", "METHOD", "RTOL", "ATOL", "N_PATHS", "Unsupported", "DifferentiableForecast", "baseline_inputs",
    "integrated_gradients", "explain_model", "IntegratedGradientsExplainer",
]

METHOD = "integrated_gradients"
#: Input blocks, in the order of the answer.
BLOCKS = ("price_history", "realised_vol", "implied_vol", "funding_basis", "mm_indices", "macro", "onchain")
#: The block of each regime-vector entry (`features.regime.REGIME_FEATURES`), for parts that read the vector.
REGIME_BLOCK = {
    "vol_pct_z": "realised_vol", "vol_ratio": "realised_vol", "vol_of_vol": "realised_vol",
    "drawdown": "price_history", "drawdown_pct_z": "price_history", "trend_30": "price_history",
    "trend_90": "price_history", "history": "price_history",
    "iv_pct_z": "implied_vol", "iv_rv_spread": "implied_vol", "skew": "implied_vol",
    "funding_pct_z": "funding_basis", "basis_pct_z": "funding_basis", "derivatives_coverage": "funding_basis",
    "gamma_squeeze": "mm_indices", "inventory_unwind": "mm_indices", "basis_pressure": "mm_indices",
}
#: Completeness tolerance: ``RTOL * |F(x) - F(x0)| + ATOL`` per output.
RTOL = 0.01
ATOL = 1e-6
#: Paths of the differentiable forecast (common random numbers).
N_PATHS = 2000
#: Calibrated levels the outputs read: q05, q10, q50, q90, q95.
LEVELS = (0.05, 0.1, 0.5, 0.9, 0.95)
TOP_K = 3
_LN2 = float(np.log(2.0))


class Unsupported(Exception):
    """The configured model has a part with no torch expression here (the message says which)."""


# -- the parts in torch ---------------------------------------------------------------------------


def _powers_matrix(c: float, pos: np.ndarray, length: int) -> np.ndarray:
    """``M[i, s] = c ** (pos[i] - s)`` for ``s <= pos[i]``, else 0: shape (len(pos), length)."""
    d = pos[:, None] - np.arange(length)[None, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.where(d >= 0, np.power(float(c), np.maximum(d, 0).astype(float)), 0.0)
    return out


def _rolling_sum(x: Any, w: int) -> Any:
    """Trailing sums over ``w`` entries along axis 1 (fewer at the start), torch."""
    import torch

    c = torch.cumsum(x, dim=1)
    if c.shape[1] <= w:
        return c
    return torch.cat([c[:, :w], c[:, w:] - c[:, :-w]], dim=1)


def _range_variance_t(log_hl: Any, log_co: Any = None, estimator: str = "parkinson") -> Any:
    """`range_vol.range_variance` on torch tensors (the same two estimators)."""
    if estimator == "parkinson":
        return log_hl * log_hl / (4.0 * _LN2)
    return 0.5 * log_hl * log_hl - (2.0 * _LN2 - 1.0) * log_co * log_co


def _trailing_mean_t(x: Any, ok: np.ndarray, width: int) -> tuple[Any, np.ndarray]:
    """`range_vol._trailing_mean` in torch with the observed entries ``ok`` (L,) fixed: the mean of ``x``
    (k, L) over each day's trailing ``width`` observed entries (1 where there are none) and their counts."""
    import torch

    z = torch.where(torch.as_tensor(ok), x, 0.0)
    cs = torch.cumsum(torch.cat([torch.zeros_like(z[:, :1]), z], dim=1), dim=1)
    hi = np.arange(1, ok.size + 1)
    lo = np.maximum(hi - width, 0)
    n = _trailing_count(ok, width)
    total = cs[:, hi] - cs[:, lo]
    return torch.where(torch.as_tensor(n > 0), total / torch.as_tensor(np.maximum(n, 1), dtype=x.dtype), 1.0), n


def _trailing_count(ok: np.ndarray, width: int) -> np.ndarray:
    """How many of the trailing ``width`` entries of ``ok`` (L,) are true, at each day: the count
    `range_vol._trailing_mean` divides by."""
    from aetheris_ray.components.range_vol import _trailing_mean

    return _trailing_mean(np.where(ok, 0.0, np.nan), width)[1]


@dataclass(frozen=True)
class _Member:
    """One volatility recursion ``v' = omega + alpha x + beta v`` (filter on ``x``, paths on ``r^2``)."""

    omega: float
    alpha: float
    beta: float
    proxy: str  # "returns" (r^2), "range" (k * range variance where observed), "rough" (the network), "har"
    k: float = 1.0
    estimator: str = "parkinson"
    feedback: bool = True  # False: the variance is held along the paths (EWMA, path_dependent=False)
    rough: Any = None  # the FittedRoughVol of a "rough" member
    har: Any = None  # the FittedRangeHar of a "har" member (its variance path is fixed at the origin)
    steps: int = 0  # a "har" member's interface entries: its variance on each step
    extras: tuple = ()  # a "har" member's extra regressors ("rv", "iv", "market")
    iv_premium: float = 0.0  # ... and the fitted log gaps that stand in where one is unobserved
    market_premium: float = 0.0

    @property
    def dims(self) -> int:
        """Interface entries: the first day's variance, the rough fOU's x0, m, nu, kappa, or a range-HAR's
        variance on each step."""
        return 4 if self.rough is not None else (self.steps if self.har is not None else 1)


def _members(vol: Any, ctx: Context, horizon: int) -> tuple[list[_Member], np.ndarray]:
    """The volatility part as linear recursions (or a range-HAR's fixed variance path over ``horizon``
    steps) and their weights (K,); `Unsupported` otherwise."""
    from aetheris_ray.components.range_vol import FittedRangeGarch, FittedRangeHar
    from aetheris_ray.components.rough_vol.component import FittedRoughVol
    from aetheris_ray.components.volatility import FittedBlend, FittedEwma, FittedGarch

    def one(part: Any) -> _Member:
        if isinstance(part, FittedRoughVol):
            return _Member(0.0, 0.0, 1.0, "rough", feedback=False, rough=part)
        p = {k: float(np.asarray(v, dtype=float).ravel()[0]) for k, v in part.params.items()
             if np.asarray(v).ndim <= 1 and np.size(v) == 1}
        if isinstance(part, FittedRangeGarch):
            return _Member(p["omega"], p["alpha"], p["beta"], "range", p["k"], part.spec.estimator)
        if isinstance(part, FittedRangeHar):
            valid = ctx.valid[0]
            if valid[-22:].sum() < 5 or not valid[-1]:
                raise Unsupported(f"volatility {part.name!r}: fewer than 5 returns in the last 22 days")
            return _Member(0.0, 0.0, 1.0, "har", p["k"], part.spec.estimator, feedback=False, har=part,
                           steps=int(horizon), extras=tuple(part.spec.extras),
                           iv_premium=p.get("iv_premium", 0.0), market_premium=p.get("market_premium", 0.0))
        if isinstance(part, FittedGarch):
            return _Member(p["omega"], p["alpha"], p["beta"], "returns")
        if isinstance(part, FittedEwma):
            return _Member(0.0, 1.0 - p["lam"], p["lam"], "returns", feedback=bool(part.spec.path_dependent))
        raise Unsupported(f"volatility {part.name!r} has no torch expression here")

    if isinstance(vol, FittedBlend):
        members = [one(c) for c in vol.children]
        if vol.spec.weighting != "fixed" and any(mb.rough is not None for mb in members):
            raise Unsupported("volatility 'blend' with online weights and a rough_vol member has no "
                              "torch expression here")
        return members, np.asarray(vol.weights(ctx), dtype=float)[0]
    return [one(vol)], np.ones(1)


@dataclass(frozen=True)
class _Online:
    """An online blend's weighting (`FittedBlend.weights`): prior weights and the discounted one-step QLIKE
    of each member over the last ``n`` returns."""

    base: np.ndarray  # (K,) prior weights
    eta: float
    decay: float
    n: int


#: Knots of the tabulated unit-t CDF (uniform over +-`T_CLIP`: spacing 0.005).
CDF_KNOTS = 16001


@functools.lru_cache(maxsize=16)
def _t_cdf_table(nu: float) -> tuple[float, float, Any]:
    """Cubic pieces of the unit-variance Student-t CDF on a uniform grid over +-`T_CLIP`.

    Returns ``(x0, dx, coef)``: ``coef`` (n_knots - 1, 4) float64 torch tensor, the
    Hermite cubic ``c0 + c1 tau + c2 tau^2 + c3 tau^3`` of each interval (``tau`` in [0, 1])
    through the exact CDF values and densities at its ends.
    """
    import torch
    from scipy import special

    from aetheris_ray.components._innovations import T_CLIP

    s = float(np.sqrt(nu / (nu - 2.0)))
    x = np.linspace(-T_CLIP, T_CLIP, CDF_KNOTS)
    dx = float(x[1] - x[0])
    log_c = special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)
    F = special.stdtr(nu, x * s)
    m = s * np.exp(log_c - 0.5 * (nu + 1) * np.log1p((x * s) ** 2 / nu)) * dx
    f0, f1, m0, m1 = F[:-1], F[1:], m[:-1], m[1:]
    coef = np.stack([f0, m0, 3 * (f1 - f0) - 2 * m0 - m1, 2 * (f0 - f1) + m0 + m1], axis=1)
    return float(x[0]), dx, torch.as_tensor(coef)


def _unit_cdf(x: Any, nu: float | None, density: bool = False) -> Any:
    """CDF (or, ``density=True``, its derivative; ``density=None``: both) of the unit-variance residual
    distribution, torch.

    Student-t at ``nu``: the cubic Hermite interpolant of exact values and densities at
    `CDF_KNOTS` knots (error below 1e-10), in plain torch operations, so reverse and
    forward mode differentiate the function itself; 0 and 1 beyond +-`T_CLIP` (the
    engine's clip).  Normal when ``nu`` is None.
    """
    import torch

    if nu is None:
        pdf = torch.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
        return pdf if density else (torch.special.ndtr(x), pdf) if density is None else torch.special.ndtr(x)
    x0, dx, coef = _t_cdf_table(float(nu))
    pos = (torch.clamp(x, x0, -x0) - x0) / dx
    j = torch.clamp(pos.detach().long(), 0, coef.shape[0] - 1)
    tau = pos - j.to(x.dtype)
    c0, c1, c2, c3 = coef.to(x.dtype)[j].unbind(-1)
    if density is not False:
        pdf = torch.where((x > x0) & (x < -x0), (c1 + tau * (2 * c2 + 3 * tau * c3)) / dx, 0.0)
        if density:
            return pdf
    cdf = c0 + tau * (c1 + tau * (c2 + tau * c3))
    return cdf if density is False else (cdf, pdf)


def _prob_map(level_map: Any, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(raw, calibrated)`` knots of the level map's raw -> calibrated probability map at ``step``."""
    table = getattr(level_map, "table", None)
    if table is not None:
        from aetheris_ray.calibration import KNOTS

        return np.asarray(table(step), dtype=float), np.asarray(KNOTS, dtype=float)
    grid = np.linspace(0.0, 1.0, 4001)
    return grid, np.asarray(level_map.calibrated_prob(step, grid), dtype=float)


class DifferentiableForecast:
    """The fitted model at one origin as a torch function of the input blocks (module docstring).

    Parameters
    ----------
    model : FittedModel, batch 1, composed of supported parts (else `Unsupported`)
    ctx : Context, one origin (the actual input)
    level_map : the forecast's level map (`simulation.LevelMap`)
    horizon : int, h >= 1
    log_thresholds : ndarray, shape (T,), ``log(K / spot)``
    n_paths : int, m
    seed : int, seeds the innovations (drawn like `ComposedPaths.simulate` from ``default_rng(seed)``)
    """

    def __init__(self, model: Any, ctx: Context, level_map: Any, horizon: int, log_thresholds: FloatArray,
                 n_paths: int = N_PATHS, seed: int = 0) -> None:
        from aetheris_ray.components.jumps import FittedNoJumps
        from aetheris_ray.components.mamba.component import FittedMamba
        from aetheris_ray.components.paths import FittedComposedPaths
        from aetheris_ray.components.residuals import FittedGaussian, FittedStudentT
        from aetheris_ray.components.trend import FittedArEs, FittedZeroTrend

        if ctx.size != 1:
            raise InvalidInput(f"ctx: {ctx.size} origins, the differentiable forecast takes one")
        if int(horizon) < 1:
            raise InvalidInput(f"horizon={horizon!r}: must be at least 1")
        paths = model.paths
        if not isinstance(paths, FittedComposedPaths):
            raise Unsupported(f"paths {paths.name!r} has no torch expression here")
        parts = paths.by_kind()
        if not isinstance(parts["jumps"], FittedNoJumps):
            raise Unsupported(f"jumps {parts['jumps'].name!r} have no torch expression here")
        res, trend = parts["residuals"], parts["trend"]
        if not isinstance(res, (FittedStudentT, FittedGaussian)):
            raise Unsupported(f"residuals {res.name!r} have no torch expression here")
        if not isinstance(trend, (FittedArEs, FittedZeroTrend, FittedMamba)):
            raise Unsupported(f"trend {trend.name!r} has no torch expression here")
        self.trend = trend if isinstance(trend, FittedArEs) else None
        vol = parts["volatility"]
        self.members, self.weights = _members(vol, ctx, int(horizon))
        self.online = None  # the weights are interface columns (after the members') when they are online
        if getattr(vol, "name", "") == "blend" and vol.spec.weighting != "fixed":
            self.online = _Online(np.asarray(vol.params["weights"], dtype=float).reshape(-1), float(vol.spec.eta),
                                  float(vol.spec.decay), min(int(vol.spec.eval_days), ctx.lookback - 1))
        self.h, self.m = int(horizon), int(n_paths)
        self.ctx = ctx
        self.valid = ctx.valid[0].copy()
        self.L = int(self.valid.size)
        self.log_thresholds = np.asarray(log_thresholds, dtype=float).ravel()
        cond = res.condition(ctx)
        r_res, r_vol, _ = np.random.default_rng(seed).spawn(3)
        self.z = np.asarray(res.draw(cond, self.m, self.h, r_res), dtype=float)[0]  # (m, h)
        self._rough_setup(ctx, r_vol)
        self._mamba_setup(ctx, trend)
        self._har_setup(ctx)
        self.nu = float(np.asarray(cond["nu"]).ravel()[0]) if isinstance(res, FittedStudentT) else None
        from aetheris_ray.simulation import raw_grid

        self.raw_q = np.asarray(raw_grid(level_map, self.h, LEVELS), dtype=float)  # (h, 5)
        self.prob_map = _prob_map(level_map, self.h - 1)
        # fixed masks of the actual input
        rank = np.cumsum(self.valid)
        self.first = self.valid & (rank <= 30)
        q = self._range_var_np()
        self.range_mask = self.valid & np.isfinite(q) & (q > 0) if q is not None else np.zeros(self.L, dtype=bool)
        self._last_w = {}
        for mb in self.members:
            self._last_w[mb.beta] = _powers_matrix(mb.beta, np.array([self.L - 1]), self.L)[0]

    def _rough_setup(self, ctx: Context, r_vol: np.random.Generator) -> None:
        """Rough members: their fBm increments (drawn from the volatility stream in member order, as the
        blend's ``init_paths`` draws them), the network in float64, the rv mask and the regime length."""
        from aetheris_ray.components.rough_vol.component import _VAR_FLOOR
        from aetheris_ray.components.rough_vol.fbm import fbm_factor

        self.db: dict[int, np.ndarray] = {}
        self.nets: dict[int, Any] = {}
        self.n_regime = 0
        self.rv_mask = np.zeros(0, dtype=bool)
        for i, mb in enumerate(self.members):
            if mb.rough is None:
                continue
            lb = int(mb.rough.spec.lookback)
            if lb > self.L or not self.valid[-lb:].all():
                raise Unsupported(f"rough_vol needs {lb} returns of context (it uses a neutral start without them)")
            zz = r_vol.standard_normal((1, self.m, self.h))
            b = zz @ fbm_factor(self.h, mb.rough.hurst).T
            self.db[i] = np.diff(b, axis=-1, prepend=0.0)[0]
            self.nets[i] = copy.deepcopy(mb.rough._net()).double()
            self.n_regime = max(self.n_regime, mb.rough.n_regime)
        if self.db and ctx.rv is not None:
            rv = np.asarray(ctx.rv[0], dtype=float)
            self.rv_mask = np.isfinite(rv) & (rv > _VAR_FLOOR)

    def _mamba_setup(self, ctx: Context, trend: Any) -> None:
        """A mamba trend: its network in float64 and the masks of the days whose ranges, intraday rv and
        implied vol it reads (`mamba.component.sequence_inputs`).  Without ``lookback`` valid returns its
        drift is 0 whatever the inputs: then it counts as no trend."""
        from aetheris_ray.components.base import VAR_FLOOR
        from aetheris_ray.components.mamba.component import FittedMamba

        self.mamba = None
        self.hl_mask = np.zeros(self.L, dtype=bool)
        self.mamba_rv_mask = np.zeros(self.L, dtype=bool)
        self.iv_mask = np.zeros(self.L, dtype=bool)
        if not isinstance(trend, FittedMamba):
            return
        lb = int(trend.spec.lookback)
        if lb > self.L or not self.valid[-lb:].all():
            return
        self.mamba = trend
        self.mamba_net = copy.deepcopy(trend._net())
        self.n_regime = max(self.n_regime, trend.n_regime)
        window = np.arange(self.L) >= self.L - lb
        if ctx.log_hl is not None:
            hl = np.asarray(ctx.log_hl[0], dtype=float)
            self.hl_mask = window & np.isfinite(hl) & (hl > 0)
        if ctx.rv is not None:
            rv = np.asarray(ctx.rv[0], dtype=float)
            self.mamba_rv_mask = window & np.isfinite(rv) & (rv > VAR_FLOOR)
        if ctx.iv is not None:
            iv = np.asarray(ctx.iv[0], dtype=float)
            self.iv_mask = window & np.isfinite(iv) & (iv > 0)

    def _har_setup(self, ctx: Context) -> None:
        """Range-HAR members with extra regressors: the days whose intraday rv, implied vol and market
        range they read (finite and positive in the actual input; `range_vol._extra_x`)."""
        from aetheris_ray.components.range_vol import _is_market, _windowed

        self.har_extras = {x for mb in self.members for x in mb.extras}
        self.har_rv_mask = np.zeros(self.L, dtype=bool)
        self.har_iv_mask = np.zeros(self.L, dtype=bool)
        self.market_mask = np.zeros(self.L, dtype=bool)
        for name, series, mask in (("rv", ctx.rv, "har_rv_mask"), ("iv", ctx.iv, "har_iv_mask"),
                                   ("market", ctx.market, "market_mask")):
            if name in self.har_extras and series is not None:
                x = np.asarray(series[0], dtype=float)
                setattr(self, mask, np.isfinite(x) & (x > 0))
        # the market's range is a market-wide input (the surrogate's macro block), except for the market
        # asset itself, whose own range it is
        r = ctx.returns[0]
        own = ctx.market is not None and _is_market(r, ctx.log_hl, _windowed(r, ctx.market[0], self.L), self.L)
        self.market_block = "realised_vol" if own else "macro"
        # the days a range-HAR has regressors for: 5 observed days in the month and one in the week
        self._har_rows = (_trailing_count(self.valid, 22) >= 5) & (_trailing_count(self.valid, 5) > 0)

    def _networks(self) -> bool:
        """Whether a network part (rough_vol, mamba) reads the intraday rv and the regime vector."""
        return bool(self.db) or self.mamba is not None

    def _reads(self, name: str) -> bool:
        """Whether some part reads the input ``name`` (``rv``, ``iv``, ``market``)."""
        if name == "rv":
            return self._networks() or "rv" in self.har_extras
        if name == "iv":
            return self.mamba is not None or "iv" in self.har_extras
        return name in self.har_extras

    @property
    def rv_read(self) -> np.ndarray:
        """Days whose intraday rv some part reads."""
        return self.mamba_rv_mask | self.har_rv_mask | (self.rv_mask if self.rv_mask.size else False)

    @property
    def iv_read(self) -> np.ndarray:
        """Days whose implied vol some part reads."""
        return self.iv_mask | self.har_iv_mask

    # -- inputs ------------------------------------------------------------------------------------
    def input_blocks(self) -> dict[str, list[str]]:
        """The block of every element of every input (`actual_inputs`)."""
        out = {"returns": ["price_history"] * self.L, "log_hl": ["realised_vol"] * self.L,
               "log_co": ["realised_vol"] * self.L}
        if self._reads("rv"):
            out["rv"] = ["realised_vol"] * self.L
        if self._networks():
            from aetheris_ray.features.regime import REGIME_FEATURES

            out["regime"] = [REGIME_BLOCK[name] for name, _ in REGIME_FEATURES[: self.n_regime]]
        if self._reads("iv"):
            out["iv"] = ["implied_vol"] * self.L
        if self.mamba is not None:
            out["mm"] = ["mm_indices"] * len(MM_KEYS)
        if self._reads("market"):
            out["market"] = [self.market_block] * self.L
        return out

    def model_blocks(self) -> list[str]:
        """Blocks some configured part reads (the others get attribution 0)."""
        used = {"price_history"}
        if self.range_mask.any() and any(mb.proxy in ("range", "har") for mb in self.members):
            used.add("realised_vol")
        if self.rv_read.any() or self.hl_mask.any():
            used.add("realised_vol")
        if self._networks():
            used.update(self.input_blocks()["regime"])
        if self.iv_read.any():
            used.add("implied_vol")
        if self.market_mask.any():
            used.add(self.market_block)
        if self.mamba is not None and np.isfinite(np.asarray(self.ctx.mm[0], dtype=float)).any():
            used.add("mm_indices")
        return [b for b in BLOCKS if b in used]

    def _range_var_np(self) -> np.ndarray | None:
        if self.ctx.log_hl is None:
            return None
        from aetheris_ray.components.range_vol import range_variance

        est = next((mb.estimator for mb in self.members if mb.proxy in ("range", "har")), "parkinson")
        return range_variance(self.ctx.log_hl[0], self.ctx.log_co[0], est)

    def actual_inputs(self) -> dict[str, np.ndarray]:
        """The actual input: ``returns``, ``log_hl``, ``log_co``, shape (L,) each (0 where unused)."""
        hl = np.zeros(self.L) if self.ctx.log_hl is None else np.where(self.range_mask | self.hl_mask,
                                                                      self.ctx.log_hl[0], 0.0)
        co = np.zeros(self.L) if self.ctx.log_co is None else np.where(self.range_mask, self.ctx.log_co[0], 0.0)
        co = np.where(np.isfinite(co), co, 0.0)
        out = {"returns": np.where(self.valid, self.ctx.returns[0], 0.0), "log_hl": hl, "log_co": co}
        if self._reads("rv"):
            out["rv"] = np.where(self.rv_read, self.ctx.rv[0], 1.0) if self.ctx.rv is not None else np.ones(self.L)
        if self._networks():
            from aetheris_ray.components.rough_vol.component import fit_regime

            reg = fit_regime(self.ctx.regime_vector, self.n_regime, 1)
            out["regime"] = np.zeros(0) if reg is None else reg[0]
        if self._reads("iv"):
            out["iv"] = np.where(self.iv_read, self.ctx.iv[0], 1.0) if self.ctx.iv is not None else np.ones(self.L)
        if self.mamba is not None:
            mm = np.asarray(self.ctx.mm[0], dtype=float)
            out["mm"] = np.where(np.isfinite(mm), mm, 0.0)
        if self._reads("market"):
            out["market"] = (np.where(self.market_mask, self.ctx.market[0], 1.0) if self.ctx.market is not None
                             else np.ones(self.L))
        return out

    # -- interface: drift path and member variances --------------------------------------------------
    def interface(self, returns: Any, log_hl: Any, log_co: Any, rv: Any = None, regime: Any = None,
                  iv: Any = None, mm: Any = None, market: Any = None) -> Any:
        """``[drift (h), per member: v1, a rough member's x0, m, nu, kappa, or a range-HAR's variance on
        each of the h steps]`` at each of k inputs.

        Parameters
        ----------
        returns, log_hl, log_co, rv, iv, market : torch.Tensor, shape (k, L), float64 (`actual_inputs`;
            ``market``: the market asset's ``ln(H/L)``, read by a range-HAR's market regressor)
        regime : torch.Tensor, shape (k, n_regime) (rough members and mamba only)
        mm : torch.Tensor, shape (k, 3), the MM indices (mamba only)

        Returns
        -------
        torch.Tensor, shape (k, h + sum of the members' dims)
        """
        import torch

        r, hl, co = returns, log_hl, log_co
        valid = torch.as_tensor(self.valid)
        r2 = r * r
        first = torch.as_tensor(self.first, dtype=r.dtype)
        v0 = torch.clamp((r2 * first).sum(dim=1) / max(float(self.first.sum()), 1.0), min=VAR_FLOOR)
        cols = [self._drift(r, v0) if self.mamba is None else self._mamba_drift(r, hl, rv, iv, regime, mm)]
        losses = []  # an online blend's members' discounted one-step QLIKE
        for i, mb in enumerate(self.members):
            if mb.rough is not None:
                cols.append(self._rough_params(i, r, rv, regime))
                continue
            if mb.har is not None:
                mean_var = self._har_mean_var(mb, r2, hl, co, rv, iv, market)
                cols.append(self._har_path(mean_var[:, -1, :]))
                if self.online is not None:
                    losses.append(self._har_qlike(mean_var[:, :, 0], r2, v0))
                continue
            x = r2
            if mb.proxy == "range":
                x = torch.where(torch.as_tensor(self.range_mask), mb.k * _range_variance_t(hl, co, mb.estimator), r2)
            x = torch.where(valid, x, v0[:, None])
            w = torch.as_tensor(self._last_w[mb.beta], dtype=r.dtype)
            s = float(w.sum())
            v1 = mb.omega * s + mb.alpha * (x @ w) + mb.beta ** self.L * v0
            cols.append(torch.clamp(v1, min=VAR_FLOOR)[:, None])
            if self.online is not None:
                losses.append(self._qlike(mb, x, r2, v0))
        if self.online is not None:
            cols.append(self._online_weights(torch.stack(losses, dim=1)))
        return torch.cat(cols, dim=1)

    def _qlike(self, mb: _Member, x: Any, r2: Any, v0: Any) -> Any:
        """A member's discounted one-step QLIKE over the online blend's last ``n`` returns, shape (k,)
        (`FittedBlend.weights`: the filter's forecasts ``v[t - 1]`` against ``r[t]^2``)."""
        import torch

        n, L = self.online.n, self.L
        pos = np.arange(L - n - 1, L - 1)  # the forecasts for returns L - n .. L - 1
        M = _powers_matrix(mb.beta, pos, L)
        lead = torch.as_tensor(float(mb.beta) ** (pos + 1.0), dtype=r2.dtype)
        vf = mb.omega * torch.as_tensor(M.sum(axis=1), dtype=r2.dtype) + mb.alpha * x @ torch.as_tensor(M.T)
        return self._discounted_qlike(torch.clamp(vf + lead[None, :] * v0[:, None], min=VAR_FLOOR), r2)

    def _discounted_qlike(self, vf: Any, r2: Any) -> Any:
        """``sum_t decay^(n-1-t) (log vf_t + r_t^2 / vf_t)`` over the online blend's last ``n`` returns with
        a return and a forecast (`FittedBlend.weights`), shape (k,); ``vf`` (k, n): the forecasts."""
        import torch

        n, L = self.online.n, self.L
        q = torch.log(vf) + r2[:, L - n:] / vf
        ok = self.valid[L - n:] & self.valid[L - n - 1:L - 1]
        disc = self.online.decay ** np.arange(n - 1, -1, -1)
        return (q * torch.as_tensor(np.where(ok, disc, 0.0), dtype=r2.dtype)).sum(dim=1)

    def _online_weights(self, losses: Any) -> Any:
        """The online blend's weights from its members' losses (k, K): ``softmax(log base - eta (L - min L))``."""
        import torch

        logw = torch.as_tensor(np.log(np.maximum(self.online.base, 1e-12)), dtype=losses.dtype)[None, :] \
            - self.online.eta * (losses - losses.min(dim=1, keepdim=True).values)
        w = torch.exp(logw - logw.max(dim=1, keepdim=True).values)
        return w / w.sum(dim=1, keepdim=True)

    @property
    def weight_column(self) -> int | None:
        """An online blend's first weight column in the interface (after the members'), else None."""
        return None if self.online is None else self.h + sum(mb.dims for mb in self.members)

    def _weight(self, u: Any, j: int) -> Any:
        """Member ``j``'s weight: a constant, or (online) its interface column, shape (k, 1)."""
        if self.online is None:
            return float(self.weights[j])
        c = self.weight_column + j
        return u[:, c:c + 1]

    def _har_mean_var(self, mb: _Member, r2: Any, hl: Any, co: Any, rv: Any, iv: Any, market: Any) -> Any:
        """A range-HAR member's mean variance over each anchor horizon at every context day, shape (k, L, A):
        `FittedRangeHar._mean_var` in torch (each day's log-HAR regressors, its extra regressors
        (`range_vol._extra_x`), one direct regression per anchor).  Which days count as observed is the
        actual input's; rows the part leaves NaN (`_har_rows` False) hold finite values nobody reads."""
        import torch

        q = _range_variance_t(hl, co, mb.estimator)
        s = torch.where(torch.as_tensor(self.range_mask), mb.k * q, r2) / mb.k  # range units
        rows = torch.as_tensor(self._har_rows)
        w, _ = _trailing_mean_t(s, self.valid, 5)
        m, _ = _trailing_mean_t(s, self.valid, 22)
        w, m = torch.where(rows, w, 1.0), torch.where(rows, m, 1.0)
        d = torch.maximum(torch.where(torch.as_tensor(self.valid), s, w), 0.05 * m)
        log_w = torch.log(torch.maximum(w, 0.05 * m))
        cols = [torch.ones_like(m), torch.log(d), log_w, torch.log(m)]
        for name in mb.extras:
            if name == "rv":
                xw, n = _trailing_mean_t(rv / mb.k, self.har_rv_mask, 5)
                cols.append(torch.where(torch.as_tensor(n > 0), torch.log(xw), log_w))
            elif name == "iv":
                ok = torch.as_tensor(self.har_iv_mask)
                x = torch.where(ok, iv, 1.0) ** 2 / (100.0 ** 2 * 365.0 * mb.k)
                cols.append(torch.where(ok, torch.log(x), torch.log(m) + mb.iv_premium))
            else:
                xw, n = _trailing_mean_t(_range_variance_t(market), self.market_mask, 5)
                cols.append(torch.where(torch.as_tensor(n > 0), torch.log(xw), log_w + mb.market_premium))
        x = torch.stack(cols, dim=2)  # (k, L, 4 + E)
        coef = torch.as_tensor(np.asarray(mb.har.params["coef"], dtype=float)[0], dtype=r2.dtype)  # (A, 4 + E)
        scale = torch.as_tensor(np.asarray(mb.har.params["scale"], dtype=float)[0], dtype=r2.dtype)  # (A,)
        return torch.exp(x @ coef.T) * scale

    def _har_path(self, mean_var: Any) -> Any:
        """A range-HAR member's variance on steps 1..h, shape (k, h), from its mean variances at the origin
        (k, A): `FittedRangeHar.condition` and `range_vol.variance_path`, in torch."""
        import torch

        from aetheris_ray.components.range_vol import ANCHORS

        mean_var = torch.clamp(mean_var, min=VAR_FLOOR)
        # variance_path: the mean variance interpolated linearly in log h between anchors (held beyond)
        a = np.log(np.asarray(ANCHORS, dtype=float))
        hs = np.arange(1, self.h + 1, dtype=float)
        interp_w = np.stack([np.interp(np.log(hs), a, np.eye(a.size)[j]) for j in range(a.size)], axis=1)  # (h, A)
        mean = torch.exp(torch.log(mean_var) @ torch.as_tensor(interp_w, dtype=mean_var.dtype).T)  # (k, h)
        cum = torch.cummax(mean * torch.as_tensor(hs, dtype=mean_var.dtype), dim=1).values
        v = torch.cat([cum[:, :1], cum[:, 1:] - cum[:, :-1]], dim=1)
        return torch.maximum(v, 0.01 * mean)

    def _har_qlike(self, one_day: Any, r2: Any, v0: Any) -> Any:
        """A range-HAR member's discounted one-step QLIKE over the online blend's last ``n`` returns, shape
        (k,): its filter (the 1-day mean variance of each day, the seed variance where the part has none)
        against the next day's ``r^2``, as `FittedBlend.weights` scores it."""
        import torch

        days = slice(self.L - self.online.n - 1, self.L - 1)
        vf = torch.where(torch.as_tensor(self._har_rows[days]), one_day[:, days], v0[:, None])
        return self._discounted_qlike(torch.clamp(vf, min=VAR_FLOOR), r2)

    def _rough_params(self, i: int, r: Any, rv: Any, regime: Any) -> Any:
        """The rough member's fOU parameters from the network (`rough_vol.component.network_inputs` and
        `conditioning_inputs` in torch), shape (k, 4): x0, m, nu, kappa."""
        import torch

        from aetheris_ray.components.rough_vol.component import _LOG_ABS_NORMAL, _VAR_FLOOR, Z_CLIP

        rough = self.members[i].rough
        lb = int(rough.spec.lookback)
        rr = r[:, -lb:]
        mu = rr.mean(dim=1, keepdim=True)
        sigma = torch.clamp(rr.std(dim=1, correction=0), min=1e-5)
        lv = torch.log(torch.clamp(torch.abs(rr - mu), min=1e-5)) + _LOG_ABS_NORMAL
        if self.rv_mask.size:
            good = torch.as_tensor(self.rv_mask[-lb:])
            lv = torch.where(good, 0.5 * torch.log(torch.where(good, rv[:, -lb:], 1.0)), lv)
        k = min(22, lb)
        lv1, lv5, lv22, lvl = lv[:, -1], lv[:, -5:].mean(dim=1), lv[:, -k:].mean(dim=1), lv.mean(dim=1)
        lr5 = 0.5 * torch.log((rr[:, -5:] ** 2).mean(dim=1) + _VAR_FLOOR)
        lr22 = 0.5 * torch.log((rr[:, -k:] ** 2).mean(dim=1) + _VAR_FLOOR)
        lsig = torch.log(sigma)
        feats = torch.stack([lv1 - lv22, lv5 - lv22, lv22 - lvl, lr5 - lv22, lr22 - lv22, lv22, lsig - lv22, lvl], dim=1)
        if rough.n_regime:
            feats = torch.cat([feats, regime[:, : rough.n_regime]], dim=1)
        mean = torch.as_tensor(rough.feat_mean, dtype=r.dtype)
        std = torch.as_tensor(rough.feat_std, dtype=r.dtype)
        live = std > 0
        zf = torch.clamp(torch.where(live, (feats - mean) / torch.where(live, std, 1.0), 0.0), -Z_CLIP, Z_CLIP)
        out = self.nets[i](zf, torch.stack([lv5, lv22], dim=1))
        return torch.stack([out["x0"], out["m"], out["nu"], out["kappa"]], dim=1)

    def _rough_path(self, i: int, p: Any) -> tuple[Any, Any]:
        """A rough member's variance path and its log-vol path, both (k, m, h), from its parameters ``p``
        (k, 4) and its fBm increments (`FittedRoughVol.vol_paths`, squared)."""
        import torch

        rough = self.members[i].rough
        db = torch.as_tensor(self.db[i], dtype=p.dtype)
        x0, m, nu, phi = p[:, 0, None], p[:, 1, None], p[:, 2, None], 1.0 - p[:, 3, None]
        x = x0.expand(-1, self.m)
        xs = []
        for t in range(self.h):
            x = m + phi * (x - m) + nu * db[:, t]
            xs.append(x)
        lx = torch.stack(xs, dim=2) + rough.vol_bias
        return torch.exp(2.0 * torch.clamp(lx, -30.0, 5.0)), lx

    def _rough_tangents(self, i: int, p: Any) -> tuple[Any, list[Any]]:
        """A rough member's variance path (k, m, h) and its tangents along x0, m, nu, kappa (4 x (k, m, h)):
        ``dX_t = d(m + phi (X_{t-1} - m) + nu dB_t)`` with ``phi = 1 - kappa``, ``dV = 2 V dX`` where unclipped."""
        import torch

        var, lx = self._rough_path(i, p)
        db = torch.as_tensor(self.db[i], dtype=p.dtype)
        x0, mm, nu, phi = p[:, 0, None], p[:, 1, None], p[:, 2, None], 1.0 - p[:, 3, None]
        x = x0.expand(-1, self.m)
        d = [torch.ones_like(x), torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)]
        steps: list[list[Any]] = [[], [], [], []]
        for t in range(self.h):
            d = [phi * d[0], 1.0 + phi * (d[1] - 1.0), phi * d[2] + db[:, t], -(x - mm) + phi * d[3]]
            x = mm + phi * (x - mm) + nu * db[:, t]
            for q in range(4):
                steps[q].append(d[q])
        inside = ((lx > -30.0) & (lx < 5.0)).to(p.dtype)
        return var, [2.0 * var * inside * torch.stack(steps[q], dim=2) for q in range(4)]

    def _drift(self, r: Any, v0: Any) -> Any:
        """The trend part's drift for steps 1..h, shape (k, h) (`trend.FittedArEs.condition` in torch)."""
        import torch

        k_, L, h = r.shape[0], self.L, self.h
        if self.trend is None:
            return torch.zeros((k_, h), dtype=r.dtype)
        sp = self.trend.spec
        valid = self.valid
        pmax = max(sp.ar_orders) if sp.ar_orders else 0
        E = max(min(sp.eval_days, L - 2 - pmax), 1)
        pos = np.arange(L - E - 1, L)
        W = sp.window
        pos_t = torch.as_tensor(pos)
        fs = [torch.zeros((k_, pos.size), dtype=r.dtype)]
        cnt = np.cumsum(valid.astype(float))
        cnt = np.concatenate([cnt[:W], cnt[W:] - cnt[:-W]]) if L > W else cnt
        fs.append(_rolling_sum(r, W)[:, pos_t] / torch.as_tensor(np.maximum(cnt[pos], 1.0)))
        for a in sp.es_alphas:
            fs.append(a * r @ torch.as_tensor(_powers_matrix(1.0 - a, pos, L).T))
        ar = []
        if sp.ar_orders:
            lags = [torch.cat([torch.zeros((k_, i), dtype=r.dtype), r[:, : L - i]], dim=1) for i in range(1, pmax + 1)]
            X = torch.stack([torch.ones_like(r)] + lags, dim=2)  # (k, L, pmax + 1)
            XX = torch.cumsum(X[:, :, :, None] * X[:, :, None, :], dim=1)
            Xy = torch.cumsum(X * r[:, :, None], dim=1)
            back = np.maximum(pos - W, 0)
            has = torch.as_tensor((pos - W >= 0).astype(float), dtype=r.dtype)
            XXw = XX[:, pos_t] - has[None, :, None, None] * XX[:, torch.as_tensor(back)]
            Xyw = Xy[:, pos_t] - has[None, :, None] * Xy[:, torch.as_tensor(back)]
            for p in sp.ar_orders:
                kk = p + 1
                sub = XXw[:, :, :kk, :kk]
                diag = torch.diagonal(sub, dim1=2, dim2=3)
                tiny = 1e-12 * diag.sum(dim=2, keepdim=True) / kk + 1e-30
                A = sub + (1e-9 * diag + tiny)[..., None] * torch.eye(kk, dtype=r.dtype)
                coef = torch.linalg.solve(A, Xyw[:, :, :kk, None])[..., 0]  # (k, P, kk)
                xnext = torch.stack([torch.ones((k_, pos.size), dtype=r.dtype)]
                                    + [r[:, torch.as_tensor(pos - j)] for j in range(p)], dim=2)
                fs.append((coef * xnext).sum(dim=2))
                ar.append(coef[:, -1])
        f = torch.stack(fs, dim=1)  # (k, n_experts, E + 1)
        # EWMA variance at the positions (ewma_filter, lam 0.94)
        lam = 0.94
        x = torch.where(torch.as_tensor(valid), r * r, v0[:, None])
        M = torch.as_tensor(_powers_matrix(lam, pos, L), dtype=r.dtype)
        lead = torch.as_tensor(lam ** (pos + 1.0), dtype=r.dtype)
        v = torch.clamp((1.0 - lam) * x @ M.T + lead[None, :] * v0[:, None], min=VAR_FLOOR)  # (k, E + 1)
        err = (r[:, torch.as_tensor(pos[1:])][:, None, :] - f[:, :, :-1]) / torch.sqrt(v[:, :-1])[:, None, :]
        ok = torch.as_tensor((valid[pos[1:]] & valid[pos[:-1]]).astype(float), dtype=r.dtype)
        disc = torch.as_tensor(sp.decay ** np.arange(E - 1, -1, -1, dtype=float), dtype=r.dtype)
        loss = (err * err * ok * disc).sum(dim=2)  # (k, n_experts)
        w = torch.softmax(-sp.eta * loss, dim=1)
        n_const = f.shape[1] - len(sp.ar_orders)
        path = (w[:, :n_const] * f[:, :n_const, -1]).sum(dim=1)[:, None].expand(k_, h)
        for i, p in enumerate(sp.ar_orders):
            c = ar[i]
            hist = [r[:, L - 1 - j] for j in range(p)]  # most recent first
            steps = []
            for _ in range(h):
                nxt = c[:, 0] + sum(c[:, j + 1] * hist[j] for j in range(p))
                steps.append(nxt)
                hist = [nxt] + hist[:-1]
            path = path + w[:, n_const + i][:, None] * torch.stack(steps, dim=1)
        sigma = torch.sqrt(v[:, -1])[:, None]
        cap = sp.max_sigma * sigma
        return torch.minimum(torch.maximum(sp.shrink * path, -cap), cap)

    def _mamba_drift(self, r: Any, hl: Any, rv: Any, iv: Any, regime: Any, mm: Any) -> Any:
        """The mamba trend's drift for steps 1..h, shape (k, h) (`mamba.component.sequence_inputs` and
        `FittedMamba.condition` in torch; every return of its window is valid, `_mamba_setup`)."""
        import torch

        from aetheris_ray.components.base import EWMA_SEED, VAR_FLOOR
        from aetheris_ray.components.mamba.component import _LOG_ABS_NORMAL, _LOG_PARKINSON, RET_CLIP, Z_CLIP

        part = self.mamba
        lb = int(part.spec.lookback)
        rr = r[:, -lb:]
        r2 = rr * rr
        lam = 0.94  # ewma_filter over the window, seeded with the mean square of its first EWMA_SEED returns
        v0 = torch.clamp(r2[:, :min(EWMA_SEED, lb)].mean(dim=1), min=VAR_FLOOR)
        w = torch.as_tensor(lam ** np.arange(lb - 1, -1, -1.0), dtype=r.dtype)
        scale = torch.sqrt(torch.clamp(lam ** lb * v0 + (1.0 - lam) * (r2 @ w), min=VAR_FLOOR))
        log_s = torch.log(scale)[:, None]
        lv = torch.log(torch.clamp(torch.abs(rr - rr.mean(dim=1, keepdim=True)), min=1e-5)) + _LOG_ABS_NORMAL
        if self.hl_mask.any():
            good = torch.as_tensor(self.hl_mask[-lb:])
            lv = torch.where(good, torch.log(torch.where(good, hl[:, -lb:], 1.0)) - _LOG_PARKINSON, lv)
        if self.mamba_rv_mask.any():
            good = torch.as_tensor(self.mamba_rv_mask[-lb:])
            lv = torch.where(good, 0.5 * torch.log(torch.where(good, rv[:, -lb:], 1.0)), lv)
        ivc = torch.zeros_like(rr)
        if self.iv_mask.any():
            good = torch.as_tensor(self.iv_mask[-lb:])
            ivc = torch.where(good, torch.log(torch.where(good, iv[:, -lb:], 1.0) / (100.0 * np.sqrt(365.0))) - log_s,
                              0.0)
        seq = torch.stack([torch.clamp(rr / scale[:, None], -RET_CLIP, RET_CLIP), lv - log_s, ivc], dim=2)
        static = [log_s]
        if part.n_regime:
            static.append(regime[:, : part.n_regime])
        static.append(mm)
        z = torch.cat(static, dim=1)

        def standardise(x: Any, key: str) -> Any:
            mean = torch.as_tensor(np.asarray(part.shared[f"{key}_mean"], dtype=float), dtype=r.dtype)
            std = torch.as_tensor(np.asarray(part.shared[f"{key}_std"], dtype=float), dtype=r.dtype)
            live = std > 0
            return torch.clamp(torch.where(live, (x - mean) / torch.where(live, std, 1.0), 0.0), -Z_CLIP, Z_CLIP)

        a = self.mamba_net(standardise(seq, "seq"), standardise(z, "static"))  # (k, H)
        d = part.spec.shrink * a * scale[:, None]
        return d[:, torch.as_tensor(np.minimum(np.arange(self.h), d.shape[1] - 1))]

    # -- outputs -----------------------------------------------------------------------------------
    def output_names(self) -> list[tuple[str, int]]:
        """``(output, index)`` of each entry of the output vector."""
        T = self.log_thresholds.size
        return ([("p50", i) for i in range(self.h)] + [("width80", i) for i in range(self.h)]
                + [("upside", 0), ("downside", 0)] + [("p_below", i) for i in range(T)]
                + [("p_above", i) for i in range(T)])

    def calibrate(self, fx: np.ndarray, fx0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Output vectors at the input and the baseline with the threshold rows mapped from raw to calibrated
        probabilities, and each row's attribution scale: 1, or for a threshold the level map's secant slope
        between the two raw probabilities (the rescale rule: a fixed monotone map of one number passes the
        change on in proportion, so completeness is kept and the map's kinks never meet the quadrature)."""
        fx, fx0, scale = np.array(fx, dtype=float), np.array(fx0, dtype=float), np.ones(len(fx))
        T = self.log_thresholds.size
        if not T:
            return fx, fx0, scale
        below = slice(2 * self.h + 2, 2 * self.h + 2 + T)
        above = slice(2 * self.h + 2 + T, 2 * self.h + 2 + 2 * T)
        xp, fp = self.prob_map
        r1, r0 = fx[below], fx0[below]
        c1, c0 = np.interp(r1, xp, fp), np.interp(r0, xp, fp)
        eps = 1e-7
        local = (np.interp(r1 + eps, xp, fp) - np.interp(r1 - eps, xp, fp)) / (2 * eps)
        moved = np.abs(r1 - r0) > 1e-12
        secant = np.where(moved, (c1 - c0) / np.where(moved, r1 - r0, 1.0), local)
        fx[below], fx0[below], fx[above], fx0[above] = c1, c0, 1.0 - c1, 1.0 - c0
        scale[below] = scale[above] = secant
        return fx, fx0, scale

    def member_columns(self) -> list[int]:
        """The first interface column of each volatility member."""
        return [self.h + sum(mb.dims for mb in self.members[:i]) for i in range(len(self.members))]

    def paths(self, u: Any) -> tuple[Any, Any]:
        """Daily log-return paths and their sigmas from the interface ``u`` (k, h + K): both (k, m, h)."""
        import torch

        h, k_ = self.h, u.shape[0]
        drift = u[:, :h]
        z = torch.as_tensor(self.z, dtype=u.dtype)
        cols = self.member_columns()
        v = [u[:, c:c + 1].expand(k_, self.m) if mb.rough is None else None for mb, c in zip(self.members, cols)]
        rough = {i: self._rough_path(i, u[:, c:c + 4])[0] for i, c in enumerate(cols) if self.members[i].rough}
        har = {i: c for i, c in enumerate(cols) if self.members[i].har is not None}
        sig = []
        for t in range(h):
            v = [rough[j][:, :, t] if j in rough else vj for j, vj in enumerate(v)]
            v = [u[:, har[j] + t:har[j] + t + 1].expand(k_, self.m) if j in har else vj for j, vj in enumerate(v)]
            var = sum(self._weight(u, j) * v[j] for j in range(len(v)))
            s = torch.sqrt(torch.clamp(var, min=VAR_FLOOR))
            sig.append(s)
            if t + 1 < h:
                rr = (s * z[:, t]) ** 2
                v = [mb.omega + mb.alpha * rr + mb.beta * vj if mb.feedback else vj
                     for mb, vj in zip(self.members, v)]
        sigma = torch.stack(sig, dim=2)
        return sigma * z + drift[:, None, :], sigma

    def _quantiles(self, centre: Any, scale: Any, levels: np.ndarray, cache: dict | None, key: int) -> Any:
        """Quantiles of the mixture ``mean_paths F((y - centre) / scale)`` at ``levels`` (Q,), shape (k, Q).

        Solved by safeguarded Newton without gradients (``cache[key]`` keeps the root and
        the density there, for further passes at the same point); the gradient enters
        through one Newton step on the graph (the implicit-function derivative ``-dF/dtheta / f``).
        """
        import torch

        p = torch.as_tensor(np.array(levels, dtype=float), dtype=centre.dtype)[None, :]
        c, s = centre.detach()[:, :, None], scale.detach()[:, :, None]
        if cache is not None and key in cache:
            y, f = cache[key]
            zg = (y[:, None, :] - centre[:, :, None]) / scale[:, :, None]
            return y - (_unit_cdf(zg, self.nu).mean(dim=1) - p) / f
        with torch.no_grad():
            lo = (c - 60.0 * s).min(dim=1).values.expand(-1, p.shape[1]).clone()
            hi = (c + 60.0 * s).max(dim=1).values.expand(-1, p.shape[1]).clone()
            sd = torch.sqrt(c.var(dim=1, correction=0) + (s * s).mean(dim=1))
            y = c.mean(dim=1) + torch.special.ndtri(p) * sd  # moment-matched normal start
            for _ in range(60):
                cdf, pdf = _unit_cdf((y[:, None, :] - c) / s, self.nu, density=None)
                F = cdf.mean(dim=1) - p
                f = (pdf / s).mean(dim=1)
                done = F.abs() < 1e-12
                if bool(done.all()):
                    break
                lo = torch.where(F < 0, y, lo)
                hi = torch.where(F > 0, y, hi)
                step = y - F / torch.clamp(f, min=1e-300)
                y = torch.where(done, y, torch.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi)))
            z = (y[:, None, :] - c) / s
            f = (_unit_cdf(z, self.nu, density=True) / s).mean(dim=1)
        if cache is not None:
            cache[key] = (y, f)
        zg = (y[:, None, :] - centre[:, :, None]) / scale[:, :, None]
        return y - (_unit_cdf(zg, self.nu).mean(dim=1) - p) / f

    def outputs_from_interface(self, u: Any, cache: dict | None = None) -> Any:
        """The output vector (`output_names`) at each interface row, shape (k, 2h + 2 + 2T).

        ``cache``: the quantile roots of an earlier pass at the same ``u`` (filled when empty).

        Each step's cumulative log-return is, given the paths up to the step before, a
        mixture over paths of scaled residual distributions: quantiles and threshold
        probabilities are read from that mixture (conditional Monte Carlo), which is
        smooth in the inputs.
        """
        import torch

        h = self.h
        steps, sigma = self.paths(u)
        cum = torch.cumsum(steps, dim=2)
        prev = torch.cat([torch.zeros_like(cum[:, :, :1]), cum[:, :, :-1]], dim=2)
        centre = prev + u[:, None, :h]  # (k, m, h)
        # levels q10, q50, q90 at every step; q05 and q95 too at the last
        qs = [self._quantiles(centre[:, :, t], sigma[:, :, t], self.raw_q[t] if t == h - 1 else self.raw_q[t, 1:4],
                              cache, t) for t in range(h)]
        qs[-1], (q05, q95) = qs[-1][:, 1:4], (qs[-1][:, 0], qs[-1][:, 4])
        q = torch.stack(qs, dim=1)  # (k, h, 3)
        q50_t = q[:, :, 1]
        outs = [q50_t, q[:, :, 2] - q[:, :, 0], (q95 - q50_t[:, -1])[:, None], (q50_t[:, -1] - q05)[:, None]]
        if self.log_thresholds.size:
            zs = (torch.as_tensor(self.log_thresholds, dtype=u.dtype)[None, None, :] - centre[:, :, -1:]) \
                / sigma[:, :, -1:]
            below = _unit_cdf(zs, self.nu).mean(dim=1)  # (k, T), raw: the level map comes after IG
            outs += [below, 1.0 - below]
        return torch.cat(outs, dim=1)

    def jacobian(self, u: Any) -> Any:
        """d outputs / d interface at each row, shape (k, n_out, h + K): the derivative of
        `outputs_from_interface`, propagated forward by hand (no autograd; a test checks it
        against reverse mode).

        Drift columns are exact by shift equivariance: the paths' volatility does not
        depend on the drift, so a quantile of step t moves one for one with the drift of
        every step up to t, spreads do not move, and a threshold probability moves with
        the sum of the drift.  Member variance columns carry tangents through the
        volatility recursion, the cumulative sums, the quantile roots (implicit function:
        ``dy = mean(f (dc + z ds) / s) / mean(f / s)``) and the threshold mixtures.
        """
        import torch

        with torch.no_grad():
            u = u.detach()
            h, m = self.h, self.m
            k_, d = u.shape
            K = d - h  # tangent directions: the members' interface columns
            cache: dict = {}
            self.outputs_from_interface(u, cache)
            z = torch.as_tensor(self.z, dtype=u.dtype)
            nm, cols = len(self.members), self.member_columns()
            zero = torch.zeros((k_, 1), dtype=u.dtype)
            v = [u[:, c, None].expand(k_, m) if mb.rough is None else None for mb, c in zip(self.members, cols)]
            # dv[j][i]: tangent of member i's variance along interface column h + j
            dv = [[torch.full((k_, 1), float(h + j == c), dtype=u.dtype) if mb.rough is None else zero
                   for mb, c in zip(self.members, cols)] for j in range(K)]
            rough = {i: self._rough_tangents(i, u[:, c:c + 4]) for i, c in enumerate(cols) if self.members[i].rough}
            har = [i for i in range(nm) if self.members[i].har is not None]
            wcol = self.weight_column if self.online is not None else -(10 ** 9)
            sig, dsig = [], []
            for t in range(h):
                for i, (var_i, dvar_i) in rough.items():
                    v[i] = var_i[:, :, t]
                    for j in range(K):
                        q = h + j - cols[i]
                        dv[j][i] = dvar_i[q][:, :, t] if 0 <= q < 4 else zero
                for i in har:  # a range-HAR's variance on step t is its interface column t
                    v[i] = u[:, cols[i] + t, None].expand(k_, m)
                    for j in range(K):
                        dv[j][i] = torch.full((k_, 1), float(h + j == cols[i] + t), dtype=u.dtype)
                wts = [self._weight(u, i) for i in range(nm)]
                var = sum(wts[i] * v[i] for i in range(nm))
                s = torch.sqrt(torch.clamp(var, min=VAR_FLOOR))
                live = (var > VAR_FLOOR).to(u.dtype)
                # an online blend's weight columns move the variance by the member's variance
                ds = [live * sum(wts[i] * dv[j][i] + (v[i] if h + j == wcol + i else 0.0) for i in range(nm))
                      / (2.0 * s) for j in range(K)]
                sig.append(s)
                dsig.append(torch.stack(ds))
                if t + 1 < h:
                    rr = (s * z[:, t]) ** 2
                    drr = [2.0 * s * z[:, t] ** 2 * ds[j] for j in range(K)]
                    dv = [[mb.alpha * drr[j] + mb.beta * dv[j][i] if mb.feedback else dv[j][i]
                           for i, mb in enumerate(self.members)] for j in range(K)]
                    v = [mb.omega + mb.alpha * rr + mb.beta * vi if mb.feedback else vi
                         for mb, vi in zip(self.members, v)]
            sigma, dsigma = torch.stack(sig, dim=2), torch.stack(dsig, dim=3)  # (k, m, h), (K, k, m, h)
            cum = torch.cumsum(sigma * z + u[:, None, :h], dim=2)
            dcum = torch.cumsum(dsigma * z, dim=3)
            centre = torch.cat([torch.zeros_like(cum[:, :, :1]), cum[:, :, :-1]], dim=2) + u[:, None, :h]
            dcentre = torch.cat([torch.zeros_like(dcum[..., :1]), dcum[..., :-1]], dim=3)
            dq = []  # per step: (K, k, Q)
            for t in range(h):
                y, _ = cache[t]
                c, sd = centre[:, :, t, None], sigma[:, :, t, None]
                zt = (y[:, None, :] - c) / sd
                f = _unit_cdf(zt, self.nu, density=True) / sd  # (k, m, Q)
                num = f[None] * (dcentre[..., t, None] + zt[None] * dsigma[..., t, None])
                dq.append(num.mean(dim=2) / f.mean(dim=1)[None])
            n_out = len(self.output_names())
            J = torch.zeros((k_, n_out, d), dtype=u.dtype)
            for t in range(h):
                J[:, t, : t + 1] = 1.0  # p50 of step t: the drift
                mid = dq[t][..., 1:4] if t == h - 1 else dq[t]
                J[:, t, h:] = mid[..., 1].T
                J[:, h + t, h:] = (mid[..., 2] - mid[..., 0]).T
            J[:, 2 * h, h:] = (dq[-1][..., 4] - dq[-1][..., 2]).T
            J[:, 2 * h + 1, h:] = (dq[-1][..., 2] - dq[-1][..., 0]).T
            T = self.log_thresholds.size
            if T:
                c, sd = centre[:, :, -1, None], sigma[:, :, -1, None]
                zu = (torch.as_tensor(self.log_thresholds, dtype=u.dtype)[None, None, :] - c) / sd
                f = _unit_cdf(zu, self.nu, density=True) / sd  # (k, m, T)
                below = 2 * h + 2
                J[:, below:below + T, :h] = (-f.mean(dim=1))[:, :, None]
                draw = -(f[None] * (dcentre[..., -1, None] + zu[None] * dsigma[..., -1, None])).mean(dim=2)
                J[:, below:below + T, h:] = draw.permute(1, 2, 0)
                J[:, below + T:] = -J[:, below:below + T]
            return J

    def outputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The output vector at one input (no gradients), shape (2h + 2 + 2T,)."""
        import torch

        with torch.no_grad():
            t = {k: torch.as_tensor(v, dtype=torch.float64)[None, :] for k, v in inputs.items()}
            return self.outputs_from_interface(self.interface(**t))[0].numpy()


# -- baseline and integrated gradients ---------------------------------------------------------------


def baseline_inputs(fc: DifferentiableForecast) -> dict[str, np.ndarray]:
    """The neutral input (module docstring), shape (L,) each (``regime``: (n_regime,)).

    Returns: in each segment (the last ``lookback`` days a rough-vol network reads, and
    the days before; one segment without such a part) the segment's mean plus deviations
    of one magnitude per sign, with the actual signs, balanced so that the mean is kept,
    at the context's standard deviation: constant volatility, the same up / down days.
    Every deviation keeps its sign along the path, so a feature such as ``log|r - mean|``
    never crosses its singularity between the baseline and the input.
    """
    x = fc.actual_inputs()
    r = x["returns"]
    sd = float(np.std(r[fc.valid]))
    r0 = np.zeros(fc.L)
    lookbacks = [int(mb.rough.spec.lookback) for mb in fc.members if mb.rough is not None]
    if fc.mamba is not None:
        lookbacks.append(int(fc.mamba.spec.lookback))
    split = fc.L - max(lookbacks, default=0)
    for seg in (np.arange(fc.L) < split, np.arange(fc.L) >= split):
        idx = np.flatnonzero(seg & fc.valid)
        if not idx.size:
            continue
        mu = float(np.mean(r[idx]))
        d = r[idx] - mu
        n_up, n_down = int((d > 0).sum()), int((d < 0).sum())
        d0 = np.where(d > 0, 1.0 / max(n_up, 1), np.where(d < 0, -1.0 / max(n_down, 1), 0.0))
        rms = float(np.sqrt(np.mean(d0 * d0)))
        r0[idx] = mu + (d0 * sd / rms if rms > 0 else 0.0)
    out = {"returns": r0, "log_hl": x["log_hl"].copy(), "log_co": x["log_co"].copy()}
    mask = fc.range_mask
    if mask.any():
        for key in ("log_hl", "log_co"):
            out[key][mask] = float(np.sqrt(np.mean(np.square(x[key][mask]))))
    hl_only = fc.hl_mask & ~mask  # days only the mamba trend reads a range of
    if hl_only.any():
        out["log_hl"][hl_only] = float(np.sqrt(np.mean(np.square(x["log_hl"][fc.hl_mask | mask]))))
    for key, mask in (("rv", fc.rv_read), ("iv", fc.iv_read)):
        if key in x:
            out[key] = x[key].copy()
            if np.any(mask):
                out[key][mask] = float(np.mean(x[key][mask]))
    for key in ("regime", "mm"):
        if key in x:
            out[key] = np.zeros_like(x[key])
    if "market" in x:  # the market's range at its root-mean-square, as the asset's own ranges
        out["market"] = x["market"].copy()
        if fc.market_mask.any():
            out["market"][fc.market_mask] = float(np.sqrt(np.mean(np.square(x["market"][fc.market_mask]))))
    return out


def integrated_gradients(fc: DifferentiableForecast, x: dict[str, np.ndarray], x0: dict[str, np.ndarray],
                         steps: int) -> dict[str, np.ndarray]:
    """Integrated gradients of every output, per input element, by Gauss-Legendre with ``steps`` nodes.

    Returns
    -------
    dict input name -> ndarray, shape (n_out, L): the attribution of each output to each element.
    """
    import torch

    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    t = torch.as_tensor((nodes + 1.0) / 2.0, dtype=torch.float64)[:, None]
    wts = torch.as_tensor(weights / 2.0, dtype=torch.float64)
    names = list(x)
    pts = [(torch.as_tensor(x0[n]) + t * torch.as_tensor(x[n] - x0[n])).requires_grad_() for n in names]
    u = fc.interface(**dict(zip(names, pts)))  # (k, d)
    d = u.shape[1]
    ju = []  # per interface entry: gradients wrt each input, (k, L)
    for j in range(d):
        g = torch.autograd.grad(u[:, j].sum(), pts, retain_graph=j + 1 < d, allow_unused=True)
        ju.append([torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, pts)])
    ju = [torch.stack([ju[j][i] for j in range(d)]) for i in range(len(pts))]  # per input: (d, k, L)
    jg = fc.jacobian(u).permute(1, 0, 2)  # (n_out, k, d)
    result = {}
    for i, n in enumerate(names):
        grad = torch.einsum("okd,dkl,k->ol", jg, ju[i], wts)
        result[n] = (grad * torch.as_tensor(x[n] - x0[n])[None, :]).numpy()
    return result


def explain_model(model: Any, state: MarketState, level_map: Any, horizon: int, thresholds: Sequence[float] = (),
                  *, lookback: int = 1000, n_paths: int = N_PATHS, seed: int = 0, steps: int = 8,
                  max_steps: int = 64, warnings: list[str] | None = None) -> dict:
    """Integrated-gradient drivers of the forecast of ``model`` (batch 1) at ``state``.

    Parameters
    ----------
    model : FittedModel of supported parts (`Unsupported` otherwise)
    state : MarketState at the origin (its ``spot`` turns thresholds into log-returns)
    level_map : the forecast's level map
    horizon : int
    thresholds : sequence of float, price levels K (T of them)
    steps, max_steps : Gauss-Legendre nodes to start with, and the most the doubling goes to

    Returns
    -------
    dict
        ``upside`` / ``downside`` / ``trend``: ranked ``{"driver", "importance", "direction", "share"}``
        (blocks with a non-zero attribution, at most 3; ``share``: the block's signed share of each of the
        target's outputs, averaged; upside: q95 - q50 and P(price >= K), downside: q50 - q05 and
        P(price < K), trend: the median at h); ``method``;
        ``completeness_error`` (output -> list, one per element); ``completeness_tolerance``;
        ``completeness_within_tolerance``; ``attributions`` (output -> block -> list);
        ``value`` / ``baseline_value`` (output -> list); ``steps``; ``n_paths``; ``units``;
        ``inputs`` (``blocks``, ``not_in_model``, ``baseline``).  The only list-valued top-level
        keys are the three targets (what the CLI's drivers table lists).
    """
    ctx = Context.from_states([state], lookback)
    if state.overrides and warnings is not None:
        warnings.append("explain: the scenario's inputs are in the explained forecast, its step scaling of the "
                        "paths is not; drivers.value can differ from the conditional cone")
    th = np.asarray(list(thresholds), dtype=float)
    if th.size and (not np.all(np.isfinite(th)) or np.any(th <= 0)):
        raise InvalidInput(f"thresholds: {th.tolist()}; give positive finite prices")
    fc = DifferentiableForecast(model, ctx, level_map, horizon, np.log(th / float(state.spot)), n_paths, seed)
    x, x0 = fc.actual_inputs(), baseline_inputs(fc)
    fx, fx0, scale = fc.calibrate(fc.outputs(x), fc.outputs(x0))
    delta = fx - fx0
    tol = RTOL * np.abs(delta) + ATOL
    k = int(steps)
    while True:
        attr = {n: a * scale[:, None] for n, a in integrated_gradients(fc, x, x0, k).items()}
        total = sum(a.sum(axis=1) for a in attr.values())
        err = np.abs(total - delta)
        if np.all(err <= tol) or k >= max_steps:
            break
        k = min(2 * k, int(max_steps))
    ok = bool(np.all(err <= tol))
    if not ok and warnings is not None:
        worst = int(np.argmax(err - tol))
        name, i = fc.output_names()[worst]
        warnings.append(f"explain: integrated-gradient completeness error {err[worst]:.3g} on {name}[{i}] exceeds "
                        f"its tolerance {tol[worst]:.3g} at {k} steps")
    by_block = {b: np.zeros(delta.size) for b in BLOCKS}
    for n, blocks in fc.input_blocks().items():
        for b in set(blocks):
            by_block[b] += attr[n][:, np.array(blocks) == b].sum(axis=1)
    return _answer(fc, by_block, fx, fx0, err, ok, k)


def _answer(fc: DifferentiableForecast, by_block: dict[str, np.ndarray], fx: np.ndarray, fx0: np.ndarray,
            err: np.ndarray, ok: bool, steps: int) -> dict:
    names = fc.output_names()
    keys = list(dict.fromkeys(n for n, _ in names))

    def per_output(v: np.ndarray) -> dict[str, list[float]]:
        return {key: [float(v[j]) for j, (n, _) in enumerate(names) if n == key] for key in keys}

    def ranked(idx: list[int]) -> list[dict]:
        """Blocks by their signed share of each output's total |attribution|, averaged over the target's
        outputs (a width in log-return units and probabilities weigh alike)."""
        score = dict.fromkeys(BLOCKS, 0.0)
        for i in idx:
            norm = sum(abs(by_block[b][i]) for b in BLOCKS)
            for b in BLOCKS:
                score[b] += float(by_block[b][i]) / norm / len(idx) if norm > 0 else 0.0
        total = sum(abs(v) for v in score.values())
        order = [b for b in sorted(BLOCKS, key=lambda b: -abs(score[b])) if score[b] != 0.0][:TOP_K]
        return [{"driver": b, "importance": float(abs(score[b]) / total) if total > 0 else 0.0,
                 "direction": "+" if score[b] >= 0 else "-", "share": float(score[b])} for b in order]

    index = {(n, i): j for j, (n, i) in enumerate(names)}
    last = fc.h - 1
    T = fc.log_thresholds.size
    # upside: q95 - q50 and P(price >= K); downside: q50 - q05 and P(price < K); trend: the median at h
    upside = ranked([index[("upside", 0)]] + [index[("p_above", i)] for i in range(T)])
    downside = ranked([index[("downside", 0)]] + [index[("p_below", i)] for i in range(T)])
    trend = ranked([index[("p50", last)]])
    return {
        "upside": upside, "downside": downside, "trend": trend,
        "method": METHOD,
        "completeness_error": per_output(err),
        "completeness_tolerance": f"{RTOL:g} * |F(x) - F(x0)| + {ATOL:g} per output",
        "completeness_within_tolerance": ok,
        "attributions": {key: {b: per_output(by_block[b])[key] for b in BLOCKS} for key in keys},
        "value": per_output(fx),
        "baseline_value": per_output(fx0),
        "steps": int(steps),
        "n_paths": fc.m,
        "units": "p50, width80, upside, downside: log-return; p_below, p_above: calibrated probability",
        "inputs": {
            "blocks": list(BLOCKS),
            "not_in_model": [b for b in BLOCKS if b not in fc.model_blocks()],
            "baseline": ("returns: the mean plus one deviation magnitude per sign, actual signs, at the context's "
                         "std; ranges (the market's too): root-mean-square ln(H/L), ln(C/O) on observed bars; "
                         "intraday rv, implied vol: their mean; regime vector, MM indices: 0"),
        },
    }


# -- the explainer part ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegratedGradientsExplainer:
    """The explainer part (kind ``explainer``, variant ``integrated_gradients``; module docstring).

    The engine passes what it declares in `explain_inputs` (the fitted model at the
    origin, the forecast's level map and the request's thresholds); called without
    them, it takes the model and level map from the state cache at the origin and
    explains no thresholds.
    """

    kind: ClassVar[str] = "explainer"
    name: ClassVar[str] = "integrated_gradients"
    requires_torch: ClassVar[bool] = True
    #: Keyword inputs the engine gives `explain` besides the protocol's arguments.
    explain_inputs: ClassVar[tuple[str, ...]] = ("fitted", "level_map", "thresholds")
    n_paths: int = N_PATHS
    steps: int = 8
    max_steps: int = 64

    def explain(self, data: Any, state: MarketState, config: Any, origin: pd.Timestamp, horizon: int,
                warnings: list[str], *, fitted: Any = None, level_map: Any = None,
                thresholds: Sequence[float] = ()) -> dict | None:
        """Integrated-gradient drivers at ``origin``; the surrogate's (``method = "surrogate"``) when the
        model cannot be differentiated here, with a warning that says why."""
        from aetheris_ray.calibration import day_number

        if fitted is None or level_map is None:
            fitted, level_map = _at_origin(data, state, config, origin, horizon)
        try:
            import torch  # noqa: F401
        except ImportError:
            return _surrogate(data, state, config, origin, horizon, warnings, "torch is not installed")
        try:
            return explain_model(fitted, state, level_map, horizon, thresholds, lookback=config.lookback,
                                 n_paths=self.n_paths, seed=int(day_number(origin)), steps=self.steps,
                                 max_steps=self.max_steps, warnings=warnings)
        except Unsupported as e:
            return _surrogate(data, state, config, origin, horizon, warnings, str(e))


def _surrogate(data: Any, state: MarketState, config: Any, origin: pd.Timestamp, horizon: int,
               warnings: list[str], why: str) -> dict | None:
    from aetheris_ray.explain import SurrogateExplainer

    warnings.append(f"explain: integrated gradients unavailable ({why}); drivers from the surrogate explainer")
    out = SurrogateExplainer().explain(data, state, config, origin, horizon, warnings)
    return None if out is None else {**out, "method": "surrogate", "completeness_error": None}


def _at_origin(data: Any, state: MarketState, config: Any, origin: pd.Timestamp, horizon: int) -> tuple[Any, Any]:
    """The fitted model and level map at ``origin`` from the state cache (as `engine.prepare` builds them)."""
    from aetheris_ray.calibration import ConformalLevelMap, bucket_index, day_number, sim_horizon
    from aetheris_ray.history import positive_closes
    from aetheris_ray.state_cache import origin_state

    close = positive_closes(data)
    close = close[close.index <= origin]
    st = origin_state(data, origin, close, config, sim_horizon(horizon, config.calibrate))
    if not config.calibrate:
        return st.fitted, ConformalLevelMap.identity()
    needed = list(range(int(bucket_index(horizon)) + 1))
    return st.fitted, st.calibrator.level_map(state.regime_label, day_number(origin), buckets=needed)
