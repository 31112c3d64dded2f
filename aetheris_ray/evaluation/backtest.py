"""The walk-forward backtest of EVALUATION.md: every model, every asset, every origin, same run.

Protocol (EVALUATION.md, followed exactly):

* target ``y = log(close[origin + h] / close[origin])``;
* origins of horizon ``h``: every calendar day in ``[start, end - h]`` with a close
  at both ends; the others are skipped and counted (``no_close``);
* each model predicts once per asset, for all origins with a close in
  ``[start, end - min(h)]``, and row ``i`` may use only data known at
  ``cutoff_for(origin_i)`` (models are trusted through `WalkForwardModel`; their
  look-ahead tests guard it).  The harness hands them the history up to ``end``;
* an origin a model cannot forecast (a NaN row: too little history) is skipped
  and counted (``model_skipped``);
* the figures compare models on the same forecasts: per asset and horizon, only
  origins every model of the run forecast are scored (``scored``);
* an asset with no scored origin is reported in `BacktestResult.unscored`, never
  an error for the run.

Work is split by asset and, within an asset, by blocks of origin days
(`origin_blocks`): `run_block` forecasts the origins of one block with every model,
`finish_asset` merges an asset's blocks in date order and scores them.  `run_asset`
(the unit of the in-process run and its process pool) is one block spanning every
origin; the Ray backtest (`aetheris_ray.distributed.backtest`) runs assets x blocks.
A plain `WalkForwardModel` is asked for each block's origins and must answer an
origin the same whatever other origins come with it (the baselines and the engine
do; their tests check it); a model with ``predict_block`` / ``combine_blocks``
(the engine: a parallel raw phase, then a sequential calibration pass) merges its
own blocks.  So the numbers never depend on the split, and metrics merge exactly
(`aggregate`).
The export (`BacktestResult.export`) has one row per model x asset x origin x
horizon: ``model, asset, origin, horizon, q05 .. q95, y`` with PRICE quantiles
``close_origin * exp(log-quantile)``; the metrics are computed from those very
price rows (`score_frame`), so `report.score_export` reproduces them exactly from
the export file and the prices.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import AssetData, MarketSource, cutoff_for
from aetheris_ray.errors import AetherisError, InvalidInput, UnknownAsset
from aetheris_ray.evaluation._frames import (  # shared with report and uncertainty; re-exported here
    EXCLUDED_FROM_POOLED,
    EXPORT_COLUMNS,
    MetricKey,
    SourceLike,
    SourceSpec,
    is_excluded,
    score_frame,
)
from aetheris_ray.evaluation._frames import as_spec as _as_spec
from aetheris_ray.evaluation._frames import daily_close as _daily_close
from aetheris_ray.evaluation._frames import open_cached as _open_cached
from aetheris_ray.evaluation._frames import resolve_source as _resolve
from aetheris_ray.evaluation.aggregate import MetricSet
from aetheris_ray.quantiles import DEFAULT_LEVELS, labels, parse_levels

__all__ = [
    "backtest",
    "run_asset",
    "run_block",
    "finish_asset",
    "origin_blocks",
    "AssetRun",
    "BlockRun",
    "BacktestResult",
    "SourceSpec",
    "score_frame",
    "is_excluded",
    "EXCLUDED_FROM_POOLED",
    "EXPORT_COLUMNS",
    "MAX_HORIZON",
]

#: Longest horizon the engine supports (days).
MAX_HORIZON = 90
_COUNT_COLUMNS = ("asset", "horizon", "model", "calendar_days", "no_close", "scorable", "model_skipped", "scored")

#: A block of origin days ``[lo, hi)`` (None: open on that side).
Block = tuple[pd.Timestamp | None, pd.Timestamp | None]
#: The block spanning every origin (the in-process run).
WHOLE: Block = (None, None)


# -- one asset ---------------------------------------------------------------------


@dataclass
class AssetRun:
    """What `run_asset` returns for one asset.

    Attributes
    ----------
    asset : str
    frame : DataFrame
        The export rows of this asset (``model, asset, origin, horizon, q.., y``; prices)
        plus ``spot`` (the close at the origin).
    metrics : dict (model, asset, horizon) -> MetricSet
        Scores over the origins every model forecast.
    counts : DataFrame
        One row per horizon x model: ``calendar_days, no_close, scorable,
        model_skipped, scored`` (see the module docstring).
    note : str
        Why nothing was scored ("" when something was).
    """

    asset: str
    frame: pd.DataFrame
    metrics: dict[MetricKey, MetricSet]
    counts: pd.DataFrame
    note: str = ""


@dataclass
class BlockRun:
    """What `run_block` returns for one asset and one block of origin days.

    Attributes
    ----------
    asset : str
    block : (Timestamp or None, Timestamp or None)
        The origin days ``[lo, hi)``.
    parts : dict model name -> part
        A plain model's log-return quantiles for the block's origins (an array), or a
        block-aware model's own part (``predict_block``); None after an error.
    notes : dict model name -> str
        Errors of the models that could not forecast (their part is None).
    error : str
        Why the asset's data could not be used ("" when it could).
    """

    asset: str
    block: Block
    parts: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)
    error: str = ""


def _blockwise(model: Any) -> bool:
    """Whether a model splits its own work into blocks (`protocol.BlockWalkForwardModel`)."""
    from aetheris_ray.evaluation.protocol import BlockWalkForwardModel

    return isinstance(model, BlockWalkForwardModel)


def origin_blocks(start: Any, end: Any, horizons: Sequence[int], block_days: int | None) -> list[Block]:
    """Consecutive blocks of the origin days of a period, ``block_days`` calendar days each.

    Edges at ``start + k * block_days`` inside the origins' range ``[start, end -
    min(h)]``, a remainder shorter than half a block joining the last full block; the
    first block is open below and the last open above, so together they hold every
    origin once.  ``None`` (or a span longer than the range) gives the one block `WHOLE`.

    >>> origin_blocks("2024-01-01", "2024-02-01", [1], 10)  # origins Jan 1 .. Jan 31: 10, 10, 11 days
    [(None, Timestamp('2024-01-11 00:00:00')), (Timestamp('2024-01-11 00:00:00'), Timestamp('2024-01-21 00:00:00')),
     (Timestamp('2024-01-21 00:00:00'), None)]
    """
    s, e, hz = _check_period(start, end, horizons)
    if block_days is None:
        return [WHOLE]
    if isinstance(block_days, bool) or not isinstance(block_days, (int, np.integer)) or block_days < 1:
        raise InvalidInput(f"block_days {block_days!r} must be a whole number of days, at least 1 (e.g. 180)")
    last = e - pd.Timedelta(days=min(hz))
    edges = [t for t in pd.date_range(s + pd.Timedelta(days=int(block_days)), last, freq=f"{int(block_days)}D")
             if (last - t).days + 1 >= int(block_days) / 2]
    return list(zip([None, *edges], [*edges, None]))


def _load(source_spec: SourceSpec | MarketSource, asset: str, end: pd.Timestamp) -> tuple[AssetData, AssetData] | str:
    """The asset's full history and its part up to the period's end, or why the data is not usable."""
    try:
        full = _resolve(source_spec, cached=True).history(asset)
    except UnknownAsset:
        raise
    except AetherisError as e:  # a malformed file: reported, the run goes on
        return f"data not usable: {e}"
    return full, full.until(cutoff_for(end))  # models see nothing after the period


def _origins(close: pd.Series, start: pd.Timestamp, end: pd.Timestamp, hz: Sequence[int]) -> pd.DatetimeIndex:
    return close.index[(close.index >= start) & (close.index <= end - pd.Timedelta(days=min(hz)))]


def _normalise(start, end, horizons, levels) -> tuple[pd.Timestamp, pd.Timestamp, list[int], tuple[float, ...]]:
    return (pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(), [int(h) for h in horizons],
            tuple(float(x) for x in levels))


def _check_shape(q: np.ndarray, name: str, asset: str, want: tuple[int, int, int]) -> np.ndarray:
    if q.shape != want:
        raise InvalidInput(f"model {name!r} returned shape {q.shape} for {asset}; expected "
                           f"(n_origins, n_horizons, n_levels) = {want}")
    return q


def run_block(
    source_spec: SourceSpec | MarketSource,
    asset: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    horizons: Sequence[int],
    models: Sequence[Any],
    levels: Sequence[float] = DEFAULT_LEVELS,
    block: Block = WHOLE,
) -> BlockRun:
    """Forecast one block of an asset's origins with every model (a unit of work of the Ray backtest).

    Parameters are those of `run_asset`, plus ``block``: the origin days ``[lo, hi)``
    (one of `origin_blocks`).  Every block reads the asset's history up to ``end``,
    as the in-process run does; each forecast uses data up to its own origin only.

    Returns
    -------
    BlockRun
        Merged with the asset's other blocks by `finish_asset`.
    """
    start, end, hz, lv = _normalise(start, end, horizons, levels)
    loaded = _load(source_spec, asset, end)
    if isinstance(loaded, str):
        return BlockRun(asset, block, {}, error=loaded)
    data = loaded[1]
    origins = _origins(_daily_close(data), start, end, hz)
    lo, hi = block
    inside = np.ones(len(origins), dtype=bool)
    if lo is not None:
        inside &= origins >= lo
    if hi is not None:
        inside &= origins < hi
    mine = origins[inside]
    run = BlockRun(asset, block, {})
    for m in models:
        run.parts[m.name] = None
        if len(origins) == 0:
            continue
        if not _blockwise(m) and len(mine) == 0:
            run.parts[m.name] = np.full((0, len(hz), len(lv)), np.nan)
            continue
        try:
            part = (m.predict_block(data, origins, hz, lv, block) if _blockwise(m)
                    else np.asarray(m.predict(data, mine, hz, lv), dtype=float))
        except AetherisError as e:  # e.g. too little history for the model at every origin
            run.notes[m.name] = str(e)
            continue
        if not _blockwise(m):
            part = _check_shape(part, m.name, asset, (len(mine), len(hz), len(lv)))
        run.parts[m.name] = part
    return run


def finish_asset(
    source_spec: SourceSpec | MarketSource,
    asset: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    horizons: Sequence[int],
    models: Sequence[Any],
    levels: Sequence[float],
    blocks: Sequence[BlockRun],
) -> AssetRun:
    """Merge an asset's blocks in date order and score them (the export rows, metrics and counts).

    Parameters are those of `run_asset`, plus ``blocks``: the `BlockRun`\\ s of
    consecutive blocks covering every origin (`origin_blocks`), in order.  A model
    that failed in any block is skipped for the whole asset (its note is kept), as in
    a run of one block.
    """
    start, end, hz, lv = _normalise(start, end, horizons, levels)
    names = [m.name for m in models]
    spans = [b.block for b in blocks]
    if not blocks or spans[0][0] is not None or spans[-1][1] is not None or any(b.asset != asset for b in blocks) \
            or any(a[1] is None or a[1] != b[0] for a, b in zip(spans[:-1], spans[1:])):
        raise InvalidInput(f"{asset}: blocks {spans} are not the consecutive blocks of one asset; "
                           "pass every block of origin_blocks() in order")
    loaded = next((b.error for b in blocks if b.error), None) or _load(source_spec, asset, end)
    if isinstance(loaded, str):
        return _empty_run(asset, hz, names, start, end, loaded)
    full, data = loaded
    close = _daily_close(data)
    origins = _origins(close, start, end, hz)
    preds: dict[str, np.ndarray] = {}
    notes: list[str] = []
    shape = (len(origins), len(hz), len(lv))
    for m in models:
        failed = next((b.notes[m.name] for b in blocks if m.name in b.notes), None)
        q = np.full(shape, np.nan)
        if len(origins) and failed is not None:
            notes.append(f"{m.name}: {failed}")
        elif len(origins) and _blockwise(m):
            q = np.asarray(m.combine_blocks([b.parts[m.name] for b in blocks], origins, hz, lv), dtype=float)
        elif len(origins):
            q = np.concatenate([b.parts[m.name] for b in blocks], axis=0)
        preds[m.name] = _check_shape(q, m.name, asset, shape)
    frames, count_rows = [], []
    spot_all = close.reindex(origins).to_numpy()
    qlabels = labels(lv)
    for j, h in enumerate(hz):
        last = end - pd.Timedelta(days=h)
        calendar = max((last - start).days + 1, 0)
        in_h = origins <= last
        target = close.reindex(origins[in_h] + pd.Timedelta(days=h)).to_numpy()
        scorable = np.flatnonzero(in_h)[np.isfinite(target)]
        y = np.log(target[np.isfinite(target)] / spot_all[scorable])
        for name in names:
            q = preds[name][scorable, j, :]
            ok = np.isfinite(q).all(axis=1)
            rows = scorable[ok]
            f = pd.DataFrame(spot_all[rows, None] * np.exp(q[ok]), columns=qlabels)
            f.insert(0, "model", name)
            f.insert(1, "asset", asset)
            f.insert(2, "origin", origins[rows].strftime("%Y-%m-%d"))
            f.insert(3, "horizon", h)
            f["y"] = y[ok]
            f["spot"] = spot_all[rows]
            frames.append(f)
            count_rows.append(dict(asset=asset, horizon=h, model=name, calendar_days=calendar,
                                   no_close=calendar - scorable.size, scorable=scorable.size,
                                   model_skipped=int(scorable.size - ok.sum())))
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_frame(qlabels)
    metrics = score_frame(frame, lv, models=names)
    counts = pd.DataFrame(count_rows, columns=list(_COUNT_COLUMNS[:-1]))
    counts["scored"] = [metrics[k].count if (k := (r.model, asset, r.horizon)) in metrics else 0
                        for r in counts.itertuples()]
    note = "" if counts["scored"].sum() else _why_unscored(_daily_close(full), start, end, counts, notes)
    return AssetRun(asset, frame, metrics, counts, note)


def run_asset(
    source_spec: SourceSpec | MarketSource,
    asset: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    horizons: Sequence[int],
    models: Sequence[Any],
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> AssetRun:
    """Backtest every model on one asset (the unit of work of the process pool): one block, then scoring.

    Parameters
    ----------
    source_spec : SourceSpec or MarketSource
        Where the data comes from (a spec is opened, once per process).
    asset : str
    start, end : Timestamp
        The period (dates, inclusive).
    horizons : sequence of int
        Days ahead.
    models : sequence of WalkForwardModel
        Distinct ``name``\\ s.
    levels : sequence of float
        Quantile levels, increasing.

    Returns
    -------
    AssetRun
    """
    block = run_block(source_spec, asset, start, end, horizons, models, levels, WHOLE)
    return finish_asset(source_spec, asset, start, end, horizons, models, levels, [block])


def _why_unscored(close: pd.Series, start, end, counts: pd.DataFrame, notes: list[str]) -> str:
    if close.empty:
        return "no daily closes"
    if not ((close.index >= start) & (close.index <= end)).any():
        return f"no close in [{start.date()}, {end.date()}] (data {close.index[0].date()} to {close.index[-1].date()})"
    if counts["scorable"].sum() == 0:
        return "no origin with a close at both ends"
    skipped = counts.groupby("model")["model_skipped"].sum()
    worst = ", ".join(f"{m} skipped {int(n)}" for m, n in skipped.items() if n)
    extra = f"; {'; '.join(notes)}" if notes else ""
    return f"no origin forecast by every model (too little history: {worst}){extra}"


def _empty_frame(qlabels: list[str]) -> pd.DataFrame:
    cols = {c: pd.Series(dtype=object) for c in ("model", "asset", "origin")}
    cols["horizon"] = pd.Series(dtype=int)
    cols.update({c: pd.Series(dtype=float) for c in [*qlabels, "y", "spot"]})
    return pd.DataFrame(cols)


def _empty_run(asset, hz, names, start, end, note) -> AssetRun:
    rows = []
    for h in hz:
        cal = max((end - pd.Timedelta(days=h) - start).days + 1, 0)
        rows += [dict(asset=asset, horizon=h, model=n, calendar_days=cal, no_close=cal, scorable=0,
                      model_skipped=0, scored=0) for n in names]
    return AssetRun(asset, _empty_frame([]), {}, pd.DataFrame(rows, columns=list(_COUNT_COLUMNS)), note)


# -- the run -----------------------------------------------------------------------


@dataclass
class BacktestResult:
    """Everything a backtest produced.

    Attributes
    ----------
    frame : DataFrame
        Export rows plus ``spot`` (see `export`).
    metrics : dict (model, asset, horizon) -> MetricSet
    counts : DataFrame
        Skipped and scored origins per asset x horizon x model.
    unscored : dict asset -> reason
        Assets with no scored origin.
    models, assets, horizons, levels, start, end, wall_s : run parameters and wall time
    """

    frame: pd.DataFrame
    metrics: dict[MetricKey, MetricSet]
    counts: pd.DataFrame
    unscored: dict[str, str]
    models: tuple[str, ...]
    assets: tuple[str, ...]
    horizons: tuple[int, ...]
    levels: tuple[float, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def export(self) -> pd.DataFrame:
        """The export frame: ``model, asset, origin, horizon, q05 .. q95, y`` (price quantiles)."""
        return self.frame[[*EXPORT_COLUMNS, *labels(self.levels), "y"]].reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """The forecasts as one long frame: `export` (``model, asset, origin, horizon, q05 .. q95, y``)."""
        return self.export()

    def write(self, path: str | Path) -> Path:
        """Write the export as CSV, or Parquet when ``path`` ends in ``.parquet``/``.pq``."""
        from aetheris_ray.evaluation.report import write_export

        return write_export(self.export(), path)

    def per_asset(self) -> pd.DataFrame:
        """Raw metrics, one row per model x asset x horizon."""
        from aetheris_ray.evaluation.report import per_asset_table

        return per_asset_table(self.metrics, models=self.models)

    def pooled(self, scaled: bool = True) -> pd.DataFrame:
        """Pooled metrics per model x horizon over the assets not excluded (see `report.pooled_table`)."""
        from aetheris_ray.evaluation.report import pooled_table

        return pooled_table(self.metrics, scaled=scaled, models=self.models)

    def uncertainty(self, resamples: int | None = None, block_days: int | None = None, seed: int = 0) -> pd.DataFrame:
        """Bootstrap standard errors of the pooled figures and each model's QL ratio to the best
        baseline (`uncertainty.block_bootstrap`; ``resamples`` default `uncertainty.RESAMPLES`)."""
        from aetheris_ray.evaluation.baselines import BASELINES
        from aetheris_ray.evaluation.uncertainty import RESAMPLES, block_bootstrap

        return block_bootstrap(self.frame, self.levels, self.models,
                               baselines=[m for m in self.models if m in BASELINES], block_days=block_days,
                               resamples=RESAMPLES if resamples is None else resamples, seed=seed)

    def report(self, bootstrap: int | None = None, uncertainty: pd.DataFrame | None = None) -> str:
        """The markdown report.

        Its sampling-uncertainty section uses ``uncertainty`` when given, else a fresh
        `uncertainty` with ``bootstrap`` resamples (default 1000; 0: no section).
        """
        from aetheris_ray.evaluation.report import render_report

        if uncertainty is None and bootstrap != 0:
            uncertainty = self.uncertainty(bootstrap)
        return render_report(self.metrics, counts=self.counts, unscored=self.unscored, models=self.models,
                             meta=self.meta(), uncertainty=uncertainty)

    def meta(self) -> dict[str, Any]:
        return {
            "period": f"{self.start.date()} to {self.end.date()}",
            "assets": len(self.assets),
            "horizons": ", ".join(map(str, self.horizons)),
            "models": ", ".join(self.models),
            "wall time": f"{self.wall_s:.1f} s",
        }


def _check_period(start: Any, end: Any, horizons: Sequence[int]) -> tuple[pd.Timestamp, pd.Timestamp, tuple[int, ...]]:
    def date(x: Any, name: str) -> pd.Timestamp:
        try:
            t = pd.Timestamp(x)
        except (ValueError, TypeError):
            t = pd.NaT
        if pd.isna(t):
            raise InvalidInput(f"{name} {x!r} is not a date; use YYYY-MM-DD, e.g. 2022-01-01")
        if t.tzinfo is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        return t.normalize()

    s, e = date(start, "start"), date(end, "end")
    if s >= e:
        raise InvalidInput(f"start {s.date()} must be before end {e.date()}")
    hz: list[int] = []
    for h in horizons:
        try:
            ok = not isinstance(h, bool) and float(h).is_integer() and 1 <= int(float(h)) <= MAX_HORIZON
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidInput(f"horizon {h!r} is not valid: use whole days from 1 to {MAX_HORIZON}, e.g. 1,3,7,14")
        hz.append(int(float(h)))
    if not hz:
        raise InvalidInput("horizons: the list is empty; give days ahead such as 1,3,7,14")
    hz = sorted(set(hz))
    if e - pd.Timedelta(days=max(hz)) < s:
        raise InvalidInput(f"the period {s.date()} to {e.date()} is shorter than the horizon {max(hz)} days; "
                           "move start earlier or end later")
    return s, e, tuple(hz)


def _check_models(models: Sequence[Any]) -> None:
    if not models:
        raise InvalidInput("models: none given; pass at least one WalkForwardModel (e.g. the baselines)")
    names = [getattr(m, "name", None) for m in models]
    for m, n in zip(models, names):
        if not isinstance(n, str) or not callable(getattr(m, "predict", None)):
            raise InvalidInput(f"model {m!r} is not a WalkForwardModel (needs a str `name` and `predict`)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidInput(f"model names must be distinct; repeated: {', '.join(dup)}")


def resolve_assets(source: MarketSource, assets: str | Iterable[str]) -> list[str]:
    """``"all"`` (every asset of the source), a comma-separated string, or a list; unknown names raise."""
    known = source.assets()
    if isinstance(assets, str):
        if assets.strip().lower() == "all":
            return list(known)
        assets = [a.strip() for a in assets.split(",") if a.strip()]
    wanted = list(dict.fromkeys(assets))
    if not wanted:
        raise InvalidInput("assets: the list is empty; give tickers such as BTC-USD,ETH-USD or 'all'")
    known_set = set(known)
    for a in wanted:
        if a not in known_set:
            hint = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
            raise UnknownAsset(f"unknown asset {a!r}: not in the data source ({len(known)} assets: {hint})")
    return wanted


def listed_before(source: MarketSource, assets: Sequence[str], date: Any) -> list[str]:
    """The assets whose first daily close is before ``date`` (EVALUATION's "history before 2021" rule)."""
    cut = pd.Timestamp(date).normalize()
    out = []
    for a in assets:
        close = source.history(a).daily_close().dropna()
        if len(close) and close.index[0] < cut:
            out.append(a)
    return out


def backtest(
    source: SourceLike,
    assets: str | Iterable[str],
    start: Any,
    end: Any,
    horizons: Sequence[int],
    models: Sequence[Any],
    levels: Sequence[float | str] | str | None = DEFAULT_LEVELS,
    progress: bool = True,
    workers: int = 2,
    start_method: str | None = None,
) -> BacktestResult:
    """Walk-forward backtest of ``models`` on ``assets`` (see the module docstring).

    Parameters
    ----------
    source : MarketSource, SourceSpec, or a data directory
        A directory is opened with `aetheris_ray.data.open_source` (``data=DIR``).
    assets : "all", "BTC-USD,ETH-USD" or list of str
    start, end : date-like
        The period; origins lie in ``[start, end - h]``.
    horizons : sequence of int
        Days ahead, 1 to 90.
    models : sequence of WalkForwardModel
    levels : quantile levels (floats or labels), increasing
    progress : bool
        Show a progress bar (only when stderr is a terminal).
    workers : int
        Processes across assets; 1 runs in-process.
    start_method : str, optional
        How worker processes start (`multiprocessing`): default ``"fork"`` where
        available (no ``if __name__ == "__main__"`` guard needed, no re-imports),
        else ``"spawn"``.

    Returns
    -------
    BacktestResult
    """
    t0 = time.perf_counter()
    s, e, hz = _check_period(start, end, horizons)
    lv = parse_levels(levels)
    _check_models(models)
    if int(workers) < 1:
        raise InvalidInput(f"workers {workers!r} must be at least 1")
    _open_cached.cache_clear()
    src = _resolve(source)
    names = resolve_assets(src, assets)
    spec = _as_spec(source) if int(workers) > 1 and len(names) > 1 else src
    runs = _run_all(spec, names, s, e, hz, list(models), lv, int(workers), progress, start_method)
    runs.sort(key=lambda r: names.index(r.asset))
    frames = [r.frame for r in runs if not r.frame.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_frame(labels(lv))
    metrics: dict[MetricKey, MetricSet] = {}
    for r in runs:
        metrics.update(r.metrics)
    counts = pd.concat([r.counts for r in runs], ignore_index=True) if runs else pd.DataFrame(
        columns=list(_COUNT_COLUMNS))
    unscored = {r.asset: r.note for r in runs if r.note}
    return BacktestResult(frame=frame, metrics=metrics, counts=counts, unscored=unscored,
                          models=tuple(m.name for m in models), assets=tuple(names), horizons=hz, levels=lv,
                          start=s, end=e, wall_s=time.perf_counter() - t0)


def _run_all(spec, names, s, e, hz, models, lv, workers, progress, start_method=None) -> list[AssetRun]:
    show = bool(progress) and sys.stderr.isatty() and len(names) > 1
    if workers == 1 or len(names) == 1:
        bar = _Progress(len(names), show)
        try:
            out = []
            for a in names:
                out.append(run_asset(spec, a, s, e, hz, models, lv))
                bar.advance(a)
            return out
        finally:
            bar.close()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    method = start_method or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=min(workers, len(names)), mp_context=ctx,
                             initializer=_worker_init) as pool:
        # the workers start during the submits: before the progress bar starts its thread
        futures = {pool.submit(run_asset, spec, a, s, e, hz, models, lv): a for a in names}
        bar = _Progress(len(names), show)
        try:
            out = []
            for fut in as_completed(futures):
                out.append(fut.result())
                bar.advance(futures[fut])
            return out
        finally:
            bar.close()


def _worker_init() -> None:
    # one process per core already: keep BLAS/OpenMP pools single-threaded
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


class _Progress:
    """A rich progress bar over assets (a no-op when hidden)."""

    def __init__(self, total: int, show: bool) -> None:
        self._p = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               TextColumn("{task.description}"), transient=True)
            self._p.start()
            self._task = self._p.add_task("", total=total)

    def advance(self, asset: str) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=1, description=asset)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def merge_metrics(parts: Iterable[Mapping[MetricKey, MetricSet]]) -> dict[MetricKey, MetricSet]:
    """Merge metric dicts of shards (same key in several shards: merged exactly)."""
    out: dict[MetricKey, MetricSet] = {}
    for part in parts:
        for k, ms in part.items():
            out[k] = out[k].merge(ms) if k in out else ms
    return out
