"""The engine's walk-forward: many origins of one asset at once, point in time.

One code path serves the backtest (`EngineModel`, the `WalkForwardModel` the
harness calls) and the single forecast's calibration state (`walk_forward` over
the asset's recent past, from `aetheris_ray.engine.prepare`).

For requested origins ``o_1 < ... < o_m`` the walk-forward processes every
origin with a close from ``o_1 - (window_days + H)`` (the calibration warm-up)
to ``o_m``, in two phases:

* the raw phase (`raw_block`), which can run over blocks of days in parallel:

  1. states for the block's origins at once (the market-state part's ``compute_states``),
     stacked into `Context` batches;
  2. the model's parts (`aetheris_ray.model.fit_model`) refitted on a fixed calendar schedule (`fit_positions`: the first
     close with ``min_history`` returns, then every close on a day with
     ``day_number % refit_every == 0``), each fit on the returns known at its day;
     every origin uses the latest fit on or before it.  A fit warm-starts (GARCH)
     from the first fit of its calendar period of `WARM_START_DAYS` days, itself a
     cold fit (`warm_anchors`), never from a chain of earlier fits;
  3. paths ``(chunk, n_paths, H)`` simulated in calendar chunks of `chunk_days`
     days (``day_number // chunk_days``), each chunk from its own generator seeded
     by ``SeedSequence([seed, first calendar day of the chunk])``;
  4. raw PITs of the realised outcomes at each bucket's representative horizon,
     and the sorted samples of the requested origins;

* the calibration pass (`combine_blocks`), sequential and cheap: the blocks merged
  in date order; each origin's conformal map from the pairs realised by then
  (``pair origin + h <= origin``), its calibrated quantiles and the calibrated PITs
  that feed the rolling coverage.

Block invariance.  Nothing in the raw phase depends on where a block starts: fits
are tied to calendar days and the data, warm starts reach back to a fit every block
recomputes identically, and block edges snap to the chunk grid, so a chunk holds
the same origins (and the same random draws) however the days are split.  Hence
``combine_blocks([raw_block(..., span=b) for b in blocks])`` equals
`walk_forward` bitwise for any split of the days into consecutive blocks (the
tests check it); the Ray backtest relies on it.

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
    REP_HORIZONS,
    Calibrator,
    ConformalLevelMap,
    day_number,
    pit,
    sim_horizon,
)
from aetheris_ray.components.base import Context
from aetheris_ray.components.contract import needed_inputs
from aetheris_ray.components.registry import spec_class
from aetheris_ray.data.schema import AssetData
from aetheris_ray.history import daily_log_returns, positive_closes
from aetheris_ray.model import (EngineConfig, FittedModel, build_calibrator, fit_model, fit_order, resolve_config,
                                state_inputs)
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.state import regime_codes
from aetheris_ray.quantiles import DEFAULT_LEVELS

__all__ = [
    "EngineModel", "RawBlock", "WalkForwardResult", "walk_forward", "raw_block", "combine_blocks",
    "quantiles_at", "fit_positions", "warm_anchors", "chunk_days",
]

#: Simulated cells (origins x paths x steps) per chunk: bounds memory (~30 bytes per cell).
CHUNK_CELLS = 2_000_000
#: Longest simulated chunk in calendar days (fewer when `CHUNK_CELLS` demands): the grid block edges snap to.
CHUNK_DAYS = 32
#: Warm starts: a fit starts from the first fit of its calendar period of this many days (a quarter).
WARM_START_DAYS = 91
#: Version of the walk-forward algorithm (part of the engine's state-cache key).
ALGORITHM_VERSION = 2

Span = tuple[Any, Any]


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


@dataclass
class RawBlock:
    """The raw phase of a walk-forward over one block of days (what `raw_block` returns).

    Attributes
    ----------
    asset, model_version : str
    span : (int or None, int or None)
        The processed days ``[lo, hi)`` of the block as day numbers, snapped to the
        chunk grid (None: unbounded on that side).
    h_sim, n_paths : int
        Steps simulated and paths per origin.
    days : ndarray of int64, shape (n,)
        Day numbers of the processed origins, increasing.
    regimes : ndarray of int64, shape (n,)
        Regime code (index in `REGIME_LABELS`) at each processed origin.
    raw_pit : ndarray, shape (n, n_rep)
        Raw PITs at the representative horizons (NaN: outcome not known).
    req : ndarray of int, shape (k,)
        Index, in the requested origins, of each requested origin processed here.
    req_rows : ndarray of int, shape (k,)
        Its row in ``days``.
    sorted_samples : ndarray of float32, shape (k, n_paths, n_horizons)
        Its simulated cumulative log-returns at the requested horizons, sorted along the paths.
    labels : list of str, length k
        Its regime label.
    states : list of MarketState or None
        Its state (when ``keep_states``).
    fits : dict day -> tuple of str
        Day of each fit computed here and the fallbacks its components took.
    last : dict or None
        See `WalkForwardResult.last` (the block holding the last processed origin, with ``keep_last``).
    """

    asset: str
    model_version: str
    span: tuple[int | None, int | None]
    h_sim: int
    n_paths: int
    days: np.ndarray
    regimes: np.ndarray
    raw_pit: np.ndarray
    req: np.ndarray
    req_rows: np.ndarray
    sorted_samples: np.ndarray
    labels: list
    states: list | None = None
    fits: dict = field(default_factory=dict)
    last: dict | None = None


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


def fit_positions(days: np.ndarray, first: int, refit_every: int) -> np.ndarray:
    """Positions (in a series of closes) of the fits of a calendar refit schedule.

    The first fit is at position ``first`` (the first close with enough history);
    the later ones at every close whose day number is a multiple of ``refit_every``.
    An origin uses the latest fit on or before it.  The schedule depends on the data
    only, never on the origins asked for, so any block of origins finds the same fits.

    Parameters
    ----------
    days : ndarray of int, shape (n,)
        Day numbers of the closes, increasing.
    first : int
        Position of the first fit (``first < n``).
    refit_every : int

    Returns
    -------
    ndarray of int, increasing

    >>> fit_positions(np.array([5, 6, 7, 8, 9, 10, 14, 15]), 1, 7).tolist()
    [1, 2, 6]
    """
    later = np.flatnonzero(np.asarray(days)[first + 1:] % int(refit_every) == 0) + first + 1
    return np.concatenate([[int(first)], later]).astype(np.intp)


def warm_anchors(fit_days: np.ndarray, period: int = WARM_START_DAYS) -> np.ndarray:
    """For each fit, the index of the fit it warm-starts from: the first fit of its calendar period.

    An anchor (its own index) is a cold fit.  Warm starts thus reach back one step to
    a fit that any block of origins recomputes identically, never along a chain.

    >>> warm_anchors(np.array([180, 182, 189, 196, 203])).tolist()  # periods of 91 days: 182 starts one
    [0, 1, 1, 1, 1]
    """
    p = np.asarray(fit_days, dtype=np.int64) // int(period)
    return np.searchsorted(p, p, side="left")


def chunk_days(n_paths: int, h_sim: int) -> int:
    """Calendar days per simulated chunk: `CHUNK_DAYS`, fewer when the cells would exceed `CHUNK_CELLS`.

    >>> chunk_days(1000, 14), chunk_days(20000, 90)
    (32, 1)
    """
    return int(max(1, min(CHUNK_DAYS, CHUNK_CELLS // (int(n_paths) * int(h_sim)))))


def _check_request(origins: Sequence[Any], horizons: Sequence[int], levels: Sequence[float] | None
                   ) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    hz = np.asarray([int(h) for h in horizons])
    if hz.size == 0 or np.any((hz < 1) | (hz > REP_HORIZONS[-1])):
        raise InvalidInput(f"horizons {list(horizons)!r} must be whole days in 1..90")
    lv = np.asarray(DEFAULT_LEVELS if levels is None else levels, dtype=float)
    if lv.size == 0 or np.any((lv <= 0) | (lv >= 1)) or np.any(np.diff(lv) <= 0):
        raise InvalidInput(f"levels {list(levels or ())!r} must be increasing floats in (0, 1)")
    req = pd.DatetimeIndex(pd.to_datetime(list(origins))).normalize()
    if req.tz is not None:
        req = req.tz_localize(None)
    if len(req) > 1 and np.any(np.diff(req.asi8) <= 0):
        raise InvalidInput("origins must be sorted, increasing dates without repeats")
    return req, hz, lv


def _sim_plan(cfg: EngineConfig, hz: np.ndarray, n_paths: int) -> tuple[int, list[int], int]:
    """Steps simulated, representative horizons recorded, and the chunk length in days."""
    h_sim = sim_horizon(int(hz.max()), cfg.calibrate)
    rep = [h for h in REP_HORIZONS if h <= h_sim] if cfg.calibrate else []
    return h_sim, rep, chunk_days(n_paths, h_sim)


def _log_close_grid(close: pd.Series) -> tuple[np.ndarray, int]:
    """log(close) on a daily grid from the first close (NaN on missing days) and the grid's first day."""
    days = day_number(close.index)
    first = int(days[0])
    grid = np.full(int(days[-1]) - first + 1, np.nan)
    grid[days - first] = np.log(close.to_numpy(dtype=float))
    return grid, first


