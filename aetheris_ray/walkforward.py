"""The engine's walk-forward: many origins of one asset at once, point in time.

One code path serves the backtest (`EngineModel`, the `WalkForwardModel` the
harness calls) and the single forecast's calibration state (`walk_forward` over
the asset's recent past, from `aetheris_ray.engine.prepare`).

For requested origins ``o_1 < ... < o_m`` the walk-forward processes every
origin with a close from ``o_1 - (window_days + H)`` (the calibration warm-up)
to ``o_m``:

1. states for all origins at once (`compute_states`), stacked into `Context` batches;
2. components refitted on a fixed calendar schedule (days with
   ``day_number % refit_every == 0``, plus the first origin), each fit on the
   returns known at its day and warm-started from the previous fit (GARCH);
   every origin uses the latest fit on or before it;
3. paths ``(chunk, n_paths, H)`` simulated in chunks of origins, each chunk from
   its own seeded generator (``SeedSequence([seed, first day of the chunk])``);
4. raw PITs of the realised outcomes at each bucket's representative horizon;
5. in date order, each origin's conformal map from the pairs realised by then
   (``pair origin + h <= origin``), its calibrated quantiles and the calibrated PITs
   that feed the rolling coverage.

Nothing at origin ``t`` reads data after ``cutoff_for(t)``: states are point in
time, fits use returns up to the fit day (<= t), and a pair enters the buffers
only once realised.  The look-ahead test alters the future of a series and
checks that earlier forecasts do not move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from aetheris_ray.calibration import (
    BUCKETS,
    REP_HORIZONS,
    Calibrator,
    ConformalLevelMap,
    bucket_index,
    day_number,
    pit,
)
from aetheris_ray.components.base import Context
from aetheris_ray.components.registry import KINDS
from aetheris_ray.data.schema import AssetData
from aetheris_ray.engine import EngineConfig, FittedModel, daily_log_returns, positive_closes
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.state import REGIME_LABELS
from aetheris_ray.quantiles import DEFAULT_LEVELS

__all__ = ["EngineModel", "WalkForwardResult", "walk_forward", "quantiles_at"]

#: Simulated cells (origins x paths x steps) per chunk: bounds memory (~30 bytes per cell).
CHUNK_CELLS = 2_000_000


@dataclass
class WalkForwardResult:
    """What a walk-forward produced.

    Attributes
    ----------
    origins : DatetimeIndex, the requested origins
    quantiles : ndarray, shape (n_origins, n_horizons, n_levels)
        Calibrated log-return quantiles (NaN rows: origin without a close or too little history).
    raw_quantiles : ndarray, same shape
        The same before calibration.
    regimes : list of str (or None), per requested origin
    calibrator : Calibrator
        Every pair computed (each usable only from its realisation day on).
    states : list of MarketState (or None), per requested origin
    last : dict or None
        ``fitted`` (FittedModel, batch 1), ``state`` (MarketState), ``origin`` of the
        last processed origin (when ``keep_last``).
    info : dict
        Counts and fallbacks.
    """

    origins: pd.DatetimeIndex
    horizons: np.ndarray
    levels: np.ndarray
    quantiles: np.ndarray
    raw_quantiles: np.ndarray
    regimes: list
    calibrator: Calibrator
    states: list = field(default_factory=list)
    last: dict | None = None
    info: dict = field(default_factory=dict)


def quantiles_at(sorted_samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantiles (numpy's default method) of samples sorted along axis 1.

    Parameters
    ----------
    sorted_samples : ndarray, shape (n, n_paths, k)
    levels : ndarray, shape (n, k, n_levels), in [0, 1]

    Returns
    -------
    ndarray, shape (n, k, n_levels)

    >>> s = np.sort(np.arange(11.0))[None, :, None]
    >>> quantiles_at(s, np.array([[[0.25, 0.5]]])).tolist()
    [[[2.5, 5.0]]]
    """
    n_paths = sorted_samples.shape[1]
    pos = np.clip(levels, 0.0, 1.0) * (n_paths - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_paths - 1)
    frac = pos - lo
    s = np.moveaxis(sorted_samples, 1, 2)  # (n, k, n_paths)
    a = np.take_along_axis(s, lo, axis=2).astype(float)
    b = np.take_along_axis(s, hi, axis=2).astype(float)
    return a + frac * (b - a)


def _log_close_grid(close: pd.Series) -> tuple[np.ndarray, int]:
    """log(close) on a daily grid from the first close (NaN on missing days) and the grid's first day."""
    days = day_number(close.index)
    first = int(days[0])
    grid = np.full(int(days[-1]) - first + 1, np.nan)
    grid[days - first] = np.log(close.to_numpy(dtype=float))
    return grid, first


