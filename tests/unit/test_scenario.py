"""Scenario overrides: whitelist and range errors, consistent recomputation of the features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.data.schema import AssetData, SeriesInfo, bar_ts_from_dates, series_ts_from_dates
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features import REGIME_FEATURES, MarketState, compute_state
from aetheris_ray.scenario import SCENARIO_RANGES, apply_scenario, validate_overrides, vol_multiplier

N = 900
DATES = pd.date_range("2020-01-01", periods=N, freq="D")
VEC = {name: i for i, (name, _) in enumerate(REGIME_FEATURES)}


def make_state(with_side: bool = True) -> MarketState:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, N)))
    bars = pd.DataFrame({"ts": bar_ts_from_dates(DATES), "open": close, "high": close, "low": close, "close": close,
                         "volume": np.nan})  # fmt: skip
    series, info = {}, {}
    if with_side:
        side = DATES[300:]
        values = {"implied_vol": 50 * np.exp(0.05 * rng.standard_normal(side.size)),
                  "funding": rng.normal(1e-4, 1e-4, side.size), "basis": rng.normal(0, 5e-4, side.size)}  # fmt: skip
        units = {"implied_vol": "percent/year", "funding": "fraction/day", "basis": "fraction of spot"}
        for name, v in values.items():
            series[name] = pd.DataFrame({"ts": series_ts_from_dates(side), "value": v})
            info[name] = SeriesInfo(name, units[name], "1D")
    return compute_state(AssetData("TEST-USD", {"1D": bars}, series, info), DATES[-1])


@pytest.fixture(scope="module")
def state() -> MarketState:
    return make_state()


def test_unknown_key_names_it_and_lists_the_whitelist(state):
    with pytest.raises(InvalidInput, match=r"scenario key 'vix' is not supported; allowed keys: iv_level \[5, 300\], "
                                           r"skew \[-1, 1\], .*rv_shock \[0\.2, 5\]"):  # fmt: skip
        apply_scenario(state, {"iv_level": 60, "vix": 30})


@pytest.mark.parametrize("key", sorted(SCENARIO_RANGES))
def test_out_of_range_names_key_value_and_range(key, state):
    lo, hi, _ = SCENARIO_RANGES[key]
    for bad in (lo - abs(lo) * 0.01 - 1e-6, hi + abs(hi) * 0.01 + 1e-6):
        with pytest.raises(InvalidInput, match=rf"scenario {key}={bad!r} is outside the range \[{lo:g}, {hi:g}\]"):
            apply_scenario(state, {key: bad})
    assert apply_scenario(state, {key: lo}).overrides[key] == lo  # bounds are allowed
    assert apply_scenario(state, {key: hi}).overrides[key] == hi


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_rejected(value, state):
    with pytest.raises(InvalidInput, match=r"scenario iv_level=.* is not finite; give a number in \[5, 300\]"):
        apply_scenario(state, {"iv_level": value})


@pytest.mark.parametrize("value", ["80", None, True, [80]])
def test_non_numbers_are_rejected(value, state):
    with pytest.raises(InvalidInput, match=r"scenario iv_level=.* is not a number; give a number in \[5, 300\]"):
        apply_scenario(state, {"iv_level": value})


def test_overrides_must_be_a_mapping(state):
    with pytest.raises(InvalidInput, match=r"scenario: expected a mapping of key -> number, got list"):
        validate_overrides([("iv_level", 80)])


def test_a_state_without_context_is_refused():
    bare = MarketState("X", pd.Timestamp("2024-01-01"), 1.0, np.zeros(3), 0.0, 0.01, "normal", np.zeros(17))
    with pytest.raises(InvalidInput, match=r"state: no feature context"):
        apply_scenario(bare, {"rv_shock": 2})


def test_no_override_reproduces_the_state_bitwise(state):
    same = apply_scenario(state, {})
    assert same.descriptors == state.descriptors and same.mm_indices == state.mm_indices
    assert np.array_equal(same.regime_vector, state.regime_vector)
    assert (same.regime_label, same.sigma, same.missing) == (state.regime_label, state.sigma, state.missing)
    assert not same.conditional


def test_overriding_inputs_with_their_own_values_changes_only_the_conditional_flag(state):
    d = state.descriptors
    same = apply_scenario(state, {"iv_level": d["implied_vol"], "funding_rate": d["funding"], "basis": d["basis"]})
    assert same.mm_indices == state.mm_indices and np.array_equal(same.regime_vector, state.regime_vector)
    assert same.conditional and same.overrides["iv_level"] == d["implied_vol"]


def test_iv_level_drives_iv_descriptors_and_gamma(state):
    up = apply_scenario(state, {"iv_level": 150})
    assert up.descriptors["implied_vol"] == 150.0 and up.descriptors["iv_pct"] > state.descriptors["iv_pct"]
    assert up.descriptors["iv_rv_spread"] > state.descriptors["iv_rv_spread"]
    assert up.mm_indices["gamma_squeeze"] > state.mm_indices["gamma_squeeze"]
    assert up.mm_indices["inventory_unwind"] == state.mm_indices["inventory_unwind"]
    assert up.regime_vector[VEC["gamma_squeeze"]] == up.mm_indices["gamma_squeeze"]
    assert up.conditional and not state.conditional and state.descriptors["implied_vol"] != 150.0


def test_funding_and_basis_drive_their_indices(state):
    f = apply_scenario(state, {"funding_rate": 0.003})
    assert f.descriptors["funding"] == 0.003 and f.mm_indices["inventory_unwind"] > state.mm_indices["inventory_unwind"]
    b = apply_scenario(state, {"basis": -0.05})
    assert b.descriptors["basis"] == -0.05 and b.mm_indices["basis_pressure"] < state.mm_indices["basis_pressure"]
    assert b.regime_vector[VEC["basis_pct_z"]] < 0


def test_direct_index_overrides_and_skew(state):
    s = apply_scenario(state, {"gamma_squeeze": -2.5, "inventory_unwind": 1.5, "skew": -0.4})
    assert s.mm_indices["gamma_squeeze"] == -2.5 and s.mm_indices["inventory_unwind"] == 1.5
    assert s.regime_vector[VEC["gamma_squeeze"]] == -2.5 and s.regime_vector[VEC["skew"]] == -0.4
    assert s.descriptors["skew"] == -0.4 and "skew" not in state.descriptors
    # a direct index override wins over the one recomputed from an input override
    both = apply_scenario(state, {"iv_level": 200, "gamma_squeeze": 0.0})
    assert both.mm_indices["gamma_squeeze"] == 0.0 and both.descriptors["implied_vol"] == 200.0


def test_rv_shock_scales_vol_and_reclassifies(state):
    s = apply_scenario(state, {"rv_shock": 4.0})
    assert s.descriptors["rv_short"] == pytest.approx(4 * state.descriptors["rv_short"])
    assert s.descriptors["rv_long"] == pytest.approx(4 * state.descriptors["rv_long"])
    assert s.sigma == pytest.approx(4 * state.sigma) and vol_multiplier(s) == 4.0 and vol_multiplier(state) == 1.0
    assert s.descriptors["vol_ratio"] == pytest.approx(state.descriptors["vol_ratio"])
    assert s.descriptors["vol_pct"] > 0.95 and s.regime_label in ("volatile", "crisis")
    assert s.descriptors["iv_rv_spread"] == pytest.approx(state.descriptors["iv_rv_spread"] - np.log(4))
    assert s.mm_indices["gamma_squeeze"] < state.mm_indices["gamma_squeeze"]
    assert np.array_equal(s.returns, state.returns)  # observed data is never rewritten
    calm = apply_scenario(state, {"rv_shock": 0.2})
    assert calm.regime_label == "calm"


def test_overrides_accumulate_like_one_merged_scenario(state):
    two = apply_scenario(apply_scenario(state, {"iv_level": 90, "rv_shock": 2}), {"rv_shock": 3, "basis": 0.01})
    one = apply_scenario(state, {"iv_level": 90, "rv_shock": 3, "basis": 0.01})
    assert two.overrides == one.overrides == {"iv_level": 90.0, "rv_shock": 3.0, "basis": 0.01}
    assert two.descriptors == one.descriptors and two.mm_indices == one.mm_indices and two.sigma == one.sigma


def test_input_without_history_uses_the_prior_and_stays_reported():
    bare = make_state(with_side=False)
    assert bare.mm_indices["gamma_squeeze"] is None and "implied_vol" in bare.missing
    s = apply_scenario(bare, {"iv_level": 120, "funding_rate": 0.002})
    assert s.mm_indices["gamma_squeeze"] is not None and -3 <= s.mm_indices["gamma_squeeze"] <= 3
    assert s.mm_indices["inventory_unwind"] == 3.0  # (0.002 - 0.0003) / 0.0005 > 3, clipped
    assert s.mm_indices["basis_pressure"] is None
    assert {"implied_vol_history", "funding_history", "basis"} <= set(s.missing) and "implied_vol" not in s.missing
    assert "iv_pct" not in s.descriptors and np.isfinite(s.regime_vector).all()
