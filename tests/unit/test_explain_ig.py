"""Integrated-gradient explainer: the torch forecast is the model's own, IG completeness within tolerance,
blocks outside the model get 0, unsupported models fall back to the surrogate, the engine's answer agrees."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.calibration import BUCKETS, KNOTS, ConformalLevelMap
from aetheris_ray.components.base import Context
from aetheris_ray.data.schema import AssetData, bar_ts_from_dates
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.build import compute_state
from aetheris_ray.history import positive_closes
from aetheris_ray.model import ComponentChoice, EngineConfig, fit_model, state_inputs

torch = pytest.importorskip("torch")

from aetheris_ray import explain_ig as ig  # noqa: E402

pytestmark = pytest.mark.torch

H = 7
M = 500


def garch_returns(n: int, seed: int, omega=2e-5, alpha=0.1, beta=0.85, nu=5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
    r, v = np.empty(n), omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = np.sqrt(v) * z[t]
        v = omega + alpha * r[t] ** 2 + beta * v
    return r


def asset_data(returns: np.ndarray, ranges: bool = True, seed: int = 5) -> AssetData:
    """Daily bars of ``returns``; with ``ranges`` the high / low spread around open and close."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    op = np.concatenate([[100.0], close[:-1]]) if ranges else close
    wick = np.exp(np.abs(rng.normal(0, 0.01, close.size))) if ranges else np.ones(close.size)
    dates = pd.date_range("2020-01-01", periods=close.size, freq="D")
    bars = pd.DataFrame({"ts": bar_ts_from_dates(dates), "open": op, "high": np.maximum(op, close) * wick,
                         "low": np.minimum(op, close) / wick, "close": close, "volume": np.nan})
    return AssetData(asset="SYN-USD", bars={"1D": bars})


def fitted_at_end(data: AssetData, cfg: EngineConfig):
    """The model fitted on all of ``data`` and the state at its last day (no walk-forward: fast)."""
    origin = positive_closes(data).index[-1]
    state = compute_state(data, origin)
    model = fit_model(cfg, cfg.specs(), state.returns, **state_inputs(state))
    return model, state


def level_map() -> ConformalLevelMap:
    """A non-trivial monotone level map (raw levels pulled outward, as an under-dispersed model needs)."""
    bent = np.clip(KNOTS + 0.08 * np.sin(2 * np.pi * KNOTS) * KNOTS * (1 - KNOTS) * 4, 0, 1)
    return ConformalLevelMap(np.tile(np.maximum.accumulate(bent), (len(BUCKETS), 1)), "test")


CFG = EngineConfig()  # the default model: ar_es, GARCH-t + range-GARCH blend, no jumps, Student-t


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(one_thread):
    data = asset_data(garch_returns(600, seed=2))
    model, state = fitted_at_end(data, CFG)
    return data, model, state


def forecast_of(model, state, thresholds=(0.9, 1.1), n_paths=M, seed=3):
    ctx = Context.from_states([state], CFG.lookback)
    th = np.log(np.asarray(thresholds))
    return ig.DifferentiableForecast(model, ctx, level_map(), H, th, n_paths, seed)


def test_the_torch_forecast_is_the_models_own(setup):
    _, model, state = setup
    fc = forecast_of(model, state)
    x = fc.actual_inputs()
    u = fc.interface(**{k: torch.as_tensor(v)[None] for k, v in x.items()}).detach()
    cond = model.condition(Context.from_states([state], CFG.lookback))
    np.testing.assert_allclose(u[0, :H].numpy(), cond["trend"]["drift"][0, :H], rtol=1e-9, atol=1e-15)
    v1 = [cond["volatility"]["members"][k]["v1"][0] for k in ("0", "1")]
    np.testing.assert_allclose(u[0, H:].numpy(), v1, rtol=1e-9)
    steps, _ = fc.paths(u)
    np.testing.assert_allclose(steps[0].numpy(), model.simulate(cond, M, H, np.random.default_rng(3))[0],
                               rtol=0, atol=1e-10)


