"""Monte Carlo plumbing shared by every model: seeded path blocks, quantiles, threshold probabilities.

Paths are drawn in fixed-size blocks; block ``i`` always uses the ``i``-th child of
``SeedSequence(seed)``.  A shard takes whole blocks, so the merged paths (and so
the quantiles) are bitwise the same whatever the number of shards.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import numpy as np

from aetheris_ray._typing import FloatArray

#: Paths per block.  Small requests are one block; 1,000,000 paths are 245 blocks.
BLOCK_PATHS = 4096

#: Dense level grid of the last step's quantile function (for P(price < K) at any K).
CDF_GRID = np.concatenate([[0.001, 0.0025, 0.005], np.linspace(0.01, 0.99, 99), [0.995, 0.9975, 0.999]])

SampleFn = Callable[[int, int, np.random.Generator], FloatArray]
"""``sample(n_paths, horizon, rng) -> ndarray (n_paths, horizon)`` of daily log-returns."""


def block_sizes(n_paths: int) -> list[int]:
    """Sizes of the blocks ``n_paths`` is split into (all `BLOCK_PATHS` but the last)."""
    n_full, rest = divmod(int(n_paths), BLOCK_PATHS)
    return [BLOCK_PATHS] * n_full + ([rest] if rest else [])


def block_rngs(seed: int, n_blocks: int) -> list[np.random.Generator]:
    """One independent generator per block, from ``SeedSequence(seed).spawn(n_blocks)``."""
    return [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(n_blocks)]


def shard_blocks(n_paths: int, n_shards: int) -> list[range]:
    """Split the block indices of a request into ``n_shards`` contiguous ranges (some may be empty)."""
    n = len(block_sizes(n_paths))
    n_shards = max(1, min(int(n_shards), n))
    edges = [round(i * n / n_shards) for i in range(n_shards + 1)]
    return [range(edges[i], edges[i + 1]) for i in range(n_shards)]


def simulate_blocks(sample: SampleFn, n_paths: int, horizon: int, seed: int, blocks: Sequence[int] | None = None) -> FloatArray:
    """Draw the paths of the given blocks (all blocks when None), concatenated in block order.

    Returns
    -------
    ndarray, shape (n_selected_paths, horizon)
        Daily log-returns.
    """
    sizes = block_sizes(n_paths)
    rngs = block_rngs(seed, len(sizes))
    idx = range(len(sizes)) if blocks is None else blocks
    parts = [sample(sizes[i], horizon, rngs[i]) for i in idx]
    if not parts:
        return np.empty((0, horizon))
    return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


class LevelMap(Protocol):
    """A monotone recalibration of probability levels, per step (the conformal layer).

    ``raw_levels(step, levels)`` gives the raw-sample levels whose quantiles are the
    calibrated quantiles at ``levels``; ``calibrated_prob(step, p_raw)`` maps a raw
    probability to its calibrated value (the inverse map).  Steps are 0-based.
    A map may also offer ``calibrated_prob_above(step, q_raw)``, equal to
    ``1 - calibrated_prob(step, 1 - q_raw)`` but exact for tiny ``q_raw`` (far
    upper thresholds, `aetheris_ray.tails`).
    """

    version: str

    def raw_levels(self, step: int, levels: FloatArray) -> FloatArray: ...

    def calibrated_prob(self, step: int, p_raw: FloatArray) -> FloatArray: ...


class IdentityLevelMap:
    """No calibration: raw sample quantiles are the answer."""

    version = "uncalibrated"

    def raw_levels(self, step: int, levels: FloatArray) -> FloatArray:
        return np.asarray(levels, dtype=float)

    def calibrated_prob(self, step: int, p_raw: FloatArray) -> FloatArray:
        return np.asarray(p_raw, dtype=float)

    def calibrated_prob_above(self, step: int, q_raw: FloatArray) -> FloatArray:
        return np.asarray(q_raw, dtype=float)


#: Up to this many paths, `cone` sorts each step once (cheaper than a multi-level partition);
#: above it, `np.quantile`'s partition is cheaper than a full sort.
SORT_MAX_PATHS = 65_536


def cumulative(logret: FloatArray) -> FloatArray:
    """Cumulative log-returns along the last axis (float64 accumulation)."""
    return np.cumsum(logret, axis=-1, dtype=np.float64)


def sorted_steps(cum: FloatArray) -> FloatArray | None:
    """``np.sort(cum, axis=0)`` when `cone` would sort (at most `SORT_MAX_PATHS` paths), else None.

    One sort serves the quantile cone, the last step's CDF grid and the thresholds.
    """
    return np.sort(cum, axis=0) if cum.shape[0] <= SORT_MAX_PATHS else None


def cone(cum: FloatArray, levels: Sequence[float], level_map: LevelMap | None = None,
         srt: FloatArray | None = None) -> FloatArray:
    """Calibrated quantiles of cumulative log-returns, per step.

    Parameters
    ----------
    cum : ndarray, shape (n_paths, n_steps)
        Cumulative log-returns.
    levels : sequence of float, increasing, in (0, 1)
    srt : ndarray, optional
        ``np.sort(cum, axis=0)`` if the caller has it (`sorted_steps`).

    Returns
    -------
    ndarray, shape (n_steps, n_levels)
        Log-return quantiles; non-decreasing along the level axis.
    """
    lm = level_map or IdentityLevelMap()
    lv = np.asarray(levels, dtype=float)
    n_steps = cum.shape[1]
    if isinstance(lm, IdentityLevelMap):
        out = np.quantile(cum, lv, axis=0).T
        return np.maximum.accumulate(out, axis=1)
    grid = getattr(lm, "raw_level_grid", None)
    if grid is not None:
        raw = grid(n_steps, lv)  # (n_steps, n_levels)
    else:
        raw = np.stack([np.clip(lm.raw_levels(s, lv), 0.0, 1.0) for s in range(n_steps)])
    if cum.shape[0] <= SORT_MAX_PATHS:
        # one sort per step, then numpy's linear interpolation at each step's own raw levels
        if srt is None:
            srt = np.sort(cum, axis=0)
        pos = raw * (srt.shape[0] - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, srt.shape[0] - 1)
        cols = np.arange(n_steps)[:, None]
        a, b = srt[lo, cols], srt[hi, cols]
        out = a + (pos - lo) * (b - a)
    else:
        uniq = np.unique(raw)
        qs = np.quantile(cum, uniq, axis=0)  # (n_uniq, n_steps)
        pos = np.searchsorted(uniq, raw)
        out = qs[pos, np.arange(n_steps)[:, None]]
    return np.maximum.accumulate(out, axis=1)


def prob_below(cum_last: FloatArray, log_thresholds: FloatArray, level_map: LevelMap | None = None, step: int = -1,
               *, presorted: bool = False) -> FloatArray:
    """Calibrated P(cumulative log-return < log(K / spot)) at one step, per threshold.

    ``presorted``: ``cum_last`` is already in increasing order (skips the sort).
    """
    lm = level_map or IdentityLevelMap()
    x = np.asarray(cum_last, dtype=float)
    if not presorted:
        x = np.sort(x)
    raw = np.searchsorted(x, np.asarray(log_thresholds, dtype=float), side="left") / max(len(x), 1)
    return np.clip(lm.calibrated_prob(step, raw), 0.0, 1.0)


def n_blocks(n_paths: int) -> int:
    return math.ceil(int(n_paths) / BLOCK_PATHS)
