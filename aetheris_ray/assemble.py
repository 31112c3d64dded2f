"""The result layer: raw log-return paths + a level map -> the calibrated `Forecast`.

Quantiles per step through the calibration's level map, the dense CDF of the last
step, threshold probabilities (far ones by importance sampling when a tilted sampler
of the model is given, `aetheris_ray.tails`).
"""

from __future__ import annotations

import numpy as np

from aetheris_ray import simulation as sim
from aetheris_ray.contract import ForecastRequest
from aetheris_ray.result import Forecast
from aetheris_ray.tails import IMPORTANCE_SAMPLING, TiltedSampler, threshold_probabilities

__all__ = ["assemble"]


def assemble(asset, origin, spot, paths, req: ForecastRequest, seed, model_version, level_map,
             tail_sampler: TiltedSampler | None = None, **extra) -> Forecast:
    """Turn raw log-return paths into a `Forecast` (quantiles, thresholds, dense CDF).

    ``tail_sampler`` (the model's tilted paths) lets far thresholds be estimated by
    importance sampling; without it every threshold is plain Monte Carlo.
    """
    cum_t = sim.cumulative_steps(paths)  # (horizon, n_paths), one row per step
    n_steps = cum_t.shape[0]
    last = cum_t[-1]
    last.sort()  # the last step serves the cone, the dense CDF grid and the thresholds
    q_log = sim.cone_steps(cum_t, req.quantiles, level_map, sorted_rows=_sort_rows(cum_t))
    grid_log = sim.cone_steps(last[None, :], sim.CDF_GRID, _LastStep(level_map, n_steps), sorted_rows=True)[0]
    thresholds = np.asarray(req.thresholds, dtype=float)
    tp = threshold_probabilities(last, np.log(thresholds / spot), level_map, n_steps - 1, sampler=tail_sampler,
                                 seed=seed, n_paths=req.paths, presorted=True)
    metadata = extra.get("metadata", {})
    if tp.warnings or IMPORTANCE_SAMPLING in tp.estimator:
        metadata = {**metadata, "warnings": [*metadata.get("warnings", []), *tp.warnings]}
        if IMPORTANCE_SAMPLING in tp.estimator:
            metadata["importance_sampling"] = tp.details(thresholds)
    return Forecast(
        asset=asset,
        origin=origin,
        spot=spot,
        horizons=np.arange(1, req.horizon + 1),
        levels=tuple(req.quantiles),
        quantiles=spot * np.exp(q_log),
        thresholds=thresholds,
        p_below=tp.p_below,
        cdf_levels=sim.CDF_GRID.copy(),
        cdf_prices=spot * np.exp(grid_log),
        regime=extra.get("regime", {"label": "unknown"}),
        mm_indices=extra.get("mm_indices", {}),
        drivers=extra.get("drivers"),
        conditional=bool(extra.get("conditional", bool(req.scenario))),
        seed=seed,
        model_version=model_version,
        calibration_version=level_map.version,
        coverage=extra.get("coverage", {}),
        n_paths=req.paths,
        paths=paths,
        metadata=metadata,
        p_above=tp.p_above,
        threshold_se=tp.se,
        threshold_estimator=tp.estimator,
    )


def _sort_rows(cum_t: np.ndarray) -> np.ndarray:
    """Sort every step when that is cheap (`sim.SORT_MAX_PATHS`), else only the last (already sorted).

    Returns which rows are sorted; the others get their order statistics by selection.
    """
    n_steps, n = cum_t.shape
    if n <= sim.SORT_MAX_PATHS:
        cum_t[:-1].sort(axis=1)
        return np.ones(n_steps, dtype=bool)
    return np.arange(n_steps) == n_steps - 1


class _LastStep:
    """A level map restricted to the last step (used for the dense CDF grid)."""

    def __init__(self, inner: sim.LevelMap, n_steps: int):
        self.inner, self.step = inner, n_steps - 1
        self.version = inner.version

    def raw_levels(self, step, levels):
        return self.inner.raw_levels(self.step, levels)

    def raw_level_grid(self, n_steps, levels):
        grid = getattr(self.inner, "raw_level_grid", None)
        if grid is None:
            return np.stack([np.clip(self.raw_levels(s, levels), 0.0, 1.0) for s in range(n_steps)])
        return grid(self.step + 1, levels)[-1:].repeat(n_steps, axis=0)

    def calibrated_prob(self, step, p_raw):
        return self.inner.calibrated_prob(self.step, p_raw)