def assert_jacobian_is_reverse_mode(fc, u):
    """The hand-written forward Jacobian of ``fc`` at the interface rows ``u`` equals autograd's."""
    J = fc.jacobian(u)
    ue = u.clone().requires_grad_()
    out = fc.outputs_from_interface(ue)
    for o in range(out.shape[1]):
        g = torch.autograd.grad(out[:, o].sum(), ue, retain_graph=True)[0]
        np.testing.assert_allclose(J[:, o].numpy(), g.numpy(), rtol=1e-6, atol=1e-9 * float(g.abs().max() + 1e-12))


def the_models_own_and_complete(fc, model, ctx, state, seed: int) -> tuple:
    """At the actual input the torch paths are ``model.simulate``'s on the same seed, the forward Jacobian is
    reverse mode's and the explanation is complete; returns the interface row and the explanation."""
    x = fc.actual_inputs()
    u = fc.interface(**{k: torch.as_tensor(v)[None] for k, v in x.items()}).detach()
    np.testing.assert_allclose(fc.paths(u)[0][0].numpy(),
                               model.simulate(model.condition(ctx), fc.m, fc.h, np.random.default_rng(seed))[0],
                               rtol=0, atol=1e-10)
    assert_jacobian_is_reverse_mode(fc, torch.cat([u, u * 1.05]))
    d = ig.explain_model(model, state, level_map(), fc.h, [0.95 * float(state.spot)], n_paths=fc.m, seed=seed)
    assert d["method"] == ig.METHOD and d["completeness_within_tolerance"]
    check_completeness(d)
    return u, d


def test_forward_jacobian_matches_reverse_mode(setup):
    _, model, state = setup
    fc = forecast_of(model, state)
    x = fc.actual_inputs()
    u = fc.interface(**{k: torch.as_tensor(v)[None] for k, v in x.items()}).detach()
    assert_jacobian_is_reverse_mode(fc, torch.cat([u, u * 1.1]))  # two rows


def test_unit_t_cdf_table_is_the_t_cdf():
    from scipy import special, stats

    nu = 4.3
    s = np.sqrt(nu / (nu - 2))
    x = np.linspace(-12, 12, 2001)
    cdf, pdf = ig._unit_cdf(torch.as_tensor(x), nu, density=None)
    np.testing.assert_allclose(cdf.numpy(), special.stdtr(nu, x * s), rtol=0, atol=1e-10)
    np.testing.assert_allclose(pdf.numpy(), s * stats.t.pdf(x * s, nu), rtol=0, atol=1e-8)


def check_completeness(d: dict) -> None:
    """Every output's attributions sum to F(x) - F(x0) within the stated tolerance."""
    for out, err in d["completeness_error"].items():
        total = np.sum([d["attributions"][out][b] for b in ig.BLOCKS], axis=0)
        delta = np.asarray(d["value"][out]) - np.asarray(d["baseline_value"][out])
        np.testing.assert_allclose(np.abs(total - delta), err, rtol=1e-9, atol=1e-15)
        assert np.all(np.asarray(err) <= ig.RTOL * np.abs(delta) + ig.ATOL), out


def test_ig_completeness_within_tolerance(setup):
    _, model, state = setup
    warnings: list[str] = []
    spot = float(state.spot)
    d = ig.explain_model(model, state, level_map(), H, [0.92 * spot, 1.08 * spot], n_paths=M, seed=1,
                         warnings=warnings)
    assert d["method"] == ig.METHOD and d["completeness_within_tolerance"] and not warnings
    check_completeness(d)
    assert {len(v) for k, v in d["value"].items() if k in ("p50", "width80")} == {H}
    assert len(d["value"]["p_below"]) == 2
    # the 80 % width moved with the volatility level, and both model blocks take part in it
    assert all(abs(d["attributions"]["width80"][b][-1]) > 0 for b in ("price_history", "realised_vol"))
    for target in ("upside", "downside", "trend"):
        assert 1 <= len(d[target]) <= ig.TOP_K
        assert sum(item["importance"] for item in d[target]) == pytest.approx(1.0)
        assert all(item["direction"] == ("+" if item["share"] >= 0 else "-") for item in d[target])