def _snap(x: Any, grid: int) -> int | None:
    """A block edge (date or None) as a day number on the chunk grid (rounded down)."""
    if x is None:
        return None
    return int(day_number(x)) // grid * grid


def raw_block(
    data: AssetData,
    origins: Sequence[Any],
    horizons: Sequence[int] = (1, 3, 7, 14),
    config: EngineConfig | None = None,
    *,
    span: Span = (None, None),
    n_paths: int | None = None,
    seed: int = 0,
    keep_states: bool = True,
    keep_last: bool = False,
) -> RawBlock:
    """The raw phase of a walk-forward (see the module docstring) over the days of one block.

    Parameters
    ----------
    data : AssetData
        The asset's history; may extend past the origins (it is used point in time).
    origins : sequence of dates, sorted
        ALL the requested origins of the walk-forward (they set the warm-up), not only the block's.
    horizons : sequence of int, days ahead (1..90)
    config : EngineConfig, default the baseline
    span : (date or None, date or None)
        The block: processed origins on days ``[lo, hi)``, both edges rounded down to the
        chunk grid (`chunk_days`); None leaves that side open.  Consecutive blocks
        (``hi`` of one = ``lo`` of the next, the first ``lo`` and the last ``hi`` None)
        cover every origin once.
    n_paths : int, default ``config.walkforward_paths``
    seed : int
    keep_states : bool
        Keep the `MarketState` of each requested origin.
    keep_last : bool
        Keep the fitted components and state of the last processed origin.
    """
    cfg = resolve_config(config or EngineConfig())
    specs = cfg.specs()
    order = fit_order(specs, cfg.used_kinds())
    market = spec_class("market_state", cfg.market_state.name)()
    req, hz, _ = _check_request(origins, horizons, None)
    n_paths = int(n_paths or cfg.walkforward_paths)
    h_sim, rep, grid = _sim_plan(cfg, hz, n_paths)
    lo, hi = _snap(span[0], grid), _snap(span[1], grid)
    out = RawBlock(data.asset, cfg.version, (lo, hi), h_sim, n_paths, np.empty(0, dtype=np.int64),
                   np.empty(0, dtype=np.int64), np.empty((0, len(rep))), np.empty(0, dtype=np.intp),
                   np.empty(0, dtype=np.intp), np.empty((0, n_paths, hz.size), dtype=np.float32), [],
                   [] if keep_states else None)
    close = positive_closes(data)
    if len(close) < 2 or len(req) == 0:
        return out
    ret = daily_log_returns(close).to_numpy()
    days = day_number(close.index)
    pos_req = close.index.get_indexer(req)  # -1: no close on that date
    ok_req = pos_req >= cfg.min_history  # returns known at close p: p
    if not ok_req.any():
        return out
    first, last = int(pos_req[ok_req].min()), int(pos_req[ok_req].max())
    start_day = days[first] - (cfg.calibration.window_days + h_sim if cfg.calibrate else 0)
    at = np.arange(len(days))
    keep = (days >= start_day) & (at <= last) & (at >= cfg.min_history)
    if lo is not None:
        keep &= days >= lo
    if hi is not None:
        keep &= days < hi
    o_pos = np.flatnonzero(keep)
    if o_pos.size == 0:
        return out
    o_days = days[o_pos]
    n_o = o_pos.size

    # -- fits on the calendar schedule: those the block's origins use, and their warm-start anchors --
    fp = fit_positions(days, cfg.min_history, cfg.refit_every)
    k_of = np.searchsorted(fp, o_pos, side="right") - 1
    anchor = warm_anchors(days[fp])
    used = np.unique(k_of)
    needed = np.union1d(used, anchor[used])
    # training features (regime vector + MM indices per past day) of the parts that declare them, over their window
    f_window = max([int(specs[k].window) for k in order if "features" in needed_inputs(specs[k])], default=0)
    feat_pos = np.empty(0, dtype=np.intp)
    if f_window:
        feat_pos = np.arange(max(cfg.min_history, int(fp[needed[0]]) - f_window + 1), int(fp[needed[-1]]) + 1)
    all_pos = np.union1d(np.union1d(o_pos, fp[needed]), feat_pos)
    state_of = dict(zip(all_pos.tolist(), market.compute_states(data, list(close.index[all_pos]))))
    states = [state_of[int(p)] for p in o_pos]
    regimes = regime_codes([s.regime_label for s in states])
    feat = _jump_features([state_of[int(p)] for p in feat_pos], feat_pos, len(ret)) if f_window else None
    fitted: dict[int, FittedModel] = {}
    for k in needed.tolist():  # increasing: an anchor (index <= k) is fitted before the fits warm-started from it
        p = int(fp[k])
        warm = fitted[int(anchor[k])] if anchor[k] != k else None
        fitted[k] = fit_model(cfg, specs, ret[:p], warm=warm, **state_inputs(state_of[p]),
                              features=None if feat is None else feat[:p], order=order)
    model = FittedModel.stack([fitted[int(k)] for k in used])
    row_of_fit = np.searchsorted(used, k_of)  # each origin's fit, as a row of `model`

    # -- simulate in calendar chunks: raw PITs for all, sorted samples for the requested -----
    grid_close, g0 = _log_close_grid(close)
    req_of = {int(p): j for j, p in enumerate(pos_req) if p >= 0 and ok_req[j]}
    is_req = np.array([int(p) in req_of for p in o_pos])
    raw_pit = np.full((n_o, len(rep)), np.nan)
    req_rows = np.flatnonzero(is_req)
    sorted_req = np.empty((req_rows.size, n_paths, hz.size), dtype=np.float32)
    chunk_id = o_days // grid
    edges = np.concatenate([[0], np.flatnonzero(np.diff(chunk_id)) + 1, [n_o]])
    for c0, c1 in zip(edges[:-1], edges[1:]):
        sl = slice(int(c0), int(c1))
        ctx = Context.from_states(states[sl], cfg.lookback)
        fm = model.take(row_of_fit[sl])
        cond = fm.condition(ctx)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(chunk_id[c0]) * grid])))
        cum = np.cumsum(fm.simulate(cond, n_paths, h_sim, rng), axis=2)  # (c, n, H) float64
        if rep:
            y = np.stack([_target(grid_close, o_days[sl] - g0, h) for h in rep], axis=1)  # (c, n_rep)
            samples = cum[:, :, np.asarray(rep) - 1]  # (c, n, n_rep)
            ok = np.isfinite(y)
            raw_pit[sl] = np.where(ok, pit(samples, np.where(ok, y, 0.0), axis=1), np.nan)
        lo_r, hi_r = np.searchsorted(req_rows, [c0, c1])
        for r in range(int(lo_r), int(hi_r)):
            sorted_req[r] = np.sort(cum[req_rows[r] - c0][:, hz - 1], axis=0)  # (n, n_h), float32

    out.days, out.regimes, out.raw_pit = o_days, regimes, raw_pit
    out.req = np.array([req_of[int(o_pos[i])] for i in req_rows], dtype=np.intp)
    out.req_rows, out.sorted_samples = req_rows, sorted_req
    out.labels = [states[i].regime_label for i in req_rows]
    if keep_states:
        out.states = [states[i] for i in req_rows]
    out.fits = {int(days[fp[k]]): _fallbacks(fitted[k]) for k in fitted}
    if keep_last and int(o_pos[-1]) == last:  # the block holding the walk-forward's last origin
        out.last = {"fitted": fitted[int(k_of[-1])], "state": states[-1], "origin": close.index[o_pos[-1]]}
    return out


