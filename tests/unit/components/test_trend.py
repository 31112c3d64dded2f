"""Trend components: zero drift, and the shrunk AR / exponential-smoothing ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.components import Context, build_spec
from aetheris_ray.components.trend import MAX_DRIFT_STEPS, ArEsTrend, FittedArEs
from aetheris_ray.errors import InvalidInput


def _loop_ar_ols(r, t, p, w):
    """AR(p) with intercept fitted by least squares on targets r[t-w+1..t] (zero before the series)."""
    x = np.concatenate([np.zeros(p), r])
    rows, ys = [], []
    for s in range(max(0, t - w + 1), t + 1):
        rows.append([1.0] + [x[s + p - i] for i in range(1, p + 1)])
        ys.append(r[s])
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    return coef


def test_ar_experts_match_loop_least_squares(returns):
    spec = ArEsTrend(ar_orders=(2,), es_alphas=(), window=120, eval_days=30)
    ctx = Context.from_returns(returns[:400], lookback=400)
    f, ar, names = FittedArEs(spec=spec, params={}).experts(ctx)
    coef = _loop_ar_ols(returns[:400], 399, 2, 120)
    np.testing.assert_allclose(ar[0, 0], coef, rtol=1e-4, atol=1e-9)
    assert names == ["zero", "mean", "ar2"]


def test_drift_is_shrunk_and_capped(returns):
    trend = ArEsTrend().fit(returns)
    ctx = Context.from_returns(returns + 0.01)  # a strong persistent drift
    cond = trend.condition(ctx)
    d = cond["drift"][0]
    sigma = np.sqrt(np.mean(returns[-60:] ** 2))
    assert d.shape == (MAX_DRIFT_STEPS,)
    assert np.all(d > 0) and np.all(d <= ArEsTrend().max_sigma * 3 * sigma)
    np.testing.assert_allclose(cond["weights"].sum(axis=1), 1.0)
    none = ArEsTrend(shrink=0.0).fit(returns).condition(ctx)["drift"]
    assert np.all(none == 0)


def test_zero_trend_is_zero(state):
    x = build_spec("trend", "zero").fit(state.returns).sample(state, 10, 5, np.random.default_rng(0))
    assert np.all(x == 0)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(InvalidInput, match=r"shrink=2 must be in \[0, 1\]"):
        ArEsTrend(shrink=2)
    with pytest.raises(InvalidInput, match="AR orders are whole numbers"):
        build_spec("trend", "ar_es", ar_orders=[0])