def test_blocks_outside_the_model_get_zero_and_are_named(setup):
    _, model, state = setup
    d = ig.explain_model(model, state, level_map(), H, [], n_paths=M, seed=1)
    assert set(d["inputs"]["not_in_model"]) == set(ig.BLOCKS) - {"price_history", "realised_vol"}
    for out in d["attributions"].values():
        for b in d["inputs"]["not_in_model"]:
            assert not np.any(out[b])
    drivers = {item["driver"] for t in ("upside", "downside", "trend") for item in d[t]}
    assert drivers <= {"price_history", "realised_vol"}


def test_without_ranges_the_realised_vol_block_gets_zero():
    data = asset_data(garch_returns(500, seed=4), ranges=False)
    model, state = fitted_at_end(data, CFG)
    d = ig.explain_model(model, state, level_map(), H, [float(state.spot)], n_paths=M, seed=2)
    check_completeness(d)
    assert all(not np.any(v["realised_vol"]) for v in d["attributions"].values())
    assert any(np.any(v["price_history"]) for v in d["attributions"].values())


def test_same_seed_same_answer(setup):
    _, model, state = setup
    a = ig.explain_model(model, state, level_map(), H, [float(state.spot)], n_paths=M, seed=5)
    b = ig.explain_model(model, state, level_map(), H, [float(state.spot)], n_paths=M, seed=5)
    assert a == b


def test_input_errors(setup):
    _, model, state = setup
    with pytest.raises(InvalidInput, match="thresholds"):
        ig.explain_model(model, state, level_map(), H, [-1.0])
    ctx = Context.from_states([state, state], CFG.lookback)
    with pytest.raises(InvalidInput, match="one"):
        ig.DifferentiableForecast(model, ctx, level_map(), H, np.zeros(0))
    with pytest.raises(InvalidInput, match="horizon"):
        ig.DifferentiableForecast(model, ctx.take([0]), level_map(), 0, np.zeros(0))


def test_a_model_without_a_torch_expression_falls_back_to_the_surrogate(monkeypatch):
    from aetheris_ray import explain

    cfg = CFG.model_copy(update={"jumps": ComponentChoice(name="poisson")})
    data = asset_data(garch_returns(400, seed=6))
    model, state = fitted_at_end(data, cfg)
    called = {}

    def fake(self, data, state, config, origin, horizon, warnings):
        called["yes"] = True
        return {"upside": [], "downside": [], "trend": [], "method": explain.METHOD, "fit_r2": {}}

    monkeypatch.setattr(explain.SurrogateExplainer, "explain", fake)
    warnings: list[str] = []
    out = ig.IntegratedGradientsExplainer().explain(data, state, cfg, state.origin, H, warnings, fitted=model,
                                                    level_map=level_map(), thresholds=())
    assert called and out["method"] == "surrogate" and out["completeness_error"] is None
    assert len(warnings) == 1 and "jumps 'poisson'" in warnings[0] and "surrogate" in warnings[0]