def walk_forward(
    data: AssetData,
    origins: Sequence[Any],
    horizons: Sequence[int] = (1, 3, 7, 14),
    levels: Sequence[float] = DEFAULT_LEVELS,
    config: EngineConfig | None = None,
    *,
    n_paths: int | None = None,
    seed: int = 0,
    keep_last: bool = False,
) -> WalkForwardResult:
    """Walk-forward forecasts of one asset (see the module docstring).

    Parameters
    ----------
    data : AssetData
        The asset's history; may extend past the origins (it is used point in time).
    origins : sequence of dates, sorted
    horizons : sequence of int, days ahead (1..90)
    levels : sequence of float, increasing in (0, 1)
    config : EngineConfig, default the baseline
    n_paths : int, default ``config.walkforward_paths``
    seed : int
    keep_last : bool
        Keep the fitted components and state of the last processed origin.
    """
    from aetheris_ray.features import compute_states

    cfg = config or EngineConfig()
    specs = cfg.specs()
    hz = np.asarray([int(h) for h in horizons])
    lv = np.asarray(levels, dtype=float)
    if hz.size == 0 or np.any((hz < 1) | (hz > REP_HORIZONS[-1])):
        raise InvalidInput(f"horizons {list(horizons)!r} must be whole days in 1..90")
    if lv.size == 0 or np.any((lv <= 0) | (lv >= 1)) or np.any(np.diff(lv) <= 0):
        raise InvalidInput(f"levels {list(levels)!r} must be increasing floats in (0, 1)")
    req = pd.DatetimeIndex(pd.to_datetime(list(origins))).normalize()
    if req.tz is not None:
        req = req.tz_localize(None)
    if len(req) > 1 and np.any(np.diff(req.asi8) <= 0):
        raise InvalidInput("origins must be sorted, increasing dates without repeats")
    n_paths = int(n_paths or cfg.walkforward_paths)
    nan = np.full((len(req), hz.size, lv.size), np.nan)
    result = WalkForwardResult(req, hz, lv, nan.copy(), nan.copy(), [None] * len(req),
                               Calibrator(cfg.calibration, data.asset, cfg.version), [None] * len(req))

    close = positive_closes(data)
    if len(close) < 2 or len(req) == 0:
        return result
    ret = daily_log_returns(close).to_numpy()
    days = day_number(close.index)
    pos_req = close.index.get_indexer(req)  # -1: no close on that date
    ok_req = pos_req >= cfg.min_history  # returns known at close p: p
    if not ok_req.any():
        return result
    h_sim = int(BUCKETS[int(bucket_index(hz.max()))][1]) if cfg.calibrate else int(hz.max())
    rep = [h for h in REP_HORIZONS if h <= h_sim] if cfg.calibrate else []
    first, last = int(pos_req[ok_req].min()), int(pos_req[ok_req].max())
    start_day = days[first] - (cfg.calibration.window_days + h_sim if cfg.calibrate else 0)
    o_pos = np.flatnonzero((days >= start_day) & (np.arange(len(days)) <= last)
                           & (np.arange(len(days)) >= cfg.min_history))
    o_days = days[o_pos]
    n_o = o_pos.size
    states = compute_states(data, list(close.index[o_pos]))
    lut = {k: i for i, k in enumerate(REGIME_LABELS)}
    regimes = np.array([lut.get(s.regime_label, 1) for s in states], dtype=np.int64)

    # -- fits on the calendar schedule ------------------------------------------------------
    refit = (o_days % cfg.refit_every == 0)
    refit[0] = True
    fit_of = np.cumsum(refit) - 1
    feat = _jump_features(states, o_pos, len(ret))
    fits: list[FittedModel] = []
    prev: FittedModel | None = None
    for i in np.flatnonzero(refit):
        p = int(o_pos[i])
        parts = {}
        for kind in KINDS:  # volatility is fitted before residuals, which may use it
            warm = getattr(prev, kind) if prev is not None else None
            parts[kind] = specs[kind].fit(ret[:p], warm=warm, rv=states[i].intraday_rv, features=feat[:p],
                                          vol=parts.get("volatility"))
        prev = FittedModel(**parts)
        fits.append(prev)
    model = FittedModel.stack(fits)

    # -- simulate in chunks: raw PITs for all, sorted samples for the requested -------------
    grid, g0 = _log_close_grid(close)
    req_of = {int(p): j for j, p in enumerate(pos_req) if p >= 0 and ok_req[j]}
    is_req = np.array([int(p) in req_of for p in o_pos])
    raw_pit = np.full((n_o, len(rep)), np.nan)
    sorted_req: dict[int, np.ndarray] = {}
    chunk = max(1, CHUNK_CELLS // (n_paths * h_sim))
    for c0 in range(0, n_o, chunk):
        sl = slice(c0, min(c0 + chunk, n_o))
        ctx = Context.from_states(states[sl], cfg.lookback)
        fm = model.take(fit_of[sl])
        cond = fm.condition(ctx)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(o_days[c0])])))
        cum = np.cumsum(fm.simulate(cond, n_paths, h_sim, rng), axis=2)  # (c, n, H) float64
        if rep:
            at = o_days[sl] - g0
            y = np.stack([_target(grid, at, h) for h in rep], axis=1)  # (c, n_rep)
            samples = cum[:, :, np.asarray(rep) - 1]  # (c, n, n_rep)
            ok = np.isfinite(y)
            raw_pit[sl] = np.where(ok, pit(samples, np.where(ok, y, 0.0), axis=1), np.nan)
        for k in np.flatnonzero(is_req[sl]):
            sorted_req[c0 + int(k)] = np.sort(cum[k][:, hz - 1], axis=0).astype(np.float32)  # (n, n_h)

    # -- calibration, in date order ---------------------------------------------------------
    cal = result.calibrator
    pair_o, pair_h, pair_r, pair_raw = [], [], [], []
    for j, h in enumerate(rep):
        ok = np.isfinite(raw_pit[:, j])
        pair_o.append(o_days[ok])
        pair_h.append(np.full(int(ok.sum()), h))
        pair_r.append(regimes[ok])
        pair_raw.append(raw_pit[ok, j])
    if rep:
        cal.add(np.concatenate(pair_o), np.concatenate(pair_h), np.concatenate(pair_r), np.concatenate(pair_raw))
    cal_pit = raw_pit.copy()
    needed = list(range(len(rep)))
    for i in range(n_o):
        lm = (cal.level_map(int(regimes[i]), int(o_days[i]), buckets=needed)
              if cfg.calibrate else ConformalLevelMap.identity())
        for j, h in enumerate(rep):
            if np.isfinite(raw_pit[i, j]):
                cal_pit[i, j] = float(lm.calibrated_prob(h - 1, raw_pit[i, j]))
                cal.assign_calibrated(int(o_days[i]), h, cal_pit[i, j])
        if is_req[i]:
            jr = req_of[int(o_pos[i])]
            raw_lv = np.stack([lm.raw_levels(int(h) - 1, lv) for h in hz])  # (n_h, n_levels)
            s = sorted_req.pop(i)[None]
            result.quantiles[jr] = np.maximum.accumulate(quantiles_at(s, raw_lv[None])[0], axis=1)
            result.raw_quantiles[jr] = quantiles_at(s, np.broadcast_to(lv, raw_lv.shape)[None])[0]
            result.regimes[jr] = states[i].regime_label
            result.states[jr] = states[i]
    if keep_last:
        result.last = {"fitted": model.take(fit_of[-1:]), "state": states[-1], "origin": close.index[o_pos[-1]]}
    result.info = {"n_processed": int(n_o), "n_fits": len(fits), "h_sim": h_sim, "n_paths": n_paths,
                   "fallbacks": sorted({str(v.get("fallback")) for f in fits for v in f.info().values()
                                        if v.get("fallback")})}
    return result


