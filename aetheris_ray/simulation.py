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


def simulate_blocks(sample: SampleFn, n_paths: int, horizon: int, seed: int, blocks: Sequence[int] | None = None,
                    *, dtype: np.dtype | type | None = None) -> FloatArray:
    """Draw the paths of the given blocks (all blocks when None), concatenated in block order.

    ``dtype``: each block is written, as it is drawn, into one array of that dtype
    (the cast happens while the block is still in cache; no per-block copy and no
    concatenation); bitwise what ``sample(...).astype(dtype)`` blocks concatenated give.

    Returns
    -------
    ndarray, shape (n_selected_paths, horizon)
        Daily log-returns.
    """
    sizes = block_sizes(n_paths)
    rngs = block_rngs(seed, len(sizes))
    idx = list(range(len(sizes)) if blocks is None else blocks)
    if dtype is not None:
        out = np.empty((sum(sizes[i] for i in idx), horizon), dtype=dtype)
        start = 0
        for i in idx:
            out[start:start + sizes[i]] = sample(sizes[i], horizon, rngs[i])
            start += sizes[i]
        return out
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


#: Up to this many paths every step is sorted (one sort serves the cone, the dense CDF
#: grid and the thresholds); above it only the last step is sorted and the other steps
#: get their few order statistics by selection (`select_ranks`), about half a sort.
SORT_MAX_PATHS = 65_536

#: Paths per block of `cumulative_steps`: 8,192 x 14 float32 in and float64 out is about
#: 1.4 MB, the size of a core's L2 cache (a whole-array transpose or a cumsum along the
#: short axis runs from memory: 100 ms for 1,000,000 x 14 against 41 ms blocked).
CUM_BLOCK_PATHS = 8_192


def cumulative(logret: FloatArray) -> FloatArray:
    """Cumulative log-returns along the last axis (float64 accumulation), shape as ``logret``."""
    return np.cumsum(logret, axis=-1, dtype=np.float64)


def cumulative_steps(logret: FloatArray) -> FloatArray:
    """Cumulative log-returns, step-major: shape (horizon, n_paths), float64, C-contiguous.

    Bitwise ``cumulative(logret).T`` (the same float64 additions in the same order),
    computed in blocks of `CUM_BLOCK_PATHS` paths so that each block's transpose and
    sums stay in cache; each step is then one contiguous row for sorting and selection.

    >>> x = np.arange(6, dtype=np.float32).reshape(3, 2)
    >>> cumulative_steps(x).tolist()
    [[0.0, 2.0, 4.0], [1.0, 5.0, 9.0]]
    """
    n, h = logret.shape
    out = np.empty((h, n))
    for i in range(0, n, CUM_BLOCK_PATHS):
        blk = np.ascontiguousarray(logret[i:i + CUM_BLOCK_PATHS].T)
        o = out[:, i:i + CUM_BLOCK_PATHS]
        o[0] = blk[0]
        for t in range(1, h):
            np.add(o[t - 1], blk[t], out=o[t])
    return out


def select_ranks(row: FloatArray, ranks: FloatArray) -> FloatArray:
    """``np.sort(row)[ranks]`` without sorting: ``row`` is partitioned in place at each rank.

    Divide and conquer with single-rank partitions (``np.partition`` with one kth is
    about 5x cheaper than with 14); a rank at the edge of its segment is the segment's
    minimum or maximum (one pass).  ``ranks`` must be sorted and unique.

    >>> select_ranks(np.array([5.0, 1.0, 4.0, 2.0, 3.0]), np.array([0, 2, 3])).tolist()
    [1.0, 3.0, 4.0]
    """
    ranks = np.asarray(ranks, dtype=np.intp)
    out = np.empty(ranks.size, dtype=row.dtype)
    todo = [(0, row.size, 0, ranks.size)]  # (segment start, stop, first rank, last rank + 1)
    while todo:
        lo, hi, r0, r1 = todo.pop()
        if r0 >= r1:
            continue
        seg = row[lo:hi]
        if ranks[r0] == lo:
            i = int(np.argmin(seg))
            seg[0], seg[i] = seg[i], seg[0]
            out[r0] = row[lo]
            todo.append((lo + 1, hi, r0 + 1, r1))
        elif ranks[r1 - 1] == hi - 1:
            i = int(np.argmax(seg))
            seg[-1], seg[i] = seg[i], seg[-1]
            out[r1 - 1] = row[hi - 1]
            todo.append((lo, hi - 1, r0, r1 - 1))
        else:
            m = (r0 + r1) // 2
            k = int(ranks[m])
            seg.partition(k - lo)
            out[m] = row[k]
            todo.append((lo, k, r0, m))
            todo.append((k + 1, hi, m + 1, r1))
    return out