def _fallbacks(fm: FittedModel) -> tuple[str, ...]:
    """The fallbacks a fit's components took (empty when none)."""
    return tuple(sorted({str(v.get("fallback")) for v in fm.info().values() if v.get("fallback")}))


def combine_blocks(
    blocks: Sequence[RawBlock],
    origins: Sequence[Any],
    horizons: Sequence[int] = (1, 3, 7, 14),
    levels: Sequence[float] = DEFAULT_LEVELS,
    config: EngineConfig | None = None,
) -> WalkForwardResult:
    """The calibration pass: raw blocks merged in date order into the walk-forward's result.

    Parameters
    ----------
    blocks : sequence of RawBlock
        From `raw_block` with the same data, origins, horizons, config, paths and seed,
        over consecutive spans covering all days (the first ``lo`` and the last ``hi``
        None), in order.
    origins, horizons, levels, config
        Those of the walk-forward (``levels`` only matter here).

    Returns
    -------
    WalkForwardResult
        Equal to `walk_forward`'s, whatever the split.
    """
    cfg = resolve_config(config or EngineConfig())
    req, hz, lv = _check_request(origins, horizons, levels)
    if not blocks:
        raise InvalidInput("blocks: none given; pass the raw blocks of every span, in order")
    spans = [b.span for b in blocks]
    if spans[0][0] is not None or spans[-1][1] is not None or any(
            a[1] is None or a[1] != b[0] for a, b in zip(spans[:-1], spans[1:])):
        raise InvalidInput(f"blocks: spans {spans} are not consecutive from None to None; pass every block in order")
    if len({(b.asset, b.model_version, b.h_sim, b.n_paths) for b in blocks}) > 1:
        raise InvalidInput("blocks: they come from different assets, models, horizons or path counts")
    nan = np.full((len(req), hz.size, lv.size), np.nan)
    cal = build_calibrator(cfg, blocks[0].asset)
    result = WalkForwardResult(req, hz, lv, nan.copy(), nan.copy(), [None] * len(req), cal, [None] * len(req))
    o_days = np.concatenate([b.days for b in blocks])
    regimes = np.concatenate([b.regimes for b in blocks])
    raw_pit = np.concatenate([b.raw_pit for b in blocks], axis=0)
    offsets = np.cumsum([0] + [b.days.size for b in blocks[:-1]])
    req_rows = np.concatenate([b.req_rows + o for b, o in zip(blocks, offsets)]).astype(np.intp)
    req_j = np.concatenate([b.req for b in blocks]).astype(np.intp)
    samples = [s for b in blocks for s in b.sorted_samples]
    labels = [x for b in blocks for x in b.labels]
    states = [x for b in blocks for x in b.states] if all(b.states is not None for b in blocks) else None
    if o_days.size > 1 and np.any(np.diff(o_days) <= 0):
        raise InvalidInput("blocks: processed days overlap or are out of order")
    rep = [h for h in REP_HORIZONS if h <= blocks[0].h_sim] if cfg.calibrate else []
    if raw_pit.shape[1] != len(rep):
        raise InvalidInput("blocks: they were computed with another calibration setting")
    fits: dict[int, tuple[str, ...]] = {}
    for b in blocks:
        fits.update(b.fits)
    result.info = {"n_processed": int(o_days.size), "n_fits": len(fits), "h_sim": blocks[0].h_sim,
                   "n_paths": blocks[0].n_paths, "fallbacks": sorted({x for v in fits.values() for x in v})}
    result.last = next((b.last for b in reversed(blocks) if b.last is not None), None)
    if o_days.size == 0:
        return result

    # -- calibration, in date order ---------------------------------------------------------
    pair_o, pair_h, pair_r, pair_raw = [], [], [], []
    for j, h in enumerate(rep):
        ok = np.isfinite(raw_pit[:, j])
        pair_o.append(o_days[ok])
        pair_h.append(np.full(int(ok.sum()), h))
        pair_r.append(regimes[ok])
        pair_raw.append(raw_pit[ok, j])
    if rep:
        cal.add(np.concatenate(pair_o), np.concatenate(pair_h), np.concatenate(pair_r), np.concatenate(pair_raw))
    needed = list(range(len(rep)))
    k = 0
    for i in range(o_days.size):
        lm = (cal.level_map(int(regimes[i]), int(o_days[i]), buckets=needed, version="walk-forward")
              if cfg.calibrate else ConformalLevelMap.identity())
        for j, h in enumerate(rep):
            if np.isfinite(raw_pit[i, j]):
                cal.assign_calibrated(int(o_days[i]), h, float(lm.calibrated_prob(h - 1, raw_pit[i, j])))
        if k < req_rows.size and req_rows[k] == i:
            jr = int(req_j[k])
            raw_lv = np.stack([lm.raw_levels(int(h) - 1, lv) for h in hz])  # (n_h, n_levels)
            s = samples[k][None]
            result.quantiles[jr] = np.maximum.accumulate(quantiles_at(s, raw_lv[None])[0], axis=1)
            result.raw_quantiles[jr] = quantiles_at(s, np.broadcast_to(lv, raw_lv.shape)[None])[0]
            result.regimes[jr] = labels[k]
            if states is not None:
                result.states[jr] = states[k]
            k += 1
    return result


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
    """Walk-forward forecasts of one asset (see the module docstring): one raw block, then calibration.

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
    _check_request(origins, horizons, levels)
    block = raw_block(data, origins, horizons, config, n_paths=n_paths, seed=seed, keep_last=keep_last)
    return combine_blocks([block], origins, horizons, levels, config)


def _target(grid: np.ndarray, at: np.ndarray, h: int) -> np.ndarray:
    """``log(close[day + h] / close[day])`` on the daily grid (NaN when missing or not yet known)."""
    end = at + h
    out = np.full(at.size, np.nan)
    ok = end < grid.size
    out[ok] = grid[end[ok]] - grid[at[ok]]
    return out


def _jump_features(states: Sequence[Any], positions: np.ndarray, n_ret: int) -> np.ndarray:
    """Regime vector + MM indices at closes ``positions`` on the return axis (row p-1: known at close p; else NaN).

    `raw_block` fills the rows of every close a fit's regression window reaches
    (the jump component's ``window``), so a fit sees the same features in any block.
    """
    from aetheris_ray.components.base import MM_KEYS

    d = max(int(np.size(s.regime_vector)) for s in states) + len(MM_KEYS)
    out = np.full((n_ret, d), np.nan)
    for s, p in zip(states, positions):
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

    def predict_block(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                      levels: Sequence[float], block: Span) -> RawBlock:
        """The raw phase over the days ``block = (lo, hi)`` (see `raw_block`); ``origins`` are ALL the origins."""
        return raw_block(data, origins, horizons, self.config, span=block, n_paths=self.n_paths, seed=self.seed,
                         keep_states=False)

    def combine_blocks(self, parts: Sequence[RawBlock], origins: pd.DatetimeIndex, horizons: Sequence[int],
                       levels: Sequence[float]) -> np.ndarray:
        """`predict`'s answer from the raw blocks of consecutive spans (see `combine_blocks`)."""
        return combine_blocks(parts, origins, horizons, levels, self.config).quantiles