def _target(grid: np.ndarray, at: np.ndarray, h: int) -> np.ndarray:
    """``log(close[day + h] / close[day])`` on the daily grid (NaN when missing or not yet known)."""
    end = at + h
    out = np.full(at.size, np.nan)
    ok = end < grid.size
    out[ok] = grid[end[ok]] - grid[at[ok]]
    return out


def _jump_features(states: Sequence[Any], o_pos: np.ndarray, n_ret: int) -> np.ndarray:
    """Regime vector + MM indices at each processed origin, on the return axis (row p-1 = known at close p)."""
    from aetheris_ray.components.base import MM_KEYS

    d = max(int(np.size(s.regime_vector)) for s in states) + len(MM_KEYS)
    out = np.full((n_ret, d), np.nan)
    for s, p in zip(states, o_pos):
        v = np.zeros(d)
        rv = np.asarray(s.regime_vector, dtype=float).ravel()
        v[: rv.size] = np.where(np.isfinite(rv), rv, 0.0)
        for j, k in enumerate(MM_KEYS):
            x = s.mm_indices.get(k) if s.mm_indices else None
            v[d - len(MM_KEYS) + j] = float(x) if x is not None and np.isfinite(x) else 0.0
        out[int(p) - 1] = v
    return out


@dataclass(frozen=True)
class EngineModel:
    """The engine as a `WalkForwardModel` (what the backtest harness calls).

    >>> EngineModel().name
    'engine'
    """

    config: EngineConfig = EngineConfig()
    n_paths: int | None = None
    seed: int = 0
    name: str = "engine"

    def predict(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                levels: Sequence[float]) -> np.ndarray:
        """LOG-RETURN quantiles (relative to the close at each origin), shape (n_origins, n_horizons, n_levels).

        Row i uses only data known at ``cutoff_for(origins[i])``; NaN rows where the
        origin has no close or fewer than ``config.min_history`` returns.
        """
        return self.predict_detail(data, origins, horizons, levels).quantiles

    def predict_detail(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                       levels: Sequence[float]) -> WalkForwardResult:
        """`predict` plus the calibrator, regimes and raw quantiles (for reports)."""
        return walk_forward(data, origins, horizons, levels, self.config, n_paths=self.n_paths, seed=self.seed)
