"""Calibration pairs of posted outcomes: each realised price scored against the raw forecast made at its origin.

Each outcome ``{origin, horizon, price}`` is scored against the raw forecast the
model makes at that origin from the data known then (the model at the origin,
`state_cache.origin_state`, ``config.walkforward_paths`` paths on a seed fixed by
the origin day, as the walk-forward does), and its calibrated PIT goes through the
level map in force at that origin.  An outcome whose origin has no close or too
little history is skipped (it cannot be scored).  Memoised per outcome.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from aetheris_ray import simulation as sim
from aetheris_ray.calibration import ConformalLevelMap, bucket_index, day_number, pit, sim_horizon
from aetheris_ray.data.schema import AssetData
from aetheris_ray.errors import DataError
from aetheris_ray.features.state import regime_code
from aetheris_ray.history import MIN_CLOSES, at_origin, positive_closes
from aetheris_ray.model import EngineConfig
from aetheris_ray.state_cache import Lru, origin_state

__all__ = ["outcome_pairs", "clear"]

#: Pairs of posted outcomes already computed: (asset, model version, origin, horizon, price) -> pair.
_PAIRS = Lru(50_000)


def clear() -> None:
    _PAIRS.clear()


def outcome_pairs(data: AssetData, outcomes: Sequence[Mapping[str, Any]], *, config: EngineConfig,
                  settings: Any = None) -> list[tuple[int, int, int, float, float]]:
    """Calibration pairs ``(origin day, horizon, regime code, raw PIT, calibrated PIT)`` of posted outcomes.

    ``config`` is resolved (`aetheris_ray.model.resolve_config`).
    """
    todo: dict[str, list[tuple[int, float]]] = {}
    out: list[tuple[int, int, int, float, float]] = []
    for row in outcomes:
        o, h, price = str(pd.Timestamp(row["origin"]).date()), int(row["horizon"]), float(row["price"])
        hit = _PAIRS.get((data.asset, config.version, o, h, price))
        if hit is not None:
            out.append(hit)
        else:
            todo.setdefault(o, []).append((h, price))
    close_all = positive_closes(data)
    for o, items in todo.items():
        day = pd.Timestamp(o)
        if day not in close_all.index:
            continue
        h_max = max(h for h, _ in items)
        try:
            origin, cut, close = at_origin(data, day, max(MIN_CLOSES, config.min_history + 1))
            st = origin_state(cut, origin, close, config, sim_horizon(h_max, config.calibrate), settings=settings)
        except DataError:
            continue
        cond = st.conditioning(config.lookback)
        spot = float(close.iloc[-1])

        def sample(n: int, h: int, rng: np.random.Generator) -> np.ndarray:
            return st.fitted.simulate(cond, int(n), int(h), rng)[0].astype(np.float32)

        cum = np.cumsum(sim.simulate_blocks(sample, config.walkforward_paths, h_max, int(day_number(day))), axis=1)
        needed = list(range(int(bucket_index(h_max)) + 1))
        lm = (st.calibrator.level_map(st.state.regime_label, day_number(origin), buckets=needed)
              if config.calibrate else ConformalLevelMap.identity())
        code = regime_code(st.state.regime_label)
        for h, price in items:
            raw = float(pit(cum[:, h - 1:h], np.array([np.log(price / spot)]), axis=0)[0])
            pair = (int(day_number(day)), h, code, raw, float(lm.calibrated_prob(h - 1, raw)))
            _PAIRS.put((data.asset, config.version, o, h, price), pair)
            out.append(pair)
    return out
