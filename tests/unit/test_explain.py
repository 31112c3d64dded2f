"""Explainer: the block a target depends on ranks first; seeded determinism; input errors."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.errors import InvalidInput
from aetheris_ray.explain import BLOCKS, METHOD, explain, feature_matrix
from aetheris_ray.features import MarketState

DESCRIPTORS = [f.removeprefix("log:") for feats in BLOCKS.values() for f in feats if f not in BLOCKS["mm_indices"]]


def synthetic_states(n: int, seed: int = 0) -> list[MarketState]:
    """States with independent random descriptors, MM indices and a macro level z-score."""
    rng = np.random.default_rng(seed)
    states = []
    for i in range(n):
        d = {k: float(rng.normal()) for k in DESCRIPTORS}
        for k in ("rv_short", "rv_long", "implied_vol"):
            d[k] = float(np.exp(rng.normal(-3, 0.3)))
        d["macro_spx_z"] = float(rng.normal())
        mm = {k: float(np.clip(rng.normal(), -3, 3)) for k in BLOCKS["mm_indices"]}
        states.append(MarketState("SYN", pd.Timestamp("2024-01-01") + pd.Timedelta(days=i), 1.0, np.zeros(5), 0.0, 0.01,
                                  "normal", np.zeros(17), descriptors=d, mm_indices=mm))  # fmt: skip
    return states


def column(states, name):
    X, names, _ = feature_matrix(states, ["macro_spx_z"])
    return X[:, names.index(name)]


@pytest.mark.parametrize(
    ("target_block", "features"),
    [
        ("volatility", ("log:rv_short", "vol_pct")),
        ("trend", ("trend_t30",)),
        ("drawdown", ("drawdown",)),
        ("mm_indices", ("gamma_squeeze", "basis_pressure")),
        ("derivatives", ("funding_pct",)),
        ("macro", ("macro_spx_z",)),
    ],
)
def test_a_target_depending_on_one_block_ranks_it_first(target_block, features):
    states = synthetic_states(251, seed=1)
    hist, current = states[:-1], states[-1]
    signal = sum(column(hist, f) for f in features)
    noise = np.random.default_rng(2).normal(0, 0.05, len(hist))
    targets = {"upside": 0.05 + 0.01 * signal + 0.001 * noise, "downside": 0.05 - 0.01 * signal + 0.001 * noise,
               "trend": 0.002 * noise}  # fmt: skip
    out = explain(hist, targets, current, np.random.default_rng(0))
    assert out["method"] == METHOD
    current_signal = sum(column([current], f)[0] - column(hist, f).mean() for f in features)
    for target, sign in (("upside", 1.0), ("downside", -1.0)):
        top = out[target][0]
        assert top["driver"] == target_block and top["importance"] > 0.5, out[target]
        assert top["direction"] == ("+" if sign * current_signal > 0 else "-")
        assert out["fit_r2"][target] > 0.9


def test_output_shape_and_determinism_by_seed():
    states = synthetic_states(120, seed=3)
    hist, current = states[:-1], states[-1]
    rng = np.random.default_rng(4)
    targets = {k: rng.normal(size=len(hist)) for k in ("upside", "downside", "trend")}
    a = explain(hist, targets, current, np.random.default_rng(7))
    b = explain(hist, targets, current, np.random.default_rng(7))
    assert a == b
    for target in ("upside", "downside", "trend"):
        assert len(a[target]) == 3 and len({e["driver"] for e in a[target]}) == 3
        assert all(0 <= e["importance"] <= 1 and e["direction"] in "+-" for e in a[target])
        assert [e["importance"] for e in a[target]] == sorted((e["importance"] for e in a[target]), reverse=True)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_missing_features_and_constant_columns_are_tolerated():
    states = synthetic_states(60, seed=5)
    for s in states[::2]:
        s.descriptors.pop("funding_pct")
        s.mm_indices["basis_pressure"] = None
    for s in states:
        s.descriptors["iv_pct"] = 0.5
    targets = {k: np.linspace(0, 1, 59) for k in ("upside", "downside", "trend")}
    out = explain(states[:-1], targets, states[-1], np.random.default_rng(0))
    assert all(np.isfinite(e["importance"]) for t in ("upside", "downside", "trend") for e in out[t])


def test_bad_inputs_raise_invalid_input():
    states = synthetic_states(30)
    ok = {k: np.zeros(29) for k in ("upside", "downside", "trend")}
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInput, match=r"states_hist: 10 past states, at least 20 needed"):
        explain(states[:10], {k: np.zeros(10) for k in ok}, states[-1], rng)
    with pytest.raises(InvalidInput, match=r"targets: expected a mapping with keys upside, downside, trend "
                                           r"\(one array of shape \(29,\) each\), got ndarray"):  # fmt: skip
        explain(states[:-1], np.zeros(29), states[-1], rng)
    with pytest.raises(InvalidInput, match=r"targets: missing trend; give arrays for upside, downside, trend"):
        explain(states[:-1], {"upside": ok["upside"], "downside": ok["downside"]}, states[-1], rng)
    with pytest.raises(InvalidInput, match=r"targets\['upside'\]: shape \(28,\), expected \(29,\)"):
        explain(states[:-1], {**ok, "upside": np.zeros(28)}, states[-1], rng)
    with pytest.raises(InvalidInput, match=r"targets\['trend'\]: 1 non-finite value"):
        explain(states[:-1], {**ok, "trend": np.r_[np.zeros(28), np.nan]}, states[-1], rng)
    with pytest.raises(InvalidInput, match=r"rng: expected numpy.random.Generator, got int"):
        explain(states[:-1], ok, states[-1], 7)


def test_fast_enough_for_250_states():
    states = synthetic_states(251)
    targets = {k: np.random.default_rng(1).normal(size=250) for k in ("upside", "downside", "trend")}
    explain(states[:-1], targets, states[-1], np.random.default_rng(0))
    t0 = time.perf_counter()
    for _ in range(5):
        explain(states[:-1], targets, states[-1], np.random.default_rng(0))
    assert (time.perf_counter() - t0) / 5 < 0.25  # budget 50 ms; slack for a shared machine


def test_on_real_btc_states(shared_data):
    import warnings

    from aetheris_ray.data.csv_connector import CsvSource
    from aetheris_ray.features import compute_states

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = CsvSource(shared_data).history("BTC-USD")
    states = compute_states(data, list(pd.date_range("2024-03-01", periods=201, freq="D")))
    hist, current = states[:-1], states[-1]
    vol = np.array([s.descriptors["rv_short"] for s in hist])
    trend = np.array([s.descriptors["trend_t30"] for s in hist])
    targets = {"upside": 2.5 * vol, "downside": 2.7 * vol, "trend": trend}
    out = explain(hist, targets, current, np.random.default_rng(0))
    assert out["trend"][0]["driver"] == "trend"
    assert "volatility" in {e["driver"] for e in out["upside"]}
