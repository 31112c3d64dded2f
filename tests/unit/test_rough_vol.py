"""rough_vol contract: shapes, finiteness, seed determinism, save/load equality, training step, loop oracle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.components.rough_vol import FittedRoughVolatility, RoughVolatility
from aetheris_ray.components.rough_vol.fbm import fbm_factor
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.features.state import MarketState
from aetheris_ray.windows import WindowSpec, concat_windows, make_windows

SPEC = WindowSpec(lookback=32, horizon=7, stride=2, regime=True)


@pytest.fixture(scope="module")
def windows():
    src = SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31")
    return concat_windows([make_windows(src.history(a), SPEC) for a in src.assets()], SPEC)


@pytest.fixture(scope="module")
def fitted(windows):
    return RoughVolatility(lookback=32, hidden=16, max_steps=40, batch_size=128, device="cpu").fit(windows)


def _state(n=200, seed=0, rv=True):
    rng = np.random.default_rng(seed)
    r = 0.03 * rng.standard_normal(n)
    return MarketState(
        asset="X", origin=pd.Timestamp("2024-01-01"), spot=100.0, returns=r, mu=0.0, sigma=0.03,
        regime_label="normal", regime_vector=np.zeros(4),
        intraday_rv=(r**2 * rng.uniform(0.5, 1.5, n)) if rv else None,
    )


def test_regime_vector_is_an_input(fitted):
    from aetheris_ray.features import N_REGIME_FEATURES

    assert fitted.n_regime == N_REGIME_FEATURES
    s = _state()
    calm = fitted.params(s.with_(regime_vector=np.zeros(N_REGIME_FEATURES)))
    wild = fitted.params(s.with_(regime_vector=np.full(N_REGIME_FEATURES, 2.0)))
    assert calm["m"] != wild["m"]


def test_features_constant_in_training_are_ignored_at_inference():
    from aetheris_ray.components.rough_vol.component import feature_scale, standardise

    feats = np.array([[1.0, 0.0], [3.0, 0.0]])  # 2nd feature: absent (0) all through training
    mean, std = feature_scale(feats)
    assert std[1] == 0.0
    z = standardise(np.array([[2.0, 5.0]]), mean, std)
    np.testing.assert_array_equal(z, [[0.0, 0.0]])


def test_fit_reports_metrics_and_estimates_hurst(fitted):
    m = fitted.info["metrics"]
    assert {"val_ql", "val_nll", "val_ql_ewma"} <= set(m)
    assert np.isfinite(m["val_ql"]) and m["val_ql"] > 0
    assert 0.01 <= fitted.hurst <= 0.49
    assert fitted.info["train_range"][0] < fitted.info["val_range"][0]
    assert fitted.info["steps"] == 40


@pytest.mark.parametrize("rv", [True, False])
def test_sample_shapes_finiteness_and_seed_determinism(fitted, rv):
    state = _state(rv=rv)
    a = fitted.sample(state, 500, 10, np.random.default_rng(1))
    b = fitted.sample(state, 500, 10, np.random.default_rng(1))
    c = fitted.sample(state, 500, 10, np.random.default_rng(2))
    assert a.shape == (500, 10)
    assert np.all(np.isfinite(a)) and np.all(a > 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert fitted.params(state)["source"] == ("intraday_rv" if rv else "returns_proxy")


def test_sampler_matches_a_loop_reimplementation(fitted):
    """Same shocks, scalar loop of X_k - m = (1 - kappa)(X_{k-1} - m) + nu dB_H(k) vs the vectorised code."""
    params = {"x0": np.array([-3.0, -4.0]), "m": np.array([-3.5, -3.2]), "nu": np.array([0.3, 0.5]), "kappa": np.array([0.05, 0.2])}
    h, n = 6, 4
    out = fitted.sample_params(params, n, h, np.random.default_rng(9))
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


def test_simulated_log_vol_moments_match_closed_form(fitted):
    """Consistency of two routes: the torch closed-form (mean, cov) vs Monte Carlo of the numpy sampler."""
    import torch

    from aetheris_ray.components.rough_vol.fbm import fgn_autocovariance
    from aetheris_ray.components.rough_vol.module import rfou_moments

    h = 8
    p = {"x0": np.array([-3.0]), "m": np.array([-3.6]), "nu": np.array([0.4]), "kappa": np.array([0.1])}
    x = np.log(fitted.sample_params(p, 40_000, h, np.random.default_rng(3))[0]) - fitted.vol_bias
    g = fgn_autocovariance(h, fitted.hurst)
    k = np.arange(h)
    mean, cov = rfou_moments({k_: torch.tensor(v, dtype=torch.float64) for k_, v in p.items()},
                             torch.tensor(g[np.abs(k[:, None] - k[None, :])]))
    np.testing.assert_allclose(x.mean(0), mean[0].numpy(), atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), cov[0].numpy(), atol=0.01)


def test_sample_windows_batches_origins(fitted, windows):
    w = {k: v[:5] for k, v in windows.items()}
    out = fitted.sample_windows(w, 50, 7, np.random.default_rng(0))
    assert out.shape == (5, 50, 7) and np.all(np.isfinite(out))


def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "rv")
    man = json.loads((path / "manifest.json").read_text())
    assert man["component"] == "rough_vol" and man["schema_version"] == 1 and man["weights"] == "weights.pt"
    assert not list(path.glob("*.pkl"))
    back = FittedRoughVolatility.load(path)
    assert back.hurst == fitted.hurst and back.vol_bias == fitted.vol_bias
    state = _state()
    np.testing.assert_array_equal(
        back.sample(state, 200, 5, np.random.default_rng(4)), fitted.sample(state, 200, 5, np.random.default_rng(4))
    )
    with pytest.raises(InvalidInput, match="overwrite=True"):
        fitted.save(path)
    fitted.save(path, overwrite=True)


def test_load_refuses_corrupt_or_wrong_artifacts(fitted, tmp_path):
    path = fitted.save(tmp_path / "rv")
    (path / "weights.pt").write_bytes(b"not a state dict")
    with pytest.raises(ModelNotFound, match="corrupt"):
        FittedRoughVolatility.load(path)
    man = json.loads((path / "manifest.json").read_text())
    man["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelNotFound, match="schema version 99"):
        FittedRoughVolatility.load(path)
    with pytest.raises(ModelNotFound, match="no manifest.json"):
        FittedRoughVolatility.load(tmp_path / "nothing")


def test_from_params_is_deterministic_and_validated():
    a = FittedRoughVolatility.from_params(0.1, seed=3, lookback=32)
    b = FittedRoughVolatility.from_params(0.1, seed=3, lookback=32)
    s = _state()
    np.testing.assert_array_equal(a.sample(s, 10, 3, np.random.default_rng(0)), b.sample(s, 10, 3, np.random.default_rng(0)))
    with pytest.raises(InvalidInput, match="hurst=1.5"):
        FittedRoughVolatility.from_params(1.5)
    with pytest.raises(InvalidInput, match="lookback=64"):
        FittedRoughVolatility.from_params(0.1, lookback=64).sample(_state(n=30), 10, 3, np.random.default_rng(0))
    with pytest.raises(InvalidInput, match="n_paths=0"):
        a.sample(s, 0, 3, np.random.default_rng(0))


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


# -- the engine route: E's component verbs ----------------------------------------------------


def test_engine_route_loads_the_registered_model(fitted, isolated_home):
    import warnings

    from aetheris_ray.components import Context, build_spec, load_component
    from aetheris_ray.components.rough_vol.component import FittedRoughVol, _LOADED
    from aetheris_ray.registry import register_model

    _LOADED.clear()
    rec = register_model(fitted)
    spec = build_spec("volatility", "rough_vol")
    states = [_state(seed=1), _state(seed=2, rv=False), _state(n=10, seed=3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        comp = spec.fit(states[0].returns)
    assert isinstance(comp, FittedRoughVol) and comp.info["model_version"] == rec.version
    ctx = Context.from_states(states, lookback=64)
    cond = comp.condition(ctx)
    assert cond["v1"].shape == (3,) and np.all(cond["v1"] > 0)
    paths = comp.simulate(cond, 2000, 5, np.random.default_rng(0))
    assert paths.shape == (3, 2000, 5) and np.all(np.isfinite(paths))
    again = comp.simulate(cond, 2000, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(paths, again)
    # analytic moments vs simulation (log-normal E[sigma^2])
    ev = comp.expected_variance(cond, 5)
    sig = comp.sample_vol(cond, np.zeros((3, 20000, 5)), np.random.default_rng(1))
    np.testing.assert_allclose((sig**2).mean(axis=1), ev, rtol=0.1)
    # single-state verb and E's save / load_component round trip
    one = comp.sample(states[0], 100, 4, np.random.default_rng(2))
    assert one.shape == (100, 4)
    back = load_component(comp.save(isolated_home / "adapter"))
    np.testing.assert_array_equal(back.simulate(back.condition(ctx), 50, 5, np.random.default_rng(3)),
                                  comp.simulate(cond, 50, 5, np.random.default_rng(3)))


def test_engine_route_falls_back_to_the_baseline_with_a_warning(isolated_home):
    from aetheris_ray.components import build_spec
    from aetheris_ray.components.rough_vol.component import _LOADED
    from aetheris_ray.errors import FallbackWarning

    _LOADED.clear()
    spec = build_spec("volatility", "rough_vol", fallback="ewma")
    with pytest.warns(FallbackWarning, match="fell back"):
        comp = spec.fit(_state().returns)
    assert comp.name == "ewma" and comp.info["fallback"] == "baseline:ewma"
    assert "fell back" in comp.info["warnings"][0]
