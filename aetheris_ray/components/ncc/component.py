"""Neural conformal control (kind ``calibrator``, variant ``ncc``): spec, calibrator and trained artefact.

The map of a forecast made on day ``t`` in regime ``r`` is built in three layers, each
computed from the buffers of pairs realised by ``t`` only (point in time, reproducible:
the same buffers give the same map):

1. **Base**: the conformal map of `aetheris_ray.calibration.Calibrator.level_map`
   (regime x bucket empirical PIT quantiles, shrunk, symmetrised).
2. **Network**: a tiny MLP (`FittedNcc`, trained offline, numpy forward) maps the
   regime code, the horizon bucket and the recent coverage errors of the base map
   (the last ``recent_days`` of realised raw PITs of the regime x bucket and of the
   whole bucket, read through today's base map: miss rate minus alpha of the 50/80/90 %
   intervals, and how many there were) to per-level log-scale adjustments ``d_net`` at
   the anchor levels `ANCHORS` (0.75, 0.9, 0.95, 0.995; the lower levels mirror them).
   The calibration pairs carry no volatility state; the regime code (calm, normal,
   volatile, crisis: a volatility classification) is the volatility-state input.
   Without an artefact (``build`` with none) ``d_net`` is 0.
3. **PID**: from the *calibrated* PITs of the realised pairs (each through the map that
   was in force at its own origin, as the walk-forward and `aetheris_ray.pairs` record
   them), the errors ``e = miss - alpha`` of the 50/80/90 % intervals give a proportional
   term ``P`` (their mean, exponentially weighted with ``p_days``, shrunk by ``p0``
   pseudo-pairs) and an integral term ``I`` (their sum, exponentially decayed with
   ``decay_days``: the leak that bounds wind-up), and
   ``d_pid = pid_max * tanh((kp P + ki I) / pid_max)`` (saturation), every pair weighted
   ``1/h`` (``h``: its bucket's representative horizon; overlapping h-day outcomes carry
   about 1/h of the information, and the loop's delay is h days).  Four nested streams:
   regime x bucket, the regime over all buckets, the bucket, all pairs; blended from the
   inside out with weights ``n_eff / (n_eff + n0_pid)`` (``n_eff``: decayed pairs / h).
   A mis-scaled raw model is mis-scaled at every horizon, and the short horizons learn
   it fastest: the pooled streams carry that to the long ones.

Adjustment (per bucket, per knot ``tau`` of `KNOTS`): with ``m0`` the base map,
``logit m(tau) = logit m0(tau) * exp(d(tau))``, ``d`` the sum of both layers interpolated
in ``|logit tau|`` between the anchors (constant outside).  ``d > 0`` widens the
interval at that level.  Hence, by construction: the median stays fixed
(``logit 0.5 = 0``) and a symmetric map stays symmetric (``d`` depends on ``|logit tau|``);
the ends stay pinned (levels 0 and 1 map to 0 and 1); monotone in the level (made exact
by a running max outward from the median, then the base's ``epsilon`` share of the
identity keeps it strictly increasing, so ``calibrated_prob`` is its exact inverse).

Horizon guard ("the cone never narrows with horizon where the raw cone widens"): the
tables of buckets ``0 .. max(needed)`` are always built together, and at every knot the
upper levels are made non-decreasing and the lower ones non-increasing across buckets
(isotonic regression weighted by 1 + each bucket's effective pairs, so a violation is
resolved towards the better-informed, usually shorter, bucket).  Steps between representative horizons
interpolate the tables, so ``m_s(tau)`` moves outward with the step ``s``: when the raw
sample's quantile at each level moves outward with the step (a widening raw cone),
the calibrated quantile ``Q_s(m_s(tau))`` does too.  The guard is a sufficient condition
stated in level space; it also forbids a longer horizon to be relatively narrowed
more than a shorter one.  ``horizon_guard=False`` turns it off.

Scenario (conditional) forecasts never feed it: `Calibrator.record` refuses them, and
the walk-forward and posted outcomes only hold unconditional forecasts.

Training and selection: `walk_forward_windows` (a baseline walk-forward per asset before
``--end``) or `training_windows` (from walk-forward buffers) give the rows; ``spec.trainer``
(`training.Trainer`) fits the network.  The registered artefact is resolved once per
model like any artefact part (`aetheris_ray.model.resolve_config`; without one the
engine falls back to ``conformal`` and says so) and handed to ``build`` by
`aetheris_ray.model.build_calibrator`.

State: the buffers (as the conformal calibrator) plus the spec and the artefact's arrays,
in one JSON file (`NccCalibrator.save` / ``load``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from aetheris_ray.calibration import (
    BUCKETS,
    INTERVALS,
    KNOTS,
    REP_HORIZONS,
    CalibrationConfig,
    Calibrator,
    ConformalLevelMap,
    day_number,
)
from aetheris_ray.components.base import FittedBase, SpecBase
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.features.state import REGIME_LABELS, regime_code

__all__ = [
    "NAME", "ANCHORS", "N_FEATURES", "NeuralConformalCalibration", "NccCalibrator", "FittedNcc",
    "adjust_map", "horizon_guard", "training_windows", "walk_forward_windows",
]

NAME = "ncc"
#: Upper levels where the adjustments are set; the lower levels mirror them (1 - tau).
ANCHORS = np.array([0.75, 0.90, 0.95, 0.995])
_ANCHOR_X = np.log(ANCHORS / (1.0 - ANCHORS))
#: The tracked intervals (nominal -> (lo, hi)) the PID controls, in the order of the first three anchors.
_TRACKED = tuple(INTERVALS.values())
_ALPHA = np.array([1.0 - (hi - lo) for lo, hi in _TRACKED])
#: Network inputs: regime one-hot, bucket one-hot, 3 regime errors, 3 bucket errors, log count.
N_FEATURES = len(REGIME_LABELS) + len(BUCKETS) + 2 * len(_TRACKED) + 1
_MID = int(np.argmin(np.abs(KNOTS - 0.5)))
_INNER = (KNOTS > 0.0) & (KNOTS < 1.0)
_TAU_X = np.zeros_like(KNOTS)
_TAU_X[_INNER] = np.abs(np.log(KNOTS[_INNER] / (1.0 - KNOTS[_INNER])))
_TINY = 1e-12


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _TINY, 1.0 - _TINY)
    return np.log(p / (1.0 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _shrink(x: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Soft threshold: ``sign(x) * max(|x| - band, 0)`` (errors within the band are noise, not drift)."""
    return np.sign(x) * np.maximum(np.abs(x) - band, 0.0)


