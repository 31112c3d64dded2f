"""Calibration pairs of posted outcomes: each realised price scored against the raw forecast made at its origin.

Each outcome ``{origin, horizon, price}`` is scored against the raw forecast the
model makes at that origin from the data known then: the fit in force at the
origin (the walk-forward's calendar refit schedule, `walkforward.fit_positions`:
the latest fit on or before the origin), the market state at the origin, and
``config.walkforward_paths`` paths on a seed fixed by the origin day, as the
walk-forward does.  Its calibrated PIT goes through the level map in force at that
origin, taken from the forecast's own calibration buffers (the pairs realised by
the origin).

Incremental (issue 14, item 4).  Scoring an outcome never runs the calibration
walk-forward at its origin (that was a whole model rebuild per new origin: 60
outcomes made a forecast take minutes):

* an outcome whose ``(origin, horizon)`` the forecast's buffers already hold (the
  data implies it: the walk-forward recorded that pair) is recognised by a set
  lookup and skipped (`Calibrator.with_pairs` would drop it anyway);
* the fit in force at an origin is shared by every origin of its refit period
  (``refit_every`` days) and kept (`_FITS`); only the first outcome of a period
  whose fit is not cached pays one fit (and its warm-start anchor);
* a scored outcome's raw PIT is kept in memory and on disk
  (``<state>/engine/<asset>/outcome-pits-<model version>.json``), keyed by the
  data seen at its origin: a restart or another replica does not score it again.

An outcome whose origin has no close or too little history is skipped (it cannot
be scored).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from aetheris_ray import atomic
from aetheris_ray import simulation as sim
from aetheris_ray.calibration import REP_HORIZONS, ConformalLevelMap, bucket_index, day_number, pit
from aetheris_ray.data.schema import AssetData
from aetheris_ray.errors import DataError
from aetheris_ray.features.state import regime_code
from aetheris_ray.history import MIN_CLOSES, at_origin, positive_closes
from aetheris_ray.model import EngineConfig
from aetheris_ray.state_cache import Lru, OriginState, _safe, state_dir

__all__ = ["outcome_pairs", "prescore", "clear", "STATS"]

#: Raw scores of posted outcomes: (asset, model version, origin, horizon, price, data signature) -> (day, h, code, raw).
_RAW = Lru(100_000)
#: Calibrated PITs: (buffers' version, origin day, horizon, regime code, raw PIT) -> calibrated PIT.
_CAL = Lru(100_000)
#: Fits in force at a refit day: (asset, model version, fit day, data signature at the fit) -> FittedModel.
_FITS = Lru(256)
#: Market states at an origin: (asset, origin, data signature) -> state.
_STATES = Lru(512)
#: Disk tables already read: (root, asset, version) -> dict.
_DISK: dict[tuple[str, str, str], tuple[int | None, dict[str, list]]] = {}
_DISK_LOCK = threading.Lock()

#: Counters (for tests and the docs' measurements): outcomes skipped as implied by the data, raw scores computed,
#: raw scores found in memory or on disk, fits made.
STATS = {"implied": 0, "scored": 0, "reused": 0, "fits": 0}


def clear() -> None:
    """Forget the in-process memo of raw scores, fits and states (the disk tables stay)."""
    _RAW.clear()
    _CAL.clear()
    _FITS.clear()
    _STATES.clear()
    with _DISK_LOCK:
        _DISK.clear()


def _sig(close: pd.Series, pos: int) -> str:
    """The data seen at close ``pos``: its count, value and the first date."""
    return f"{pos}|{float(close.iloc[pos])!r}|{close.index[0].date()}"


def outcome_pairs(data: AssetData, outcomes: Sequence[Mapping[str, Any]], *, config: EngineConfig,
                  settings: Any = None, state: OriginState | None = None) -> list[tuple[int, int, int, float, float]]:
    """Calibration pairs ``(origin day, horizon, regime code, raw PIT, calibrated PIT)`` of posted outcomes.

    ``config`` is resolved (`aetheris_ray.model.resolve_config`).  ``state`` is the
    forecast's model at its origin (`aetheris_ray.state_cache.origin_state`): its
    buffers say which outcomes the data already implies (skipped) and give each
    outcome's level map.  Without it (a direct call), every outcome is scored and
    its level map is the identity (calibrated PIT = raw PIT).
    """
    cal = state.calibrator if state is not None else None
    have = _pairs_held(cal) if cal is not None else frozenset()
    raws = _raw_scores(data, outcomes, config, settings, lambda dn, h: (dn, h) in have)
    return _calibrated(raws, state, config)


def prescore(data: AssetData, outcomes: Sequence[Mapping[str, Any]], *, config: EngineConfig,
             settings: Any = None) -> int:
    """Score posted outcomes ahead of the next forecast (the service calls it after a POST); how many were scored.

    The raw scores go to memory and disk, where `outcome_pairs` finds them.  Outcomes
    at a horizon the walk-forward records whose origin lies in the calibration window
    of the data's end and whose realisation the data holds are left out: the
    forecast's buffers already hold them.
    """
    close = positive_closes(data)
    if close.empty:
        return 0
    last = int(day_number(close.index[-1:])[0])
    window = config.calibration.window_days + REP_HORIZONS[-1]

    def implied(dn: int, h: int) -> bool:
        return h in REP_HORIZONS and dn + h <= last and dn > last - window

    before = STATS["scored"]
    _raw_scores(data, outcomes, config, settings, implied)
    return STATS["scored"] - before


def _raw_scores(data: AssetData, outcomes: Sequence[Mapping[str, Any]], config: EngineConfig, settings: Any,
                implied: Any) -> list[tuple[int, int, int, float]]:
    """``(origin day, horizon, regime code, raw PIT)`` of the outcomes not ``implied(day, h)``, from memory, disk
    or scored now (and kept)."""
    close_all = positive_closes(data)
    if close_all.empty:
        return []
    index = close_all.index
    days = day_number(index)
    root = state_dir(settings)
    disk = _disk_table(root, data.asset, config.version)
    disk_new: dict[str, list] = {}
    raws: list[tuple[int, int, int, float]] = []
    todo: dict[int, list[tuple[int, float, tuple]]] = {}
    for row in outcomes:
        day = pd.Timestamp(row["origin"]).normalize()
        h, price = int(row["horizon"]), float(row["price"])
        pos = int(index.searchsorted(day))
        if pos >= len(index) or index[pos] != day:
            continue  # no close at the origin: cannot be scored
        dn = int(days[pos])
        if implied(dn, h):
            STATS["implied"] += 1
            continue
        key = (data.asset, config.version, dn, h, price, _sig(close_all, pos))
        hit = _RAW.get(key)
        if hit is None:
            d = disk.get(_disk_key(key))
            if d is not None:
                hit = (int(d[0]), int(d[1]), int(d[2]), float(d[3]))
                _RAW.put(key, hit)
        if hit is not None:
            STATS["reused"] += 1
            raws.append(hit)
        else:
            todo.setdefault(pos, []).append((h, price, key))
    if todo:
        models = _Models(data, close_all, config)
        scorable = [p for p in sorted(todo) if p >= config.min_history and p + 1 >= models.min_closes]
        for pos, st in zip(scorable, models.states(scorable)):
            items = todo[pos]
            origin = index[pos]
            try:
                fitted = models.fit_in_force(pos)
            except DataError:
                continue
            h_max = max(h for h, _, _ in items)
            cond = fitted.condition(_context(st, config.lookback))

            def sample(n: int, hh: int, rng: np.random.Generator, fitted=fitted, cond=cond) -> np.ndarray:
                return fitted.simulate(cond, int(n), int(hh), rng)[0].astype(np.float32)

            cum = np.cumsum(sim.simulate_blocks(sample, config.walkforward_paths, h_max, int(day_number(origin))),
                            axis=1)
            code = regime_code(st.regime_label)
            spot = float(close_all.iloc[pos])
            for h, price, key in items:
                raw = float(pit(cum[:, h - 1:h], np.array([np.log(price / spot)]), axis=0)[0])
                r = (int(days[pos]), h, code, raw)
                _RAW.put(key, r)
                disk_new[_disk_key(key)] = list(r)
                STATS["scored"] += 1
                raws.append(r)
    if disk_new:
        _disk_add(root, data.asset, config.version, disk_new)
    return raws


def _context(st: Any, lookback: int) -> Any:
    from aetheris_ray.components.base import Context

    return Context.from_states([st], lookback)


class _Models:
    """The walk-forward's fits on its calendar schedule and market states, for origins of one asset's data.

    A fit is what `walkforward.raw_block` computes for the same close: `fit_model` on
    the returns up to the fit day, warm-started from the first fit of its
    `walkforward.WARM_START_DAYS` period (`walkforward.warm_anchors`), with the
    market state's inputs at the fit day; kept in `_FITS` by fit day and data seen.
    Market states are computed for all new origins in one batch (point in time).
    """

    def __init__(self, data: AssetData, close_all: pd.Series, config: EngineConfig) -> None:
        from aetheris_ray import walkforward as wf
        from aetheris_ray.components.contract import needed_inputs
        from aetheris_ray.components.registry import spec_class
        from aetheris_ray.history import daily_log_returns
        from aetheris_ray.model import fit_order

        self.data, self.close, self.config = data, close_all, config
        self.days = day_number(close_all.index)
        self.fp = wf.fit_positions(self.days, config.min_history, config.refit_every)
        self.anchor = wf.warm_anchors(self.days[self.fp])
        self.specs = config.specs()
        self.order = fit_order(self.specs, config.used_kinds())
        self.market = spec_class("market_state", config.market_state.name)()
        self.ret = daily_log_returns(close_all).to_numpy()
        #: parts that train on past features: their fit needs the walk-forward's own feature window
        self.needs_features = any("features" in needed_inputs(self.specs[k]) for k in self.order)
        self.min_closes = max(MIN_CLOSES, config.min_history + 1)

    def states(self, positions: list[int]) -> list[Any]:
        """Market states at these closes (one batch; cached per origin and data seen)."""
        keys = [(self.data.asset, str(self.close.index[p].date()), _sig(self.close, p)) for p in positions]
        out = [_STATES.get(k) for k in keys]
        miss = [i for i, v in enumerate(out) if v is None]
        if miss:
            new = self.market.compute_states(self.data, [self.close.index[positions[i]] for i in miss])
            for i, st in zip(miss, new):
                out[i] = st
                _STATES.put(keys[i], st)
        return out

    def fit_in_force(self, pos: int) -> Any:
        """The fit the walk-forward uses at close ``pos``: the latest on the schedule on or before it."""
        origin = self.close.index[pos]
        if pos < self.config.min_history or pos + 1 < self.min_closes:
            raise DataError(f"{self.data.asset}: too little history at {origin.date()}")
        k = int(np.searchsorted(self.fp, pos, side="right")) - 1
        if k < 0:
            raise DataError(f"{self.data.asset}: no fit on or before {origin.date()}")
        if self.needs_features:
            return self._fit_by_block(pos, k)
        return self._fit(k)

    def _key(self, k: int) -> tuple:
        p = int(self.fp[k])
        return (self.data.asset, self.config.version, str(self.close.index[p].date()), _sig(self.close, p))

    def _fit(self, k: int) -> Any:
        from aetheris_ray.model import fit_model, state_inputs

        key = self._key(k)
        hit = _FITS.get(key)
        if hit is not None:
            return hit
        a = int(self.anchor[k])
        warm = None if a == k else self._fit(a)
        p = int(self.fp[k])
        fitted = fit_model(self.config, self.specs, self.ret[:p], warm=warm, **state_inputs(self.states([p])[0]),
                           features=None, order=self.order)
        STATS["fits"] += 1
        _FITS.put(key, fitted)
        return fitted

    def _fit_by_block(self, pos: int, k: int) -> Any:
        """A model whose parts train on past features: the walk-forward's raw phase at this one origin."""
        from aetheris_ray import walkforward as wf

        key = self._key(k)
        hit = _FITS.get(key)
        if hit is not None:
            return hit
        origin = self.close.index[pos]
        _, cut, _ = at_origin(self.data, origin, self.min_closes)
        block = wf.raw_block(cut, [origin], [1], self.config.model_copy(update={"calibrate": False}),
                             n_paths=100, keep_states=False, keep_last=True)
        if block.last is None:
            raise DataError(f"{self.data.asset}: too little history at {origin.date()}")
        STATS["fits"] += 1
        _FITS.put(key, block.last["fitted"])
        return block.last["fitted"]


