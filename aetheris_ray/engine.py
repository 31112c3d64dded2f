"""The forecasting engine: from point-in-time history to a calibrated `Forecast`.

Data flow of one forecast (ARCHITECTURE.md)::

    AssetData (cut at the origin's close)
      -> walk-forward over the asset's recent past        (aetheris_ray.walkforward)
           fitted components at the origin + the conformal buffers, cached
      -> compute_state at the origin -> apply_scenario     (aetheris_ray.features / scenario)
      -> components conditioned on the state               (aetheris_ray.components)
      -> Monte Carlo in seeded blocks                      (aetheris_ray.simulation)
           r = drift + sigma z + jumps, per path
      -> calibrated cone + threshold probabilities         (aetheris_ray.calibration)
           far thresholds by importance sampling           (aetheris_ray.tails)
      -> Forecast

The two-phase API is what the distributed layer shards: ``prep = prepare(data,
req)``; any actor holding ``prep`` draws whole blocks with ``prep.sample(n, h,
rng)``; ``finish(prep, paths)`` builds the `Forecast`.  `Prepared` is small
(parameters and per-origin conditioning arrays) and pickles cheaply.

The model is chosen by name (`MODELS`, ``--model baseline``); its configuration
(`EngineConfig`) names each component through the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from aetheris_ray import simulation as sim
from aetheris_ray.calibration import (
    BUCKETS,
    CalibrationConfig,
    Calibrator,
    ConformalLevelMap,
    bucket_index,
    day_number,
)
from aetheris_ray.components.base import Context, FittedBase, load_component
from aetheris_ray.components.registry import KINDS, build_spec
from aetheris_ray.contract import MAX_HORIZON, ForecastRequest
from aetheris_ray.data.schema import AssetData, cutoff_for
from aetheris_ray.errors import DataError, InvalidInput, ModelNotFound
from aetheris_ray.result import Forecast
from aetheris_ray.tails import IMPORTANCE_SAMPLING, ModelSampler, TiltedSampler, threshold_probabilities

__all__ = [
    "ComponentChoice", "EngineConfig", "MODELS", "model_config", "FittedModel", "Prepared",
    "daily_log_returns", "resolve_origin", "resolve_seed", "prepare", "finish", "forecast", "assemble",
    "clear_caches",
]

#: Fewest daily closes a forecast needs (the baseline's ``min_history`` returns + 1).
MIN_CLOSES = 31
#: An as-of date whose newest close is older than this is refused (stale data).
MAX_STALENESS_DAYS = 3


# -- configuration -----------------------------------------------------------------------------


class ComponentChoice(BaseModel):
    """One component chosen by registry name, with its hyperparameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class EngineConfig(BaseModel):
    """What the model is: its components by name plus the walk-forward and calibration settings.

    ``version`` (a hash of everything here) is the model version reported with
    every forecast and keys every cache.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "baseline"
    trend: ComponentChoice = ComponentChoice(name="ar_es")
    volatility: ComponentChoice = ComponentChoice(name="garch")
    jumps: ComponentChoice = ComponentChoice(name="none")
    residuals: ComponentChoice = ComponentChoice(name="student_t", params={"source": "vol"})
    lookback: int = Field(default=1000, ge=60, le=5000, description="context returns each origin conditions on")
    refit_every: int = Field(default=7, ge=1, le=365, description="refit on days with day_number % refit_every == 0")
    min_history: int = Field(default=30, ge=10, description="fewest returns an origin needs")
    walkforward_paths: int = Field(default=1000, ge=100, le=20000, description="paths per origin in walk-forwards")
    calibrate: bool = True
    calibration: CalibrationConfig = CalibrationConfig()

    def specs(self) -> dict[str, Any]:
        """The component specs, built through the registry (unknown names raise `InvalidInput`)."""
        out = {kind: build_spec(kind, getattr(self, kind).name, **getattr(self, kind).params) for kind in KINDS}
        res, jmp = out["residuals"], out["jumps"]
        if hasattr(res, "jump_threshold") and hasattr(jmp, "threshold") and res.jump_threshold != jmp.threshold:
            raise InvalidInput(f"residuals.jump_threshold={res.jump_threshold} differs from jumps.threshold="
                               f"{jmp.threshold}: jumps would be counted twice or missed; use the same value")
        return out

    @property
    def version(self) -> str:
        """``<name>-<hash of the configuration>``."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha1(blob).hexdigest()[:10]}"


