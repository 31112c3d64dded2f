"""Importance sampling for far threshold probabilities P(price < K) and P(price > K).

Plain Monte Carlo estimates ``P(X_h < u)`` (``X_h`` the cumulative log-return at
the last step, ``u = log(K / spot)``) by the share of paths below ``u``; when only
a handful of paths get there (P of 1e-3 to 1e-5 with 10,000 paths) the estimate
is 0 or very noisy.  For such thresholds this module re-simulates the model's
paths with the innovations tilted toward ``u`` and weights each path by its exact
likelihood ratio:

* the tilt of step ``t`` is ``eta_t = theta * sbar_t`` in innovation units, with
  ``sbar_t`` the model's expected daily volatility (``sqrt(E[sigma_t^2])``): for a
  Gaussian random walk this is the exponential tilt of the sum, the efficient one;
* each residual model tilts its own draws (`FittedResiduals.draw_tilted`): a mean
  shift for the Gaussian (its exponential tilt) and the Student-t, an exponential
  tilt ``P(z_i) ~ exp(eta z_i)`` over the filtered-historical bootstrap pool.  The
  volatility component runs unchanged on the tilted innovations (GARCH feedback
  included), the drift and the jumps are not tilted, so the likelihood ratio of a
  path is the product over steps of the innovation density ratios;
* ``theta`` is chosen by rule: the median of the tilted ``X_h`` hits ``u``
  (root finding on a pilot of `PILOT_PATHS` paths with common random numbers,
  started from the Gaussian guess ``(u - sum drift) / sum sbar_t^2``; 2 to
  `PILOT_EVALS` pilot draws, remembered per model and threshold by `tilt_for`);
* the estimate is the mean of ``1{X_h beyond u} * LR`` over the tilted paths and
  its standard error the sample standard deviation over ``sqrt(n)``; ``n`` is the
  request's paths within [`IS_MIN_PATHS`, `IS_MAX_PATHS`], grown in blocks up to
  `IS_MAX_PATHS` while the relative standard error is above `TARGET_REL_SE` (not
  when no tilted path reached K: more of them would not either).

Where the residual steps are independent draws of a law with a closed-form CDF (Gaussian,
Student-t: `ModelSampler.conditional`), the last step is not tilted and not drawn: each
tilted path contributes its likelihood ratio times ``P(X_h beyond u | the path to h - 1)
= F((u - rest) / sigma_h)`` (conditional Monte Carlo; ``rest`` the path without the last
step's ``sigma_h z_h``, drift and jumps of that step included, scenario scaling applied).
That is never noisier than the indicator and is exact at one step; it needs half the
tilted paths (`CONDITIONAL_MIN_PATHS`) for a smaller standard error on BTC-USD.

Whether a threshold gets importance sampling is decided from the plain paths
(`use_importance`): fewer than `MIN_TAIL_HITS` paths beyond K *and* K outside the
central ``1 - 2 * TAIL_SHARE`` of the paths.  The small side is estimated and the
other is its complement, so ``P(below) + P(above) = 1``.  The raw probability then
goes through the calibration's inverse level map like any other.

Streams: the tilted paths of one threshold come from ``SeedSequence([seed,
TAIL_STREAM, bits of u])`` and the pilot from ``SeedSequence([TAIL_STREAM,
PILOT_STREAM, bits of u])``, so the estimate depends on the request's seed and the
threshold only -- not on the other thresholds, nor on how the plain paths were
sharded -- and the tilt on the model and the threshold only: `tilt_for` remembers it
per model, and a threshold asked again skips the pilot.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, Sequence

import numpy as np

from aetheris_ray import simulation as sim
from aetheris_ray._typing import FloatArray

__all__ = [
    "MIN_TAIL_HITS", "TAIL_SHARE", "IS_MIN_PATHS", "CONDITIONAL_MIN_PATHS", "IS_MAX_PATHS", "IS_BLOCK_PATHS",
    "TARGET_REL_SE",
    "PILOT_PATHS", "PILOT_EVALS", "PILOT_TOL", "ETA_MAX",
    "MONTE_CARLO", "IMPORTANCE_SAMPLING",
    "TiltedSampler", "ModelSampler", "TailEstimate", "ThresholdProbabilities",
    "use_importance", "choose_tilt", "tilt_for", "importance_estimate", "threshold_probabilities", "calibrated_above",
]

#: Fewer plain paths than this beyond K -> importance sampling (1/sqrt(50): a 14% relative error).
MIN_TAIL_HITS = 50
#: ... and K outside the central 90% of the plain paths (beyond the bulk).
TAIL_SHARE = 0.05
#: Tilted paths per threshold: at least the request's paths, within these bounds ...
IS_MIN_PATHS = sim.BLOCK_PATHS
IS_MAX_PATHS = 4 * sim.BLOCK_PATHS
#: ... and more (up to `IS_MAX_PATHS`) while the estimate's relative standard error is above this
#: (the precision of plain Monte Carlo with 100 paths beyond K).
TARGET_REL_SE = 0.1
#: ... at least this many where the last step is integrated exactly (`ModelSampler.conditional`).
#: BTC-USD at 2024-12-09, 1,000 x 7, P(above 110,000) about 0.044, 40 seeds
#: (`benchmarks/bench_tails.py --forecast-only`): 4,096 paths with the last step drawn gave a
#: reported SE of 0.00143 (seeds' spread 0.00124); with it integrated, 1,024 paths 0.00183
#: (0.00228) and 2,048 paths 0.00128 (0.00116): 2,048 keeps the SE at or below the old one.
CONDITIONAL_MIN_PATHS = 2048
#: Tilted paths per extra draw (the unit in which the path count grows past the request's).
IS_BLOCK_PATHS = 2048
#: Paths of the pilot that sets the tilt (common random numbers across candidate tilts).
PILOT_PATHS = 512
#: Candidate tilts the pilot tries at most, and when it stops: the tilted median within this
#: many standard deviations of X_h from the threshold.
PILOT_EVALS = 4
PILOT_TOL = 0.25
#: Largest tilt of one step, in innovation standard deviations (keeps feedback volatility finite).
ETA_MAX = 10.0
#: Spawn key of the tail streams (apart from the plain blocks' ``SeedSequence(seed)`` children).
TAIL_STREAM = 0x7A115
#: Key of the pilot stream (with `TAIL_STREAM` and the threshold; no seed).
PILOT_STREAM = 0x9170
#: Tilts remembered per model (`tilt_for`).
TILT_CACHE_SIZE = 256

MONTE_CARLO = "monte_carlo"
IMPORTANCE_SAMPLING = "importance_sampling"


class TiltedSampler(Protocol):
    """What importance sampling needs from a model (`ModelSampler` for the engine's)."""

    @property
    def tiltable(self) -> bool: ...

    def profile(self, horizon: int) -> tuple[float, FloatArray]:
        """``(sum of the daily drift, sbar)``: drift over the horizon, expected daily vol shape (horizon,)."""
        ...

    def sample(self, n_paths: int, horizon: int, eta: FloatArray,
               rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """``(X_h, log_lr)``, each shape (n_paths,): cumulative log-returns under the tilt ``eta`` (horizon,)."""
        ...


@dataclass(frozen=True, eq=False)
class ModelSampler:
    """The tilted paths of a batch-1 fitted model (`aetheris_ray.model.FittedModel`) and its conditioning arrays."""

    model: Any
    cond: dict

    @property
    def tiltable(self) -> bool:
        return bool(self.model.tiltable)

    def profile(self, horizon: int) -> tuple[float, FloatArray]:
        return self.model.tilt_profile(self.cond, horizon)

    def tilt_cache_key(self) -> tuple[Any, str]:
        """``(model, fingerprint of the conditioning arrays)``: what a remembered tilt is keyed by."""
        return self.model, self._cond_fingerprint

    @cached_property
    def _cond_fingerprint(self) -> str:
        h = hashlib.sha1()

        def walk(d: Any, prefix: str) -> None:
            for k in sorted(d):
                v = d[k]
                if isinstance(v, dict):
                    walk(v, f"{prefix}{k}/")
                else:
                    a = np.asarray(v)
                    h.update(f"{prefix}{k}:{a.dtype}{a.shape}".encode())
                    h.update(np.ascontiguousarray(a).tobytes() if a.dtype != object else repr(v).encode())

        walk(self.cond, "")
        return h.hexdigest()

    def sample(self, n_paths: int, horizon: int, eta: FloatArray,
               rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        eta = np.asarray(eta, dtype=float)[None, :]
        paths, log_lr = self.model.simulate_tilted(self.cond, n_paths, horizon, eta, rng)
        return paths[0].sum(axis=1), log_lr[0]

    @property
    def conditional(self) -> bool:
        """Whether `sample_conditional` applies: iid residual steps with a known law."""
        return bool(getattr(self.model, "splittable", False))

    def sample_conditional(self, n_paths: int, horizon: int, eta: FloatArray, rng: np.random.Generator,
                           u: float, side: str) -> tuple[FloatArray, FloatArray]:
        """``(P(X_h beyond u | the path to step h - 1), log_lr)``, each (n_paths,), the tilt's last step 0."""
        eta = np.asarray(eta, dtype=float)[None, :]
        rest, scale, log_lr = self.model.simulate_tilted_split(self.cond, n_paths, horizon, eta, rng)
        x = (float(u) - rest) / scale
        return self.model.last_step_cdf(self.cond, x, side)[0], log_lr[0]


@dataclass(frozen=True)
class TailEstimate:
    """Raw (uncalibrated) threshold probabilities of one K and how they were estimated.

    Attributes
    ----------
    p_below, p_above : float
        Raw P(X_h < u) and P(X_h >= u); they sum to 1.
    se : float
        Standard error of either (raw).
    estimator : {"monte_carlo", "importance_sampling"}
    side : {"below", "above"}
        The tail side (the smaller probability, the one estimated directly).
    paths : int
        Paths the estimate used.
    hits : int
        Paths beyond K on the tail side (under the tilt for importance sampling).
    tilt : float
        ``theta`` (0 for plain Monte Carlo).
    ess : float
        Effective sample size ``(sum w)^2 / sum w^2`` of the hits' weights (the hits for plain MC).
    """

    p_below: float
    p_above: float
    se: float
    estimator: str
    side: str
    paths: int
    hits: int
    tilt: float = 0.0
    ess: float = 0.0


def use_importance(hits: int, n_paths: int) -> bool:
    """Whether a threshold with ``hits`` of ``n_paths`` plain paths on its tail side gets importance sampling."""
    return hits < MIN_TAIL_HITS and hits < TAIL_SHARE * n_paths


def _bits(u: float) -> int:
    return int(np.array(u, dtype=np.float64).view(np.uint64))


def _tail_stream(seed: int, u: float) -> np.random.SeedSequence:
    """The tilted paths' stream of one threshold: the request's seed and the threshold."""
    return np.random.SeedSequence([int(seed), TAIL_STREAM, _bits(u)])


def _pilot_stream(u: float) -> np.random.SeedSequence:
    """The pilot's stream: the threshold only, so the tilt is a function of the model and K (cacheable)."""
    return np.random.SeedSequence([TAIL_STREAM, PILOT_STREAM, _bits(u)])


_TILTS: "weakref.WeakKeyDictionary[Any, OrderedDict]" = weakref.WeakKeyDictionary()
_TILTS_LOCK = threading.Lock()


def tilt_for(sampler: TiltedSampler, u: float, horizon: int, side: str,
             profile: tuple[float, FloatArray] | None = None) -> float:
    """`choose_tilt` from the threshold's pilot stream, remembered per model and conditioning.

    The tilt depends on the model, its conditioning arrays, ``u``, the horizon and the
    side only (not on the request's seed), so a model held in the state cache answers a
    threshold asked again -- a dashboard's fixed levels, other seeds -- without the pilot
    draws; the estimate is the same with or without the remembered tilt.  Samplers
    without ``tilt_cache_key`` are not remembered.
    """
    key_fn = getattr(sampler, "tilt_cache_key", None)
    owner_fp = key_fn() if key_fn is not None else None
    if owner_fp is None:
        return choose_tilt(sampler, u, horizon, side, _pilot_stream(u), profile)
    owner, fp = owner_fp
    key = (fp, float(u), int(horizon), side)
    with _TILTS_LOCK:
        cache = _TILTS.get(owner)
        if cache is not None and key in cache:
            cache.move_to_end(key)
            return cache[key]
    theta = choose_tilt(sampler, u, horizon, side, _pilot_stream(u), profile)
    with _TILTS_LOCK:
        cache = _TILTS.setdefault(owner, OrderedDict())
        cache[key] = theta
        while len(cache) > TILT_CACHE_SIZE:
            cache.popitem(last=False)
    return theta


def choose_tilt(sampler: TiltedSampler, u: float, horizon: int, side: str, stream: np.random.SeedSequence,
                profile: tuple[float, FloatArray] | None = None) -> float:
    """``theta`` such that the median of the tilted ``X_h`` is ``u`` (see the module docstring).

    Root finding on ``|theta|`` with the same pilot draws (`PILOT_PATHS`) for every
    candidate, from the Gaussian guess ``|u - drift| / sum sbar^2``: the tilted
    median's move from the drift is modelled as ``c theta^k`` (``k = 1`` for the
    second candidate, then fitted through the last two).  Stops when the
    tilted median is within `PILOT_TOL` standard deviations of ``u`` or after
    `PILOT_EVALS` candidates (the best one is kept): the estimator's variance
    changes slowly near the rule's tilt, so a quarter standard deviation is close
    enough.  Capped where a
    step's tilt reaches `ETA_MAX` (a threshold the model can hardly reach).
    ``profile`` is ``sampler.profile(horizon)`` when the caller has it.
    """
    drift, sbar = profile if profile is not None else sampler.profile(horizon)
    sign = -1.0 if side == "below" else 1.0
    a_max = ETA_MAX / float(np.max(sbar))
    sd = float(np.sqrt(np.sum(sbar * sbar)))
    dist = abs(u - drift)
    tried: list[tuple[float, float]] = []  # (a, gap); gap > 0 while the tilted median has not reached u

    def gap(a: float) -> float:
        x, _ = sampler.sample(PILOT_PATHS, horizon, sign * a * sbar, np.random.Generator(np.random.PCG64(stream)))
        g = sign * (u - float(np.median(x)))
        tried.append((a, g))
        return g

    a = min(max(dist / (sd * sd), 1e-3 * a_max), a_max)
    g = gap(a)
    while abs(g) > PILOT_TOL * sd and len(tried) < PILOT_EVALS:
        # the tilted median moves by m(a) = dist - gap(a) from the drift; model m ~ a^k (k = 1 at first)
        (a1, g1) = tried[-1]
        k = 1.0
        if len(tried) > 1:
            a0, g0 = tried[-2]
            m0, m1 = dist - g0, dist - g1
            if m0 > 0 and m1 > 0 and m0 != m1 and a0 != a1:
                k = float(np.clip(np.log(m1 / m0) / np.log(a1 / a0), 0.25, 4.0))
        moved = dist - g1
        nxt = a1 * (dist / moved) ** (1.0 / k) if moved > 0 else 4.0 * a1
        nxt = min(max(nxt, 0.25 * a1, 1e-3 * a_max), 4.0 * a1, a_max)
        if nxt == a1:  # pinned at the cap with the median still short of u
            break
        a = nxt
        g = gap(a)
    return sign * min(tried, key=lambda t: abs(t[1]))[0]


def importance_estimate(sampler: TiltedSampler, u: float, horizon: int, side: str, n_paths: int,
                        seed: int, profile: tuple[float, FloatArray] | None = None) -> TailEstimate:
    """Importance-sampling estimate of P(X_h < u) (``side="below"``) or P(X_h >= u) (``"above"``).

    ``n_paths`` tilted paths are drawn at once; while the estimate's relative
    standard error is above `TARGET_REL_SE`, blocks of `IS_BLOCK_PATHS` more
    follow, up to `IS_MAX_PATHS` in all (none when no tilted path reached K).  ``profile`` is ``sampler.profile(horizon)`` when
    the caller has it.

    Raises
    ------
    FloatingPointError
        A tilted path overflowed (the caller falls back to plain Monte Carlo).
    """
    profile = profile if profile is not None else sampler.profile(horizon)
    _, sbar = profile
    main = _tail_stream(seed, u)
    n_max = max(int(n_paths), IS_MAX_PATHS)
    sizes = [int(n_paths)] + [IS_BLOCK_PATHS] * -(-(n_max - int(n_paths)) // IS_BLOCK_PATHS)
    log_w: list[FloatArray] = []
    drawn = 0
    conditional = bool(getattr(sampler, "conditional", False))
    with np.errstate(over="raise", invalid="raise"):
        theta = tilt_for(sampler, u, horizon, side, profile)
        eta = theta * sbar
        if conditional:
            eta = np.append(eta[:-1], 0.0)  # the last step keeps the model's law: integrated, not drawn
        for size, s in zip(sizes, main.spawn(len(sizes))):
            size = min(size, n_max - drawn)
            rng = np.random.Generator(np.random.PCG64(s))
            if conditional:
                prob, log_lr = sampler.sample_conditional(size, horizon, eta, rng, u, side)
                live = prob > 0
                log_w.append(np.where(live, log_lr + np.log(np.where(live, prob, 1.0)), -np.inf))
            else:
                x, log_lr = sampler.sample(size, horizon, eta, rng)
                hit = x < u if side == "below" else x >= u
                log_w.append(np.where(hit, log_lr, -np.inf))
            drawn += size
            if drawn >= n_max or _rel_se(np.concatenate(log_w)) <= TARGET_REL_SE:
                break
    lw = np.concatenate(log_w)
    n = lw.size
    hits = int(np.isfinite(lw).sum())
    if hits == 0:
        p, se, ess = 0.0, 0.0, 0.0
    else:
        top = float(np.max(lw))
        y = np.exp(lw - top)  # the hits' weights over the largest one; 0 elsewhere
        mean = float(y.mean())
        sd = float(y.std(ddof=1)) if n > 1 else 0.0
        p = float(np.exp(min(top + np.log(mean), 0.0)))
        se = float(np.exp(min(top + np.log(sd) - 0.5 * np.log(n), 0.0))) if sd > 0 else 0.0
        ess = float(np.sum(y) ** 2 / np.sum(y * y))
    below = p if side == "below" else 1.0 - p
    return TailEstimate(p_below=below, p_above=1.0 - below if side == "below" else p, se=se,
                        estimator=IMPORTANCE_SAMPLING, side=side, paths=n, hits=hits, tilt=theta, ess=ess)


def _rel_se(log_w: FloatArray) -> float:
    """Relative standard error of the mean of ``exp(log_w)`` (0 without a hit: nothing to refine)."""
    if not np.isfinite(log_w).any():
        return 0.0
    y = np.exp(log_w - np.max(log_w))
    m = float(y.mean())
    return float(y.std(ddof=1) / (m * np.sqrt(y.size)))


def calibrated_above(level_map: sim.LevelMap, step: int, q_raw: FloatArray) -> FloatArray:
    """Calibrated P(above) of a raw one, ``1 - calibrated_prob(1 - q)``, without losing a tiny ``q`` to rounding."""
    fn = getattr(level_map, "calibrated_prob_above", None)
    if fn is not None:
        return np.asarray(fn(step, q_raw), dtype=float)
    return 1.0 - np.asarray(level_map.calibrated_prob(step, 1.0 - np.asarray(q_raw, dtype=float)), dtype=float)


@dataclass
class ThresholdProbabilities:
    """Calibrated threshold probabilities with their standard errors and estimators (one entry per K)."""

    p_below: FloatArray
    p_above: FloatArray
    se: FloatArray
    estimator: tuple[str, ...]
    estimates: list[TailEstimate]
    warnings: list[str] = field(default_factory=list)

    def details(self, thresholds: Sequence[float]) -> list[dict[str, Any]]:
        """JSON-ready details of the importance-sampled thresholds (metadata)."""
        return [{"price": float(k), "side": e.side, "paths": e.paths, "hits": e.hits, "tilt": e.tilt,
                 "ess": round(e.ess, 1), "raw_p": e.p_below if e.side == "below" else e.p_above, "raw_se": e.se}
                for k, e in zip(thresholds, self.estimates) if e.estimator == IMPORTANCE_SAMPLING]


def threshold_probabilities(cum_last: FloatArray, log_thresholds: FloatArray, level_map: sim.LevelMap | None,
                            step: int, *, sampler: TiltedSampler | None = None, seed: int = 0,
                            n_paths: int | None = None, presorted: bool = False) -> ThresholdProbabilities:
    """Calibrated P(X_h < u) and P(X_h >= u) per threshold, by plain MC or importance sampling.

    Parameters
    ----------
    cum_last : ndarray, shape (n_paths,)
        The plain paths' cumulative log-returns at the last step.
    log_thresholds : ndarray, shape (n_thresholds,)
        ``log(K / spot)``.
    sampler : TiltedSampler or None
        The model's tilted paths; None (or a model whose residuals cannot be
        tilted) keeps plain Monte Carlo everywhere.
    seed : int
        The request's seed (the tail streams derive from it).
    n_paths : int or None
        Tilted paths per threshold (default: the plain path count), clipped to
        [`IS_MIN_PATHS`, `IS_MAX_PATHS`].
    presorted : bool
        ``cum_last`` is already in increasing order (skips the sort).

    Returns
    -------
    ThresholdProbabilities
        Plain-MC entries are exactly `simulation.prob_below` and its complement;
        ``se`` is the standard error of the calibrated probability (the raw one
        through the local slope of the level map).
    """
    lm = level_map or sim.IdentityLevelMap()
    u = np.asarray(log_thresholds, dtype=float)
    x = np.asarray(cum_last, dtype=float)
    if not presorted:
        x = np.sort(x)
    n = max(x.size, 1)
    below = np.searchsorted(x, u, side="left")
    p_below = sim.prob_below(x, u, lm, step=step, presorted=True)
    p_above = 1.0 - p_below
    can_tilt = sampler is not None and sampler.tiltable
    lowest = CONDITIONAL_MIN_PATHS if can_tilt and getattr(sampler, "conditional", False) else IS_MIN_PATHS
    n_is = int(np.clip(n_paths if n_paths is not None else n, lowest, IS_MAX_PATHS))
    horizon = step + 1

    def cal_below(p: FloatArray) -> FloatArray:
        return lm.calibrated_prob(step, p)

    def cal_above(q: FloatArray) -> FloatArray:
        return calibrated_above(lm, step, q)

    profile = None
    estimates, warnings_ = [], []
    se = np.zeros(u.size)
    kinds = []
    for j, uj in enumerate(u):
        b = int(below[j])
        side, hits = ("below", b) if b <= x.size - b else ("above", x.size - b)
        est = None
        if can_tilt and use_importance(hits, x.size):
            try:
                profile = profile if profile is not None else sampler.profile(horizon)
                est = importance_estimate(sampler, float(uj), horizon, side, n_is, seed, profile)
            except FloatingPointError:
                warnings_.append(f"threshold {np.exp(uj):.6g} x spot: importance sampling overflowed; "
                                 "plain Monte Carlo kept")
        if est is None:
            pb = b / n
            est = TailEstimate(p_below=pb, p_above=1.0 - pb, se=float(np.sqrt(pb * (1.0 - pb) / n)),
                               estimator=MONTE_CARLO, side=side, paths=x.size, hits=hits, ess=float(hits))
            se[j] = _calibrated_se(cal_below, pb, est.se)
        else:
            small = est.p_below if side == "below" else est.p_above
            cal = cal_below if side == "below" else cal_above
            p_small = float(np.clip(cal(np.array([small]))[0], 0.0, 1.0))
            p_below[j], p_above[j] = (p_small, 1.0 - p_small) if side == "below" else (1.0 - p_small, p_small)
            se[j] = _calibrated_se(cal, small, est.se)
        if est.hits == 0:
            how = "even under importance sampling" if est.estimator == IMPORTANCE_SAMPLING else f"of {x.size:,}"
            warnings_.append(f"threshold {np.exp(uj):.6g} x spot: no simulated path {how} ended "
                             f"{side} it; P({side}) is reported as 0 (smaller than the estimator resolves)")
        estimates.append(est)
        kinds.append(est.estimator)
    return ThresholdProbabilities(p_below=p_below, p_above=p_above, se=se, estimator=tuple(kinds),
                                  estimates=estimates, warnings=warnings_)


def _calibrated_se(calibrate: Any, p_raw: float, se_raw: float) -> float:
    """The raw standard error through the level map's local slope (a finite difference over +-se).

    ``calibrate`` maps raw probabilities (an array) to calibrated ones.
    """
    if se_raw <= 0:
        return 0.0
    lo, hi = max(p_raw - se_raw, 0.0), min(p_raw + se_raw, 1.0)
    if hi <= lo:
        return 0.0
    g = np.asarray(calibrate(np.array([lo, hi])), dtype=float)
    return float(abs(g[1] - g[0]) / (hi - lo) * se_raw)
