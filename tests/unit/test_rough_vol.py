"""rough_vol: shapes, finiteness, seed determinism, save/load equality, training step, loop oracle, one featuriser,
the registry route (resolved once, fallback named in the answer)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.components.base import Context
from aetheris_ray.components.rough_vol import FittedRoughVol, RoughVolatility
from aetheris_ray.components.rough_vol.fbm import fbm_factor
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.features.state import MarketState
from aetheris_ray.windows import WindowSpec, concat_windows, make_windows

pytestmark = pytest.mark.torch

SPEC = WindowSpec(lookback=32, horizon=7, stride=2, regime=True)


@pytest.fixture(scope="module")
def windows():
    src = SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31")
    return concat_windows([make_windows(src.history(a), SPEC) for a in src.assets()], SPEC)


@pytest.fixture(scope="module")
def fitted(windows):
    return RoughVolatility(lookback=32, hidden=16, max_steps=40, batch_size=128, device="cpu").fit(windows)


def _params(fitted, state):
    return fitted.params_from_context(Context.from_states([state], lookback=fitted.spec.lookback))[0]


def _vol(fitted, state, n, h, rng):
    """Daily vol paths (n, h) of one state."""
    return fitted.vol_paths(fitted.condition(Context.from_states([state], lookback=fitted.spec.lookback)), n, h, rng)[0]


def _state(n=200, seed=0, rv=True):
    rng = np.random.default_rng(seed)
    r = 0.03 * rng.standard_normal(n)
    return MarketState(
        asset="X", origin=pd.Timestamp("2024-01-01"), spot=100.0, returns=r, mu=0.0, sigma=0.03,
        regime_label="normal", regime_vector=np.zeros(4),
        intraday_rv=(r**2 * rng.uniform(0.5, 1.5, n)) if rv else None,
    )


@pytest.mark.slow
def test_regime_vector_is_an_input(fitted):
    from aetheris_ray.features import N_REGIME_FEATURES

    assert fitted.n_regime == N_REGIME_FEATURES
    s = _state()
    calm = _params(fitted, s.with_(regime_vector=np.zeros(N_REGIME_FEATURES)))
    wild = _params(fitted, s.with_(regime_vector=np.full(N_REGIME_FEATURES, 2.0)))
    assert calm["m"] != wild["m"]


def test_features_constant_in_training_are_ignored_at_inference():
    from aetheris_ray.components.rough_vol.component import feature_scale, standardise

    feats = np.array([[1.0, 0.0], [3.0, 0.0]])  # 2nd feature: absent (0) all through training
    mean, std = feature_scale(feats)
    assert std[1] == 0.0
    z = standardise(np.array([[2.0, 5.0]]), mean, std)
    np.testing.assert_array_equal(z, [[0.0, 0.0]])


@pytest.mark.slow
def test_fit_reports_metrics_and_estimates_hurst(fitted):
    m = fitted.info["metrics"]
    assert {"val_ql", "val_nll", "val_ql_ewma"} <= set(m)
    assert np.isfinite(m["val_ql"]) and m["val_ql"] > 0
    assert 0.01 <= fitted.hurst <= 0.49
    assert fitted.info["train_range"][0] < fitted.info["val_range"][0]
    assert fitted.info["steps"] == 40


@pytest.mark.parametrize("rv", [True, False])
@pytest.mark.slow
def test_sample_shapes_finiteness_and_seed_determinism(fitted, rv):
    state = _state(rv=rv)
    a = _vol(fitted, state, 500, 10, np.random.default_rng(1))
    b = _vol(fitted, state, 500, 10, np.random.default_rng(1))
    c = _vol(fitted, state, 500, 10, np.random.default_rng(2))
    assert a.shape == (500, 10)
    assert np.all(np.isfinite(a)) and np.all(a > 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # the intraday realised variance is an input: without it the network sees the returns proxy
    assert (_params(fitted, state)["x0"] != _params(fitted, state.with_(intraday_rv=None))["x0"]) == rv


@pytest.mark.slow
def test_sampler_matches_a_loop_reimplementation(fitted):
    """Same shocks, scalar loop of X_k - m = (1 - kappa)(X_{k-1} - m) + nu dB_H(k) vs the vectorised code."""
    params = {"x0": np.array([-3.0, -4.0]), "m": np.array([-3.5, -3.2]), "nu": np.array([0.3, 0.5]), "kappa": np.array([0.05, 0.2])}
    h, n = 6, 4
    out = fitted.vol_paths(params, n, h, np.random.default_rng(9))
    z = np.random.default_rng(9).standard_normal((2, n, h))
    lower = fbm_factor(h, fitted.hurst)
    for o in range(2):
        for p in range(n):
            b = lower @ z[o, p]
            x, prev_b = params["x0"][o], 0.0
            for k in range(h):
                x = params["m"][o] + (1 - params["kappa"][o]) * (x - params["m"][o]) + params["nu"][o] * (b[k] - prev_b)
                prev_b = b[k]
                assert out[o, p, k] == pytest.approx(np.exp(x + fitted.vol_bias), rel=1e-10)


@pytest.mark.slow
def test_simulated_log_vol_moments_match_closed_form(fitted):
    """Consistency of two routes: the torch closed-form (mean, cov) vs Monte Carlo of the numpy sampler."""
    import torch

    from aetheris_ray.components.rough_vol.fbm import fgn_autocovariance
    from aetheris_ray.components.rough_vol.module import rfou_moments

    h = 8
    p = {"x0": np.array([-3.0]), "m": np.array([-3.6]), "nu": np.array([0.4]), "kappa": np.array([0.1])}
    x = np.log(fitted.vol_paths(p, 40_000, h, np.random.default_rng(3))[0]) - fitted.vol_bias
    g = fgn_autocovariance(h, fitted.hurst)
    k = np.arange(h)
    mean, cov = rfou_moments({k_: torch.tensor(v, dtype=torch.float64) for k_, v in p.items()},
                             torch.tensor(g[np.abs(k[:, None] - k[None, :])]))
    np.testing.assert_allclose(x.mean(0), mean[0].numpy(), atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), cov[0].numpy(), atol=0.01)


def test_one_featuriser_for_training_windows_and_forecasts():
    """A window at origin D and the forecast's `Context` at D give the network the same inputs."""
    from aetheris_ray.components.rough_vol.component import network_inputs
    from aetheris_ray.features import compute_states

    src = SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31")
    data = src.history(src.assets()[0])
    w = make_windows(data, SPEC, start="2021-06-01", end="2021-06-20")
    assert len(w["origin"]) >= 5
    states = compute_states(data, list(pd.DatetimeIndex(w["origin"])))
    f_w, a_w, ok_w = network_inputs(Context.from_windows(w), SPEC.lookback, w["regime"].shape[1])
    f_s, a_s, ok_s = network_inputs(Context.from_states(states, lookback=1000), SPEC.lookback, w["regime"].shape[1])
    assert ok_w.all() and ok_s.all()
    np.testing.assert_allclose(f_w, f_s, rtol=1e-4, atol=1e-4)  # windows are stored as float32
    np.testing.assert_allclose(a_w, a_s, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_save_load_round_trip(fitted, tmp_path):
    from aetheris_ray.components import load_component

    path = fitted.save(tmp_path / "rv")
    man = json.loads((path / "manifest.json").read_text())
    assert (man["kind"], man["name"], man["schema_version"]) == ("volatility", "rough_vol", 1)
    assert {"hurst", "vol_bias", "feat_mean", "feat_std"} <= set(man["shared"])
    assert any(k.startswith("w.") for k in man["shared"]) and man["params"] == []  # weights held once
    assert not list(path.glob("*.pkl"))
    back = load_component(path)
    assert isinstance(back, FittedRoughVol) and back.hurst == fitted.hurst and back.vol_bias == fitted.vol_bias
    state = _state()
    np.testing.assert_array_equal(_vol(back, state, 200, 5, np.random.default_rng(4)),
                                  _vol(fitted, state, 200, 5, np.random.default_rng(4)))
    with pytest.raises(InvalidInput, match="overwrite=True"):
        fitted.save(path)
    fitted.save(path, overwrite=True)


@pytest.mark.slow
def test_load_refuses_corrupt_or_wrong_artifacts(fitted, tmp_path):
    path = fitted.save(tmp_path / "rv")
    (path / "shared.npz").write_bytes(b"not an npz")
    with pytest.raises(ModelNotFound, match="corrupt"):
        FittedRoughVol.load(path)
    path = fitted.save(tmp_path / "rv2")
    with np.load(path / "shared.npz") as z:
        arrays = {k: z[k] for k in z.files}
    first = next(k for k in arrays if k.startswith("w."))
    arrays[first] = np.zeros((1, 1))  # a weight of the wrong shape
    np.savez(path / "shared.npz", **arrays)
    with pytest.raises(ModelNotFound, match="cannot build the network from the weights"):
        FittedRoughVol.load(path)
    man = json.loads((path / "manifest.json").read_text())
    man["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelNotFound, match="schema version 99"):
        FittedRoughVol.load(path)
    with pytest.raises(ModelNotFound, match="no manifest.json"):
        FittedRoughVol.load(tmp_path / "nothing")


def test_from_params_is_deterministic_and_validated():
    a = FittedRoughVol.from_params(0.1, seed=3, lookback=32)
    b = FittedRoughVol.from_params(0.1, seed=3, lookback=32)
    s = _state()
    np.testing.assert_array_equal(_vol(a, s, 10, 3, np.random.default_rng(0)), _vol(b, s, 10, 3, np.random.default_rng(0)))
    for k, v in a.weights.items():
        np.testing.assert_array_equal(v, b.weights[k])
    assert not all(np.array_equal(v, FittedRoughVol.from_params(0.1, seed=4, lookback=32).weights[k])
                   for k, v in a.weights.items())
    with pytest.raises(InvalidInput, match="hurst=1.5"):
        FittedRoughVol.from_params(1.5)
    short = _vol(FittedRoughVol.from_params(0.1, lookback=64), _state(n=30), 10, 3, np.random.default_rng(0))
    assert np.all(np.isfinite(short)) and np.all(short > 0)  # too little history: the neutral start
    with pytest.raises(InvalidInput, match="n_paths=0"):
        _vol(a, s, 0, 3, np.random.default_rng(0))


@pytest.mark.slow
def test_training_step_restores_exactly(windows):
    """Checkpoint after 10 steps, continue 10 more; a fresh trainer restored from it reaches identical weights."""
    from aetheris_ray.components.rough_vol.training import Trainer

    spec = RoughVolatility(lookback=32, hidden=8, batch_size=64, device="cpu", hurst=0.1)
    t1 = Trainer(windows, spec)
    t1.train(10)
    import copy

    ckpt = copy.deepcopy(t1.state_dict())
    t1.train(10)
    t2 = Trainer(windows, spec)
    t2.load_state_dict(ckpt)
    t2.train(10)
    for k, v in t1.net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), t2.net.state_dict()[k].numpy(), err_msg=k)
    assert t1.evaluate()["val_ql"] == t2.evaluate()["val_ql"]