#: Components whose fitted state comes from the model registry (a version can be pinned).
_REGISTERED_COMPONENTS = ("rough_vol",)

#: Named model configurations (``--model NAME``, or ``NAME@VERSION`` to pin a registered version).
MODELS: dict[str, EngineConfig] = {
    "baseline": EngineConfig(),
    # the neural rough-volatility component from the registry ("latest"); without a
    # registered artefact it falls back to GARCH with a warning in the metadata
    "rough_vol": EngineConfig(name="rough_vol", volatility=ComponentChoice(name="rough_vol")),
}


def model_config(name: str | None) -> tuple[EngineConfig, list[str]]:
    """The configuration of a model name, and any warnings (``None`` -> baseline).

    ``"latest"`` means the newest registered model; until the registry serves
    engine models it is the baseline (with a warning).
    """
    notes: list[str] = []
    key = name or "baseline"
    key, _, pinned = key.partition("@")
    if key == "latest":
        notes.append("model 'latest': no registered engine model yet; using 'baseline'")
        key = "baseline"
    if key not in MODELS:
        raise ModelNotFound(f"model {name!r} is not known; valid: {', '.join(sorted(MODELS))}, 'latest', "
                            "or NAME@VERSION to pin a registered component version (e.g. rough_vol@<version>)")
    cfg = MODELS[key]
    if pinned:
        registered = [kind for kind in KINDS if getattr(cfg, kind).name in _REGISTERED_COMPONENTS]
        if not registered:
            raise ModelNotFound(f"model {name!r}: {key!r} has no registered component to pin a version of")
        kind = registered[0]
        choice = getattr(cfg, kind)
        cfg = cfg.model_copy(update={kind: ComponentChoice(name=choice.name, params={**choice.params, "version": pinned})})
    cfg.specs()
    return cfg, notes


