"""Conformal calibration by regime x horizon bucket, applied as a monotone `LevelMap`.

Buffers
    Each realised forecast leaves one *pair*: its origin, horizon, the regime
    label at the origin, the raw PIT (the fraction of the raw simulated cumulative
    log-returns below the realised one) and the calibrated PIT (the same value
    seen through the level map the forecast used).  Pairs live in horizon buckets
    {1}, {2-3}, {4-7}, {8-14}, {15-30}, {31-90}; the walk-forward records them at
    each bucket's representative horizon (its upper end: 1, 3, 7, 14, 30, 90).
    A pair from origin t at horizon h is used only from day ``t + h`` on, and only
    while ``t`` is within the last ``window_days`` days.

Map
    For a bucket with stored raw PITs ``u_1..u_n``, the calibrated level tau maps to
    the raw level ``G^-1(tau)`` (the empirical quantile of the PITs): quantiles of
    the raw sample at those levels are the calibrated quantiles.  Few pairs shrink
    the map towards its parent, hierarchically (regime x bucket -> bucket ->
    identity) with weight ``n_eff / (n_eff + n0)``, ``n_eff = n / h`` (overlapping
    h-day outcomes carry about 1/h of the information).  A small share ``epsilon``
    of the identity keeps the map strictly increasing, so its exact inverse
    (``calibrated_prob``, for threshold probabilities) is the piecewise-linear
    inverse on the same knots.  The ends stay pinned (level 0 -> raw 0, 1 -> 1):
    below the first inner knot (above the last) the map is proportional, so a
    far tail probability is scaled, never set to 0.  Steps between two representative horizons use the
    map interpolated in log-horizon.  By default the map is symmetrised,
    ``m(tau) <- (m(tau) + 1 - m(1 - tau)) / 2``: it corrects the spread and the
    tails but never moves the median -- the location of crypto returns is the
    (shrunk) trend component's business, for the reason drift is shrunk: past
    PIT skew is mostly past drift, which does not persist.

Coverage
    The calibrated PITs of the realised pairs give the rolling coverage of the
    central 50/80/90% intervals per bucket (`Calibrator.coverage`).

Scenario (conditional) forecasts never enter the buffers (`Calibrator.record` refuses them).
The state is versioned (``calibration_version`` changes whenever the buffers do)
and saved as JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from aetheris_ray import atomic
from aetheris_ray._typing import FloatArray
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.features.state import REGIME_LABELS, regime_code, regime_codes

__all__ = [
    "BUCKETS", "BUCKET_LABELS", "REP_HORIZONS", "KNOTS", "INTERVALS",
    "CalibrationConfig", "ConformalLevelMap", "Calibrator",
    "bucket_index", "day_number", "pit",
]

#: Horizon buckets (inclusive day ranges) and their labels.
BUCKETS: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (4, 7), (8, 14), (15, 30), (31, 90))
BUCKET_LABELS: tuple[str, ...] = tuple(f"{a}" if a == b else f"{a}-{b}" for a, b in BUCKETS)
#: Representative horizon of each bucket (its upper end): where the walk-forward records pairs.
REP_HORIZONS: tuple[int, ...] = tuple(b for _, b in BUCKETS)
#: Level knots on which every map is tabulated (dense in the tails).
KNOTS = np.unique(np.concatenate([[0.0, 0.0005, 0.001, 0.0025, 0.005, 0.0075], np.linspace(0.01, 0.99, 99),
                                  [0.9925, 0.995, 0.9975, 0.999, 0.9995, 1.0]]))
#: Central intervals whose coverage is tracked: nominal -> (lower level, upper level).
INTERVALS: dict[str, tuple[float, float]] = {"0.5": (0.25, 0.75), "0.8": (0.10, 0.90), "0.9": (0.05, 0.95)}

SCHEMA_VERSION = 1
_EPOCH = pd.Timestamp("1970-01-01")


def bucket_index(horizon: Any) -> np.ndarray:
    """Bucket of each horizon (days, 1..90).

    >>> bucket_index([1, 2, 3, 4, 14, 15, 90]).tolist()
    [0, 1, 1, 2, 3, 4, 5]
    """
    h = np.asarray(horizon)
    uppers = np.array(REP_HORIZONS)
    return np.minimum(np.searchsorted(uppers, h, side="left"), len(BUCKETS) - 1)


def sim_horizon(horizon: int, calibrate: bool = True) -> int:
    """Steps a calibrated walk-forward simulates for ``horizon``: the representative horizon of its bucket.

    >>> sim_horizon(5), sim_horizon(5, calibrate=False)
    (7, 5)
    """
    return int(BUCKETS[int(bucket_index(horizon))][1]) if calibrate else int(horizon)


def day_number(ts: Any) -> np.ndarray | int:
    """Days since 1970-01-01 of a date or DatetimeIndex (tz dropped)."""
    if isinstance(ts, (pd.DatetimeIndex, np.ndarray, list)):
        idx = pd.DatetimeIndex(ts)
        if idx.tz is not None:
            idx = idx.tz_localize(None)
        return ((idx.normalize() - _EPOCH).days).to_numpy().astype(np.int64)
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_localize(None)
    return int((t.normalize() - _EPOCH).days)


def pit(samples: FloatArray, y: FloatArray, axis: int = -2) -> FloatArray:
    """Raw PIT: ``(#samples below y + 0.5) / (n + 1)`` along ``axis`` (never exactly 0 or 1).

    >>> float(pit(np.arange(9.0)[:, None], np.array([4.5]), axis=0)[0])
    0.55
    """
    s = np.asarray(samples)
    n = s.shape[axis]
    below = np.sum(s < np.expand_dims(np.asarray(y), axis), axis=axis)
    return (below + 0.5) / (n + 1.0)


class CalibrationConfig(BaseModel):
    """Hyperparameters of the conformal layer (chosen by rule, see docs/engine.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: int = Field(default=365, ge=30, le=5000, description="origins older than this are forgotten")
    by_regime: bool = Field(default=True, description="keep a map per regime label (else per bucket only)")
    n0_regime: float = Field(default=100.0, gt=0, description="effective pairs at which a regime map gets half weight")
    n0_bucket: float = Field(default=50.0, gt=0, description="effective pairs at which a bucket map gets half weight")
    epsilon: float = Field(default=1e-3, gt=0, lt=0.5, description="share of the identity (strict monotonicity)")
    symmetric: bool = Field(default=True, description="correct dispersion and tail shape only, not location")
    coverage_days: int = Field(default=365, ge=7, le=5000, description="window of the rolling coverage")


# -- the level map -----------------------------------------------------------------------------


#: Most (n_steps, levels) grids a `ConformalLevelMap` keeps.
GRID_CACHE_SIZE = 64


@dataclass(frozen=True)
class ConformalLevelMap:
    """A monotone level map per representative horizon, interpolated in log-horizon between them.

    Attributes
    ----------
    maps : ndarray, shape (n_buckets, n_knots)
        Raw level at each knot of `KNOTS`, per bucket; strictly increasing.
    version : str
    """

    maps: np.ndarray
    version: str
    #: `raw_level_grid` results by (n_steps, levels); bounded by `GRID_CACHE_SIZE`.
    _grids: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @classmethod
    def identity(cls, version: str = "uncalibrated") -> "ConformalLevelMap":
        return cls(np.tile(KNOTS, (len(BUCKETS), 1)), version)

    def table(self, step: int) -> np.ndarray:
        """The map at a 0-based step (horizon ``step + 1``), on `KNOTS`."""
        h = step + 1
        reps = np.array(REP_HORIZONS, dtype=float)
        if h <= reps[0]:
            return self.maps[0]
        if h >= reps[-1]:
            return self.maps[-1]
        j = int(np.searchsorted(reps, h, side="left"))
        if reps[j] == h:
            return self.maps[j]
        a = (np.log(h) - np.log(reps[j - 1])) / (np.log(reps[j]) - np.log(reps[j - 1]))
        return (1.0 - a) * self.maps[j - 1] + a * self.maps[j]

    def raw_levels(self, step: int, levels: FloatArray) -> FloatArray:
        """Raw-sample levels whose quantiles are the calibrated quantiles at ``levels``."""
        return np.interp(np.asarray(levels, dtype=float), KNOTS, self.table(step))

    def raw_level_grid(self, n_steps: int, levels: Sequence[float]) -> FloatArray:
        """`raw_levels` of steps ``0 .. n_steps - 1``, clipped to [0, 1]: shape (n_steps, n_levels).

        Cached per (n_steps, levels): a served map answers the same question many
        times, and the per-step interpolation is a fifth of a small forecast's compute.
        The returned array is read-only.
        """
        lv = np.asarray(levels, dtype=float)
        key = (int(n_steps), lv.tobytes())
        grid = self._grids.get(key)
        if grid is None:
            grid = np.stack([np.clip(self.raw_levels(s, lv), 0.0, 1.0) for s in range(key[0])])
            grid.setflags(write=False)
            if len(self._grids) < GRID_CACHE_SIZE:
                self._grids[key] = grid
        return grid

    def calibrated_prob(self, step: int, p_raw: FloatArray) -> FloatArray:
        """Exact inverse of `raw_levels`: the calibrated probability of a raw one."""
        return np.interp(np.asarray(p_raw, dtype=float), self.table(step), KNOTS)

    def calibrated_prob_above(self, step: int, q_raw: FloatArray) -> FloatArray:
        """``1 - calibrated_prob(step, 1 - q_raw)``: the calibrated P(above) of a raw one.

        The same piecewise-linear map read from the top end, so a tiny ``q_raw`` (a
        far upper threshold) keeps its digits instead of vanishing in ``1 - q``.
        """
        t = self.table(step)
        return np.interp(np.asarray(q_raw, dtype=float), 1.0 - t[::-1], 1.0 - KNOTS[::-1])


# -- the buffers -------------------------------------------------------------------------------

_COLS = ("origin", "horizon", "regime", "raw", "cal")
_DTYPES = {"origin": np.int64, "horizon": np.int64, "regime": np.int64, "raw": np.float64, "cal": np.float64}


def _sym(m: FloatArray, on: bool) -> FloatArray:
    """``(m(tau) + 1 - m(1 - tau)) / 2`` on the (symmetric) `KNOTS` when ``on``."""
    return 0.5 * (m + 1.0 - m[::-1]) if on else m


def _knot_quantiles(x: FloatArray) -> FloatArray:
    """``np.quantile(x, KNOTS)`` (linear method) through one sort."""
    s = np.sort(x)
    pos = KNOTS * (s.size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, s.size - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


class Calibrator:
    """Buffers of realised (forecast, outcome) pairs and the level maps they imply.

    Parameters
    ----------
    config : CalibrationConfig
    asset : str
        For the record (and the version hash).
    model_version : str
        The raw model the PITs belong to; a calibrator must not be reused across models.
    """

    def __init__(self, config: CalibrationConfig | None = None, asset: str = "", model_version: str = ""):
        self.config = config or CalibrationConfig()
        self.asset = asset
        self.model_version = model_version
        self._b: list[dict[str, np.ndarray]] = [
            {c: np.empty(0, dtype=_DTYPES[c]) for c in _COLS} for _ in BUCKETS
        ]
        self._version: str | None = None

    # -- filling --------------------------------------------------------------------------
    def add(self, origin_day: Any, horizon: Any, regime: Any, raw_pit: Any, cal_pit: Any = None) -> None:
        """Append realised pairs (arrays of equal length; ``regime`` as labels or codes).

        ``cal_pit`` defaults to ``raw_pit`` (the forecast was not calibrated).
        """
        o = np.atleast_1d(np.asarray(origin_day, dtype=np.int64))
        h = np.broadcast_to(np.asarray(horizon, dtype=np.int64), o.shape)
        reg = np.atleast_1d(np.asarray(regime))
        if reg.dtype.kind in "iu":
            rc = np.broadcast_to(reg.astype(np.int64), o.shape)
        else:
            rc = np.broadcast_to(regime_codes(reg), o.shape)
        raw = np.broadcast_to(np.asarray(raw_pit, dtype=float), o.shape)
        cal = raw if cal_pit is None else np.broadcast_to(np.asarray(cal_pit, dtype=float), o.shape)
        if np.any((h < 1) | (h > REP_HORIZONS[-1])):
            raise InvalidInput(f"horizon {h[(h < 1) | (h > REP_HORIZONS[-1])][:3].tolist()} outside 1..90")
        if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(cal))) or np.any((raw < 0) | (raw > 1)) \
                or np.any((cal < 0) | (cal > 1)):
            raise InvalidInput("PIT values must be finite and in [0, 1]")
        bi = bucket_index(h)
        for b in np.unique(bi):
            m = bi == b
            cur = self._b[b]
            new = {"origin": o[m], "horizon": h[m], "regime": rc[m], "raw": raw[m], "cal": cal[m]}
            merged = {c: np.concatenate([cur[c], new[c].astype(_DTYPES[c])]) for c in _COLS}
            order = np.argsort(merged["origin"], kind="stable")
            self._b[b] = {c: merged[c][order] for c in _COLS}
        self._version = None

    def pair_keys(self) -> frozenset:
        """``{(origin day, horizon)}`` of the stored pairs (what `with_pairs` leaves out)."""
        return frozenset((int(a), int(b)) for d in self._b
                         for a, b in zip(d["origin"].tolist(), d["horizon"].tolist()))

    def with_pairs(self, origin_day: Any, horizon: Any, regime: Any, raw_pit: Any, cal_pit: Any) -> "Calibrator":
        """A copy holding these pairs as well, except those whose (origin, horizon) it already has.

        Used for outcomes posted back to the service: a pair the history already
        realised keeps its walk-forward value.
        """
        o = np.atleast_1d(np.asarray(origin_day, dtype=np.int64))
        h = np.broadcast_to(np.asarray(horizon, dtype=np.int64), o.shape)
        have = {(int(a), int(b)) for d in self._b for a, b in zip(d["origin"], d["horizon"])}
        keep = np.array([(int(a), int(b)) not in have for a, b in zip(o, h)], dtype=bool)
        out = Calibrator(self.config, self.asset, self.model_version)
        out._b = [dict(d) for d in self._b]
        if keep.any():
            reg = np.broadcast_to(np.asarray(regime), o.shape)
            out.add(o[keep], h[keep], reg[keep], np.broadcast_to(np.asarray(raw_pit, dtype=float), o.shape)[keep],
                    np.broadcast_to(np.asarray(cal_pit, dtype=float), o.shape)[keep])
        return out

    def assign_calibrated(self, origin_day: int, horizon: int, cal_pit: float) -> None:
        """Set the calibrated PIT of the one stored pair (origin, horizon) (walk-forward, in date order)."""
        d = self._b[int(bucket_index(horizon))]
        lo, hi = np.searchsorted(d["origin"], [origin_day, origin_day + 1])
        for k in range(lo, hi):
            if d["horizon"][k] == horizon:
                d["cal"][k] = min(max(float(cal_pit), 0.0), 1.0)
                self._version = None
                return
        raise InvalidInput(f"no stored pair for origin day {origin_day}, horizon {horizon}")

    def set_calibrated(self, origin_day: Any, horizon: Any, cal_pit: Any) -> None:
        """Set the calibrated PITs of stored pairs, matched by (origin, horizon)."""
        o = np.atleast_1d(np.asarray(origin_day, dtype=np.int64))
        h = np.broadcast_to(np.asarray(horizon, dtype=np.int64), o.shape)
        c = np.broadcast_to(np.asarray(cal_pit, dtype=float), o.shape)
        key = o * 1000 + h
        order = np.argsort(key, kind="stable")
        ks, cs = key[order], c[order]
        for b in self._b:
            kb = b["origin"] * 1000 + b["horizon"]
            idx = np.minimum(np.searchsorted(ks, kb), max(ks.size - 1, 0))
            hit = (ks.size > 0) & (ks[idx] == kb) if ks.size else np.zeros(kb.size, dtype=bool)
            if np.any(hit):
                b["cal"] = b["cal"].copy()
                b["cal"][hit] = np.clip(cs[idx[hit]], 0.0, 1.0)
        self._version = None

    def prune(self, as_of: Any) -> int:
        """Drop pairs whose origin is older than both windows; returns how many were dropped."""
        day = as_of if isinstance(as_of, (int, np.integer)) else day_number(as_of)
        keep_from = int(day) - max(self.config.window_days, self.config.coverage_days)
        dropped = 0
        for i, b in enumerate(self._b):
            m = b["origin"] > keep_from
            dropped += int((~m).sum())
            self._b[i] = {c: b[c][m] for c in _COLS}
        if dropped:
            self._version = None
        return dropped

    def record(self, forecast: Any, realized_price: float, step: int | None = None) -> None:
        """Add the outcome of one served forecast (the Serve layer posts these).

        Uses the forecast's raw paths (``forecast.paths``) for the raw PIT.
        Conditional (scenario) forecasts are refused: they never feed calibration.
        """
        if getattr(forecast, "conditional", False):
            raise InvalidInput("a scenario (conditional) forecast cannot be recorded: it never feeds calibration")
        if forecast.paths is None:
            raise InvalidInput("the forecast carries no raw paths; forecast again with paths kept to record it")
        if not realized_price > 0:
            raise InvalidInput(f"realized_price {realized_price!r} must be a positive price")
        s = len(forecast.horizons) - 1 if step is None else int(step)
        if not 0 <= s < len(forecast.horizons):
            raise InvalidInput(f"step {step!r} outside 0..{len(forecast.horizons) - 1}")
        cum = np.cumsum(np.asarray(forecast.paths, dtype=float)[:, : s + 1], axis=1)[:, -1]
        y = float(np.log(realized_price / forecast.spot))
        raw = float(pit(cum[:, None], np.array([y]), axis=0)[0])
        label = forecast.regime.get("label") if isinstance(forecast.regime, Mapping) else None
        if label in (None, "unknown"):  # a forecast made without a regime: its pairs go to the 'normal' buckets
            label = "normal"  # (any other label must be a known one: level_map raises InvalidInput naming it)
        origin = day_number(forecast.origin)
        lm = self.level_map(label, origin)
        self.add(origin, s + 1, label, raw, float(lm.calibrated_prob(s, raw)))

    # -- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(sum(b["origin"].size for b in self._b))

    def pairs(self) -> pd.DataFrame:
        """All stored pairs: ``origin (date), horizon, bucket, regime, raw_pit, cal_pit``."""
        frames = []
        for i, b in enumerate(self._b):
            frames.append(pd.DataFrame({
                "origin": _EPOCH + pd.to_timedelta(b["origin"], unit="D"), "horizon": b["horizon"],
                "bucket": BUCKET_LABELS[i], "regime": [REGIME_LABELS[c] for c in b["regime"]],
                "raw_pit": b["raw"], "cal_pit": b["cal"]}))
        return pd.concat(frames, ignore_index=True)

    def _select(self, b: int, as_of: int, window: int, known_by: int | None = None) -> np.ndarray:
        """Pairs of origins in the window ending at ``as_of``, realised by ``known_by`` (default ``as_of``)."""
        d = self._b[b]
        return (d["origin"] > as_of - window) & (d["origin"] + d["horizon"] <= (as_of if known_by is None else known_by))

    def bucket_tables(self, as_of: int, buckets: Sequence[int] | None = None,
                      known_by: int | None = None) -> dict[int, tuple]:
        """Per bucket: the bucket-level map and the regime maps' raw material (for `level_map`)."""
        cfg = self.config
        out = {}
        for b in (range(len(BUCKETS)) if buckets is None else buckets):
            m = self._select(b, as_of, cfg.window_days, known_by)
            out[b] = (self._b[b]["raw"][m], self._b[b]["regime"][m], self._b[b]["horizon"][m])
        return out

    def level_map(self, regime: str | int, as_of: Any, buckets: Sequence[int] | None = None,
                  tables: dict[int, tuple] | None = None, known_by: int | None = None,
                  version: str | None = None) -> ConformalLevelMap:
        """The map for a forecast made on day ``as_of`` in ``regime``, from the pairs realised by then.

        ``buckets`` limits the work to the buckets a horizon needs (the others stay identity).
        ``known_by`` (a later day) also admits pairs realised after ``as_of`` but known
        now: outcomes posted back to a live service ahead of its data.
        ``version`` labels the map (default: `version`, a hash of the buffers; the
        walk-forward, which changes the buffers at every origin, skips the hash).
        """
        cfg = self.config
        day = as_of if isinstance(as_of, (int, np.integer)) else day_number(as_of)
        code = regime if isinstance(regime, (int, np.integer)) else regime_code(regime)
        tables = tables if tables is not None else self.bucket_tables(int(day), buckets, known_by)
        maps = np.tile(KNOTS, (len(BUCKETS), 1))
        for b, (raw, reg, hz) in tables.items():
            if raw.size == 0:
                continue
            h_eff = float(np.mean(hz))
            n_eff = raw.size / h_eff
            w_b = n_eff / (n_eff + cfg.n0_bucket)
            mb = w_b * _knot_quantiles(raw) + (1.0 - w_b) * KNOTS
            if cfg.by_regime:
                rr = raw[reg == code]
                if rr.size:
                    n_r = rr.size / h_eff
                    w_r = n_r / (n_r + cfg.n0_regime)
                    mb = w_r * _knot_quantiles(rr) + (1.0 - w_r) * mb
            mb = _sym(mb, cfg.symmetric)
            maps[b] = (1.0 - cfg.epsilon) * mb + cfg.epsilon * KNOTS
            # levels 0 and 1 stay the raw sample's ends: the smallest / largest stored PIT says
            # nothing beyond the first / last inner knot, and pinning keeps a tiny raw tail
            # probability (importance sampling, aetheris_ray.tails) tiny instead of mapping it to 0
            maps[b, 0], maps[b, -1] = 0.0, 1.0
        return ConformalLevelMap(maps, self.version if version is None else version)

    def coverage(self, as_of: Any, buckets: Sequence[int] | None = None, known_by: int | None = None) -> dict[str, Any]:
        """Rolling coverage of the calibrated central intervals, per bucket.

        Returns ``{bucket label: {"n": pairs, "0.5": share, "0.8": share, "0.9": share}}``
        over the pairs realised by ``as_of`` from origins in the last ``coverage_days``.
        """
        day = as_of if isinstance(as_of, (int, np.integer)) else day_number(as_of)
        out: dict[str, Any] = {}
        for b in (range(len(BUCKETS)) if buckets is None else buckets):
            m = self._select(b, int(day), self.config.coverage_days, known_by)
            cal = self._b[b]["cal"][m]
            if cal.size == 0:
                continue
            out[BUCKET_LABELS[b]] = {"n": int(cal.size), **{
                k: round(float(np.mean((cal >= lo) & (cal <= hi))), 4) for k, (lo, hi) in INTERVALS.items()}}
        return out

    @property
    def version(self) -> str:
        """``cal-<hash>`` of the config, model and buffers ("uncalibrated" when empty)."""
        if self._version is None:
            if len(self) == 0:
                self._version = "uncalibrated"
            else:
                h = hashlib.sha1()
                h.update(self.config.model_dump_json().encode())
                h.update(self.model_version.encode())
                for b in self._b:
                    for c in _COLS:
                        h.update(np.ascontiguousarray(b[c]).tobytes())
                self._version = "cal-" + h.hexdigest()[:12]
        return self._version

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "asset": self.asset,
            "model_version": self.model_version,
            "config": self.config.model_dump(),
            "version": self.version,
            "buckets": {BUCKET_LABELS[i]: {c: b[c].tolist() for c in _COLS} for i, b in enumerate(self._b)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Calibrator":
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ModelNotFound(f"calibration state schema version {d.get('schema_version')!r}; this package reads "
                                f"{SCHEMA_VERSION}: rebuild it (it is recomputed from history)")
        cal = cls(CalibrationConfig(**d.get("config", {})), d.get("asset", ""), d.get("model_version", ""))
        for i, label in enumerate(BUCKET_LABELS):
            src = d.get("buckets", {}).get(label)
            if src:
                cal._b[i] = {c: np.asarray(src[c], dtype=_DTYPES[c]) for c in _COLS}
        cal._version = None
        return cal

    def save(self, path: str | Path) -> Path:
        """Write the state as JSON, atomically (replace)."""
        return atomic.write_json(path, self.to_dict(), separators=(",", ":"))

    @classmethod
    def load(cls, path: str | Path) -> "Calibrator":
        p = Path(path)
        if not p.is_file():
            raise ModelNotFound(f"{p}: no calibration state here")
        return cls.from_dict(json.loads(p.read_text()))


@dataclass(frozen=True)
class ConformalCalibration:
    """The calibrator part (kind ``calibrator``, variant ``conformal``): builds and loads `Calibrator` buffers.

    Its settings are the engine configuration's ``calibration`` (`CalibrationConfig`);
    a learned calibrator is another variant with the same two verbs.
    """

    kind: ClassVar[str] = "calibrator"
    name: ClassVar[str] = "conformal"
    requires_torch: ClassVar[bool] = False

    def build(self, config: CalibrationConfig, asset: str, model_version: str) -> Calibrator:
        """An empty calibrator for one asset and raw model."""
        return Calibrator(config, asset, model_version)

    def load(self, path: str | Path) -> Calibrator:
        return Calibrator.load(path)
