"""The greeks market state: torch Black greeks vs closed forms and finite differences, GEX signs,
attention, chain sources (observed / constructed / none), scenarios through the chain."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from aetheris_ray.data import chains as ch
from aetheris_ray.features import greeks as gk
from aetheris_ray.features.market_state import IndicesMarketState

pytestmark = pytest.mark.torch

S = np.array([100.0, 100.0, 100.0, 80.0, 120.0])
K = np.array([90.0, 100.0, 115.0, 100.0, 100.0])
T = np.array([0.05, 0.25, 1.0, 0.5, 0.1])
V = np.array([0.3, 0.6, 0.9, 0.45, 1.2])


def _closed(s, k, t, v, call):
    d1 = (np.log(s / k) + 0.5 * v * v * t) / (v * np.sqrt(t))
    d2 = d1 - v * np.sqrt(t)
    price = s * norm.cdf(d1) - k * norm.cdf(d2)
    return {"price": np.where(call, price, price - s + k), "delta": np.where(call, norm.cdf(d1), norm.cdf(d1) - 1),
            "gamma": norm.pdf(d1) / (s * v * np.sqrt(t)), "vanna": -norm.pdf(d1) * d2 / v,
            "charm": norm.pdf(d1) * d2 / (2 * t)}


@pytest.mark.parametrize("call", [True, False])
def test_autograd_greeks_match_the_closed_forms(call):
    got = gk.bs_greeks(S, K, T, V, np.full(S.size, call))
    want = _closed(S, K, T, V, call)
    for name in ("price", "delta", "gamma", "vanna", "charm"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("call", [True, False])
def test_autograd_greeks_match_finite_differences(call):
    c = np.full(S.size, call)

    def price(s=S, t=T, v=V):
        return gk.bs_greeks(s, K, t, v, c)["price"]

    def delta(s=S, t=T, v=V):
        return gk.bs_greeks(s, K, t, v, c)["delta"]

    got = gk.bs_greeks(S, K, T, V, c)
    h = 1e-3
    np.testing.assert_allclose(got["delta"], (price(s=S + h) - price(s=S - h)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(got["gamma"], (price(s=S + h) - 2 * price() + price(s=S - h)) / h**2, rtol=1e-4)
    np.testing.assert_allclose(got["vanna"], (delta(v=V + 1e-5) - delta(v=V - 1e-5)) / 2e-5, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(got["charm"], -(delta(t=T + 1e-6) - delta(t=T - 1e-6)) / 2e-6, rtol=1e-4, atol=1e-8)


def _hand_chain(call_oi, put_oi, strikes=(90.0, 100.0, 110.0)):
    ts = pd.Timestamp("2024-01-01 08:00", tz="UTC")
    rows = [(ts, ts + pd.Timedelta(days=30), k, c, 0.6, oi, np.nan, np.nan)
            for k, co, po in zip(strikes, call_oi, put_oi) for c, oi in ((True, co), (False, po))]
    return pd.DataFrame(rows, columns=list(ch.CHAIN_COLUMNS))


def test_gamma_exposure_signs_on_a_hand_made_chain():
    gex = gk.gamma_exposure(_hand_chain([100, 100, 100], [0, 0, 0]), 100.0)
    assert (gex["call"] > 0).all() and (gex["put"] == 0).all() and (gex["total"] > 0).all()  # dealers long calls
    gex = gk.gamma_exposure(_hand_chain([0, 0, 0], [100, 100, 100]), 100.0)
    assert (gex["put"] < 0).all() and (gex["total"] < 0).all()  # dealers short puts
    both = gk.gamma_exposure(_hand_chain([100, 0, 50], [0, 100, 50]), 100.0)
    assert both.loc[90.0, "total"] > 0 > both.loc[100.0, "total"]
    assert both.loc[110.0, "total"] == pytest.approx(0.0, abs=1e-9)  # same gamma for a call and a put
    # size: gamma * OI * S^2 * 1 %, the ATM call by the closed form
    atm = _closed(np.array([100.0]), np.array([100.0]), np.array([30 / 365]), np.array([0.6]), True)["gamma"][0]
    assert gk.gamma_exposure(_hand_chain([0, 100, 0], [0, 0, 0]), 100.0).loc[100.0, "call"] == \
        pytest.approx(atm * 100 * 100.0**2 * 0.01)


def test_dealer_short_gamma_reads_as_a_positive_gamma_squeeze():
    base = {"gamma_squeeze": None, "inventory_unwind": None, "basis_pressure": None}
    puts = gk._observed([_hand_chain([0, 0, 0], [100, 100, 100])], np.array([100.0]))
    calls = gk._observed([_hand_chain([100, 100, 100], [0, 0, 0])], np.array([100.0]))
    f_puts = {k: float(v[0]) for k, v in gk._features(puts).items()}
    f_calls = {k: float(v[0]) for k, v in gk._features(calls).items()}
    assert f_puts["gamma_tilt"] == pytest.approx(-1.0) and f_calls["gamma_tilt"] == pytest.approx(1.0)
    assert gk._indices(f_puts, base)["gamma_squeeze"] == 3.0
    assert gk._indices(f_calls, base)["gamma_squeeze"] == -3.0


def test_attention_weights_sum_to_one_favour_the_money_and_ignore_zero_oi():
    k = np.array([0.0, 0.1, -0.3, 0.0, 0.2])
    oi = np.array([1.0, 1.0, 1.0, 0.0, 5.0])
    group = np.array([0, 0, 0, 1, 1])
    w = gk.attention_weights(k, oi, group, 2)
    assert np.bincount(group, weights=w).tolist() == pytest.approx([1.0, 1.0])
    assert w[0] > w[1] > w[2] and w[3] == 0.0
    assert w[0] / w[1] == pytest.approx(math.exp(1.0))  # exp(0.1 / TAU)


@pytest.fixture(scope="module")
def syn():
    from aetheris_ray.data.synthetic import SyntheticSource

    return SyntheticSource(seed=1, start="2020-01-01", end="2021-12-31").history("SYN-BTC")


def test_constructed_chain_where_only_the_index_exists(syn):
    origins = list(syn.daily_close().index[[400, 600]])
    many = gk.GreeksMarketState().compute_states(syn, origins)
    base = IndicesMarketState().compute_states(syn, origins)
    for s, b in zip(many, base):
        assert s.context["chain_source"] == "from_implied_vol_index"
        assert "CONSTRUCTED" in s.context["chain_note"] and "options_chain" not in s.missing
        assert s.descriptors["chain_iv_30d"] == s.descriptors["implied_vol"]
        assert s.descriptors["skew"] == ch.SVI_RHO
        # a constructed chain's OI is a stated profile, not positioning: the indices keep the baseline's value
        assert s.mm_indices["gamma_squeeze"] == pytest.approx(b.mm_indices["gamma_squeeze"])
        assert s.mm_indices["inventory_unwind"] == pytest.approx(b.mm_indices["inventory_unwind"])
    one = gk.GreeksMarketState().compute_state(syn, origins[1])
    assert one.mm_indices == many[1].mm_indices
    np.testing.assert_array_equal(one.regime_vector, many[1].regime_vector)


def test_no_chain_and_no_index_is_the_indices_state(syn):
    from aetheris_ray.data.schema import AssetData

    bare = AssetData(syn.asset, syn.bars, {k: v for k, v in syn.series.items() if k != "implied_vol"},
                     {k: v for k, v in syn.info.items() if k != "implied_vol"})
    origin = syn.daily_close().index[500]
    s = gk.GreeksMarketState().compute_state(bare, origin)
    b = IndicesMarketState().compute_state(bare, origin)
    assert s.context["chain_source"] == "none" and "options_chain" in s.missing
    assert s.mm_indices == b.mm_indices
    np.testing.assert_array_equal(s.regime_vector, b.regime_vector)


def test_an_observed_chain_wins_and_its_positioning_moves_the_indices(syn):
    origin = syn.daily_close().index[600]
    spot = float(syn.daily_close().iloc[600])
    made = ch.chain_from_index(60.0, spot, pd.Timestamp(origin).tz_localize("UTC") + pd.Timedelta(hours=12))
    made["open_interest"] = np.where(made["call"], 0.0, made["open_interest"])  # puts only: dealers short gamma
    data = ch.attach_chain(syn, made, "test")
    s = gk.GreeksMarketState().compute_state(data, origin)
    b = IndicesMarketState().compute_state(syn, origin)
    assert s.context["chain_source"] == "observed" and "observed snapshot" in s.context["chain_note"]
    assert s.descriptors["gamma_tilt"] == pytest.approx(-1.0)
    assert s.descriptors["chain_iv_30d"] == pytest.approx(60.0, rel=0.01)
    assert s.descriptors["skew"] == pytest.approx(ch.SVI_RHO, abs=0.05)  # the smile's rho, estimated
    assert s.mm_indices["gamma_squeeze"] > b.mm_indices["gamma_squeeze"]


def test_scenarios_move_the_chain(syn):
    from aetheris_ray.scenario import apply_scenario, scenario_effect

    origin = syn.daily_close().index[600]
    s = gk.GreeksMarketState().compute_state(syn, origin)
    put_skew = apply_scenario(s, {"skew": -0.9})
    assert put_skew.descriptors["skew"] == -0.9 and put_skew.regime_vector[gk._VEC["skew"]] == -0.9
    assert put_skew.context["chain"]["skew_vs_ratio"] > 1.0  # heavier put wing: more variance
    assert apply_scenario(s, {"skew": 0.5}).context["chain"]["skew_vs_ratio"] < 1.0
    assert apply_scenario(s, {"iv_level": 120.0}).descriptors["chain_iv_30d"] == pytest.approx(120.0)
    for key, value in (("basis", 0.05), ("funding_rate", -0.005)):
        moved = apply_scenario(s, {key: value})
        assert moved.mm_indices["basis_pressure"] != s.mm_indices["basis_pressure"], key

    class _Fit:
        beta = np.ones((6, 1))
        source = "data"
        x_range = np.array([[-10.0, 10.0]])

        def to_dict(self):
            return {}

    class _Sens:
        asset = "SYN-BTC"
        fits = {"implied_vol": _Fit(), "inventory": _Fit()}

    effect = scenario_effect(s, put_skew, _Sens())
    assert effect.keys["skew"]["channel"] == "implied_vol"
    v0, v1 = effect.channels["implied_vol"]["from"], effect.channels["implied_vol"]["to"]
    assert v1 / v0 == pytest.approx(math.sqrt(put_skew.context["chain"]["skew_vs_ratio"]))
    assert np.all(effect.log_mult > 0)  # the cone widens
    basis = scenario_effect(s, apply_scenario(s, {"basis": 0.05}), _Sens())
    assert "basis_pressure" in " ".join(basis.warnings) and "no estimated effect" not in " ".join(basis.warnings)


def test_forecast_metadata_names_the_chain_source(syn):
    from aetheris_ray.contract import ForecastRequest
    from aetheris_ray.engine import forecast

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        req = ForecastRequest(asset="SYN-BTC", horizon=3, paths=200, as_of=str(syn.daily_close().index[600].date()),
                              components=["market_state=greeks"], seed=1)
        out = forecast(syn, req, use_cache=False)
    assert out.metadata["chain_source"] == "from_implied_vol_index"
    assert any("CONSTRUCTED from the implied-vol index" in w for w in out.metadata["warnings"])


def test_scenarios_move_an_observed_chain(syn):
    from aetheris_ray.scenario import apply_scenario

    origin = syn.daily_close().index[600]
    spot = float(syn.daily_close().iloc[600])
    made = ch.chain_from_index(60.0, spot, pd.Timestamp(origin).tz_localize("UTC") + pd.Timedelta(hours=12))
    s = gk.GreeksMarketState().compute_state(ch.attach_chain(syn, made, "test"), origin)
    assert s.context["chain_source"] == "observed"
    assert apply_scenario(s, {"iv_level": 80.0}).descriptors["chain_iv_30d"] == pytest.approx(80.0, rel=1e-3)
    skewed = apply_scenario(s, {"skew": -0.9})
    assert skewed.context["chain"]["skew_vs_ratio"] > 1.0 and skewed.descriptors["skew"] == -0.9
    assert s.context["chain"]["frame"]["iv"].equals(made["iv"])  # the actual state's chain is untouched
