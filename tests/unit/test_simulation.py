import numpy as np
import pytest

from aetheris_ray import simulation as sim


def gaussian(n, h, rng):
    return 0.02 * rng.standard_normal((n, h))


@pytest.mark.parametrize("n_paths", [100, 4096, 10_000, 50_001])
def test_shards_are_bitwise_equal(n_paths):
    whole = sim.simulate_blocks(gaussian, n_paths, 5, seed=11)
    assert whole.shape == (n_paths, 5)
    for n_shards in (1, 2, 3, 8):
        parts = [sim.simulate_blocks(gaussian, n_paths, 5, 11, blocks=r) for r in sim.shard_blocks(n_paths, n_shards)]
        merged = np.concatenate([p for p in parts if len(p)])
        assert np.array_equal(merged, whole)


def test_block_sizes_cover_paths():
    assert sum(sim.block_sizes(1_000_000)) == 1_000_000
    assert sim.block_sizes(100) == [100]
    assert sim.n_blocks(1_000_000) == len(sim.block_sizes(1_000_000))


def test_cone_monotone_and_matches_numpy():
    rng = np.random.default_rng(0)
    cum = sim.cumulative(gaussian(20_000, 7, rng))
    levels = [0.05, 0.5, 0.95]
    q = sim.cone(cum, levels)
    assert q.shape == (7, 3)
    assert np.all(np.diff(q, axis=1) >= 0)
    np.testing.assert_allclose(q, np.quantile(cum, levels, axis=0).T)


class Shift:
    """A level map that asks for wider raw levels (a deliberately simple calibrator)."""

    version = "test"

    def raw_levels(self, step, levels):
        return np.clip(0.5 + 1.2 * (np.asarray(levels) - 0.5), 0, 1)

    def calibrated_prob(self, step, p_raw):
        return np.clip(0.5 + (np.asarray(p_raw) - 0.5) / 1.2, 0, 1)


def test_cone_with_level_map_uses_raw_levels():
    rng = np.random.default_rng(1)
    cum = sim.cumulative(gaussian(20_000, 3, rng))
    q = sim.cone(cum, [0.1, 0.5, 0.9], Shift())
    np.testing.assert_allclose(q, np.quantile(cum, [0.02, 0.5, 0.98], axis=0).T)


def test_prob_below_matches_path_frequency():
    rng = np.random.default_rng(2)
    last = sim.cumulative(gaussian(10_000, 4, rng))[:, -1]
    ks = np.array([-0.05, 0.0, 0.03])
    p = sim.prob_below(last, ks)
    np.testing.assert_allclose(p, [(last < k).mean() for k in ks])


class PerStep:
    """A conformal map seen through `raw_levels` only (no cached `raw_level_grid`)."""

    def __init__(self, inner):
        self.inner, self.version = inner, inner.version

    def raw_levels(self, step, levels):
        return self.inner.raw_levels(step, levels)


def test_cone_shared_sort_and_cached_grid_are_bitwise_the_per_step_cone():
    from aetheris_ray.calibration import BUCKETS, GRID_CACHE_SIZE, KNOTS, ConformalLevelMap

    rng = np.random.default_rng(3)
    cum = sim.cumulative(gaussian(5_000, 20, rng))  # steps in 4 buckets, some between representative horizons
    maps = np.stack([np.clip(KNOTS + 0.08 * np.sin(np.pi * KNOTS) * (k - 2.5), 0, 1) for k in range(len(BUCKETS))])
    lm = ConformalLevelMap(maps, "t")
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    ref = sim.cone(cum, levels, PerStep(lm))
    np.testing.assert_array_equal(sim.cone(cum, levels, lm), ref)
    sorted_t = np.sort(cum.T, axis=1)
    np.testing.assert_array_equal(sim.cone_steps(sorted_t, levels, lm, sorted_rows=True), ref)
    np.testing.assert_array_equal(sim.cone(cum, levels, lm), ref)  # from the cache
    with pytest.raises(ValueError):
        lm.raw_level_grid(20, levels)[0, 0] = 0.5  # cached grids are read-only
    for n in range(1, GRID_CACHE_SIZE + 10):
        lm.raw_level_grid(n, levels)
    assert len(lm._grids) == GRID_CACHE_SIZE


