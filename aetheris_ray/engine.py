"""The forecasting engine: from point-in-time history to a calibrated `Forecast`.

This first version is the honest minimum of the foundation issue: a zero-drift
log-normal walk with RiskMetrics EWMA volatility, fitted on data up to the as-of
date.  The component pipeline of ARCHITECTURE.md replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aetheris_ray.contract import ForecastRequest
from aetheris_ray.data.schema import AssetData
from aetheris_ray.errors import DataError
from aetheris_ray.result import Forecast
from aetheris_ray import simulation as sim

MIN_CLOSES = 20
#: An as-of date whose newest close is older than this is refused (stale data).
MAX_STALENESS_DAYS = 3
MODEL_VERSION = "ewma-lognormal-0.1"


def daily_log_returns(close: pd.Series) -> pd.Series:
    """Log-returns of consecutive closes; a return spanning a k-day gap is scaled by 1/sqrt(k).

    Gaps are kept honest: the scaled return has the variance of a one-day move
    under a random walk, so volatility estimates are not inflated by missing days.
    """
    close = close.dropna()
    r = np.log(close.to_numpy(dtype=float))
    days = np.diff(close.index.to_numpy()).astype("timedelta64[D]").astype(float)
    out = np.diff(r) / np.sqrt(np.maximum(days, 1.0))
    return pd.Series(out, index=close.index[1:])


def resolve_origin(close: pd.Series, as_of: Any, asset: str) -> pd.Timestamp:
    """The origin date: the newest close on or before ``as_of`` (default: the newest close)."""
    if close.empty:
        raise DataError(f"{asset}: no daily closes in the data source")
    if as_of is None:
        return close.index[-1]
    as_of = pd.Timestamp(as_of).normalize()
    known = close.index[close.index <= as_of]
    if known.empty:
        raise DataError(f"as_of {as_of.date()}: {asset} has no close on or before it (first close {close.index[0].date()})")
    origin = known[-1]
    stale = (as_of - origin).days
    if stale > MAX_STALENESS_DAYS:
        raise DataError(
            f"as_of {as_of.date()}: the newest {asset} close on or before it is {origin.date()}, "
            f"{stale} days earlier (more than {MAX_STALENESS_DAYS}); pick an as_of with data"
        )
    return origin


def ewma_sigma(returns: np.ndarray, lam: float = 0.94) -> float:
    """RiskMetrics EWMA volatility after the last return (seeded with the sample variance)."""
    var = float(np.var(returns[: min(len(returns), 30)])) if len(returns) else 0.0
    for x in returns:
        var = lam * var + (1 - lam) * float(x) ** 2
    return float(np.sqrt(max(var, 1e-12)))


@dataclass(frozen=True)
class FittedEwmaLognormal:
    asset: str
    origin: pd.Timestamp
    spot: float
    sigma: float
    info: dict[str, Any] = field(default_factory=dict)

    def sample(self, n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n_paths, horizon))
        return -0.5 * self.sigma**2 + self.sigma * z


def fit(data: AssetData, as_of: Any = None) -> FittedEwmaLognormal:
    """Fit the model on ``data`` up to the origin resolved from ``as_of``."""
    close = data.daily_close()
    origin = resolve_origin(close, as_of, data.asset)
    close = close[close.index <= origin].dropna()
    if len(close) < MIN_CLOSES:
        raise DataError(f"{data.asset}: {len(close)} daily closes up to {origin.date()}, at least {MIN_CLOSES} needed")
    r = daily_log_returns(close).to_numpy()
    return FittedEwmaLognormal(asset=data.asset, origin=origin, spot=float(close.iloc[-1]), sigma=ewma_sigma(r))


@dataclass(frozen=True)
class Prepared:
    """Everything needed to draw paths and finish a forecast; picklable (Ray actors hold it).

    The two-phase split (`prepare`, then paths from ``prepared.sample`` in seeded
    blocks, then `finish`) is what lets the distributed layer shard the Monte
    Carlo without re-implementing the engine.
    """

    request: ForecastRequest
    seed: int
    model: FittedEwmaLognormal
    model_version: str
    level_map: Any

    def sample(self, n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        return self.model.sample(n_paths, horizon, rng)


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one (returned with the forecast so it can be replayed)."""
    return int(seed) if seed is not None else int(np.random.SeedSequence().entropy % (2**63))


def prepare(data: AssetData, req: ForecastRequest) -> Prepared:
    """Fit on ``data`` (point-in-time) and resolve everything but the paths."""
    model = fit(data, req.as_of)
    return Prepared(request=req, seed=resolve_seed(req.seed), model=model, model_version=MODEL_VERSION,
                    level_map=sim.IdentityLevelMap())


def finish(prep: Prepared, paths: np.ndarray) -> Forecast:
    """Turn the merged paths of a prepared request into the `Forecast`."""
    m = prep.model
    return assemble(m.asset, m.origin, m.spot, paths, prep.request, prep.seed, prep.model_version, prep.level_map)


def forecast(data: AssetData, req: ForecastRequest) -> Forecast:
    """Fit on ``data`` (already point-in-time) and answer ``req`` in-process."""
    prep = prepare(data, req)
    paths = sim.simulate_blocks(prep.sample, req.paths, req.horizon, prep.seed)
    return finish(prep, paths)


def assemble(asset, origin, spot, paths, req: ForecastRequest, seed, model_version, level_map, **extra) -> Forecast:
    """Turn raw log-return paths into a `Forecast` (quantiles, thresholds, dense CDF)."""
    cum = sim.cumulative(paths)
    q_log = sim.cone(cum, req.quantiles, level_map)
    grid_log = sim.cone(cum[:, -1:], sim.CDF_GRID, _LastStep(level_map, cum.shape[1]))[0]
    thresholds = np.asarray(req.thresholds, dtype=float)
    p_below = sim.prob_below(cum[:, -1], np.log(thresholds / spot), level_map, step=cum.shape[1] - 1)
    return Forecast(
        asset=asset,
        origin=origin,
        spot=spot,
        horizons=np.arange(1, req.horizon + 1),
        levels=tuple(req.quantiles),
        quantiles=spot * np.exp(q_log),
        thresholds=thresholds,
        p_below=p_below,
        cdf_levels=sim.CDF_GRID.copy(),
        cdf_prices=spot * np.exp(grid_log),
        regime=extra.get("regime", {"label": "unknown"}),
        mm_indices=extra.get("mm_indices", {}),
        drivers=extra.get("drivers"),
        conditional=bool(req.scenario),
        seed=seed,
        model_version=model_version,
        calibration_version=level_map.version,
        coverage=extra.get("coverage", {}),
        n_paths=req.paths,
        paths=paths,
        metadata=extra.get("metadata", {}),
    )


class _LastStep:
    """A level map restricted to the last step (used for the dense CDF grid)."""

    def __init__(self, inner: sim.LevelMap, n_steps: int):
        self.inner, self.step = inner, n_steps - 1
        self.version = inner.version

    def raw_levels(self, step, levels):
        return self.inner.raw_levels(self.step, levels)

    def calibrated_prob(self, step, p_raw):
        return self.inner.calibrated_prob(self.step, p_raw)
