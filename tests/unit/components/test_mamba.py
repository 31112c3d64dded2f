"""mamba trend: the scan against a sequential loop, causality, one featuriser, save/load/forecast equality,
checkpoint restore, learning a planted drift, the horizon and shrinkage rules, the registry route."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.components.base import Context
from aetheris_ray.components.mamba import FittedMamba, MambaTrend
from aetheris_ray.components.mamba.component import N_CHANNELS, sequence_inputs
from aetheris_ray.components.trend import MAX_DRIFT_STEPS
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.features.state import MarketState
from aetheris_ray.windows import WindowSpec, make_windows

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train and score on one thread (a shared 2-core machine: more threads only contend); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scan_inputs(b, length, d, s, seed, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype).to(device)  # noqa: E731
    u, delta, B, C, D = r(b, length, d), torch.nn.functional.softplus(r(b, length, d)), r(b, length, s), \
        r(b, length, s), r(d)
    A = -torch.exp(r(d, s))
    return u, delta, A, B, C, D


def _loop_scan(u, delta, A, B, C, D):
    """The recursion as written: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t h_t + D u_t, one step at a time."""
    b, length, d = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=u.dtype)
    out = torch.empty_like(u)
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        out[:, t] = (h * C[:, t, None, :]).sum(-1) + D * u[:, t]
    return out


@pytest.mark.parametrize("length", [1, 2, 7, 16, 64, 100])
def test_parallel_scan_equals_the_sequential_loop(length):
    from aetheris_ray.components.mamba.module import selective_scan

    args = _scan_inputs(3, length, 5, 4, seed=length)
    y = selective_scan(*args, backend="torch")
    np.testing.assert_allclose(y.numpy(), _loop_scan(*args).numpy(), rtol=0, atol=1e-12)
    y_no_skip = selective_scan(*args[:5], backend="torch")
    np.testing.assert_allclose((y - y_no_skip).numpy(), (args[0] * args[5]).numpy(), rtol=0, atol=1e-12)


def test_scan_stays_finite_on_long_sequences_with_large_steps():
    """Log-space combination: every exponent is a sum of delta A <= 0, so exp never overflows."""
    from aetheris_ray.components.mamba.module import selective_scan

    u, delta, A, B, C, D = _scan_inputs(2, 500, 3, 2, seed=1)
    y = selective_scan(u, delta * 50.0, A * 20.0, B, C, D, backend="torch")
    assert torch.isfinite(y).all()
    np.testing.assert_allclose(y.numpy(), _loop_scan(u, delta * 50.0, A * 20.0, B, C, D).numpy(), atol=1e-12)


def test_scan_refuses_bad_shapes_and_backends():
    from aetheris_ray.components.mamba.module import mamba_ssm_available, selective_scan

    u, delta, A, B, C, D = _scan_inputs(2, 5, 3, 2, seed=0)
    with pytest.raises(InvalidInput, match=r"selective_scan: shapes .* want \(b, L, d\)"):
        selective_scan(u, delta, A.T, B, C, D)
    with pytest.raises(InvalidInput, match="backend='cuda'"):
        selective_scan(u, delta, A, B, C, D, backend="cuda")
    if not mamba_ssm_available():
        with pytest.raises(InvalidInput, match="needs the mamba-ssm package and CUDA tensors"):
            selective_scan(u, delta, A, B, C, D, backend="mamba_ssm")


def test_mamba_ssm_kernel_equals_the_pure_scan():
    """The optional kernel (mamba-ssm on CUDA) against the pure scan, float32, within the stated tolerance."""
    from aetheris_ray.components.mamba.module import KERNEL_ATOL, KERNEL_RTOL, mamba_ssm_available, selective_scan

    if not mamba_ssm_available():
        pytest.skip("mamba-ssm is not installed or CUDA is not available: only the pure torch scan runs here")
    args = _scan_inputs(4, 64, 32, 8, seed=3, dtype=torch.float32, device="cuda")
    kernel = selective_scan(*args, backend="mamba_ssm")
    pure = selective_scan(*args, backend="torch")
    np.testing.assert_allclose(kernel.cpu().numpy(), pure.cpu().numpy(), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_mixer_is_causal():
    """Changing the inputs from day t on leaves every output before t unchanged (conv and scan look back only)."""
    from aetheris_ray.components.mamba.module import MambaMixer

    mixer = MambaMixer(8, d_state=4, backend="torch").double()
    x = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = mixer(x)
    x2 = x.clone()
    x2[:, 12:] += 1.0
    y2 = mixer(x2)
    np.testing.assert_array_equal(y[:, :12].detach().numpy(), y2[:, :12].detach().numpy())
    assert not torch.allclose(y[:, 12:], y2[:, 12:])


# -- the part ---------------------------------------------------------------------------------


def _state(n=200, seed=0, iv=False, regime=4):
    rng = np.random.default_rng(seed)
    r = 0.03 * rng.standard_normal(n)
    return MarketState(
        asset="X", origin=pd.Timestamp("2024-01-01"), spot=100.0, returns=r, mu=0.0, sigma=0.03,
        regime_label="normal", regime_vector=np.linspace(-1, 1, regime),
        log_hl=np.abs(r) + 0.02, log_co=r, implied_vol=np.full(n, 60.0) if iv else None,
    )


def _planted_windows(n=2400, lookback=24, horizon=5, strength=0.5, seed=0):
    """Windows whose next days drift by ``strength`` daily vols in the sign of the last return (a learnable signal)."""
    rng = np.random.default_rng(seed)
    sigma = 0.02 * np.exp(0.3 * rng.standard_normal(n))
    x = rng.standard_normal((n, lookback))
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    drift = strength * sigma * np.sign(x[:, -1])
    y = drift[:, None] + sigma[:, None] * rng.standard_normal((n, horizon))
    return {
        "asset": np.full(n, "SYN", dtype=object),
        "origin": (np.datetime64("2015-01-01") + np.arange(n).astype("timedelta64[D]")).astype("datetime64[ns]"),
        "x_ret": x.astype(np.float32),
        "x_logvol": (np.log(sigma)[:, None] + 0.3 * rng.standard_normal((n, lookback))).astype(np.float32),
        "x_has_rv": np.zeros((n, lookback), dtype=bool),
        "mu": np.zeros(n, dtype=np.float32),
        "sigma": sigma.astype(np.float32),
        "y_ret": y.astype(np.float32),
        "y_logvol": np.zeros((n, horizon), dtype=np.float32),
    }


SMALL = dict(lookback=24, d_model=8, d_state=4, layers=1, batch_size=64, lr=3e-3, max_sigma=1.0, shrink=1.0,
             device="cpu", backend="torch")


@pytest.fixture(scope="module")
def trained():
    return MambaTrend(max_steps=150, **SMALL).fit(_planted_windows())


@pytest.mark.slow
def test_learns_a_planted_drift(trained):
    m = trained.info["metrics"]
    assert m["val_skill"] > 0.05, m  # the sign of the last return explains part of the next days' returns
    assert m["val_ql"] < m["val_ql_zero"] and m["val_mse"] < m["val_mse_zero"]
    assert trained.info["steps"] == 150 and trained.info["train_range"][1] < trained.info["val_range"][0]
    up = Context.from_states([_state(seed=1).with_(returns=np.r_[_state(seed=1).returns, 0.05])], lookback=100)
    down = Context.from_states([_state(seed=1).with_(returns=np.r_[_state(seed=1).returns, -0.05])], lookback=100)
    assert trained.condition(up)["drift"][0, 0] > 0 > trained.condition(down)["drift"][0, 0]


@pytest.mark.slow
def test_save_load_forecasts_the_same_numbers(trained, tmp_path):
    from aetheris_ray.components import load_component

    path = trained.save(tmp_path / "m")
    man = json.loads((path / "manifest.json").read_text())
    assert (man["kind"], man["name"]) == ("trend", "mamba") and man["params"] == []
    assert {"seq_mean", "seq_std", "static_mean", "static_std", "w.head.bias"} <= set(man["shared"])
    back = load_component(path)
    assert isinstance(back, FittedMamba) and back.spec == trained.spec and back.horizon == 5
    for k, v in trained.shared.items():
        np.testing.assert_array_equal(back.shared[k], v, err_msg=k)
    ctx = Context.from_states([_state(seed=s) for s in range(4)], lookback=100)
    a, b = trained.condition(ctx), back.condition(ctx)
    np.testing.assert_array_equal(a["drift"], b["drift"])
    assert np.abs(a["drift"]).max() > 0
    np.testing.assert_array_equal(back.drift(b, 14), trained.drift(a, 14))
    state = _state(seed=7)
    np.testing.assert_array_equal(back.sample(state, 300, 14, np.random.default_rng(0)),
                                  trained.sample(state, 300, 14, np.random.default_rng(0)))


@pytest.mark.slow
def test_load_refuses_corrupt_artefacts(trained, tmp_path):
    path = trained.save(tmp_path / "m")
    with np.load(path / "shared.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["w.head.weight"] = np.zeros((2, 2))
    np.savez(path / "shared.npz", **arrays)
    with pytest.raises(ModelNotFound, match="cannot build the network from the weights"):
        FittedMamba.load(path)
    del arrays["seq_std"]
    np.savez(path / "shared.npz", **arrays)
    with pytest.raises(ModelNotFound, match="corrupt"):
        FittedMamba.load(path)


@pytest.mark.slow
def test_batched_walk_forward_equals_single_forecasts(trained):
    states = [_state(seed=s, n=100 + 20 * s) for s in range(5)]
    many = trained.condition(Context.from_states(states, lookback=300))["drift"]
    for i, s in enumerate(states):
        one = trained.condition(Context.from_states([s], lookback=300))["drift"]
        np.testing.assert_allclose(many[i], one[0], rtol=1e-12, atol=0)


@pytest.mark.slow
def test_horizon_beyond_training_holds_the_last_step_and_shrink_scales(trained):
    ctx = Context.from_states([_state(seed=2)], lookback=100)
    d = trained.condition(ctx)["drift"]
    assert d.shape == (1, MAX_DRIFT_STEPS)
    np.testing.assert_array_equal(d[:, 5:], np.repeat(d[:, 4:5], MAX_DRIFT_STEPS - 5, axis=1))
    half = FittedMamba(spec=MambaTrend(**dict(SMALL, shrink=0.5)), params={}, shared=trained.shared)
    np.testing.assert_allclose(half.condition(ctx)["drift"], 0.5 * d, rtol=1e-12)
    off = FittedMamba(spec=MambaTrend(**dict(SMALL, shrink=0.0)), params={}, shared=trained.shared)
    assert not off.condition(ctx)["drift"].any()
    a, scale, _ = trained.drift_units(ctx)
    assert np.all(np.abs(d) <= SMALL["max_sigma"] * scale[:, None])
    short = trained.condition(Context.from_states([_state(n=10)], lookback=100))["drift"]
    assert not short.any()  # fewer than `lookback` returns: zero drift


@pytest.mark.slow
def test_training_step_restores_exactly():
    """Checkpoint after 5 steps, continue 5 more; a fresh trainer restored from it reaches identical weights."""
    from aetheris_ray.components.mamba.training import Trainer

    w = _planted_windows(n=600)
    spec = MambaTrend(**SMALL)
    t1 = Trainer(w, spec)
    t1.train(5)
    ckpt = copy.deepcopy(t1.state_dict())
    t1.train(5)
    t2 = Trainer(w, spec)
    t2.load_state_dict(ckpt)
    t2.train(5)
    for k, v in t1.net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), t2.net.state_dict()[k].numpy(), err_msg=k)
    assert t1.evaluate() == t2.evaluate()
    assert t1.score(t1.fitted()) == {k: v for k, v in t1.evaluate().items() if k != "step"}


def test_one_featuriser_for_training_windows_and_forecasts():
    """A window at origin D and the forecast's `Context` at D give the network the same inputs.

    Both synthetic assets: the first has 2h bars (realised variance) on some days and an
    implied-vol series, the second has neither (Parkinson log vol from the daily range).
    The windows carry no implied vol or MM indices: those inputs are 0 in training.
    """
    from aetheris_ray.features import compute_states

    spec = WindowSpec(lookback=40, horizon=7, regime=True)
    src = SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31")
    for asset in src.assets()[:2]:
        data = src.history(asset)
        w = make_windows(data, spec, start="2022-06-01", end="2022-06-12")
        assert len(w["origin"]) >= 5
        n_regime = w["regime"].shape[1]
        states = compute_states(data, list(pd.DatetimeIndex(w["origin"])))
        seq_w, st_w, s_w, ok_w = sequence_inputs(Context.from_windows(w), 32, n_regime)
        seq_s, st_s, s_s, ok_s = sequence_inputs(Context.from_states(states, lookback=1000), 32, n_regime)
        assert ok_w.all() and ok_s.all() and seq_w.shape == (len(w["origin"]), 32, N_CHANNELS)
        np.testing.assert_allclose(s_w, s_s, rtol=1e-4)
        np.testing.assert_allclose(seq_w[..., :2], seq_s[..., :2], rtol=1e-4, atol=1e-4)  # windows are float32
        np.testing.assert_allclose(st_w[:, : 1 + n_regime], st_s[:, : 1 + n_regime], rtol=1e-4, atol=1e-4)
        assert not seq_w[..., 2].any()


def test_featuriser_reads_rv_then_range_then_returns():
    lb = 30
    st = _state(n=60)
    lv = lambda ctx: sequence_inputs(ctx, lb, 0)[0][0, :, 1]  # noqa: E731 - log vol minus log s
    base = Context.from_states([st], lookback=lb)
    log_s = np.log(sequence_inputs(base, lb, 0)[2][0])
    np.testing.assert_allclose(lv(base) + log_s, np.log(st.log_hl[-lb:]) - 0.5 * np.log(4 * np.log(2)), rtol=1e-12)
    rv = np.full(60, 4e-4)
    with_rv = Context.from_states([st.with_(intraday_rv=rv)], lookback=lb)
    np.testing.assert_allclose(lv(with_rv) + log_s, 0.5 * np.log(4e-4), rtol=1e-12)
    bare = Context.from_states([st.with_(log_hl=None, log_co=None)], lookback=lb)
    r = st.returns[-lb:]
    np.testing.assert_allclose(lv(bare) + log_s, np.log(np.abs(r - r.mean())) + 0.6351814227307391, rtol=1e-10)
    iv = sequence_inputs(Context.from_states([_state(n=60, iv=True)], lookback=lb), lb, 0)[0][0, :, 2]
    np.testing.assert_allclose(iv + log_s, np.log(0.6 / np.sqrt(365.0)), rtol=1e-12)
    with pytest.raises(InvalidInput, match="the context holds 30 days, the model reads lookback=64"):
        sequence_inputs(base, 64, 0)


def test_features_constant_in_training_are_ignored_at_inference():
    from aetheris_ray.components.mamba.component import feature_scale, standardise

    x = np.zeros((4, 3, 2))
    x[..., 0] = np.arange(12).reshape(4, 3)  # channel 1 (e.g. implied vol): 0 all through training
    mean, std = feature_scale(x)
    assert std[1] == 0.0 and std[0] > 0
    z = standardise(np.array([[[mean[0], 7.0]]]), mean, std)
    np.testing.assert_array_equal(z, [[[0.0, 0.0]]])


def test_from_params_is_seeded_and_starts_at_zero_drift():
    a, b = FittedMamba.from_params(seed=3, lookback=32), FittedMamba.from_params(seed=3, lookback=32)
    for k, v in a.weights.items():
        np.testing.assert_array_equal(v, b.weights[k])
    c = FittedMamba.from_params(seed=4, lookback=32)
    assert not all(np.array_equal(v, c.weights[k]) for k, v in a.weights.items())
    cond = a.condition(Context.from_states([_state()], lookback=100))
    assert cond["drift"].shape == (1, MAX_DRIFT_STEPS) and not cond["drift"].any()  # the head starts at zero
    assert FittedMamba.from_params(n_regime=4, horizon=7).n_regime == 4
    with pytest.raises(InvalidInput, match="horizon=0"):
        FittedMamba.from_params(horizon=0)


def test_spec_validation_and_fit_without_artefact():
    with pytest.raises(InvalidInput, match=r"shrink=1.5 must be in \[0, 1\]"):
        MambaTrend(shrink=1.5)
    with pytest.raises(InvalidInput, match="backend='triton'"):
        MambaTrend(backend="triton")
    with pytest.raises(InvalidInput, match="lookback=1 must be a whole number >= 2"):
        MambaTrend(lookback=1)
    with pytest.raises(InvalidInput, match="no trained artefact given"):
        MambaTrend().fit(np.zeros(100))


# -- the engine route: resolved once from the registry ----------------------------------------


def test_engine_route_falls_back_to_ar_es_and_says_so(isolated_home):
    from aetheris_ray.errors import FallbackWarning
    from aetheris_ray.model import ComponentChoice, EngineConfig, resolve_config

    with pytest.warns(FallbackWarning, match="fell back"):
        cfg = resolve_config(EngineConfig(trend=ComponentChoice(name="mamba")))
    assert cfg.trend.name == "ar_es"
    (fb,) = cfg.fallbacks
    assert (fb.kind, fb.wanted, fb.used) == ("trend", "mamba@latest", "ar_es")
    assert cfg.version.endswith("+trend=fallback:ar_es")


@pytest.mark.slow
def test_engine_route_uses_the_registered_artefact(trained, isolated_home):
    import warnings

    from aetheris_ray.model import ComponentChoice, EngineConfig, fit_model, resolve_config
    from aetheris_ray.registry import register_model

    rec = register_model(trained)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = resolve_config(EngineConfig(trend=ComponentChoice(name="mamba")))
    assert cfg.trend.version == rec.version and not cfg.fallbacks
    assert cfg.version.endswith(f"+trend=mamba@{rec.version}")
    part = fit_model(cfg, cfg.specs(), _state().returns).part("trend")
    assert isinstance(part, FittedMamba)
    ctx = Context.from_states([_state(seed=3)], lookback=100)
    np.testing.assert_array_equal(part.condition(ctx)["drift"], trained.condition(ctx)["drift"])