def test_thresholds_from_presorted_last_step_equal_unsorted():
    rng = np.random.default_rng(4)
    last = sim.cumulative(gaussian(3_000, 2, rng))[:, -1]
    ks = np.array([-0.1, 0.0, 0.02])
    np.testing.assert_array_equal(sim.prob_below(np.sort(last), ks, presorted=True), sim.prob_below(last, ks))


def test_step_major_cumsum_is_bitwise_the_path_major_one():
    rng = np.random.default_rng(5)
    for n in (1, 7, sim.CUM_BLOCK_PATHS + 3):
        x = gaussian(n, 9, rng).astype(np.float32)
        got = sim.cumulative_steps(x)
        assert got.shape == (9, n) and got.dtype == np.float64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, sim.cumulative(x).T)


@pytest.mark.parametrize("n", [1, 2, 5, 1000])
def test_select_ranks_is_the_sorted_sample(n):
    rng = np.random.default_rng(n)
    x = np.round(rng.standard_normal(n), 1)  # ties included
    for ranks in (np.arange(n), np.array([0]), np.array([n - 1]), np.unique(rng.integers(0, n, 7))):
        row = x.copy()
        np.testing.assert_array_equal(sim.select_ranks(row, ranks), np.sort(x)[ranks])
        np.testing.assert_array_equal(np.sort(row), np.sort(x))  # reordered, same values


def test_cone_by_selection_above_the_sort_limit_is_bitwise_numpy():
    """Above SORT_MAX_PATHS the steps are not sorted: selection + numpy's own interpolation."""
    from aetheris_ray.calibration import BUCKETS, KNOTS, ConformalLevelMap

    rng = np.random.default_rng(6)
    n = sim.SORT_MAX_PATHS + 1001
    cum = sim.cumulative(gaussian(n, 4, rng))
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    np.testing.assert_array_equal(sim.cone(cum, levels), np.maximum.accumulate(np.quantile(cum, levels, axis=0).T,
                                                                               axis=1))
    maps = np.stack([np.clip(KNOTS + 0.05 * np.sin(np.pi * KNOTS) * (k - 2.5), 0, 1) for k in range(len(BUCKETS))])
    lm = ConformalLevelMap(maps, "t")
    raw = lm.raw_level_grid(4, levels)
    ref = np.stack([np.quantile(cum[:, s], raw[s]) for s in range(4)])
    np.testing.assert_array_equal(sim.cone(cum, levels, lm), np.maximum.accumulate(ref, axis=1))
    cum_t = sim.cumulative_steps(gaussian(n, 4, np.random.default_rng(6)))
    cum_t[-1].sort()
    np.testing.assert_array_equal(sim.cone_steps(cum_t, levels, lm, sorted_rows=[False, False, False, True]),
                                  sim.cone(cum, levels, lm))


@pytest.mark.parametrize("n_paths", [100, 4096, 10_000])
def test_blocks_cast_into_one_array_are_bitwise_the_concatenated_cast(n_paths):
    ref = sim.simulate_blocks(gaussian, n_paths, 5, seed=11).astype(np.float32)
    got = sim.simulate_blocks(gaussian, n_paths, 5, 11, dtype=np.float32)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref)
    parts = [sim.simulate_blocks(gaussian, n_paths, 5, 11, blocks=r, dtype=np.float32)
             for r in sim.shard_blocks(n_paths, 3)]
    np.testing.assert_array_equal(np.concatenate(parts), ref)
    assert sim.simulate_blocks(gaussian, n_paths, 5, 11, blocks=[], dtype=np.float32).shape == (0, 5)
