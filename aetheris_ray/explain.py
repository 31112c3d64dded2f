"""Top drivers of a forecast (baseline explainer): ridge surrogate + block permutation importance.

Method (``"surrogate-permutation"``):

1. Features of every past state (descriptors and market-maker indices), grouped
   in `BLOCKS`; macro / market / on-chain level z-scores form the ``macro`` block.
   Columns are standardised on the past states; a missing value becomes the
   column mean (0 after standardising); constant columns are dropped.
2. For each target (``upside`` = q95 - q50, ``downside`` = q50 - q05, ``trend`` =
   median drift, one value per past state, supplied by the caller), a ridge
   regression ``beta = (Z'Z + alpha n I)^-1 Z'(y - mean y)`` (closed form).
3. Local permutation importance of a block at the current state ``z0``: draw
   `N_DRAWS` past states ``j`` (seeded ``rng``), replace the block's features of
   ``z0`` by those of ``j``, and measure the surrogate's change
   ``delta_j = f(z0) - f(z0 with block from j)``.  Importance is
   ``sqrt(mean delta_j^2)`` as a share of the total over blocks; direction is the
   sign of ``mean delta_j`` ("+": the block's current value pushes the target up
   relative to typical past values).

`explain` is pure: the caller gives the targets.  `SurrogateExplainer` (the
``explainer`` part the engine calls) computes them from the engine's walk-forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from aetheris_ray._typing import FloatArray
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.state import MarketState

#: Feature blocks: block -> features (``log:`` = log of a positive descriptor).
BLOCKS: dict[str, tuple[str, ...]] = {
    "volatility": ("log:rv_short", "log:rv_long", "vol_pct", "vol_ratio", "vol_of_vol"),
    "trend": ("trend_t30", "trend_t90", "ret_30d"),
    "drawdown": ("drawdown", "drawdown_pct"),
    "mm_indices": ("gamma_squeeze", "inventory_unwind", "basis_pressure"),
    "derivatives": ("log:implied_vol", "iv_pct", "funding", "funding_pct", "basis", "basis_pct"),
}
MACRO_BLOCK = "macro"
MACRO_PREFIXES = ("macro_", "market_", "onchain_")
TARGETS = ("upside", "downside", "trend")
#: Ridge penalty per past state, on standardised features.
RIDGE_ALPHA = 0.01
#: Past states drawn per block for the permutation.
N_DRAWS = 128
#: Fewest past states the surrogate is fitted on.
MIN_STATES = 20
TOP_K = 3
METHOD = "surrogate-permutation"
_LOG_FLOOR = 1e-12


def _value(state: MarketState, feature: str) -> float:
    name = feature.removeprefix("log:")
    x = state.mm_indices.get(name) if name in state.mm_indices else state.descriptors.get(name)
    if x is None:
        return np.nan
    return float(np.log(max(float(x), _LOG_FLOOR))) if feature.startswith("log:") else float(x)


def feature_matrix(states: Sequence[MarketState], macro: Sequence[str] = ()) -> tuple[FloatArray, list[str], list[str]]:
    """Raw feature rows of ``states``.

    Parameters
    ----------
    states : sequence of MarketState, length n
    macro : sequence of str
        Macro descriptor names (``<series>_z``) to include in the ``macro`` block.

    Returns
    -------
    X : ndarray, shape (n, p)
        NaN where a state lacks the feature.
    names, blocks : list of str, length p
        Feature name and block of each column.
    """
    names = [f for feats in BLOCKS.values() for f in feats] + list(macro)
    blocks = [b for b, feats in BLOCKS.items() for _ in feats] + [MACRO_BLOCK] * len(macro)
    X = np.array([[_value(s, f) for f in names] for s in states], dtype=float).reshape(len(states), len(names))
    return X, names, blocks


def _check(states_hist: Sequence[MarketState], targets: Mapping[str, FloatArray], rng: np.random.Generator) -> dict:
    n = len(states_hist)
    if n < MIN_STATES:
        raise InvalidInput(f"states_hist: {n} past states, at least {MIN_STATES} needed to fit the surrogate")
    if not isinstance(rng, np.random.Generator):
        raise InvalidInput(f"rng: expected numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(targets, Mapping):
        raise InvalidInput(
            f"targets: expected a mapping with keys {', '.join(TARGETS)} (one array of shape ({n},) each), "
            f"got {type(targets).__name__}"
        )
    missing = [k for k in TARGETS if k not in targets]
    if missing:
        raise InvalidInput(f"targets: missing {', '.join(missing)}; give arrays for {', '.join(TARGETS)}")
    out = {}
    for k in TARGETS:
        y = np.asarray(targets[k], dtype=float)
        if y.shape != (n,):
            raise InvalidInput(f"targets[{k!r}]: shape {y.shape}, expected ({n},) (one value per past state)")
        if not np.isfinite(y).all():
            bad = int((~np.isfinite(y)).sum())
            raise InvalidInput(f"targets[{k!r}]: {bad} non-finite value(s); give finite numbers")
        out[k] = y
    return out


def explain(
    states_hist: Sequence[MarketState],
    targets: Mapping[str, FloatArray],
    current: MarketState,
    rng: np.random.Generator,
) -> dict:
    """Top-3 drivers of upside risk, downside risk and trend at the current state.

    Parameters
    ----------
    states_hist : sequence of MarketState, length n >= `MIN_STATES`
        States at the asset's recent past origins (before the current one).
    targets : mapping with keys ``upside``, ``downside``, ``trend``
        ndarray, shape (n,) each: the forecast's q95 - q50, q50 - q05 and median
        drift at each past origin (log-return units).
    current : MarketState
    rng : numpy.random.Generator
        Drives the permutation draws; same seed, same answer.

    Returns
    -------
    dict
        ``{"upside": [{"driver", "importance", "direction"}, ...x3], "downside": [...],
        "trend": [...], "method": "surrogate-permutation", "fit_r2": {target: float}}``;
        ``importance`` is the block's share of the total, in [0, 1].

    Raises
    ------
    InvalidInput
        Too few states, targets missing / mis-shaped / non-finite, or a bad ``rng``.
    """
    ys = _check(states_hist, targets, rng)
    keys = {k for s in [*states_hist, current] for k in s.descriptors if k.startswith(MACRO_PREFIXES)}
    X, _, blocks = feature_matrix([*states_hist, current], sorted(keys))
    Z, z0, blocks = _standardise(X[:-1], X[-1], blocks)
    n = Z.shape[0]
    draws = rng.integers(0, n, size=N_DRAWS)
    gram = Z.T @ Z + RIDGE_ALPHA * n * np.eye(Z.shape[1])
    names = list(dict.fromkeys(blocks))
    out: dict = {"method": METHOD, "fit_r2": {}}
    for target, y in ys.items():
        yc = y - y.mean()
        beta = np.linalg.solve(gram, Z.T @ yc) if Z.shape[1] else np.zeros(0)
        resid = yc - Z @ beta
        sst = float(yc @ yc)
        out["fit_r2"][target] = 1.0 - float(resid @ resid) / sst if sst > 0 else 0.0
        scores = []
        for block in names:
            cols = np.array([b == block for b in blocks])
            delta = (z0[cols] - Z[draws][:, cols]) @ beta[cols]
            scores.append((float(np.sqrt(np.mean(delta**2))), float(np.mean(delta))))
        total = sum(s for s, _ in scores)
        ranked = sorted(zip(names, scores), key=lambda item: -item[1][0])[:TOP_K]
        out[target] = [
            {"driver": block, "importance": (s / total if total > 0 else 0.0), "direction": "+" if m >= 0 else "-"}
            for block, (s, m) in ranked
        ]
    return out


def _standardise(X: FloatArray, x0: FloatArray, blocks: list[str]) -> tuple[FloatArray, FloatArray, list[str]]:
    """Column-standardise past rows ``X`` (n, p) and the current row ``x0`` (p,) by the past
    moments; missing -> 0; drop columns that are constant or never present."""
    present = ~np.isnan(X)
    count = present.sum(axis=0)
    mean = np.where(count > 0, np.where(present, X, 0.0).sum(axis=0) / np.maximum(count, 1), 0.0)
    dev = np.where(present, X - mean, 0.0)
    std = np.sqrt((dev**2).sum(axis=0) / np.maximum(count, 1))
    keep = std > 1e-12 * np.maximum(np.abs(mean), 1e-300)
    Z = dev[:, keep] / std[keep]
    z0 = np.where(np.isnan(x0[keep]), 0.0, (np.where(np.isnan(x0[keep]), 0.0, x0[keep]) - mean[keep]) / std[keep])
    return Z, z0, [b for b, k in zip(blocks, keep) if k]


__all__ = ["BLOCKS", "METHOD", "TARGETS", "explain", "feature_matrix"]


@dataclass(frozen=True)
class SurrogateExplainer:
    """The explainer part (kind ``explainer``, variant ``surrogate``): `explain` over the engine's own past forecasts.

    The targets are the engine's walk-forward forecasts at each of the last year of
    origins: upside ``q95 - q50``, downside ``q50 - q05`` and trend ``q50`` (log-returns).
    """

    kind: ClassVar[str] = "explainer"
    name: ClassVar[str] = "surrogate"
    requires_torch: ClassVar[bool] = False
    #: Past origins the surrogate is fitted on.
    history_days: int = 365

    def explain(self, data: Any, state: MarketState, config: Any, origin: pd.Timestamp, horizon: int,
                warnings: list[str]) -> dict | None:
        """Top drivers at ``origin`` (None, with a warning, when there are too few past forecasts)."""
        from aetheris_ray import walkforward as wf
        from aetheris_ray.calibration import day_number
        from aetheris_ray.history import positive_closes

        close = positive_closes(data)
        past = close.index[config.min_history:]
        past = past[past < origin][-int(self.history_days):]
        res = wf.walk_forward(data, past, [horizon], [0.05, 0.5, 0.95], config, seed=0)
        q = res.quantiles[:, 0, :]
        ok = np.flatnonzero(np.all(np.isfinite(q), axis=1))
        if ok.size < MIN_STATES:
            warnings.append(f"explain: {ok.size} past forecasts, at least {MIN_STATES} needed; no drivers")
            return None
        targets = {"upside": q[ok, 2] - q[ok, 1], "downside": q[ok, 1] - q[ok, 0], "trend": q[ok, 1]}
        return explain([res.states[i] for i in ok], targets, state, np.random.default_rng(day_number(origin)))
