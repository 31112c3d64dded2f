"""Scenario overrides: whitelist and range errors, consistent recomputation of the features, and the
cone moving by the estimated sensitivities (`aetheris_ray.sensitivity`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.calibration import CalibrationConfig
from aetheris_ray.contract import ForecastRequest
from aetheris_ray.data.schema import AssetData, SeriesInfo, bar_ts_from_dates, series_ts_from_dates
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.engine import forecast, prepare
from aetheris_ray.model import EngineConfig
from aetheris_ray.state_cache import clear_caches
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features import REGIME_FEATURES, MarketState, compute_state
from aetheris_ray.scenario import (
    MULTIPLIER_RANGE,
    SCENARIO_RANGES,
    apply_scenario,
    scenario_effect,
    validate_overrides,
    vol_multiplier,
)
from aetheris_ray.sensitivity import CHANNELS, LEAD_BLOCKS, ChannelFit, Sensitivities, estimate

N = 900
DATES = pd.date_range("2020-01-01", periods=N, freq="D")
VEC = {name: i for i, (name, _) in enumerate(REGIME_FEATURES)}


def make_state(with_side: bool = True) -> MarketState:
    return compute_state(make_data(with_side), DATES[-1])


def make_data(with_side: bool = True) -> AssetData:
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
    return AssetData("TEST-USD", {"1D": bars}, series, info)


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


# -- the scenario's effect on the cone ------------------------------------------------------------


@pytest.fixture(scope="module")
def sens():
    return estimate(make_data(), DATES[-1])


def fixed_sens(beta_iv: float, beta_up: float = 0.1, beta_down: float = 0.05) -> Sensitivities:
    """Sensitivities with the same beta in every lead block (the arithmetic of the effect, isolated)."""
    k = len(LEAD_BLOCKS)

    def fit(name: str, betas: list[float]) -> ChannelFit:
        b = np.tile(betas, (k, 1))
        rng = np.tile([[-10.0, 10.0]], (len(betas), 1))
        return ChannelFit(CHANNELS[name], b, b * 0 + 0.1, b, b * 0 + 0.1, np.full(k, 500), rng)

    return Sensitivities("TEST-USD", DATES[-1], {"implied_vol": fit("implied_vol", [beta_iv]),
                                                 "inventory": fit("inventory", [beta_up, beta_down])})


def test_the_effect_is_beta_times_the_channel_move(state, sens):
    up = apply_scenario(state, {"iv_level": 150})
    eff = scenario_effect(state, up, sens)
    beta = sens.fits["implied_vol"].beta[:, 0]
    np.testing.assert_allclose(eff.log_mult, beta * np.log(150 / state.descriptors["implied_vol"]), rtol=1e-12)
    assert eff.channels["implied_vol"]["from"] == state.descriptors["implied_vol"]
    assert eff.channels["implied_vol"]["to"] == 150.0 and eff.channels["implied_vol"]["keys"] == ["iv_level"]
    assert eff.keys == {"iv_level": {"channel": "implied_vol", "source": sens.fits["implied_vol"].source}}
    f = apply_scenario(state, {"funding_rate": 0.003})
    eff = scenario_effect(state, f, sens)
    i0, i1 = state.mm_indices["inventory_unwind"], f.mm_indices["inventory_unwind"]
    assert i1 == 3.0 and eff.channels["inventory"]["from"] == i0 and eff.channels["inventory"]["to"] == 3.0
    b = sens.fits["inventory"].beta
    move = np.array([max(i1, 0) - max(i0, 0), max(-i1, 0) - max(-i0, 0)])
    np.testing.assert_allclose(eff.log_mult, b @ move, rtol=1e-12)


@pytest.mark.parametrize("key,value,sign", [("iv_level", 150, 1), ("iv_level", 20, -1), ("gamma_squeeze", 2.5, 1),
                                            ("gamma_squeeze", -2.5, -1), ("funding_rate", 0.004, 1),
                                            ("inventory_unwind", 3.0, 1), ("inventory_unwind", -3.0, 1)])
def test_each_override_moves_the_volatility_in_its_documented_direction(state, key, value, sign):
    """Documented directions with positive sensitivities: implied vol and gamma up -> wider; crowding on
    either side (the inventory index away from 0) -> wider."""
    eff = scenario_effect(state, apply_scenario(state, {key: value}), fixed_sens(0.6))
    assert np.all(np.sign(eff.log_mult) == sign), eff.log_mult
    scale = eff.step_scale(90)
    assert scale.shape == (90,) and np.all(np.sign(np.log(scale)) == sign)


def test_overrides_equal_to_the_current_values_leave_the_cone_as_it_is(state, sens):
    d, m = state.descriptors, state.mm_indices
    same = {"iv_level": d["implied_vol"], "funding_rate": d["funding"], "gamma_squeeze": m["gamma_squeeze"],
            "inventory_unwind": m["inventory_unwind"], "rv_shock": 1.0}
    for key, value in same.items():
        eff = scenario_effect(state, apply_scenario(state, {key: value}), sens)
        assert not np.any(eff.log_mult) and eff.step_scale(14) is None, key
    eff = scenario_effect(state, apply_scenario(state, same), sens)
    assert not np.any(eff.log_mult) and eff.warnings == ()


def test_step_scale_follows_the_lead_blocks(state):
    eff = scenario_effect(state, apply_scenario(state, {"iv_level": 100}), fixed_sens(0.6))
    eff = type(eff)(np.log(np.arange(1.0, 7.0)), eff.channels, eff.keys, eff.warnings)
    scale = eff.step_scale(90)
    expected = np.concatenate([np.full(b - a + 1, i + 1.0) for i, (a, b) in enumerate(LEAD_BLOCKS)])
    np.testing.assert_allclose(scale, expected, rtol=1e-12)
    np.testing.assert_allclose(eff.step_scale(5), expected[:5], rtol=1e-12)
    report = eff.report(5)
    assert list(report["channel_vol_multiplier"]) == ["1", "2-3", "4-7"]


def test_gamma_squeeze_becomes_the_implied_vol_that_gives_it(state, sens):
    for target in (2.0, -1.5, 0.3):
        eff = scenario_effect(state, apply_scenario(state, {"gamma_squeeze": target}), sens)
        iv = eff.channels["implied_vol"]["to"]
        assert apply_scenario(state, {"iv_level": iv}).mm_indices["gamma_squeeze"] == pytest.approx(target, abs=1e-4)
        beta = sens.fits["implied_vol"].beta[:, 0]
        np.testing.assert_allclose(eff.log_mult, beta * np.log(iv / state.descriptors["implied_vol"]), rtol=1e-12)
    # the index override wins over iv_level, as in the state; rv_shock moves the implied vol it needs
    both = scenario_effect(state, apply_scenario(state, {"iv_level": 200, "gamma_squeeze": 0.0}), sens)
    assert apply_scenario(state, {"iv_level": both.channels["implied_vol"]["to"]}).mm_indices["gamma_squeeze"] == \
        pytest.approx(0.0, abs=1e-4)
    shocked = scenario_effect(state, apply_scenario(state, {"rv_shock": 3.0, "gamma_squeeze": 1.0}), sens)
    plain = scenario_effect(state, apply_scenario(state, {"gamma_squeeze": 1.0}), sens)
    assert shocked.channels["implied_vol"]["to"] > plain.channels["implied_vol"]["to"]


def test_an_unreachable_gamma_squeeze_takes_the_implied_vol_bound():
    bare = make_state(with_side=False)  # the prior scale: gamma = log(IV / rv_short) / 0.3
    calm = apply_scenario(bare, {"rv_shock": 0.2, "gamma_squeeze": -3.0})
    assert bare.descriptors["rv_short"] * 0.2 * 100 * np.sqrt(365) * np.exp(-0.9) < 5  # needs an IV below 5
    eff = scenario_effect(bare, calm, fixed_sens(0.5))
    assert eff.channels["implied_vol"]["to"] == 5.0
    assert any("gamma_squeeze=-3: not reachable with implied vol in [5, 300]" in w for w in eff.warnings)


def test_skew_and_basis_say_they_have_no_estimated_effect(state, sens):
    eff = scenario_effect(state, apply_scenario(state, {"skew": -0.6, "basis": 0.05}), sens)
    assert not np.any(eff.log_mult) and eff.step_scale(7) is None and eff.channels == {}
    assert eff.keys == {"skew": {"channel": "none", "source": "none"}, "basis": {"channel": "none", "source": "none"}}
    assert any(w.startswith("scenario skew: no estimated effect on the cone") for w in eff.warnings)
    assert any(w.startswith("scenario basis: no estimated effect on the cone") for w in eff.warnings)
    assert scenario_effect(state, apply_scenario(state, {"rv_shock": 2.0}), sens).keys == {
        "rv_shock": {"channel": "model", "source": "model"}}


def test_without_implied_vol_the_reference_is_realised_vol_and_the_prior_acts():
    data = make_data(with_side=False)
    bare = compute_state(data, DATES[-1])
    sens = estimate(data, DATES[-1])
    eff = scenario_effect(bare, apply_scenario(bare, {"iv_level": 120}), sens)
    ref = bare.descriptors["rv_short"] * 100 * np.sqrt(365)
    assert eff.channels["implied_vol"]["from"] == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(eff.log_mult, CHANNELS["implied_vol"].prior_mean[0] * np.log(120 / ref), rtol=1e-9)
    assert eff.keys["iv_level"]["source"] == "prior"
    assert any("documented prior sensitivity is used" in w for w in eff.warnings)
    # gamma_squeeze 0 is the reference itself under the prior (up to rounding); the inventory index counts from 0
    g0 = scenario_effect(bare, apply_scenario(bare, {"gamma_squeeze": 0.0}), sens)
    assert np.all(np.abs(g0.log_mult) < 1e-9)
    inv = scenario_effect(bare, apply_scenario(bare, {"inventory_unwind": 2.0}), sens)
    np.testing.assert_allclose(inv.log_mult, 2.0 * sens.fits["inventory"].beta[:, 0], rtol=1e-12)


def test_extrapolation_and_the_multiplier_cap_are_reported(state):
    eff = scenario_effect(state, apply_scenario(state, {"iv_level": 300}), fixed_sens(3.0))
    assert np.allclose(eff.log_mult, np.log(MULTIPLIER_RANGE[1]))
    assert any("capped to [0.2, 5]" in w for w in eff.warnings)
    real = estimate(make_data(), DATES[-1])
    out = scenario_effect(state, apply_scenario(state, {"iv_level": 250}), real)
    lo, hi = np.exp(real.fits["implied_vol"].x_range[0])
    assert hi < 250 and any(f"outside the range of TEST-USD's history ({lo:.4g} to {hi:.4g})" in w
                            for w in out.warnings)


# -- through the engine ---------------------------------------------------------------------------

CFG = EngineConfig(refit_every=14, walkforward_paths=300,
                   calibration=CalibrationConfig(window_days=150, coverage_days=100))


@pytest.fixture(scope="module")
def syn():
    src = SyntheticSource(seed=3, assets=("SYN-BTC", "SYN-ETH"), start="2019-01-01", end="2023-06-30")
    return {a: src.history(a) for a in src.assets()}


def req(asset: str = "SYN-BTC", **kw) -> ForecastRequest:
    return ForecastRequest(**{"asset": asset, "horizon": 7, "paths": 4000, "seed": 11, **kw})


@pytest.mark.slow
def test_the_unconditional_forecast_is_the_models_own_paths(syn):
    data = syn["SYN-BTC"]
    prep = prepare(data, req(), config=CFG)
    assert "step_scale" not in prep.cond and "scenario" not in prep.extra["metadata"]
    np.testing.assert_array_equal(
        prep.sample(500, 7, np.random.default_rng(5)),
        prep.model.simulate(prep.cond, 500, 7, np.random.default_rng(5))[0].astype(np.float32))
    before = forecast(data, req(), config=CFG)
    forecast(data, req(scenario={"iv_level": 150, "funding_rate": 0.004, "rv_shock": 2.0}), config=CFG)
    after = forecast(data, req(), config=CFG)  # a scenario leaves nothing behind in the cached state
    np.testing.assert_array_equal(after.quantiles, before.quantiles)
    np.testing.assert_array_equal(after.paths, before.paths)
    assert after.metadata == before.metadata and not after.conditional


def test_the_cone_moves_by_the_estimated_amount(syn):
    data = syn["SYN-BTC"]
    base = prepare(data, req(), config=CFG)
    iv0 = base.extra["regime"]["descriptors"]["implied_vol"]
    scen = prepare(data, req(scenario={"iv_level": 2 * iv0}), config=CFG)
    sens = estimate(data, base.origin)
    mult = np.exp(sens.fits["implied_vol"].beta[:, 0] * np.log(2.0))
    report = scen.extra["metadata"]["scenario"]
    np.testing.assert_allclose(list(report["channel_vol_multiplier"].values()), mult[:3], rtol=1e-12)
    assert report["channels"]["implied_vol"]["source"] == "data" and np.all(mult > 1.3)
    # every step's deviation from the drift is scaled by its block's multiplier, in the model's own draw
    # (so every sampler of (model, cond) sees the scenario), and nowhere without a scenario
    per_lead = np.repeat(mult, [b - a + 1 for a, b in LEAD_BLOCKS])
    np.testing.assert_allclose(scen.cond["step_scale"][0], per_lead, rtol=1e-12)
    drift = base.model.part("trend").drift(base.cond["trend"], 7)[0]
    a = base.model.simulate(base.cond, 2000, 7, np.random.default_rng(1))[0]
    b = scen.model.simulate(scen.cond, 2000, 7, np.random.default_rng(1))[0]
    per_step = np.repeat(mult[:3], [1, 2, 4])
    np.testing.assert_allclose(b - drift, per_step * (a - drift), rtol=1e-9, atol=1e-15)
    own = scen.model.simulate(scen.cond, 100, 7, np.random.default_rng(2))[0]
    np.testing.assert_array_equal(scen.sample(100, 7, np.random.default_rng(2)), own.astype(np.float32))
    # the calibrated one-day cone around its drift scales by the lead-1 multiplier exactly
    assert scen.extra["regime"]["label"] == base.extra["regime"]["label"]
    fa, fb = forecast(data, req(), config=CFG), forecast(data, req(scenario={"iv_level": 2 * iv0}), config=CFG)
    d1 = float(base.model.part("trend").drift(base.cond["trend"], 1)[0, 0, 0])
    one_day = lambda f: np.log(f.quantiles[0] / f.spot) - d1  # noqa: E731
    np.testing.assert_allclose(one_day(fb), mult[0] * one_day(fa), rtol=1e-4)
    width = lambda f: np.log(f.quantile(0.95)[-1] / f.quantile(0.05)[-1])  # noqa: E731
    assert mult[:3].min() * 0.98 < width(fb) / width(fa) < mult[:3].max() * 1.02
    assert fb.conditional and fb.calibration_version == fa.calibration_version


def test_an_override_equal_to_the_current_value_gives_the_same_cone(syn):
    data = syn["SYN-BTC"]
    base = forecast(data, req(thresholds=[0.9 * float(data.daily_close().iloc[-1])]), config=CFG)
    d, m = base.regime["descriptors"], base.mm_indices
    for scenario in ({"iv_level": d["implied_vol"]}, {"funding_rate": d["funding"]},
                     {"gamma_squeeze": m["gamma_squeeze"]}, {"inventory_unwind": m["inventory_unwind"]}):
        same = forecast(data, req(scenario=scenario, thresholds=list(base.thresholds)), config=CFG)
        np.testing.assert_array_equal(same.quantiles, base.quantiles)
        np.testing.assert_array_equal(same.p_below, base.p_below)
        assert same.conditional and set(same.metadata["scenario"]["channel_vol_multiplier"].values()) == {1.0}


@pytest.mark.slow
def test_scenario_warnings_and_prior_driven_assets_through_the_engine(syn):
    skew = forecast(syn["SYN-BTC"], req(scenario={"skew": -0.5}), config=CFG)
    base = forecast(syn["SYN-BTC"], req(), config=CFG)
    np.testing.assert_array_equal(skew.quantiles, base.quantiles)
    assert any(w.startswith("scenario skew: no estimated effect") for w in skew.metadata["warnings"])
    eth = forecast(syn["SYN-ETH"], req("SYN-ETH", scenario={"funding_rate": 0.004}), config=CFG)
    eth0 = forecast(syn["SYN-ETH"], req("SYN-ETH"), config=CFG)
    assert eth.metadata["scenario"]["overrides"]["funding_rate"] == {"channel": "inventory", "source": "prior"}
    assert any("documented prior sensitivity" in w for w in eth.metadata["warnings"])
    w = lambda f: f.quantile(0.95)[-1] - f.quantile(0.05)[-1]  # noqa: E731
    assert w(eth) > w(eth0)
    assert eth.to_json()  # the report is JSON-ready


@pytest.mark.slow
def test_sensitivities_are_cached_on_disk(syn, isolated_home):
    clear_caches()
    first = forecast(syn["SYN-BTC"], req(scenario={"iv_level": 90}), config=CFG)
    files = list((isolated_home / "state" / "engine").rglob("sensitivities-*.json"))
    assert len(files) == 1
    forecast(syn["SYN-BTC"], req(scenario={"iv_level": 90}, horizon=30), config=CFG)  # another bucket, same file
    assert list((isolated_home / "state" / "engine").rglob("sensitivities-*.json")) == files
    clear_caches()  # a fresh process: read back from disk
    again = forecast(syn["SYN-BTC"], req(scenario={"iv_level": 90}), config=CFG)
    np.testing.assert_array_equal(again.quantiles, first.quantiles)
    assert again.metadata["scenario"] == first.metadata["scenario"]


@pytest.mark.slow
def test_real_btc_implied_vol_and_funding_scenarios(shared_data):
    import warnings

    from aetheris_ray.data.csv_connector import CsvSource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real files' data-quality warnings
        btc = CsvSource(shared_data).history("BTC-USD")
    r = dict(asset="BTC-USD", horizon=14, paths=4000, seed=3, as_of=pd.Timestamp("2024-12-09").date())
    base = forecast(btc, ForecastRequest(**r))
    w = lambda f: np.log(f.quantile(0.95) / f.quantile(0.05))  # noqa: E731
    for scenario, channel in (({"iv_level": 110}, "implied_vol"), ({"funding_rate": 0.003}, "inventory")):
        f = forecast(btc, ForecastRequest(**r, scenario=scenario))
        rep = f.metadata["scenario"]
        assert rep["channels"][channel]["source"] == "data" and f.conditional
        mult = np.array(list(rep["channel_vol_multiplier"].values()))
        assert np.all(mult > 1.05)
        ratio = w(f) / w(base)
        assert mult.min() * 0.97 < ratio[-1] < mult.max() * 1.03 and ratio[0] == pytest.approx(mult[0], rel=0.03)


def test_a_scenario_prepared_request_pickles_and_shards_like_a_plain_one(syn):
    import pickle

    from aetheris_ray import simulation as sim

    prep = prepare(syn["SYN-BTC"], req(scenario={"iv_level": 120}, paths=9000), config=CFG)
    assert prep.cond["step_scale"].shape == (1, 90)
    back = pickle.loads(pickle.dumps(prep))
    whole = sim.simulate_blocks(back.sample, 9000, 7, prep.seed)
    parts = [sim.simulate_blocks(prep.sample, 9000, 7, prep.seed, blocks=b) for b in sim.shard_blocks(9000, 2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_every_path_sampler_of_the_model_applies_the_scenario():
    """Each ``FittedModel.simulate*`` must return ``scenario_scaled`` paths, or a scenario would move some
    numbers of a forecast (the cone) and not others (say, importance-sampled tail probabilities)."""
    import inspect

    from aetheris_ray.model import FittedModel

    samplers = [n for n in dir(FittedModel) if n.startswith("simulate")]
    assert "simulate" in samplers
    for name in samplers:
        assert "self.scenario_scaled(cond, " in inspect.getsource(getattr(FittedModel, name)), (
            f"FittedModel.{name} does not apply cond['step_scale'] (FittedModel.scenario_scaled)")
