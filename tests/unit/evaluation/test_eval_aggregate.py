"""Aggregation: exact, order-free merges (shards merge to the single-pass figures bitwise)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from aetheris_ray.errors import InvalidInput
from aetheris_ray.evaluation.aggregate import Mean, MetricSet, Sum, merge_all, metric_names
from aetheris_ray.evaluation.scores import pinball_quantile

LEVELS = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)


def _shards(x: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    cuts = np.sort(rng.choice(np.arange(1, x.size), size=n - 1, replace=False))
    return np.split(x, cuts)


def test_sum_is_exact_and_order_free():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000) * 10.0 ** rng.integers(-12, 12, size=5000)
    single = Sum().step(x).get()
    assert single == math.fsum(x)  # correctly rounded exact sum
    for n in (2, 3, 7):
        parts = [Sum().step(p) for p in _shards(rng.permutation(x), rng, n)]
        merged = parts[0]
        for p in parts[1:]:
            merged = merged.merge(p)
        assert merged.get() == single


def test_mean_exact():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=1001)
    m = Mean().step(x[:400]).merge(Mean().step(x[400:]))
    exact = sum(Fraction(float(v)) for v in x) / x.size
    assert m.get() == float(exact) and m.count == 1001
    assert math.isnan(Mean().get())


def test_step_refuses_non_finite():
    with pytest.raises(InvalidInput, match="1 non-finite value"):
        Mean().step([1.0, np.nan])
    with pytest.raises(InvalidInput, match="non-finite"):
        Sum().step(np.inf)


def test_metric_names():
    assert metric_names(LEVELS) == [
        "ql", "coverage[0.50]", "coverage[0.80]", "coverage[0.90]", "width[0.50]", "width[0.80]", "width[0.90]",
        "hit[0.05]", "hit[0.10]", "hit[0.25]", "hit[0.50]", "hit[0.75]", "hit[0.90]", "hit[0.95]",
        "tail_low[0.05]", "tail_high[0.95]",
    ]


def _forecasts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sig = rng.uniform(0.01, 0.05, size=n)
    from scipy import stats

    q = sig[:, None] * stats.norm.ppf(LEVELS)[None, :]
    y = sig * rng.standard_t(4, size=n)
    return y, q


def test_metric_set_values_by_hand():
    y, q = _forecasts(500, 2)
    got = MetricSet(LEVELS).step(y, q).get()
    assert got["n"] == 500
    assert got["ql"] == pytest.approx(pinball_quantile(y, q, LEVELS).mean(), rel=1e-13)
    assert got["coverage[0.80]"] == np.mean((q[:, 1] <= y) & (y <= q[:, 5]))
    assert got["coverage[0.50]"] == np.mean((q[:, 2] <= y) & (y <= q[:, 4]))
    assert got["width[0.80]"] == pytest.approx(np.mean(q[:, 5] - q[:, 1]), rel=1e-13)
    assert got["hit[0.25]"] == np.mean(y < q[:, 2])
    assert got["tail_low[0.05]"] == np.mean(y < q[:, 0])
    assert got["tail_high[0.95]"] == np.mean(y > q[:, 6])
    assert got["coverage[0.90]"] == pytest.approx(1 - got["tail_low[0.05]"] - got["tail_high[0.95]"], abs=1e-12)


def test_metric_set_merge_equals_single_pass():
    y, q = _forecasts(3000, 3)
    single = MetricSet(LEVELS).step(y, q).get()
    rng = np.random.default_rng(4)
    perm = rng.permutation(y.size)
    y2, q2 = y[perm], q[perm]
    for n in (2, 5):
        cuts = np.sort(rng.choice(np.arange(1, y.size), size=n - 1, replace=False))
        parts = [MetricSet(LEVELS).step(a, b) for a, b in zip(np.split(y2, cuts), np.split(q2, cuts))]
        assert merge_all(reversed(parts), LEVELS).get() == single  # bitwise, whatever the shards and order


def test_merge_needs_same_levels():
    with pytest.raises(InvalidInput, match="cannot merge metrics over levels"):
        MetricSet(LEVELS).merge(MetricSet((0.1, 0.5, 0.9)))


def test_levels_without_intervals():
    ms = MetricSet((0.2, 0.5)).step(np.array([0.0]), np.array([[-1.0, 1.0]]))
    assert set(ms.get()) == {"ql", "hit[0.20]", "hit[0.50]", "tail_low[0.20]", "tail_high[0.50]", "n"}