def _calibrated(raws: list[tuple[int, int, int, float]], state: OriginState | None,
                config: EngineConfig) -> list[tuple[int, int, int, float, float]]:
    """Each raw score with its calibrated PIT: the level map in force at its origin, from ``state``'s buffers."""
    if state is None or not config.calibrate or not raws:
        return [(d, h, c, r, r) for d, h, c, r in raws]
    maps: dict[tuple[int, int, int], ConformalLevelMap] = {}
    version = state.calibrator.version
    out = []
    for d, h, c, r in raws:
        key = (version, d, h, c, r)
        cp = _CAL.get(key)
        if cp is None:
            b = int(bucket_index(h))
            lm = maps.get((d, c, b))
            if lm is None:
                lm = maps[(d, c, b)] = state.calibrator.level_map(c, d, buckets=[b], version="outcome")
            cp = float(lm.calibrated_prob(h - 1, r))
            _CAL.put(key, cp)
        out.append((d, h, c, r, cp))
    return out


# -- which pairs a calibrator already holds ---------------------------------------------------------
_HELD = Lru(32)


def _pairs_held(cal: Any) -> frozenset:
    """``{(origin day, horizon)}`` of the calibrator's buffers, computed once per buffer version."""
    key = (id(cal), cal.version)
    hit = _HELD.get(key)
    if hit is None:
        hit = cal.pair_keys()
        _HELD.put(key, hit)
    return hit