# -- the fitted model --------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedModel:
    """The four fitted components, batched over origins (axis 0 of every parameter)."""

    trend: FittedBase
    volatility: FittedBase
    jumps: FittedBase
    residuals: FittedBase

    def parts(self) -> dict[str, FittedBase]:
        return {k: getattr(self, k) for k in KINDS}

    def take(self, idx: Any) -> "FittedModel":
        return FittedModel(**{k: v.take(idx) for k, v in self.parts().items()})

    @staticmethod
    def stack(fits: list["FittedModel"]) -> "FittedModel":
        return FittedModel(**{k: type(getattr(fits[0], k)).stack([getattr(f, k) for f in fits]) for k in KINDS})

    def condition(self, ctx: Context) -> dict[str, dict]:
        """Per-origin conditioning arrays of every component.

        Filtered historical simulation standardises by the volatility component's
        own filter, so the residuals get the vol model's one-step variances.
        """
        out = {k: v.condition(ctx) for k, v in self.parts().items() if k != "residuals"}
        if getattr(self.residuals.spec, "filter", None) == "model":
            out["residuals"] = self.residuals.condition(ctx, variance=self.volatility.filter(ctx))
        else:
            out["residuals"] = self.residuals.condition(ctx)
        return out

    def simulate(self, cond: Mapping[str, dict], n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Daily log-return paths ``drift + sigma z + jumps``, shape (n_origins, n_paths, horizon), float64.

        Each component draws from its own child of ``rng`` (``rng.spawn``), so one
        component's variable draw counts never shift another's stream.
        """
        r_res, r_vol, r_jmp = rng.spawn(3)
        z = self.residuals.draw(cond["residuals"], n_paths, horizon, r_res)
        sigma = self.volatility.sample_vol(cond["volatility"], z, r_vol)
        out = sigma * z
        out += self.trend.drift(cond["trend"], horizon)
        if self.jumps.name != "none":
            out += self.jumps.simulate(cond["jumps"], n_paths, horizon, r_jmp)
        return self.scenario_scaled(cond, out)

    def scenario_scaled(self, cond: Mapping[str, Any], paths: np.ndarray) -> np.ndarray:
        """``paths`` (n_origins, n_paths, horizon) with each step's deviation from the drift multiplied
        by a scenario's ``cond["step_scale"]`` (n_origins, >= horizon), in place; as they are without one.

        `aetheris_ray.scenario.scenario_effect` gives the multipliers; every sampler of the
        model's paths (plain or tilted) applies them, so a scenario moves all of its numbers.
        """
        if "step_scale" not in cond:
            return paths
        horizon = paths.shape[-1]
        scale = np.asarray(cond["step_scale"], dtype=float)[:, None, :horizon]
        paths *= scale
        paths += self.trend.drift(cond["trend"], horizon) * (1.0 - scale)
        return paths

    def simulate_tilted(self, cond: Mapping[str, dict], n_paths: int, horizon: int, eta: np.ndarray,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`simulate` with the innovations under the tilt ``eta`` (importance sampling, `aetheris_ray.tails`).

        The volatility component runs on the tilted innovations (its feedback
        included); drift and jumps are the model's own.  Returns the float64 paths
        ``(n_origins, n_paths, horizon)`` and each path's log likelihood ratio
        ``(n_origins, n_paths)``.
        """
        r_res, r_vol, r_jmp = rng.spawn(3)
        z, log_lr = self.residuals.draw_tilted(cond["residuals"], n_paths, horizon, eta, r_res)
        out = self.volatility.sample_vol(cond["volatility"], z, r_vol) * z
        out += self.trend.drift(cond["trend"], horizon)
        if self.jumps.name != "none":
            out += self.jumps.simulate(cond["jumps"], n_paths, horizon, r_jmp)
        return self.scenario_scaled(cond, out), log_lr  # a deterministic map of the paths: the ratio stands

    def info(self) -> dict[str, Any]:
        return {k: dict(v.info) for k, v in self.parts().items() if v.info}

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        d = Path(directory)
        for k, v in self.parts().items():
            v.save(d / k, overwrite=overwrite)
        return d

    @staticmethod
    def load(directory: str | Path) -> "FittedModel":
        d = Path(directory)
        return FittedModel(**{k: load_component(d / k) for k in KINDS})


# -- data helpers ------------------------------------------------------------------------------


def daily_log_returns(close: pd.Series) -> pd.Series:
    """Log-returns of consecutive closes; a return spanning a k-day gap is scaled by 1/sqrt(k).

    Gaps are kept honest: the scaled return has the variance of a one-day move
    under a random walk, so volatility estimates are not inflated by missing days.

    >>> c = pd.Series([100.0, 110.0, 99.0], index=pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-06"]))
    >>> [round(x, 4) for x in daily_log_returns(c)]
    [0.0953, -0.0527]
    """
    close = close.dropna()
    r = np.log(close.to_numpy(dtype=float))
    days = np.diff(close.index.to_numpy()).astype("timedelta64[D]").astype(float)
    out = np.diff(r) / np.sqrt(np.maximum(days, 1.0))
    return pd.Series(out, index=close.index[1:])


def positive_closes(data: AssetData) -> pd.Series:
    """Positive daily closes by date (non-positive prints are dropped)."""
    close = data.daily_close().dropna()
    return close[close > 0]


def resolve_origin(close: pd.Series, as_of: Any, asset: str) -> pd.Timestamp:
    """The origin date: the newest close on or before ``as_of`` (default: the newest close)."""
    if close.empty:
        raise DataError(f"{asset}: no daily closes in the data source")
    if as_of is None:
        return close.index[-1]
    as_of = pd.Timestamp(as_of).normalize()
    known = close.index[close.index <= as_of]
    if known.empty:
        raise DataError(f"as_of {as_of.date()}: {asset} has no close on or before it "
                        f"(first close {close.index[0].date()})")
    origin = known[-1]
    stale = (as_of - origin).days
    if stale > MAX_STALENESS_DAYS:
        raise DataError(
            f"as_of {as_of.date()}: the newest {asset} close on or before it is {origin.date()}, "
            f"{stale} days earlier (more than {MAX_STALENESS_DAYS}); pick an as_of with data"
        )
    return origin


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one (returned with the forecast so it can be replayed)."""
    return int(seed) if seed is not None else int(np.random.SeedSequence().entropy % (2**63))


# -- the cache of prepared states ---------------------------------------------------------------


@dataclass
class _Cached:
    fitted: FittedModel
    calibrator: Calibrator
    state: Any
    cond: dict | None = None


class _Lru:
    def __init__(self, size: int = 64):
        self.size, self.d, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key in self.d:
                self.d.move_to_end(key)
                return self.d[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self.d[key] = value
            self.d.move_to_end(key)
            while len(self.d) > self.size:
                self.d.popitem(last=False)


_CACHE = _Lru()
#: Scenario sensitivities by (asset, origin, data signature): they depend on neither model nor horizon.
_SENS = _Lru()


def clear_caches() -> None:
    """Forget the in-process cache of fitted components, calibration buffers, states and scenario sensitivities."""
    _CACHE.d.clear()
    _SENS.d.clear()


def _cache_key(asset: str, origin: pd.Timestamp, close: pd.Series, cfg: EngineConfig, h_sim: int) -> str:
    from aetheris_ray.walkforward import ALGORITHM_VERSION

    sig = (f"{asset}|{origin.date()}|{len(close)}|{float(close.iloc[-1])!r}|{close.index[0].date()}"
           f"|{cfg.version}|{h_sim}|wf{ALGORITHM_VERSION}")
    return hashlib.sha1(sig.encode()).hexdigest()[:16]


def _state_dir(settings: Any) -> Path | None:
    try:
        if settings is None:
            from aetheris_ray.config import load_settings

            settings = load_settings()
        return Path(settings.state_path)
    except Exception:  # noqa: BLE001 - a broken settings file must not stop an in-memory forecast
        return None


def _load_disk(root: Path | None, asset: str, key: str) -> tuple[FittedModel, Calibrator] | None:
    if root is None:
        return None
    d = root / "engine" / _safe(asset) / key
    try:
        if (d / "calibration.json").is_file() and (d / "fitted").is_dir():
            return FittedModel.load(d / "fitted"), Calibrator.load(d / "calibration.json")
    except (ModelNotFound, OSError, ValueError, KeyError):
        return None  # a stale or partial entry is rebuilt below
    return None


def _save_disk(root: Path | None, asset: str, key: str, fitted: FittedModel, cal: Calibrator) -> None:
    if root is None:
        return
    d = root / "engine" / _safe(asset) / key
    try:
        fitted.save(d / "fitted", overwrite=True)
        cal.save(d / "calibration.json")
    except OSError:
        pass  # a read-only home only costs speed


def _safe(asset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in asset)


# -- prepare / sample / finish -----------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """Everything needed to draw paths and finish a forecast; picklable (Ray actors hold it).

    The two-phase split (`prepare`, then paths from ``prepared.sample`` in seeded
    blocks, then `finish`) is what lets the distributed layer shard the Monte
    Carlo without re-implementing the engine.  Holds batch-1 fitted components
    and their conditioning arrays (a few KB), not the history.
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
        return self.model.simulate(self.cond, int(n_paths), int(horizon), rng)[0].astype(np.float32)


def sim_horizon(horizon: int, calibrate: bool = True) -> int:
    """Steps the calibration walk-forward simulates: the representative horizon of the request's bucket."""
    return int(BUCKETS[int(bucket_index(horizon))][1]) if calibrate else int(horizon)


def prepare(data: AssetData, req: ForecastRequest, *, config: EngineConfig | None = None, settings: Any = None,
            use_cache: bool = True, outcomes: Sequence[Mapping[str, Any]] = ()) -> Prepared:
    """Fit on ``data`` up to the origin (point-in-time) and resolve everything but the paths.

    ``outcomes`` are realised prices posted back for this asset (rows ``{origin,
    horizon, price}``, `aetheris_ray.outcomes.OutcomeLog`): their pairs
    (`outcome_pairs`) join the calibration buffers.  A request with ``as_of`` uses
    only those realised by then; a live request (no ``as_of``) uses all of them,
    since they are known now even when the data source has not caught up.
    """
    from aetheris_ray import walkforward as wf

    notes: list[str] = []
    if config is None:
        config, notes = model_config(req.model)
    close_all = positive_closes(data)
    origin = resolve_origin(close_all, req.as_of, data.asset)
    data = _point_in_time(data, cutoff_for(origin))
    close = close_all[close_all.index <= origin]
    need = max(MIN_CLOSES, config.min_history + 1)
    if len(close) < need:
        raise DataError(f"{data.asset}: {len(close)} daily closes up to {origin.date()}, at least {need} needed; "
                        "pick a later as_of or give more history")
    h_sim = sim_horizon(req.horizon, config.calibrate)
    key = _cache_key(data.asset, origin, close, config, h_sim)
    cached = _CACHE.get(key) if use_cache else None
    if cached is None:
        root = _state_dir(settings) if use_cache else None
        disk = _load_disk(root, data.asset, key)
        if disk is not None:
            from aetheris_ray.features import compute_state

            cached = _Cached(disk[0], disk[1], compute_state(data, origin))
        else:
            res = wf.walk_forward(data, pd.DatetimeIndex([origin]), [h_sim], [0.5], config, seed=0, keep_last=True)
            if res.last is None:
                raise DataError(f"{data.asset}: too little history at {origin.date()} to forecast "
                                f"({len(close) - 1} returns, at least {config.min_history} needed)")
            cached = _Cached(res.last["fitted"], res.calibrator, res.last["state"])
            _save_disk(root, data.asset, key, cached.fitted, cached.calibrator)
        if use_cache:
            _CACHE.put(key, cached)
    state = cached.state
    effect = None
    if req.scenario:
        from aetheris_ray.scenario import apply_scenario, scenario_effect

        state = apply_scenario(state, dict(req.scenario))
        cond = cached.fitted.condition(Context.from_states([state], config.lookback))
        sens = _sensitivities(data, origin, close, settings, use_cache)
        effect = scenario_effect(cached.state, state, sens)
        step_scale = effect.step_scale(MAX_HORIZON)
        if step_scale is not None:
            cond = {**cond, "step_scale": step_scale[None, :]}
    else:
        if cached.cond is None:
            cached.cond = cached.fitted.condition(Context.from_states([state], config.lookback))
        cond = cached.cond
    cal, known_by = cached.calibrator, None
    if outcomes and config.calibrate:
        pairs = outcome_pairs(data, outcomes, config=config, settings=settings)
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
    extra = _extras(data, req, state, cal, cached.fitted, config, origin, known_by, needed, notes)
    return Prepared(request=req, seed=resolve_seed(req.seed), asset=data.asset, origin=origin,
                    spot=float(close.iloc[-1]), model=cached.fitted, cond=cond, model_version=config.version,
                    level_map=level_map, extra=_with_scenario(extra, effect, req.horizon))


def _with_scenario(extra: dict[str, Any], effect: Any, horizon: int) -> dict[str, Any]:
    """``extra`` with a scenario's warnings and report (``metadata["scenario"]``) added."""
    if effect is not None:
        extra["metadata"]["warnings"].extend(effect.warnings)
        extra["metadata"]["scenario"] = effect.report(horizon)
    return extra


def _sensitivities(data: AssetData, origin: pd.Timestamp, close: pd.Series, settings: Any, use_cache: bool) -> Any:
    """The scenario sensitivities at the origin (`aetheris_ray.sensitivity`): from memory, else from
    ``<state>/engine/<asset>/sensitivities-<key>.json`` when written with the current priors, else
    estimated (point in time) and kept in both (``use_cache=False``: estimated, kept nowhere)."""
    from aetheris_ray import sensitivity

    if not use_cache:
        return sensitivity.estimate(data, origin)
    sig = f"{data.asset}|{origin.date()}|{len(close)}|{float(close.iloc[-1])!r}|{close.index[0].date()}|sensitivity"
    key = hashlib.sha1(sig.encode()).hexdigest()[:16]
    sens = _SENS.get(key)
    if sens is not None:
        return sens
    root = _state_dir(settings)
    path = None if root is None else root / "engine" / _safe(data.asset) / f"sensitivities-{key}.json"
    if path is not None and path.is_file():
        try:
            sens = sensitivity.Sensitivities.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # written with other priors, or partial: estimated again below
    if sens is None:
        sens = sensitivity.estimate(data, origin)
        _write_json(path, sens.to_dict())
    _SENS.put(key, sens)
    return sens


def _write_json(path: Path | None, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (nothing when None; a read-only home only costs speed)."""
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(obj, allow_nan=False))
            tmp.replace(path)
        except OSError:
            pass


#: Pairs of posted outcomes already computed: (asset, model version, origin, horizon, price) -> pair.
_PAIRS = _Lru(50_000)


def outcome_pairs(data: AssetData, outcomes: Sequence[Mapping[str, Any]], *, config: EngineConfig,
                  settings: Any = None) -> list[tuple[int, int, int, float, float]]:
    """Calibration pairs ``(origin day, horizon, regime code, raw PIT, calibrated PIT)`` of posted outcomes.

    Each outcome ``{origin, horizon, price}`` is scored against the raw forecast
    the model makes at that origin from the data known then (`prepare` with
    ``as_of=origin``, ``config.walkforward_paths`` paths on a seed fixed by the
    origin day, as the walk-forward does), and its calibrated PIT goes through
    the level map in force at that origin.  An outcome whose origin has no close
    in ``data`` or too little history is skipped (it cannot be scored).  Memoised.
    """
    from aetheris_ray.calibration import pit
    from aetheris_ray.contract import parse_request
    from aetheris_ray.features.state import REGIME_LABELS

    todo: dict[str, list[tuple[int, float]]] = {}
    out: list[tuple[int, int, int, float, float]] = []
    for row in outcomes:
        o, h, price = str(pd.Timestamp(row["origin"]).date()), int(row["horizon"]), float(row["price"])
        hit = _PAIRS.get((data.asset, config.version, o, h, price))
        if hit is not None:
            out.append(hit)
        else:
            todo.setdefault(o, []).append((h, price))
    close = positive_closes(data)
    for o, items in todo.items():
        day = pd.Timestamp(o)
        if day not in close.index:
            continue
        h_max = max(h for h, _ in items)
        req = parse_request({"asset": data.asset, "horizon": h_max, "as_of": o, "paths": config.walkforward_paths,
                             "seed": 0})
        try:
            prep = prepare(data, req, config=config, settings=settings)
        except DataError:
            continue
        cum = np.cumsum(sim.simulate_blocks(prep.sample, req.paths, h_max, int(day_number(day))), axis=1)
        code = REGIME_LABELS.index(prep.extra["regime"]["label"])
        for h, price in items:
            raw = float(pit(cum[:, h - 1:h], np.array([np.log(price / prep.spot)]), axis=0)[0])
            pair = (int(day_number(day)), h, code, raw, float(prep.level_map.calibrated_prob(h - 1, raw)))
            _PAIRS.put((data.asset, config.version, o, h, price), pair)
            out.append(pair)
    return out


def _point_in_time(data: AssetData, cutoff: pd.Timestamp) -> AssetData:
    """``data.until(cutoff)`` for sorted frames: a frame already ending by the cutoff is kept as is,
    the others are sliced at ``searchsorted`` (no copy)."""

    def cut(f: pd.DataFrame) -> pd.DataFrame:
        if len(f) == 0 or f["ts"].iloc[-1] <= cutoff:
            return f
        return f.iloc[: int(f["ts"].searchsorted(cutoff, side="right"))]

    return AssetData(asset=data.asset, bars={k: cut(v) for k, v in data.bars.items()},
                     series={k: cut(v) for k, v in data.series.items()}, info=data.info)


def _extras(data: AssetData, req: ForecastRequest, state: Any, cal: Calibrator, fitted: FittedModel,
            config: EngineConfig, origin: pd.Timestamp, known_by: int | None, needed: list[int],
            notes: list[str]) -> dict[str, Any]:
    from aetheris_ray.features import REGIME_FEATURES

    vec = np.asarray(state.regime_vector, dtype=float)
    regime = {"label": state.regime_label,
              "vector": {name: float(v) for (name, _), v in zip(REGIME_FEATURES, vec)},
              "descriptors": {k: float(v) for k, v in state.descriptors.items()}}
    warnings_ = list(notes)
    if state.missing:
        warnings_.append("missing inputs (neutral values used): " + ", ".join(state.missing))
    for kind, inf in fitted.info().items():
        fb = inf.get("fallback") or inf.get("fallbacks")
        if fb:
            warnings_.append(f"{kind}: fallback {fb}")
    n_pairs = len(cal)
    if config.calibrate and n_pairs == 0:
        warnings_.append("calibration: no realised pairs yet (short history); the cone is uncalibrated")
    metadata = {
        "warnings": warnings_,
        "components": {k: getattr(config, k).name for k in KINDS},
        "calibration_pairs": n_pairs,
        "data_end": str(origin.date()),
    }
    drivers = None
    if req.explain:
        drivers = _drivers(data, state, config, origin, req.horizon, warnings_)
    return {"regime": regime, "mm_indices": dict(state.mm_indices), "coverage": cal.coverage(
        day_number(origin), buckets=needed, known_by=known_by), "metadata": metadata, "drivers": drivers,
        "conditional": bool(req.scenario)}


def _drivers(data: AssetData, state: Any, config: EngineConfig, origin: pd.Timestamp, horizon: int,
             warnings_: list[str]) -> dict[str, Any] | None:
    """Top drivers (`aetheris_ray.explain`) of the engine's own forecasts over the last year of origins.

    The targets are the engine's walk-forward forecasts at each past origin:
    upside ``q95 - q50``, downside ``q50 - q05`` and trend ``q50`` (log-returns).
    """
    from aetheris_ray import walkforward as wf
    from aetheris_ray.explain import MIN_STATES, explain

    close = positive_closes(data)
    past = close.index[config.min_history:]
    past = past[past < origin][-365:]
    res = wf.walk_forward(data, past, [horizon], [0.05, 0.5, 0.95], config, seed=0)
    q = res.quantiles[:, 0, :]
    ok = np.flatnonzero(np.all(np.isfinite(q), axis=1))
    if ok.size < MIN_STATES:
        warnings_.append(f"explain: {ok.size} past forecasts, at least {MIN_STATES} needed; no drivers")
        return None
    targets = {"upside": q[ok, 2] - q[ok, 1], "downside": q[ok, 1] - q[ok, 0], "trend": q[ok, 1]}
    states_hist = [res.states[i] for i in ok]
    return explain(states_hist, targets, state, np.random.default_rng(day_number(origin)))


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
    paths = sim.simulate_blocks(prep.sample, req.paths, req.horizon, prep.seed)
    return finish(prep, paths)


def assemble(asset, origin, spot, paths, req: ForecastRequest, seed, model_version, level_map,
             tail_sampler: TiltedSampler | None = None, **extra) -> Forecast:
    """Turn raw log-return paths into a `Forecast` (quantiles, thresholds, dense CDF).

    ``tail_sampler`` (the model's tilted paths) lets far thresholds be estimated by
    importance sampling; without it every threshold is plain Monte Carlo.
    """
    cum = sim.cumulative(paths)
    srt = sim.sorted_steps(cum)
    q_log = sim.cone(cum, req.quantiles, level_map, srt=srt)
    last = srt[:, -1:] if srt is not None else None
    grid_log = sim.cone(cum[:, -1:], sim.CDF_GRID, _LastStep(level_map, cum.shape[1]), srt=last)[0]
    thresholds = np.asarray(req.thresholds, dtype=float)
    tp = threshold_probabilities(cum[:, -1] if last is None else last[:, 0], np.log(thresholds / spot), level_map,
                                 cum.shape[1] - 1, sampler=tail_sampler, seed=seed, n_paths=req.paths,
                                 presorted=last is not None)
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