@pytest.mark.slow
def test_the_engines_answer_agrees_and_says_which_method():
    from aetheris_ray.calibration import CalibrationConfig
    from aetheris_ray.contract import ForecastRequest
    from aetheris_ray.engine import forecast

    data = asset_data(garch_returns(600, seed=2))
    cfg = CFG.model_copy(update={"refit_every": 28, "walkforward_paths": 300,
                                 "calibration": CalibrationConfig(window_days=150, coverage_days=100)})
    spot = float(data.bars["1D"]["close"].iloc[-1])
    req = ForecastRequest(asset="SYN-USD", horizon=H, paths=4000, seed=7, thresholds=[0.93 * spot, 1.07 * spot],
                          explain=True, quantiles=[0.1, 0.5, 0.9],
                          components=["explainer=integrated_gradients"])
    fc = forecast(data, req, use_cache=False, config=cfg.model_copy(
        update={"explainer": ComponentChoice(name="integrated_gradients")}))
    d = fc.drivers
    assert d["method"] == ig.METHOD and d["completeness_within_tolerance"]
    assert [k for k, v in d.items() if isinstance(v, list)] == ["upside", "downside", "trend"]  # the CLI's table
    assert json.loads(fc.to_json())["drivers"]["method"] == ig.METHOD  # on the wire, finite
    q = np.log(fc.quantiles / fc.spot)  # (h, 3)
    width = q[:, 2] - q[:, 0]
    # Monte Carlo agreement: the differentiable forecast's 2,000 conditional paths vs the engine's 4,000
    np.testing.assert_allclose(d["value"]["p50"], q[:, 1], rtol=0, atol=0.1 * float(width[-1]))
    np.testing.assert_allclose(d["value"]["width80"], width, rtol=0.1)
    np.testing.assert_allclose(d["value"]["p_below"], fc.p_below, rtol=0, atol=0.03)
    np.testing.assert_allclose(d["value"]["p_above"], fc.p_above, rtol=0, atol=0.03)


@pytest.mark.parametrize(("parts", "horizon", "calibrated"), [
    ({"trend": ComponentChoice(name="zero"), "volatility": ComponentChoice(name="ewma"),
      "residuals": ComponentChoice(name="gaussian")}, 1, False),
    ({"volatility": ComponentChoice(name="garch")}, 3, True),
    ({"volatility": ComponentChoice(name="ewma", params={"path_dependent": False})}, 5, True),
    ({"volatility": ComponentChoice(name="range_har")}, 7, True),
    ({"volatility": ComponentChoice(name="blend", params={"members": ["garch", "range_har"], "weighting": "fixed"})},
     4, True),
    ({"volatility": ComponentChoice(name="blend", params={"members": ["garch", "range_garch"], "weighting": "online",
                                                          "eta": 0.1})}, 7, True),
])
def test_other_supported_parts_are_the_models_own_and_complete(setup, parts, horizon, calibrated):
    from aetheris_ray.simulation import IdentityLevelMap

    data, _, _ = setup
    cfg = CFG.model_copy(update=parts)
    model, state = fitted_at_end(data, cfg)
    lm = level_map() if calibrated else IdentityLevelMap()
    ctx = Context.from_states([state], cfg.lookback)
    fc = ig.DifferentiableForecast(model, ctx, lm, horizon, np.log([0.97, 1.03]), M, 4)
    x = fc.actual_inputs()
    u = fc.interface(**{k: torch.as_tensor(v)[None] for k, v in x.items()}).detach()
    cond = model.condition(ctx)
    np.testing.assert_allclose(fc.paths(u)[0][0].numpy(),
                               model.simulate(cond, M, horizon, np.random.default_rng(4))[0], rtol=0, atol=1e-10)
    spot = float(state.spot)
    d = ig.explain_model(model, state, lm, horizon, [0.97 * spot, 1.03 * spot], n_paths=M, seed=4)
    assert d["completeness_within_tolerance"]
    check_completeness(d)


def rough_artefact(n_regime: int = 17):
    """A rough-vol artefact with a random head (the seeded network's head starts at zero: no feature effect)."""
    from aetheris_ray.components.rough_vol.component import FittedRoughVol

    kw = dict(seed=0, n_regime=n_regime, hidden=16, layers=1, lookback=64)
    base = FittedRoughVol.from_params(0.12, **kw)
    w = dict(base.weights)
    w["head.weight"] = np.random.default_rng(0).normal(0, 0.2, np.shape(w["head.weight"])).astype(np.float32)
    return FittedRoughVol.from_params(0.12, weights=w, vol_bias=-0.1, **kw)