# -- the engine route: resolved once from the registry ----------------------------------------


@pytest.mark.slow
def test_engine_route_uses_the_registered_artefact(fitted, isolated_home):
    import warnings

    from aetheris_ray.model import fit_model, model_config, resolve_config
    from aetheris_ray.registry import register_model

    rec = register_model(fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = resolve_config(model_config("rough_vol")[0])
    assert cfg.volatility.version == rec.version and not cfg.fallbacks
    assert cfg.version.endswith(f"+volatility=rough_vol@{rec.version}")
    states = [_state(seed=1), _state(seed=2, rv=False), _state(n=10, seed=3)]
    comp = fit_model(cfg, cfg.specs(), states[0].returns).part("volatility")
    assert isinstance(comp, FittedRoughVol) and comp.shared["hurst"] == fitted.hurst
    ctx = Context.from_states(states, lookback=64)
    cond = comp.condition(ctx)
    assert cond["v1"].shape == (3,) and np.all(cond["v1"] > 0)
    paths = comp.simulate(cond, 2000, 5, np.random.default_rng(0))
    assert paths.shape == (3, 2000, 5) and np.all(np.isfinite(paths))
    np.testing.assert_array_equal(paths, comp.simulate(cond, 2000, 5, np.random.default_rng(0)))
    # analytic moments vs simulation (log-normal E[sigma^2])
    ev = comp.expected_variance(cond, 5)
    sig = comp.sample_vol(cond, np.zeros((3, 20000, 5)), np.random.default_rng(1))
    np.testing.assert_allclose((sig**2).mean(axis=1), ev, rtol=0.1)


def test_engine_route_falls_back_to_the_registered_baseline_and_says_so(isolated_home):
    from aetheris_ray.errors import FallbackWarning
    from aetheris_ray.model import fit_model, model_config, resolve_config

    with pytest.warns(FallbackWarning, match="fell back"):
        cfg = resolve_config(model_config("rough_vol")[0])
    assert cfg.volatility.name == "garch"
    (fb,) = cfg.fallbacks
    assert (fb.kind, fb.wanted, fb.used) == ("volatility", "rough_vol@latest", "garch") and "no healthy" in fb.why
    assert cfg.version.endswith("+volatility=fallback:garch")
    assert fit_model(cfg, cfg.specs(), _state().returns).part("volatility").name == "garch"


@pytest.mark.slow
def test_forecast_before_and_after_registration_names_what_produced_it(fitted, isolated_home):
    """`--model rough_vol` before any model is registered falls back (and says so); after registration the
    same request uses the network (no stale fallback from the state cache) and names its registry version."""
    from aetheris_ray.api import forecast
    from aetheris_ray.registry import register_model

    src = SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31")
    kw = dict(source=src, paths=500, seed=3, model="rough_vol")
    with pytest.warns(Warning):
        before = forecast("SYN-BTC", 7, **kw)
    assert before.metadata["fallbacks"][0]["used"] == "garch"
    assert any("fell back" in w for w in before.metadata["warnings"])
    assert before.model_version.endswith("+volatility=fallback:garch")
    rec = register_model(fitted)
    after = forecast("SYN-BTC", 7, **kw)
    assert after.metadata["fallbacks"] == [] and not any("fell back" in w for w in after.metadata["warnings"])
    assert after.model_version.endswith(f"+volatility=rough_vol@{rec.version}")
    assert after.metadata["components"]["volatility"] == f"rough_vol@{rec.version}"
    assert not np.array_equal(after.quantiles, before.quantiles)


def test_trainer_score_of_its_own_part_equals_its_validation_ql(windows, fitted):
    """score() runs the part's forecast-time path; on the trainer's own part it gives evaluate()'s val_ql."""
    trainer = fitted.spec.trainer(windows)
    trainer.train(5)
    own = trainer.fitted()
    assert trainer.score(own)["val_ql"] == pytest.approx(own.info["metrics"]["val_ql"], rel=1e-4)
    other = trainer.score(fitted)["val_ql"]  # another version (40 steps) on the same windows
    assert np.isfinite(other) and other != pytest.approx(own.info["metrics"]["val_ql"], rel=1e-9)


def test_a_new_version_becomes_latest_only_when_it_beats_the_incumbent(windows, fitted, tmp_path):
    from aetheris_ray.registry import Registry
    from tune.sweep import compare_with_latest

    reg = Registry(tmp_path)
    first = compare_with_latest("rough_vol", fitted.spec, windows, fitted, reg)
    assert first["promoted"] and first["incumbent"] is None
    v1 = reg.register(fitted, promotion=first)
    weak = fitted.spec.trainer(windows)  # 1 step: a worse part than the 40-step incumbent
    weak.train(1)
    weak_fit = weak.fitted()
    decision = compare_with_latest("rough_vol", fitted.spec, windows, weak_fit, reg)
    assert decision["incumbent"] == v1.version
    assert decision["score"] >= decision["incumbent_score"] and not decision["promoted"], decision
    v2 = reg.register(weak_fit, promotion=decision)
    assert reg.record("rough_vol").version == v1.version  # the loser is stored, listed, not latest
    listed = {r.version: r for r in reg.list_models("rough_vol")}
    assert not listed[v2.version].promoted and listed[v2.version].promotion["incumbent_score"] == decision["incumbent_score"]
    assert reg.record("rough_vol", v2.version).version == v2.version  # still loadable by version
    forced = compare_with_latest("rough_vol", fitted.spec, windows, weak_fit, reg, force=True)
    assert forced["promoted"] and forced["why"].startswith("forced")