def raw_grid(level_map: LevelMap | None, n_steps: int, levels: Sequence[float]) -> FloatArray:
    """Raw-sample levels per step for the calibrated ``levels``: shape (n_steps, n_levels), in [0, 1]."""
    lm = level_map or IdentityLevelMap()
    lv = np.asarray(levels, dtype=float)
    if isinstance(lm, IdentityLevelMap):
        return np.broadcast_to(lv, (n_steps, lv.size))
    grid = getattr(lm, "raw_level_grid", None)
    if grid is not None:
        return grid(n_steps, lv)
    return np.stack([np.clip(lm.raw_levels(s, lv), 0.0, 1.0) for s in range(n_steps)])


def _row_quantiles(row: FloatArray, q: FloatArray, is_sorted: bool, numpy_lerp: bool) -> FloatArray:
    """Linear-interpolation quantiles of one step's values at levels ``q`` (numpy's default method).

    ``numpy_lerp`` reproduces ``np.quantile`` bit for bit (its interpolation from the
    upper neighbour when the weight is >= 0.5); otherwise ``a + g (b - a)`` (the cone's
    own formula for the calibrated levels of a sorted sample).  The two differ in the
    last bit at most; each path keeps the one it has always used.
    """
    n = row.size
    pos = q * (n - 1)
    lo = np.floor(pos)
    g = pos - lo
    lo = lo.astype(np.intp)
    if numpy_lerp:
        top = pos >= n - 1
        lo[top] = n - 1
        hi = np.where(top, n - 1, lo + 1)
    else:
        hi = np.minimum(lo + 1, n - 1)
    if is_sorted:
        a, b = row[lo], row[hi]
    else:
        ranks = np.unique(np.concatenate([lo, hi]))
        vals = select_ranks(row, ranks)
        a, b = vals[np.searchsorted(ranks, lo)], vals[np.searchsorted(ranks, hi)]
    d = b - a
    if not numpy_lerp:
        return a + g * d
    out = a + d * g
    np.subtract(b, d * (1 - g), out=out, where=g >= 0.5)
    return out


def cone_steps(cum_t: FloatArray, levels: Sequence[float], level_map: LevelMap | None = None, *,
               sorted_rows: bool | Sequence[bool] = False) -> FloatArray:
    """Calibrated quantiles per step from step-major cumulative log-returns.

    Parameters
    ----------
    cum_t : ndarray, shape (n_steps, n_paths)
        Cumulative log-returns, one row per step (`cumulative_steps`).  Rows not
        marked sorted are reordered in place (their values are unchanged).
    levels : sequence of float, increasing, in (0, 1)
    sorted_rows : bool or sequence of bool
        Which rows are already in increasing order (all, none, or per row).

    Returns
    -------
    ndarray, shape (n_steps, n_levels)
        Log-return quantiles; non-decreasing along the level axis.  Bitwise the
        same as ``np.quantile`` at the raw levels with the identity map or above
        `SORT_MAX_PATHS` paths, and as the sorted-sample interpolation otherwise.
    """
    lm = level_map or IdentityLevelMap()
    n_steps, n = cum_t.shape
    raw = raw_grid(lm, n_steps, levels)
    numpy_lerp = isinstance(lm, IdentityLevelMap) or n > SORT_MAX_PATHS
    flags = np.broadcast_to(np.asarray(sorted_rows, dtype=bool), (n_steps,))
    out = np.stack([_row_quantiles(cum_t[s], np.asarray(raw[s], dtype=float), bool(flags[s]), numpy_lerp)
                    for s in range(n_steps)])
    return np.maximum.accumulate(out, axis=1)


def cone(cum: FloatArray, levels: Sequence[float], level_map: LevelMap | None = None) -> FloatArray:
    """`cone_steps` on path-major cumulative log-returns ``cum``, shape (n_paths, n_steps) (not modified).

    Returns
    -------
    ndarray, shape (n_steps, n_levels)
    """
    return cone_steps(np.array(cum.T, dtype=np.float64, order="C"), levels, level_map)


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