def test_rough_vol_is_differentiated_through_its_network_and_reads_the_regime_vector(setup):
    from aetheris_ray.features.regime import REGIME_FEATURES

    data, _, state = setup
    cfg = CFG.model_copy(update={"volatility": ComponentChoice(name="rough_vol"),
                                 "residuals": ComponentChoice(name="student_t")})
    model = fit_model(cfg, cfg.specs(), state.returns, artefacts={"volatility": rough_artefact()},
                      **state_inputs(state))
    names = [n for n, _ in REGIME_FEATURES]
    vec = np.array(state.regime_vector, dtype=float)
    vec[names.index("gamma_squeeze")], vec[names.index("iv_pct_z")] = 1.5, -0.8
    state = state.with_(regime_vector=vec)
    ctx = Context.from_states([state], CFG.lookback)
    fc = ig.DifferentiableForecast(model, ctx, level_map(), H, np.log([0.95, 1.05]), M, 6)
    x = fc.actual_inputs()
    u = fc.interface(**{k: torch.as_tensor(v)[None] for k, v in x.items()}).detach()
    cond = model.condition(ctx)
    np.testing.assert_allclose(fc.paths(u)[0][0].numpy(), model.simulate(cond, M, H, np.random.default_rng(6))[0],
                               rtol=1e-5, atol=1e-8)  # the engine's network runs in float32
    J = fc.jacobian(torch.cat([u, u * 1.01]))
    ue = torch.cat([u, u * 1.01]).requires_grad_()
    out = fc.outputs_from_interface(ue)
    for o in range(out.shape[1]):
        g = torch.autograd.grad(out[:, o].sum(), ue, retain_graph=True)[0]
        np.testing.assert_allclose(J[:, o].numpy(), g.numpy(), rtol=1e-6, atol=1e-9 * float(g.abs().max() + 1e-12))
    spot = float(state.spot)
    d = ig.explain_model(model, state, level_map(), H, [0.95 * spot, 1.05 * spot], n_paths=M, seed=6)
    check_completeness(d)
    assert d["completeness_within_tolerance"]
    assert {"mm_indices", "implied_vol"} <= set(d["inputs"]["blocks"]) - set(d["inputs"]["not_in_model"])
    assert np.any(d["attributions"]["width80"]["mm_indices"]) and np.any(d["attributions"]["width80"]["implied_vol"])
    assert set(d["inputs"]["not_in_model"]) >= {"macro", "onchain"}


def mamba_artefact(n_regime: int = 17):
    """A mamba trend artefact with a random head (the seeded network's head starts near zero: no input effect)."""
    from aetheris_ray.components.mamba.component import FittedMamba

    base = FittedMamba.from_params(seed=0, n_regime=n_regime, lookback=64)
    w = dict(base.weights)
    w["head.weight"] = np.random.default_rng(1).normal(0, 0.5, np.shape(w["head.weight"]))
    return FittedMamba.from_params(seed=0, n_regime=n_regime, lookback=64, weights=w)


