"""The vocabulary that the backtest, its report and its uncertainty share (no imports of those three).

* the export frame: `EXPORT_COLUMNS` (then the ``qNN`` labels and ``y``), `MetricKey`
  and `score_frame` (the metrics of export rows);
* pooled figures leave out stablecoins and gold tokens: `is_excluded`;
* price sources: `SourceSpec` (a picklable recipe), `resolve_source`, `as_spec`,
  `daily_close`.

`aetheris_ray.evaluation.backtest` re-exports the public names; `report` and
`uncertainty` import them from here, so neither imports `backtest` (which imports
them lazily to write its report).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import AssetData, MarketSource
from aetheris_ray.evaluation.aggregate import MetricSet
from aetheris_ray.quantiles import labels

__all__ = [
    "EXCLUDED_FROM_POOLED",
    "EXPORT_COLUMNS",
    "MetricKey",
    "SourceLike",
    "SourceSpec",
    "as_spec",
    "daily_close",
    "is_excluded",
    "open_cached",
    "resolve_source",
    "score_frame",
]

#: Stablecoins and gold tokens: forecast like any asset, left out of pooled figures.
EXCLUDED_FROM_POOLED = frozenset({"USDT", "USDC", "DAI", "TUSD", "USDD", "PAXG", "XAUT"})
#: Leading columns of the export; the quantile labels and ``y`` follow.
EXPORT_COLUMNS = ("model", "asset", "origin", "horizon")

MetricKey = tuple[str, str, int]  # (model, asset, horizon)


def is_excluded(asset: str) -> bool:
    """Whether an asset is a stablecoin or gold token (left out of pooled figures).

    >>> is_excluded("USDT-USD"), is_excluded("XAUt-USD"), is_excluded("BTC-USD")
    (True, True, False)
    """
    return asset.split("-")[0].upper() in EXCLUDED_FROM_POOLED


# -- export rows -------------------------------------------------------------------


def score_frame(frame: pd.DataFrame, levels: Sequence[float], models: Sequence[str] | None = None
                ) -> dict[MetricKey, MetricSet]:
    """Metrics of export rows: per (model, asset, horizon), over origins every model forecast.

    Parameters
    ----------
    frame : DataFrame
        Columns ``model, asset, origin, horizon``, the price quantiles labelled as
        `labels(levels)`, ``spot`` (close at the origin) and ``y`` (realised log-return).
    levels : sequence of float
    models : sequence of str, optional
        The models of the run (default: those in ``frame``).  An (asset, origin,
        horizon) is scored only when every one of them has a row.

    Returns
    -------
    dict (model, asset, horizon) -> MetricSet
        A key for every model x (asset, horizon) present in ``frame``.
    """
    lv = tuple(float(x) for x in levels)
    names = list(models) if models is not None else sorted(frame["model"].unique())
    out: dict[MetricKey, MetricSet] = {}
    if frame.empty:
        return out
    key = ["asset", "origin", "horizon"]
    n_models = frame.groupby(key, sort=False)["model"].transform("nunique")
    common = frame[(n_models == len(names)).to_numpy() & frame["model"].isin(names).to_numpy()]
    qcols = labels(lv)
    for (asset, h) in frame[["asset", "horizon"]].drop_duplicates().itertuples(index=False):
        for name in names:
            out[(name, asset, int(h))] = MetricSet(lv)
    for (name, asset, h), g in common.groupby(["model", "asset", "horizon"], sort=True):
        q = np.log(g[qcols].to_numpy(dtype=float) / g["spot"].to_numpy(dtype=float)[:, None])
        out[(name, asset, int(h))].step(g["y"].to_numpy(dtype=float), q)
    return out


# -- sources -----------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """A picklable recipe for a `MarketSource` (what worker processes and Ray tasks open).

    Exactly the arguments of `aetheris_ray.data.open_source`.
    """

    data: str | None = None
    store: str | None = None
    synthetic: bool = False
    seed: int = 0

    def open(self) -> MarketSource:
        """A fresh source (`aetheris_ray.data.open_source`)."""
        from aetheris_ray.data import open_source

        return open_source(data=self.data, store=self.store, synthetic=self.synthetic, seed=self.seed)


@functools.lru_cache(maxsize=4)
def open_cached(spec: SourceSpec) -> MarketSource:
    """The source of a spec, opened once per process (workers read many assets from it).

    `backtest` clears this cache before it starts workers, so a run never sees a
    source (and its parsed-file caches) left over from an earlier run.
    """
    return spec.open()


SourceLike = MarketSource | SourceSpec | str | Path


def resolve_source(source: SourceLike, cached: bool = False) -> MarketSource:
    """The `MarketSource` of a source, a `SourceSpec` or a data directory (``cached``: `open_cached`)."""
    if isinstance(source, (str, Path)):
        source = SourceSpec(data=str(source))
    if isinstance(source, SourceSpec):
        return open_cached(source) if cached else source.open()
    return source


def as_spec(source: SourceLike) -> SourceSpec | MarketSource:
    """A data directory as its `SourceSpec` (what tasks can open themselves); anything else as is."""
    return SourceSpec(data=str(source)) if isinstance(source, (str, Path)) else source


def daily_close(data: AssetData) -> pd.Series:
    """The positive daily closes of an asset (NaN and non-positive closes dropped)."""
    close = data.daily_close().dropna()
    return close[close > 0]
