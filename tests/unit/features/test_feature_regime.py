"""Regime descriptors against loop references, and labels on synthetic regimes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from featkit import asset_data

from aetheris_ray.features import N_REGIME_FEATURES, REGIME_FEATURES, compute_state
from aetheris_ray.features import regime as rg


def test_realised_vol_matches_a_loop():
    ret = np.random.default_rng(0).normal(0, 0.02, 200)
    ret[0] = np.nan
    rv = rg.realised_vol(ret, 10)
    assert np.isnan(rv[0])
    for i in (1, 5, 9, 10, 150, 199):
        w = ret[max(1, i - 9) : i + 1]
        assert rv[i] == pytest.approx(np.sqrt(np.mean(w**2)), rel=1e-12)


@pytest.mark.parametrize("width", [1, 2, 3, 7, 64, 365, 1000])
def test_trailing_max_matches_a_loop(width):
    x = np.random.default_rng(width).normal(size=700)
    ref = np.array([x[max(0, i - width + 1) : i + 1].max() for i in range(x.size)])
    assert np.array_equal(rg.trailing_max(x, width), ref)


def test_drawdown_matches_a_loop():
    close = np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.05, 900)))
    dd = rg.drawdown(close, 365)
    ref = np.array([close[i] / close[max(0, i - 364) : i + 1].max() - 1 for i in range(close.size)])
    np.testing.assert_allclose(dd, ref, rtol=0, atol=1e-15)
    assert (dd <= 0).all() and (dd > -1).all()


def test_trend_tstat_matches_the_formula_and_handles_degenerate_rows(strict_warnings):
    w = np.random.default_rng(2).normal(0.001, 0.02, (3, 30))
    w[1] = 0.0
    w[2] = 0.004
    t = rg.trend_tstat(w)
    assert t[0] == pytest.approx(w[0].mean() / (w[0].std(ddof=1) / np.sqrt(30)), rel=1e-10)
    assert t[1] == 0.0 and t[2] == rg.CLIP


def test_vol_of_vol_is_scale_free(strict_warnings):
    rv = np.abs(np.random.default_rng(3).normal(0.02, 0.005, (1, 90)))
    assert rg.vol_of_vol(rv)[0] == pytest.approx(rg.vol_of_vol(rv * 1e-4)[0], rel=1e-9)
    assert rg.vol_of_vol(np.zeros((1, 90)))[0] == 0.0


def test_percentile_needs_enough_history():
    assert np.isnan(rg.percentile(np.full((1, 100), np.nan), np.array([1.0]))[0])
    assert rg.percentile(np.arange(20.0)[None], np.array([100.0]))[0] == pytest.approx(20.5 / 21)


def test_label_rule_boundaries():
    v = np.array([0.2499, 0.25, 0.7499, 0.75, 0.95, 0.95, np.nan])
    d = np.array([1.0, 1.0, 1.0, 0.5, 0.7999, 0.8, np.nan])
    labels = [rg.REGIME_LABELS[i] for i in rg.regime_labels(v, d)]
    assert labels == ["calm", "normal", "normal", "volatile", "volatile", "crisis", "normal"]


def test_vector_layout_is_documented_and_fixed():
    assert len(REGIME_FEATURES) == N_REGIME_FEATURES == 17
    assert len({name for name, _ in REGIME_FEATURES}) == N_REGIME_FEATURES


def stretches(spec: list[tuple[str, int]], seed: int = 0) -> np.ndarray:
    """Closes from consecutive stretches of (kind, days).

    ``calm``, ``normal``: driftless, daily vol 0.4% and 2%; ``volatile``: daily moves of 3% +- 6%
    (alternating), ending on an up move at a new high; ``crash``: vol 10%, drift -5%/day.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for kind, days in spec:
        if kind == "volatile":
            parts.append(0.06 * (-1.0) ** (days - 1 - np.arange(days)) + 0.03)
        else:
            vol, drift = {"calm": (0.004, 0.0), "normal": (0.02, 0.0), "crash": (0.1, -0.05)}[kind]
            parts.append(rng.normal(drift, vol, days))
    return 100 * np.exp(np.cumsum(np.concatenate(parts)))


# Each history puts the evaluated stretch in its own band of the trailing 3-year distribution
# of 10-day vol: calm below 25%, normal between 25% and 75%, volatile / crisis at the top.
LABEL_CASES = {
    "calm": [("normal", 600), ("volatile", 200), ("calm", 80)],
    "normal": [("calm", 350), ("volatile", 350), ("normal", 100)],
    "volatile": [("normal", 800), ("volatile", 30)],
    "crisis": [("normal", 800), ("crash", 30)],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1.0, 1e-4, 3e4])
@pytest.mark.parametrize("label", sorted(LABEL_CASES))
def test_labels_on_known_regimes_for_any_price_scale(label, scale, seed):
    close = stretches(LABEL_CASES[label], seed) * scale
    dates = pd.date_range("2016-01-01", periods=close.size, freq="D")
    state = compute_state(asset_data(close, dates), dates[-1])
    assert state.regime_label == label, state.descriptors
