"""The forecasting engine: one request down the layers, once.

    request
      -> data         the origin and the point-in-time cut              (aetheris_ray.history)
      -> features     market state at the origin (regime, MM indices)   (market_state part)
      -> model        parts fitted walk-forward up to the origin, cached (aetheris_ray.state_cache, model)
      -> scenario     whitelisted overrides through the market state    (aetheris_ray.scenario)
      -> calibration  the level map from realised (and posted) pairs    (calibrator part, aetheris_ray.pairs)
      -> result       Monte Carlo paths -> calibrated cone, thresholds  (aetheris_ray.simulation, assemble)

The two-phase API is what the distributed layer shards: ``prep = prepare(data,
req)``; any actor holding ``prep`` draws whole blocks with ``prep.sample(n, h,
rng)``; ``finish(prep, paths)`` builds the `Forecast`.  `Prepared` is small (the
fitted parts of one origin and their conditioning arrays) and pickles cheaply.

The model is chosen by name (presets in ``presets.toml``, ``--model baseline``) with
single parts swapped by ``--component KIND=NAME[@VERSION]`` (`aetheris_ray.model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from aetheris_ray import simulation as sim
from aetheris_ray.assemble import assemble
from aetheris_ray.calibration import ConformalLevelMap, bucket_index, day_number, sim_horizon
from aetheris_ray.components.base import Context
from aetheris_ray.components.registry import spec_class
from aetheris_ray.contract import MAX_HORIZON, ForecastRequest
from aetheris_ray.data.schema import AssetData
from aetheris_ray.history import MIN_CLOSES, at_origin, resolve_seed
from aetheris_ray.model import EngineConfig, FittedModel, model_config, resolve_config
from aetheris_ray.pairs import outcome_pairs
from aetheris_ray.result import Forecast
from aetheris_ray.state_cache import OriginState, origin_state, sensitivities
from aetheris_ray.tails import ModelSampler

__all__ = ["Prepared", "prepare", "finish", "forecast", "PATH_DTYPE"]

#: dtype of the raw paths a forecast holds and the actors ship (half the bytes of float64;
#: the cumulative sums are float64).
PATH_DTYPE = np.float32


@dataclass(frozen=True)
class Prepared:
    """Everything needed to draw paths and finish a forecast; picklable (Ray actors hold it).

    Holds batch-1 fitted parts and their conditioning arrays (a few KB), not the history.
    """

    request: ForecastRequest
    seed: int
    asset: str
    origin: pd.Timestamp
    spot: float
    model: FittedModel
    cond: dict
    model_version: str
    level_map: Any
    extra: dict = field(default_factory=dict)

    def sample(self, n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Daily log-return paths, shape (n_paths, horizon), float32 (raw, uncalibrated)."""
        return self.draw(n_paths, horizon, rng).astype(PATH_DTYPE)

    def draw(self, n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """`sample` before the cast to `PATH_DTYPE`: the model's float64 paths, shape (n_paths, horizon)."""
        return self.model.simulate(self.cond, int(n_paths), int(horizon), rng)[0]

    def simulate(self, blocks: Sequence[int] | None = None) -> np.ndarray:
        """The request's paths of ``blocks`` (all when None): `sample` in seeded blocks, concatenated.

        Each block is cast into the one output array as it is drawn (`simulation.simulate_blocks`
        with ``dtype``), bitwise ``simulate_blocks(self.sample, ...)``.
        """
        r = self.request
        return sim.simulate_blocks(self.draw, r.paths, r.horizon, self.seed, blocks, dtype=PATH_DTYPE)


def prepare(data: AssetData, req: ForecastRequest, *, config: EngineConfig | None = None, settings: Any = None,
            use_cache: bool = True, outcomes: Sequence[Mapping[str, Any]] = ()) -> Prepared:
    """Fit on ``data`` up to the origin (point-in-time) and resolve everything but the paths.

    ``outcomes`` are realised prices posted back for this asset (rows ``{origin,
    horizon, price}``, `aetheris_ray.outcomes.OutcomeLog`): their pairs
    (`aetheris_ray.pairs.outcome_pairs`) join the calibration buffers.  A request with
    ``as_of`` uses only those realised by then; a live request (no ``as_of``) uses
    all of them, since they are known now even when the data source has not caught up.
    """
    notes: list[str] = []
    if config is None:
        config, notes = model_config(req.model, req.components or ())
    # artefacts from the registry of the caller's settings (a served app's own AETHERIS_HOME)
    config = resolve_config(config, registry=None if settings is None else settings.registry_path)
    # data
    origin, data, close = at_origin(data, req.as_of, max(MIN_CLOSES, config.min_history + 1))
    # features + model
    st = origin_state(data, origin, close, config, sim_horizon(req.horizon, config.calibrate),
                      settings=settings, use_cache=use_cache)
    # scenario
    state, cond, effect = _scenario(st, req, data, origin, close, config, settings, use_cache)
    # calibration
    cal, known_by = st.calibrator, None
    if outcomes and config.calibrate:
        pairs = outcome_pairs(data, outcomes, config=config, settings=settings, state=st)
        if req.as_of is not None:
            pairs = [p for p in pairs if p[0] + p[1] <= day_number(origin)]
        if pairs:
            o, h, r, raw, cp = (np.array(c) for c in zip(*pairs))
            cal = cal.with_pairs(o, h, r, raw, cp)
            known_by = max(day_number(origin), int(np.max(o + h)))
    needed = list(range(int(bucket_index(req.horizon)) + 1))
    if config.calibrate:
        level_map = cal.level_map(state.regime_label, day_number(origin), buckets=needed, known_by=known_by)
    else:
        level_map = ConformalLevelMap.identity()
    # the rest of the answer
    extra = _extras(data, req, state, cal, st.fitted, config, origin, known_by, needed, notes, level_map)
    if effect is not None:
        extra["metadata"]["warnings"].extend(effect.warnings)
        extra["metadata"]["scenario"] = effect.report(req.horizon)
    return Prepared(request=req, seed=resolve_seed(req.seed), asset=data.asset, origin=origin,
                    spot=float(close.iloc[-1]), model=st.fitted, cond=cond, model_version=config.version,
                    level_map=level_map, extra=extra)


def _scenario(st: OriginState, req: ForecastRequest, data: AssetData, origin: pd.Timestamp, close: pd.Series,
              config: EngineConfig, settings: Any, use_cache: bool) -> tuple[Any, dict, Any]:
    """The state, conditioning and scenario effect of the request (the cached ones without a scenario)."""
    if not req.scenario:
        return st.state, st.conditioning(config.lookback), None
    from aetheris_ray.scenario import apply_scenario, scenario_effect

    state = apply_scenario(st.state, dict(req.scenario))
    cond = st.fitted.condition(Context.from_states([state], config.lookback))
    effect = scenario_effect(st.state, state, sensitivities(data, origin, close, settings, use_cache))
    step_scale = effect.step_scale(MAX_HORIZON)
    if step_scale is not None:
        cond = {**cond, "step_scale": step_scale[None, :]}
    return state, cond, effect


def _extras(data: AssetData, req: ForecastRequest, state: Any, cal: Any, fitted: FittedModel,
            config: EngineConfig, origin: pd.Timestamp, known_by: int | None, needed: list[int],
            notes: list[str], level_map: Any) -> dict[str, Any]:
    from aetheris_ray.features import REGIME_FEATURES

    vec = np.asarray(state.regime_vector, dtype=float)
    regime = {"label": state.regime_label,
              "vector": {name: float(v) for (name, _), v in zip(REGIME_FEATURES, vec)},
              "descriptors": {k: float(v) for k, v in state.descriptors.items()}}
    warnings_ = list(notes)
    if state.missing:
        warnings_.append("missing inputs (neutral values used): " + ", ".join(state.missing))
    if state.context.get("chain_note"):  # the greeks market state says which options chain it used
        warnings_.append(state.context["chain_note"])
    for fb in config.fallbacks:
        warnings_.append(f"{fb.kind}: {fb.wanted} unavailable, fell back to the baseline {fb.used!r}: {fb.why}")
    for kind, inf in fitted.info().items():
        fb = inf.get("fallback") or inf.get("fallbacks")
        if fb:
            warnings_.append(f"{kind}: fallback {fb}")
    n_pairs = len(cal)
    if config.calibrate and n_pairs == 0:
        warnings_.append("calibration: no realised pairs yet (short history); the cone is uncalibrated")
    metadata = {
        "warnings": warnings_,
        "components": config.part_names(),
        "fallbacks": [fb.model_dump() for fb in config.fallbacks],
        "calibration_pairs": n_pairs,
        "data_end": str(origin.date()),
        "chain_source": state.context.get("chain_source", "none"),
    }
    drivers = None
    if req.explain:
        explainer = spec_class("explainer", config.explainer.name)()
        # what an explainer declares it reads besides the protocol's arguments (integrated gradients)
        given = {"fitted": fitted, "level_map": level_map, "thresholds": tuple(req.thresholds)}
        drivers = explainer.explain(data, state, config, origin, req.horizon, warnings_,
                                    **{k: given[k] for k in getattr(explainer, "explain_inputs", ())})
    return {"regime": regime, "mm_indices": dict(state.mm_indices), "coverage": cal.coverage(
        day_number(origin), buckets=needed, known_by=known_by), "metadata": metadata, "drivers": drivers,
        "conditional": bool(req.scenario)}


def finish(prep: Prepared, paths: np.ndarray) -> Forecast:
    """Turn the merged paths of a prepared request into the `Forecast`.

    Far thresholds (few plain paths beyond K) are re-estimated by importance
    sampling on the prepared model (`aetheris_ray.tails`), from streams derived
    from the request's seed: the result does not depend on how the paths were sharded.
    """
    return assemble(prep.asset, prep.origin, prep.spot, paths, prep.request, prep.seed, prep.model_version,
                    prep.level_map, tail_sampler=ModelSampler(prep.model, prep.cond), **prep.extra)


def forecast(data: AssetData, req: ForecastRequest, *, config: EngineConfig | None = None, settings: Any = None,
             use_cache: bool = True, outcomes: Sequence[Mapping[str, Any]] = ()) -> Forecast:
    """Fit on ``data`` (point-in-time at the request's as-of) and answer ``req`` in-process."""
    prep = prepare(data, req, config=config, settings=settings, use_cache=use_cache, outcomes=outcomes)
    return finish(prep, prep.simulate())