# -- raw scores on disk --------------------------------------------------------------------------------
def _disk_key(key: tuple) -> str:
    _, _, dn, h, price, sig = key
    return hashlib.sha1(f"{dn}|{h}|{price!r}|{sig}".encode()).hexdigest()[:20]


def _disk_path(root: Path, asset: str, version: str) -> Path:
    v = hashlib.sha1(version.encode()).hexdigest()[:12]
    return root / "engine" / _safe(asset) / f"outcome-pits-{v}.json"


def _disk_table(root: Path | None, asset: str, version: str) -> dict[str, list]:
    """The scores kept on disk for (asset, model version); read again whenever the file changed (another replica)."""
    if root is None:
        return {}
    k = (str(root), asset, version)
    path = _disk_path(root, asset, version)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    with _DISK_LOCK:
        hit = _DISK.get(k)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    table: dict[str, list] = {}
    if stamp is not None:
        table = _read_disk(path, version)
    with _DISK_LOCK:
        _DISK[k] = (stamp, table)
    return table


def _read_disk(path: Path, version: str) -> dict[str, list]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") == version and isinstance(doc.get("pits"), dict):
            return doc["pits"]
    except (OSError, ValueError):
        pass  # unreadable: scored again
    return {}


def _disk_add(root: Path | None, asset: str, version: str, new: dict[str, list]) -> None:
    if root is None:
        return
    k = (str(root), asset, version)
    path = _disk_path(root, asset, version)
    with _DISK_LOCK:
        table = {**_read_disk(path, version), **new}  # another replica may have added scores since
        try:
            atomic.write_json(path, {"version": version, "pits": table}, allow_nan=False)
            _DISK[k] = (path.stat().st_mtime_ns, table)
        except OSError:
            _DISK[k] = (None, table)  # a read-only home only costs speed