def _misses(pit: np.ndarray) -> np.ndarray:
    """``1{PIT outside}`` of each tracked interval: shape (n, 3)."""
    p = np.asarray(pit, dtype=float)[:, None]
    lo = np.array([a for a, _ in _TRACKED])
    hi = np.array([b for _, b in _TRACKED])
    return ((p < lo) | (p > hi)).astype(float)


# -- the map transforms ------------------------------------------------------------------------


def adjust_map(m0: np.ndarray, d: np.ndarray, epsilon: float) -> np.ndarray:
    """``logit m = logit m0 * exp(d(tau))`` per bucket row, monotone, ends pinned, median fixed.

    Parameters
    ----------
    m0 : ndarray, shape (n_b, n_knots)
        Base maps on `KNOTS` (increasing, pinned ends).
    d : ndarray, shape (n_b, 4)
        Log-scale adjustments at `ANCHORS` (interpolated in ``|logit tau|``, constant outside).
    epsilon : float
        Share of the identity mixed in (strictly increasing result).

    Returns
    -------
    ndarray, shape (n_b, n_knots)

    >>> m = adjust_map(KNOTS[None, :], np.full((1, 4), np.log(2.0)), 1e-3)
    >>> bool(np.all(np.diff(m[0]) > 0)), float(m[0, 0]), float(m[0, -1]), round(float(m[0, _MID]), 6)
    (True, 0.0, 1.0, 0.5)
    """
    m0 = np.asarray(m0, dtype=float)
    d = np.asarray(d, dtype=float)
    phi = np.stack([np.interp(_TAU_X, _ANCHOR_X, row) for row in d])  # (n_b, n_knots)
    out = m0.copy()
    out[:, _INNER] = _sigmoid(_logit(m0[:, _INNER]) * np.exp(phi[:, _INNER]))
    # monotone outward from the median: a running max above it, a running min below it
    out[:, _MID:] = np.maximum.accumulate(out[:, _MID:], axis=1)
    out[:, : _MID + 1] = np.minimum.accumulate(out[:, _MID::-1], axis=1)[:, ::-1]
    out = (1.0 - epsilon) * out + epsilon * KNOTS
    out[:, 0], out[:, -1] = 0.0, 1.0
    return out