def test_mamba_trend_is_differentiated_through_its_network_and_reads_implied_vol_and_mm_indices(setup):
    """With a mamba trend: the torch drift is the part's own, and the drivers include implied vol and the MM
    indices (the inputs only the network reads), with completeness."""
    from aetheris_ray.components.base import MM_KEYS

    data, _, state = setup
    cfg = CFG.model_copy(update={"trend": ComponentChoice(name="mamba")})
    model = fit_model(cfg, cfg.specs(), state.returns, artefacts={"trend": mamba_artefact()}, **state_inputs(state))
    n = len(state.returns)
    iv = 60.0 * np.exp(0.1 * np.sin(np.arange(n) / 9.0))
    state = state.with_(implied_vol=iv, mm_indices={k: 0.7 - 0.5 * i for i, k in enumerate(MM_KEYS)})
    ctx = Context.from_states([state], CFG.lookback)
    fc = ig.DifferentiableForecast(model, ctx, level_map(), H, np.log([0.95, 1.05]), M, 6)
    assert fc.mamba is not None
    x = fc.actual_inputs()
    u = fc.interface(**{k: torch.as_tensor(v)[None] for k, v in x.items()}).detach()
    want = model.part("trend").condition(ctx)["drift"][0, :H]
    np.testing.assert_allclose(u[0, :H].numpy(), want, rtol=1e-9, atol=1e-12)
    assert np.any(want != 0)
    spot = float(state.spot)
    d = ig.explain_model(model, state, level_map(), H, [0.95 * spot, 1.05 * spot], n_paths=M, seed=6)
    check_completeness(d)
    assert d["completeness_within_tolerance"]
    assert d["method"] == ig.METHOD
    assert {"mm_indices", "implied_vol"} <= set(d["inputs"]["blocks"]) - set(d["inputs"]["not_in_model"])
    assert np.any(d["attributions"]["p50"]["mm_indices"]) and np.any(d["attributions"]["p50"]["implied_vol"])


def test_range_har_forward_jacobian_matches_reverse_mode(setup):
    data, _, _ = setup
    cfg = CFG.model_copy(update={"volatility": ComponentChoice(
        name="blend", params={"members": ["range_garch", "range_har"], "weighting": "fixed"})})
    model, state = fitted_at_end(data, cfg)
    ctx = Context.from_states([state], cfg.lookback)
    fc = ig.DifferentiableForecast(model, ctx, level_map(), H, np.log([0.95, 1.05]), M, 2)
    assert [mb.proxy for mb in fc.members] == ["range", "har"] and fc.members[1].dims == H
    x = fc.actual_inputs()
    u = fc.interface(**{k: torch.as_tensor(v)[None] for k, v in x.items()}).detach()
    # the HAR's columns are its variance path, as the fitted part draws it
    har = model.paths.by_kind()["volatility"].children[1]
    from aetheris_ray.components.range_vol import variance_path

    np.testing.assert_allclose(u[0, H + 1:].numpy(), variance_path(har.condition(ctx)["mean_var"], H)[0], rtol=1e-9)
    assert_jacobian_is_reverse_mode(fc, torch.cat([u, u * 1.1]))
    # the range reaches the HAR's part of the 80 % width
    d = ig.explain_model(model, state, level_map(), H, [0.95 * float(state.spot)], n_paths=M, seed=2)
    assert d["method"] == ig.METHOD and d["completeness_within_tolerance"]
    assert abs(d["attributions"]["width80"]["realised_vol"][-1]) > 0


def with_side_series(state, seed: int = 0, market_is_own: bool = False):
    """``state`` with implied vol, intraday rv and the market's range, each missing on some days (the
    fallbacks of the HAR's extra regressors are read too)."""
    rng = np.random.default_rng(seed)
    n = len(state.returns)
    iv = 60.0 * np.exp(0.2 * np.sin(np.arange(n) / 9.0))
    iv[:100], iv[-40:-30] = np.nan, np.nan
    rv = np.square(state.returns) * np.exp(rng.normal(0.0, 0.3, n))
    rv[-3] = np.nan
    market = np.abs(rng.normal(0.03, 0.01, n))
    market[:50], market[-20], market[-10:-4] = np.nan, np.nan, np.nan
    if market_is_own:
        market = np.asarray(state.log_hl, dtype=float).copy()
    return state.with_(implied_vol=iv, intraday_rv=rv, market_log_hl=market)


