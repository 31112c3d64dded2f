"""Market-maker indices: formulas, bounds, absence, and direction of response to spikes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from featkit import asset_data, random_walk

from aetheris_ray.features import compute_state
from aetheris_ray.features import mm_indices as mm

N = 900
DATES = pd.date_range("2020-01-01", periods=N, freq="D")
SIDE = DATES[300:]


def side_series(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = SIDE.size
    return {
        "implied_vol": 50 * np.exp(0.05 * rng.standard_normal(k)),
        "funding": rng.normal(1e-4, 1e-4, k),
        "basis": rng.normal(0.0, 5e-4, k),
    }


def state_with(values: dict[str, np.ndarray], close: np.ndarray | None = None):
    close = random_walk(N, 0.02, 7) if close is None else close
    data = asset_data(close, DATES, {name: (SIDE, v) for name, v in values.items()})
    return compute_state(data, DATES[-1])


def test_indices_bounded_and_complete():
    state = state_with(side_series())
    assert set(state.mm_indices) == set(mm.INDEX_COMPONENTS)
    assert all(v is not None and -3 <= v <= 3 for v in state.mm_indices.values())
    assert "implied_vol" not in state.missing and "options_chain" in state.missing


def test_gamma_components_follow_the_documented_formula():
    values = side_series()
    state = state_with(values)
    d = state.descriptors
    iv_daily = d["implied_vol"] / 100 / np.sqrt(365)
    assert d["implied_vol"] == values["implied_vol"][-2]  # dated D-1, known at D+0 00:00
    assert d["iv_rv_spread"] == pytest.approx(np.log(iv_daily / d["rv_short"]), rel=1e-12)
    assert d["iv_change_5d"] == pytest.approx(np.log(values["implied_vol"][-2] / values["implied_vol"][-7]), rel=1e-12)
    assert d["funding_mean_14d"] == pytest.approx(values["funding"][-15:-1].mean(), rel=1e-12)
    assert d["basis_change_5d"] == pytest.approx(values["basis"][-2] - values["basis"][-7], rel=1e-9)


@pytest.mark.parametrize(
    ("series", "index"),
    [("implied_vol", "gamma_squeeze"), ("funding", "inventory_unwind"), ("basis", "basis_pressure")],
)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_each_index_moves_with_a_spike_in_its_input(series, index, sign):
    values = side_series()
    calm = state_with(values).mm_indices[index]
    spiked = {k: v.copy() for k, v in values.items()}
    x = spiked[series]
    step = 4 * np.std(x)
    x[-2] = x[-2] * (1.5 if sign > 0 else 0.6) if series == "implied_vol" else x[-2] + sign * step
    moved = state_with(spiked).mm_indices[index]
    assert sign * (moved - calm) > 0.5, (calm, moved)
    others = {k: v for k, v in state_with(spiked).mm_indices.items() if k != index}
    assert others == {k: v for k, v in state_with(values).mm_indices.items() if k != index}


def test_huge_spike_is_clipped_at_three():
    values = side_series()
    values["funding"][-2] = 0.05
    assert state_with(values).mm_indices["inventory_unwind"] == 3.0


def test_absent_inputs_give_none_and_are_reported():
    state = state_with({"funding": side_series()["funding"]})
    assert state.mm_indices["gamma_squeeze"] is None and state.mm_indices["basis_pressure"] is None
    assert state.mm_indices["inventory_unwind"] is not None
    assert {"implied_vol", "basis"} <= set(state.missing) and "funding" not in state.missing
    assert "iv_pct" not in state.descriptors and state.regime_vector[7] == 0.0


def test_short_history_gives_none_and_reports_it():
    values = side_series()
    short = {"implied_vol": np.full(SIDE.size, np.nan)}
    short["implied_vol"][-10:] = values["implied_vol"][-10:]
    keep = ~np.isnan(short["implied_vol"])
    data = asset_data(random_walk(N), DATES, {"implied_vol": (SIDE[keep], short["implied_vol"][keep])})
    state = compute_state(data, DATES[-1])
    assert state.mm_indices["gamma_squeeze"] is None
    assert "implied_vol_history" in state.missing and "implied_vol" not in state.missing
    assert state.descriptors["implied_vol"] == values["implied_vol"][-2]


def test_index_combination_rule():
    z = {k: np.array([1.0, np.nan, 5.0]) for k in ("g1", "u1", "b1")}
    z.update({k: np.array([1.0, np.nan, np.nan]) for k in ("g2", "u2", "b2")})
    out = mm.indices(z)
    assert out["gamma_squeeze"][0] == pytest.approx(2 / np.sqrt(2))
    assert np.isnan(out["gamma_squeeze"][1]) and out["gamma_squeeze"][2] == 3.0


def test_real_btc_indices_are_present_after_2024_07(btc):
    state = compute_state(btc, "2024-12-09")
    assert all(v is not None and -3 <= v <= 3 for v in state.mm_indices.values())
    assert 0.0 < state.descriptors["funding"] < 0.01 and abs(state.descriptors["basis"]) < 0.05
    assert 20 < state.descriptors["implied_vol"] < 200
    early = compute_state(btc, "2021-06-01")
    assert early.mm_indices["gamma_squeeze"] is None and early.mm_indices["inventory_unwind"] is not None