def _isotonic_up(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit along axis 0, column by column (max-min formula; n <= 6 rows).

    ``y`` (n, k), ``w`` (n,) positive weights.
    """
    n = y.shape[0]
    wy = np.concatenate([np.zeros((1,) + y.shape[1:]), np.cumsum(w[:, None] * y, axis=0)])
    cw = np.concatenate([[0.0], np.cumsum(w)])
    out = np.empty_like(y)
    for i in range(n):
        best = np.full(y.shape[1:], -np.inf)
        for j in range(i + 1):
            worst = np.full(y.shape[1:], np.inf)
            for k in range(i, n):
                worst = np.minimum(worst, (wy[k + 1] - wy[j]) / (cw[k + 1] - cw[j]))
            best = np.maximum(best, worst)
        out[i] = best
    return out


def horizon_guard(maps: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Tables whose upper levels never move inward, and lower levels never outward, from one bucket to the next.

    Parameters
    ----------
    maps : ndarray, shape (n_b, n_knots), the tables of buckets ``0 .. n_b - 1``
    weights : ndarray, shape (n_b,), optional
        Confidence of each table (the controller uses 1 + its effective pairs): a
        violation is resolved towards the better-informed bucket.  Default equal.

    Returns
    -------
    ndarray, same shape: upper half (``tau > 0.5``) non-decreasing across rows, lower half
    non-increasing, each row still increasing in the level.

    >>> g = horizon_guard(np.stack([KNOTS ** 0.8, KNOTS]))  # bucket 0 wider at the top than bucket 1
    >>> bool(np.all(g[1, _MID + 1:] >= g[0, _MID + 1:]))
    True
    """
    out = np.array(maps, dtype=float)
    if out.shape[0] < 2:
        return out
    w = np.ones(out.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    out[:, _MID + 1:] = _isotonic_up(out[:, _MID + 1:], w)
    out[:, :_MID] = -_isotonic_up(-out[:, :_MID], w)
    return out


# -- the network (numpy forward) ---------------------------------------------------------------


def network_forward(shared: Mapping[str, np.ndarray], feats: np.ndarray, max_adjust: float) -> np.ndarray:
    """``max_adjust * tanh(W2 tanh(W1 z + b1) + b2)``, ``z`` the standardised features: (n, N_FEATURES) -> (n, 4)."""
    mean, std = np.asarray(shared["feat_mean"]), np.asarray(shared["feat_std"])
    z = np.where(std > 0, (feats - mean) / np.where(std > 0, std, 1.0), 0.0)
    h = np.tanh(z @ np.asarray(shared["w.0.weight"], dtype=float).T + np.asarray(shared["w.0.bias"], dtype=float))
    out = h @ np.asarray(shared["w.2.weight"], dtype=float).T + np.asarray(shared["w.2.bias"], dtype=float)
    return max_adjust * np.tanh(out)


# -- the spec (the calibrator part) ------------------------------------------------------------


@dataclass(frozen=True)
class NeuralConformalCalibration(SpecBase):
    """The calibrator part ``ncc``: hyperparameters of the network and of the controller.

    Attributes
    ----------
    hidden : int                  hidden units of the one-layer MLP
    max_adjust : float            bound of the network's log-scale adjustment per level
    lr, weight_decay, batch_size, max_steps, val_fraction, seed, device : training
    balance_regimes : bool        training loss weighted so each regime x bucket counts equally (off: the
                                  backtest's pooled QL counts every origin; see `training`)
    recent_days : int             window of the network's recent-coverage features
    kp, ki : float                proportional and integral gains of the controller
    p_days, decay_days : float    e-folding ages (days since realised) of P and I
    p0 : float                    pseudo-pairs shrinking P towards 0
    pid_max : float               saturation of the controller's log-scale correction
    n0_pid : float                effective pairs at which the regime's controller gets half weight
    deadband : float              P and I are soft-thresholded by this many standard errors
    horizon_guard : bool          make the tables widen with the bucket (see the module docstring)
    """

    hidden: int = 16
    max_adjust: float = 0.5
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_steps: int = 300
    val_fraction: float = 0.25
    seed: int = 0
    device: str = "cpu"
    balance_regimes: bool = False
    recent_days: int = 60
    kp: float = 1.0
    ki: float = 0.15
    p_days: float = 30.0
    decay_days: float = 120.0
    p0: float = 5.0
    pid_max: float = 1.0
    n0_pid: float = 5.0
    deadband: float = 1.0
    horizon_guard: bool = True

    kind: ClassVar[str] = "calibrator"
    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True
    fitted_cls: ClassVar[type]

    def __post_init__(self) -> None:
        self._check(1 <= self.hidden <= 256, f"hidden={self.hidden} must be in 1..256")
        self._check(0.0 < self.max_adjust <= 2.0, f"max_adjust={self.max_adjust} must be in (0, 2]")
        self._check(0.0 < self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be in (0, 1)")
        self._check(self.recent_days >= 7, f"recent_days={self.recent_days} must be >= 7")
        self._check(self.kp >= 0.0 and self.ki >= 0.0, f"kp={self.kp}, ki={self.ki} must be >= 0")
        self._check(self.p_days > 0 and self.decay_days > 0, "p_days and decay_days must be > 0")
        self._check(self.p0 >= 0 and self.n0_pid > 0, "p0 must be >= 0 and n0_pid > 0")
        self._check(self.deadband >= 0, f"deadband={self.deadband} must be >= 0")
        self._check(0.0 < self.pid_max <= 3.0, f"pid_max={self.pid_max} must be in (0, 3]")

    # -- the calibrator part's verbs --------------------------------------------------------
    def build(self, config: CalibrationConfig, asset: str, model_version: str,
              artefact: "FittedNcc | None" = None) -> "NccCalibrator":
        """An empty calibrator for one asset and raw model (``artefact``: the trained network, else none)."""
        return NccCalibrator(config, asset, model_version, spec=self, artefact=artefact)

    def load(self, path: Any) -> "NccCalibrator":
        return NccCalibrator.load(path)

    # -- training ---------------------------------------------------------------------------
    def fit(self, windows: dict[str, np.ndarray], **inputs: Any) -> "FittedNcc":
        """Train the network on `training_windows` (all of ``max_steps``) and return the artefact."""
        return self.trainer(windows).fit_all()

    def trainer(self, windows: dict[str, np.ndarray]) -> Any:
        """The training loop over ``windows`` from `training_windows` (`contract.Trainer`)."""
        from aetheris_ray.components.ncc.training import Trainer

        return Trainer(windows, self)

    @staticmethod
    def training_windows(calibrators: Sequence[Calibrator], start: Any = None, end: Any = None,
                         recent_days: int = 60) -> dict[str, np.ndarray]:
        """Network training rows from walk-forward buffers (see `training_windows`)."""
        return training_windows(calibrators, start, end, recent_days)


# -- the buffers' features ---------------------------------------------------------------------


def _recent_errors(cal: Calibrator, b: int, day: int, code: int, base_row: np.ndarray, recent_days: int,
                   known_by: int | None) -> np.ndarray:
    """Recent coverage errors of the base map: ``[3 regime errors, 3 bucket errors, log1p(regime n / h)]``."""
    d = cal._b[b]
    m = cal._select(b, day, recent_days, known_by)
    raw, reg = d["raw"][m], d["regime"][m]
    out = np.zeros(2 * len(_TRACKED) + 1)
    if raw.size == 0:
        return out
    miss = _misses(np.interp(raw, base_row, KNOTS)) - _ALPHA
    out[len(_TRACKED): 2 * len(_TRACKED)] = miss.mean(axis=0)
    mine = reg == code
    if mine.any():
        out[: len(_TRACKED)] = miss[mine].mean(axis=0)
        out[-1] = np.log1p(mine.sum() / REP_HORIZONS[b])
    return out


def network_features(cal: Calibrator, code: int, day: int, buckets: Sequence[int], base: np.ndarray,
                     recent_days: int, known_by: int | None = None) -> np.ndarray:
    """The network's inputs for regime ``code`` on ``day`` at ``buckets`` (the one featuriser): (n_b, N_FEATURES).

    ``base`` (n_buckets, n_knots): the base conformal tables of that day; the recent raw
    PITs of each bucket are read through them.
    """
    out = np.zeros((len(buckets), N_FEATURES))
    nr, nb = len(REGIME_LABELS), len(BUCKETS)
    for i, b in enumerate(buckets):
        out[i, code] = 1.0
        out[i, nr + b] = 1.0
        out[i, nr + nb:] = _recent_errors(cal, b, day, code, base[b], recent_days, known_by)
    return out


def training_windows(calibrators: Sequence[Calibrator], start: Any = None, end: Any = None,
                     recent_days: int = 60, scales: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
                     ) -> dict[str, np.ndarray]:
    """One row per realised pair of the baseline's walk-forward buffers, origins in ``[start, end)``.

    Parameters
    ----------
    calibrators : sequence of Calibrator
        The ``calibrator`` of walk-forward results of the baseline engine (one per asset),
        computed over the training period (the pairs are used point in time: the
        features and base map of a row at origin ``t`` use the pairs realised by ``t``).
    start, end : date, day number or None
    recent_days : int
        As the spec's ``recent_days`` (the features must match).
    scales : sequence of (days (k,), widths (k, n_b)), optional, one per calibrator
        The raw forecast's 10-90 % width (log-return units) at each origin day and bucket
        (``walk_forward_windows`` takes them from the walk-forward's raw quantiles): the
        training loss weights a row by it, as the price-scale quantile loss does.

    Returns
    -------
    dict of arrays, ``n`` rows:
        ``feats`` (n, N_FEATURES), ``u0`` (n, 8): the base map's raw levels at the lower
        and upper anchors (1 - ANCHORS reversed, then ANCHORS), ``raw`` (n,) the raw PIT,
        ``day`` (n,) the origin day, ``bucket`` (n,), ``regime`` (n,) code, ``asset`` (n,) index,
        and ``scale`` (n,) when ``scales`` are given (NaN where unknown).
    """
    lo, hi = (None if x is None else int(x if isinstance(x, (int, np.integer)) else day_number(x))
              for x in (start, end))
    levels = np.concatenate([1.0 - ANCHORS[::-1], ANCHORS])
    rows: dict[str, list] = {k: [] for k in ("feats", "u0", "raw", "day", "bucket", "regime", "asset")}
    if scales is not None:
        rows["scale"] = []
    for a, cal in enumerate(calibrators):
        width = None if scales is None else dict(zip(np.asarray(scales[a][0]).tolist(), np.asarray(scales[a][1])))
        by_day: dict[int, list[tuple[int, int, float]]] = {}
        for b, d in enumerate(cal._b):
            for o, r, x in zip(d["origin"].tolist(), d["regime"].tolist(), d["raw"].tolist()):
                if (lo is None or o >= lo) and (hi is None or o < hi):
                    by_day.setdefault(int(o), []).append((b, int(r), float(x)))
        for day in sorted(by_day):
            items = by_day[day]
            code = items[0][1]
            need = list(range(max(b for b, _, _ in items) + 1))
            base = Calibrator.level_map(cal, code, day, buckets=need, version="training").maps
            bs = [b for b, _, _ in items]
            rows["feats"].append(network_features(cal, code, day, bs, base, recent_days))
            rows["u0"].append(np.stack([np.interp(levels, KNOTS, base[b]) for b in bs]))
            rows["raw"].append(np.array([x for _, _, x in items]))
            rows["day"].append(np.full(len(items), day))
            rows["bucket"].append(np.array(bs))
            rows["regime"].append(np.array([r for _, r, _ in items]))
            rows["asset"].append(np.full(len(items), a))
            if width is not None:
                row = width.get(day)
                rows["scale"].append(np.array([row[b] if row is not None and b < row.size else np.nan for b in bs]))
    if not rows["raw"]:
        return {"feats": np.zeros((0, N_FEATURES)), "u0": np.zeros((0, 8)), "raw": np.zeros(0),
                "day": np.zeros(0, np.int64), "bucket": np.zeros(0, np.int64), "regime": np.zeros(0, np.int64),
                "asset": np.zeros(0, np.int64)}
    out = {k: np.concatenate(v) for k, v in rows.items()}
    for k in ("day", "bucket", "regime", "asset"):
        out[k] = out[k].astype(np.int64)
    return out


def walk_forward_windows(histories: Sequence[Any], end: Any, start: Any = None, config: Any = None,
                         n_paths: int = 500, recent_days: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """`training_windows` of a baseline walk-forward of each asset over origins in ``[start, end)``.

    What ``aetheris tune --component ncc`` trains on (train before the backtest period:
    ``end`` is the first day left out; only pairs realised before it are kept).  The walk-forward
    runs with the conformal calibrator (the network learns on top of it), ``n_paths`` paths per origin.

    Parameters
    ----------
    histories : sequence of AssetData
    end, start : date (start None: from the first origin with enough history)
    config : EngineConfig, default the baseline
    n_paths, recent_days, seed : int
    """
    from aetheris_ray.history import positive_closes
    from aetheris_ray.model import ComponentChoice, EngineConfig
    from aetheris_ray.quantiles import DEFAULT_LEVELS
    from aetheris_ray.walkforward import walk_forward

    cfg = (config or EngineConfig()).model_copy(update={"calibrator": ComponentChoice(name="conformal")})
    hi = int(day_number(end))
    lo = None if start is None else int(day_number(start))
    cals, scales = [], []
    lv = np.asarray(DEFAULT_LEVELS)
    i10, i90 = int(np.argmin(np.abs(lv - 0.1))), int(np.argmin(np.abs(lv - 0.9)))
    for data in histories:
        close = positive_closes(data)
        days = np.asarray(day_number(close.index))
        keep = (days < hi) & ((days >= lo) if lo is not None else True)
        if keep.sum() < 2:
            continue
        res = walk_forward(data, list(close.index[keep]), REP_HORIZONS[:4], config=cfg, n_paths=n_paths, seed=seed)
        cals.append(res.calibrator)
        width = res.raw_quantiles[:, :, i90] - res.raw_quantiles[:, :, i10]
        scales.append((np.asarray(day_number(res.origins)), width))
    w = training_windows(cals, start, end, recent_days, scales)
    known = w["day"] + np.asarray(REP_HORIZONS)[w["bucket"]] < hi  # outcomes realised before ``end`` only
    return {k: v[known] for k, v in w.items()}


# -- the calibrator ----------------------------------------------------------------------------


class NccCalibrator(Calibrator):
    """Conformal buffers whose level map adds the network's and the controller's adjustments.

    Parameters
    ----------
    config : CalibrationConfig
    asset, model_version : str
    spec : NeuralConformalCalibration, default the defaults
    artefact : FittedNcc or None
        The trained network; None: no network adjustment (the controller still acts).
    """

    def __init__(self, config: CalibrationConfig | None = None, asset: str = "", model_version: str = "",
                 spec: NeuralConformalCalibration | None = None, artefact: "FittedNcc | None" = None):
        super().__init__(config, asset, model_version)
        self.spec = spec or NeuralConformalCalibration()
        self.artefact = artefact
        if artefact is not None and artefact.n_features != N_FEATURES:
            raise InvalidInput(f"ncc artefact takes {artefact.n_features} features, this calibrator makes "
                               f"{N_FEATURES}; retrain it with `aetheris tune --component ncc`")
        h = hashlib.sha1(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        if artefact is not None:
            for k in sorted(artefact.shared):
                h.update(np.ascontiguousarray(artefact.shared[k], dtype=float).tobytes())
        self._tag = h.hexdigest()[:8]

    def _like(self) -> "NccCalibrator":
        return NccCalibrator(self.config, self.asset, self.model_version, self.spec, self.artefact)

    def with_pairs(self, origin_day: Any, horizon: Any, regime: Any, raw_pit: Any, cal_pit: Any) -> "NccCalibrator":
        """As `Calibrator.with_pairs`, keeping the network and the controller's settings."""
        plain = super().with_pairs(origin_day, horizon, regime, raw_pit, cal_pit)
        out = self._like()
        out._b = plain._b
        return out

    @property
    def version(self) -> str:
        """``ncc-<hash>`` of the buffers' version, the spec and the network's weights."""
        if self._version is None:
            base = super().version
            self._version = "ncc-" + hashlib.sha1(f"{base}|{self._tag}".encode()).hexdigest()[:12]
        return self._version

    # -- the controller ---------------------------------------------------------------------
    def controller(self, day: int, code: int, buckets: Sequence[int],
                   known_by: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The controller's log-scale corrections at the tracked intervals and each bucket's effective pairs.

        Four nested streams of realised errors, each ``pid_max * tanh((kp P + ki I) / pid_max)``
        with every pair weighted 1/h: the regime x bucket, the regime over all buckets, the
        bucket, all pairs (a scale error of the raw model is common to the horizons, and the
        short ones learn it fastest); blended inward with weights ``n_eff / (n_eff + n0_pid)``.

        Returns
        -------
        d : ndarray, shape (len(buckets), 3)
        n_eff : ndarray, shape (len(buckets),), the bucket's decayed pairs / h
        """
        s = self.spec
        ref = day if known_by is None else int(known_by)
        per: dict[int, tuple] = {}
        for b in range(len(BUCKETS)):
            m = self._select(b, day, self.config.window_days, known_by)
            if not m.any():
                continue
            d = self._b[b]
            age = (ref - (d["origin"][m] + d["horizon"][m])).astype(float)
            per[b] = (_misses(d["cal"][m]) - _ALPHA, np.exp(-age / s.decay_days), np.exp(-age / s.p_days),
                      d["regime"][m] == code, float(REP_HORIZONS[b]))

        var = _ALPHA * (1.0 - _ALPHA)  # of one pair's miss indicator, per interval

        def term(parts: list[tuple]) -> tuple[np.ndarray, float]:
            num_p, den_p, integ, n_eff = np.zeros(len(_TRACKED)), s.p0, np.zeros(len(_TRACKED)), 0.0
            ss_p = ss_i = 0.0  # sums of squared weights / h: overlapping pairs count ~h times their variance
            for e, w_i, w_p, h in parts:
                num_p += (w_p @ e) / h
                den_p += w_p.sum() / h
                integ += (w_i @ e) / h
                n_eff += w_i.sum() / h
                ss_p += float(w_p @ w_p) / h
                ss_i += float(w_i @ w_i) / h
            p = _shrink(num_p / den_p, s.deadband * np.sqrt(var * ss_p) / den_p)
            i = _shrink(integ, s.deadband * np.sqrt(var * ss_i))
            u = s.kp * p + s.ki * i
            return s.pid_max * np.tanh(u / s.pid_max), n_eff

        d_all, _ = term([(e, wi, wp, h) for e, wi, wp, _, h in per.values()])
        d_reg, n_reg = term([(e[m], wi[m], wp[m], h) for e, wi, wp, m, h in per.values() if m.any()])
        w_reg = n_reg / (n_reg + s.n0_pid)
        out = np.zeros((len(buckets), len(_TRACKED)))
        n_out = np.zeros(len(buckets))
        for i, b in enumerate(buckets):
            d_b, n_b = term([per[b][:3] + per[b][4:]]) if b in per else (d_all, 0.0)
            w_b = n_b / (n_b + s.n0_pid)
            d_rb, n_rb = (d_b, 0.0)
            if b in per and per[b][3].any():
                e, w_i, w_p, mine, h = per[b]
                d_rb, n_rb = term([(e[mine], w_i[mine], w_p[mine], h)])
            w_rb = n_rb / (n_rb + s.n0_pid)
            out[i] = w_rb * d_rb + (1.0 - w_rb) * (w_reg * d_reg + (1.0 - w_reg) * (w_b * d_b + (1.0 - w_b) * d_all))
            n_out[i] = n_b
        return out, n_out

    # -- the map -------------------------------------------------------------------------------
    def level_map(self, regime: str | int, as_of: Any, buckets: Sequence[int] | None = None,
                  tables: dict[int, tuple] | None = None, known_by: int | None = None,
                  version: str | None = None) -> ConformalLevelMap:
        """The ncc map for a forecast made on day ``as_of`` in ``regime`` (see the module docstring).

        Buckets ``0 .. max(buckets)`` are always built (the horizon guard joins them);
        the others stay the identity.
        """
        day = int(as_of if isinstance(as_of, (int, np.integer)) else day_number(as_of))
        code = int(regime if isinstance(regime, (int, np.integer)) else regime_code(regime))
        top = len(BUCKETS) - 1 if buckets is None or len(buckets) == 0 else int(max(buckets))
        need = list(range(top + 1))
        if tables is not None:
            tables = {b: t for b, t in tables.items() if b in need}
        base = Calibrator.level_map(self, code, day, buckets=need, tables=tables, known_by=known_by,
                                    version="base").maps
        d = np.zeros((len(need), len(ANCHORS)))
        if self.artefact is not None:
            feats = network_features(self, code, day, need, base, self.spec.recent_days, known_by)
            d += network_forward(self.artefact.shared, feats, self.spec.max_adjust)
        pid, n_eff = self.controller(day, code, need, known_by)
        d[:, : pid.shape[1]] += pid
        d[:, pid.shape[1]:] += pid[:, -1:]
        maps = base.copy()
        maps[need] = adjust_map(base[need], d, self.config.epsilon)
        if self.spec.horizon_guard:
            maps[need] = horizon_guard(maps[need], 1.0 + n_eff)
        return ConformalLevelMap(maps, self.version if version is None else version)

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        art = None
        if self.artefact is not None:
            art = {"spec": self.artefact.spec.to_dict(), "info": dict(self.artefact.info),
                   "shared": {k: np.asarray(v, dtype=float).tolist() for k, v in self.artefact.shared.items()}}
        out["ncc"] = {"spec": self.spec.to_dict(), "artefact": art}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NccCalibrator":
        plain = Calibrator.from_dict(d)
        body = d.get("ncc") or {}
        try:
            spec_d = dict(body.get("spec") or {"name": NAME})
            spec_d.pop("name", None)
            spec = NeuralConformalCalibration(**spec_d)
            art = None
            if body.get("artefact"):
                a = body["artefact"]
                a_spec = dict(a["spec"])
                a_spec.pop("name", None)
                art = FittedNcc(spec=NeuralConformalCalibration(**a_spec), params={}, info=a.get("info", {}),
                                shared={k: np.asarray(v, dtype=float) for k, v in a["shared"].items()})
                art.check_loaded()
        except (TypeError, KeyError, ValueError, InvalidInput) as e:
            raise ModelNotFound(f"ncc calibration state: cannot read its settings ({type(e).__name__}: {e}); "
                                "rebuild it (it is recomputed from history)") from None
        out = cls(plain.config, plain.asset, plain.model_version, spec=spec, artefact=art)
        out._b = plain._b
        return out


# -- the trained artefact ----------------------------------------------------------------------

#: Keys of ``shared``: the feature scaling and the network's ``state_dict`` (``w.<name>``).
_SHARED = ("feat_mean", "feat_std", "w.0.weight", "w.0.bias", "w.2.weight", "w.2.bias")


@dataclass(frozen=True, eq=False)
class FittedNcc(FittedBase):
    """The trained network of ``ncc`` (what the model registry stores).

    ``shared`` holds ``feat_mean`` / ``feat_std`` (N_FEATURES,) and the weights
    ``w.0.weight`` (hidden, N_FEATURES), ``w.0.bias`` (hidden,), ``w.2.weight`` (4, hidden),
    ``w.2.bias`` (4,); no per-fit ``params``.  The forward pass is numpy (`network_forward`).
    """

    kind: ClassVar[str] = "calibrator"
    name: ClassVar[str] = NAME
    requires_torch: ClassVar[bool] = True

    @classmethod
    def from_params(cls, seed: int = 0, info: dict[str, Any] | None = None,  # type: ignore[override]
                    **spec: Any) -> "FittedNcc":
        """A seeded untrained network: random hidden layer, zero output layer (no adjustment yet)."""
        sp = NeuralConformalCalibration(seed=seed, **spec)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(N_FEATURES)
        shared = {
            "feat_mean": np.zeros(N_FEATURES), "feat_std": np.ones(N_FEATURES),
            "w.0.weight": rng.uniform(-bound, bound, (sp.hidden, N_FEATURES)),
            "w.0.bias": rng.uniform(-bound, bound, sp.hidden),
            "w.2.weight": np.zeros((len(ANCHORS), sp.hidden)), "w.2.bias": np.zeros(len(ANCHORS)),
        }
        return cls(spec=sp, params={}, info=dict(info or {}), shared=shared)

    @property
    def n_features(self) -> int:
        return int(np.size(self.shared["feat_mean"]))

    def adjustments(self, feats: np.ndarray) -> np.ndarray:
        """Log-scale adjustments at `ANCHORS` of feature rows: (n, N_FEATURES) -> (n, 4)."""
        return network_forward(self.shared, np.asarray(feats, dtype=float), self.spec.max_adjust)

    def check_loaded(self) -> None:
        """Shape checks of the arrays (a mismatch is a corrupt artefact)."""
        self.check_artefact(_SHARED, lambda: None)
        n, hdim = self.n_features, int(np.shape(self.shared["w.0.bias"])[0])
        want = {"feat_std": (n,), "w.0.weight": (hdim, n), "w.2.weight": (len(ANCHORS), hdim),
                "w.2.bias": (len(ANCHORS),)}
        bad = [k for k, s in want.items() if np.shape(self.shared[k]) != s]
        if bad:
            raise ModelNotFound(f"ncc artefact: {bad} have the wrong shapes; the artefact is corrupt")


NeuralConformalCalibration.fitted_cls = FittedNcc