@pytest.mark.parametrize(("extras", "blocks"), [
    (["rv"], {"realised_vol"}), (["iv"], {"implied_vol"}), (["market"], {"macro"}),
    (["rv", "iv", "market"], {"realised_vol", "implied_vol", "macro"}),
])
def test_range_har_extra_regressors_are_the_models_own_and_complete(setup, extras, blocks):
    """A range-HAR with extra regressors (intraday rv, implied vol, the market's range): the torch variance
    path is the part's own, the forward Jacobian is reverse mode's, completeness holds, and each extra's
    block gets attribution (the market's range in ``macro``)."""
    from aetheris_ray.components.range_vol import variance_path

    _, _, state = setup
    cfg = CFG.model_copy(update={"volatility": ComponentChoice(name="range_har", params={"extras": extras})})
    state = with_side_series(state)
    model = fit_model(cfg, cfg.specs(), state.returns, **state_inputs(state))
    har = model.part("volatility")
    assert har.info["extras_used"] == sorted(extras)
    ctx = Context.from_states([state], cfg.lookback)
    fc = ig.DifferentiableForecast(model, ctx, level_map(), H, np.log([0.95, 1.05]), M, 2)
    x = fc.actual_inputs()
    assert {"rv": "rv" in extras, "iv": "iv" in extras, "market": "market" in extras} == {
        k: k in x for k in ("rv", "iv", "market")}
    u, d = the_models_own_and_complete(fc, model, ctx, state, seed=2)
    np.testing.assert_allclose(u[0, H:].numpy(), variance_path(har.condition(ctx)["mean_var"], H)[0], rtol=1e-9)
    for b in blocks:
        assert b not in d["inputs"]["not_in_model"] and abs(d["attributions"]["width80"][b][-1]) > 0, b


def test_the_market_assets_own_range_counts_as_its_realised_vol(setup):
    """For the market asset itself the market's range is its own: the HAR's market regressor is credited to
    ``realised_vol``, never to ``macro``."""
    _, _, state = setup
    cfg = CFG.model_copy(update={"volatility": ComponentChoice(name="range_har", params={"extras": ["market"]})})
    state = with_side_series(state, market_is_own=True)
    model = fit_model(cfg, cfg.specs(), state.returns, **state_inputs(state))
    fc = ig.DifferentiableForecast(model, Context.from_states([state], cfg.lookback), level_map(), H,
                                   np.log([1.05]), M, 2)
    assert fc.input_blocks()["market"] == ["realised_vol"] * fc.L and "macro" not in fc.model_blocks()
    d = ig.explain_model(model, state, level_map(), H, [1.05 * float(state.spot)], n_paths=M, seed=2)
    assert "macro" in d["inputs"]["not_in_model"] and d["completeness_within_tolerance"]


@pytest.mark.parametrize("members", [
    ["garch", "range_garch", "ewma"],
    ["garch", "range_garch", "range_har"],  # the range_blend preset
    ["garch", {"name": "range_har", "extras": ["iv", "market"]}],
])
def test_online_blend_weights_are_differentiated_and_match_the_models(setup, members):
    """An online blend: its members' one-step losses (a range-HAR's too) are re-run in torch over the context,
    so the weights equal `FittedBlend.weights` (away from equal), the paths the model's, and completeness holds."""
    _, _, state = setup
    cfg = CFG.model_copy(update={"volatility": ComponentChoice(
        name="blend", params={"members": members, "weighting": "online", "eta": 1.0})})
    state = with_side_series(state, seed=1)
    model = fit_model(cfg, cfg.specs(), state.returns, **state_inputs(state))
    ctx = Context.from_states([state], cfg.lookback)
    fc = ig.DifferentiableForecast(model, ctx, level_map(), H, np.log([0.95, 1.05]), M, 5)
    u, _ = the_models_own_and_complete(fc, model, ctx, state, seed=5)
    w = model.part("volatility").weights(ctx)[0]
    assert np.ptp(w) > 0.01
    np.testing.assert_allclose(u[0, -len(members):].numpy(), w, rtol=1e-9)
