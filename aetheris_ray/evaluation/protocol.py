"""The interface between forecasting models and the walk-forward backtest harness.

Every model the backtest scores -- the engine (`aetheris_ray.walkforward.EngineModel`)
and the baselines in `aetheris_ray.evaluation.baselines` -- implements
`WalkForwardModel`.  The harness hands a model one asset's full history plus the
origins to forecast from, and receives log-return quantiles for all of them at once,
so that a model can vectorise across origins (compute features once, refit on a
schedule, simulate ``(n_origins, n_paths, horizon)`` blocks).

Point-in-time rule: row ``i`` of the answer may use only data known at
``cutoff_for(origins[i])``.  The harness enforces nothing beyond shapes; the
look-ahead tests of each model (a series whose future is altered must give identical
forecasts for earlier origins) are what guard it.

Block rule: the answer for an origin must not depend on which other origins are
asked with it, because the harness may ask for an asset's origins in blocks (the Ray
backtest does) and concatenates the answers.  Errors likewise: a model that raises on
any block is skipped on the whole asset, as when it raises on one call, so it should
raise only for what no split changes (unusable data), and answer NaN rows for origins
it cannot forecast.  A model whose work cannot be split
that way by plain calls (the engine: its calibration pass runs over all origins in
date order) implements `BlockWalkForwardModel` and merges its own blocks.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import AssetData

__all__ = ["WalkForwardModel", "BlockWalkForwardModel"]


@runtime_checkable
class WalkForwardModel(Protocol):
    """A model that forecasts many origins of one asset in one call.

    Attributes
    ----------
    name : str
        Short name used in backtest reports (e.g. ``"engine"``, ``"garch_t"``).
    """

    name: str

    def predict(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int], levels: Sequence[float]) -> np.ndarray:
        """LOG-RETURN quantiles (relative to the close at each origin), shape (n_origins, n_horizons, n_levels).
        Row i may use only data known at cutoff_for(origins[i]). Origins are sorted dates with a close."""
        ...


@runtime_checkable
class BlockWalkForwardModel(WalkForwardModel, Protocol):
    """A `WalkForwardModel` that splits its own work into blocks of origin days.

    The harness calls ``predict_block`` once per block (in any process, in any
    order), then ``combine_blocks`` with the parts of all blocks in date order; the
    answer must equal ``predict(data, origins, ...)`` bitwise.
    """

    def predict_block(self, data: AssetData, origins: pd.DatetimeIndex, horizons: Sequence[int],
                      levels: Sequence[float], block: tuple) -> Any:
        """The part of block ``(lo, hi)`` (origin days ``[lo, hi)``, None: open); ``origins`` are ALL the origins."""
        ...

    def combine_blocks(self, parts: Sequence[Any], origins: pd.DatetimeIndex, horizons: Sequence[int],
                       levels: Sequence[float]) -> np.ndarray:
        """`predict`'s answer from the parts of consecutive blocks covering every origin, in order."""
        ...
