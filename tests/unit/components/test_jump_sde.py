"""jump_sde: parameter recovery from simulated data, save/load equality (artefact and trainer), thinning, the
daily mixture, simulation vs likelihood, importance-sampling tilt, shapes batched over origins and paths."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from aetheris_ray.components.base import Context
from aetheris_ray.components.contract import PROTOCOLS, Trainer
from aetheris_ray.components.jump_sde import FittedJumpSde, JumpSdePaths
from aetheris_ray.errors import InvalidInput

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: the filter is a sequence of tiny ops, which a second (shared) core only slows down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sim_windows(n_days: int, lookback: int, horizon: int, *, lam: float = 0.1, jump_mean: float = -0.03,
                jump_sd: float = 0.05, sigma: float = 0.02, seed: int = 0) -> tuple[dict, int]:
    """Windows (one per ``horizon`` days, targets not overlapping) of a constant-parameter jump diffusion."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(lam, n_days)
    r = sigma * rng.standard_normal(n_days) + n * jump_mean + np.sqrt(n) * jump_sd * rng.standard_normal(n_days)
    starts = np.arange(0, n_days - lookback - horizon + 1, horizon)
    x = np.stack([r[s:s + lookback] for s in starts])
    y = np.stack([r[s + lookback:s + lookback + horizon] for s in starts])
    b = len(starts)
    w = {
        "asset": np.array(["SIM"] * b),
        "origin": (np.datetime64("2000-01-01") + (starts + lookback)).astype("datetime64[ns]"),
        "x_ret": x.astype(np.float32), "x_logvol": np.log(np.abs(x) + 1e-4).astype(np.float32),
        "x_has_rv": np.zeros(x.shape, dtype=bool), "mu": np.zeros(b, np.float32), "sigma": np.ones(b, np.float32),
        "y_ret": y.astype(np.float32),
    }
    return w, int(n.sum())


@pytest.fixture(scope="module")
def small_windows():
    w, _ = sim_windows(800, 16, 7, seed=3)
    w["regime"] = np.random.default_rng(0).standard_normal((len(w["origin"]), 2)).astype(np.float32)
    return w


SMALL = JumpSdePaths(lookback=16, hidden=8, batch_size=32, max_steps=3, lr=1e-2)


@pytest.fixture(scope="module")
def trained(small_windows):
    return SMALL.fit(small_windows)


def _ctx(n_origins: int = 2, days: int = 80, seed: int = 1) -> Context:
    from aetheris_ray.features.state import MarketState
    import pandas as pd

    rng = np.random.default_rng(seed)
    states = [MarketState(asset="X", origin=pd.Timestamp("2024-01-01"), spot=1.0,
                          returns=(0.02 + 0.01 * i) * rng.standard_normal(days), mu=0.0, sigma=0.02,
                          regime_label="normal", regime_vector=np.full(2, 0.5 * i)) for i in range(n_origins)]
    return Context.from_states(states, lookback=100)


@pytest.mark.slow
def test_recovers_known_intensity_and_jump_sizes():
    """lambda 0.1/day, jumps N(-0.03, 0.05^2), diffusion 2 %/day, 12,000 days (about 1,200 jumps), 80 full-batch steps
    (about 30 s): recovered within 0.04 (intensity), 0.008 (jump mean and sd) and 0.002 (diffusion sd).

    The intensity comes out about 0.025 high: the jump sizes scale with each window's anchor (its
    32-day mean square, itself inflated by the window's jumps), so the fitted sizes are a scale
    mixture and a few large diffusive days count as jumps; the sizes and the diffusion are close.
    """
    w, n_jumps = sim_windows(12000, 32, 16)
    spec = JumpSdePaths(lookback=32, hidden=8, batch_size=4096, max_steps=80, lr=0.02)
    fitted = spec.fit(w)
    p = fitted.day_params(fitted.condition(Context.from_windows(w)))
    assert abs(n_jumps / 12000 - 0.1) < 0.005  # the sample itself
    assert abs(p["Lam"].mean() - 0.1) < 0.04
    assert abs(p["jump_mean"].mean() + 0.03) < 0.008
    assert abs(p["jump_sd"].mean() - 0.05) < 0.008
    assert abs(np.sqrt(p["V"]).mean() - 0.02) < 0.002
    m = fitted.info["metrics"]
    assert m["val_nll"] < m["val_nll_ewma"] - 0.1  # the jump mixture beats a Gaussian EWMA on jumpy data


def test_artefact_saves_loads_and_forecasts_the_same_numbers(trained, tmp_path):
    from aetheris_ray.components import load_component

    back = load_component(trained.save(tmp_path / "js"))
    assert isinstance(back, FittedJumpSde) and back.spec == trained.spec
    ctx = _ctx(3)
    a, b = trained.condition(ctx), back.condition(ctx)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(trained.simulate(a, 50, 6, np.random.default_rng(5)),
                                  back.simulate(b, 50, 6, np.random.default_rng(5)))
    np.testing.assert_array_equal(trained.drift(a, 6), back.drift(b, 6))
    assert trained.info["metrics"]["step"] == 3.0 and np.isfinite(trained.info["metrics"]["val_ql"])


def test_trainer_checkpoint_restores_the_same_training(small_windows):
    one = SMALL.trainer(small_windows)
    assert isinstance(one, Trainer)
    one.train(2)
    saved = copy.deepcopy(one.state_dict())  # what a checkpoint file holds
    one.train(1)
    two = SMALL.trainer(small_windows)
    two.load_state_dict(saved)
    two.train(1)
    for (k, v), (_, u) in zip(one.net.state_dict().items(), two.net.state_dict().items()):
        torch.testing.assert_close(v, u, rtol=0, atol=0, msg=k)
    assert one.evaluate() == two.evaluate()


def test_score_of_its_own_part_equals_its_validation_nll(small_windows, trained):
    """score() runs the part's forecast-time path; on the trainer's own part it gives evaluate()'s val_ql."""
    t = SMALL.trainer(small_windows)
    t.train(1)
    own = t.fitted()
    assert t.score(own)["val_ql"] == pytest.approx(own.info["metrics"]["val_ql"], rel=1e-12)
    other = t.score(trained)["val_ql"]  # another version (3 steps) on the same windows
    assert np.isfinite(other) and other != pytest.approx(own.info["metrics"]["val_ql"], rel=1e-9)


def test_validation_origins_come_after_the_training_targets(small_windows):
    t = SMALL.trainer(small_windows)
    last_train = t.train_np["origin"].max().astype("datetime64[D]")
    first_val = t.val_np["origin"].min().astype("datetime64[D]")
    assert last_train + np.timedelta64(7, "D") < first_val


def test_shapes_batched_over_origins_and_paths(trained):
    assert isinstance(trained, PROTOCOLS["paths"]) and trained.parts == ()
    ctx = _ctx(3)
    cond = trained.condition(ctx)
    assert {k: np.shape(v) for k, v in cond.items()} == {"x": (3,), "j": (3,), "anchor": (3,), "cond": (3, 5)}
    for m, h in ((1, 1), (7, 5), (2, 14)):
        out = trained.simulate(cond, m, h, np.random.default_rng(0))
        assert out.shape == (3, m, h) and out.dtype == np.float64 and np.all(np.isfinite(out))
    assert trained.drift(cond, 4).shape == (3, 1, 4)
    drift_sum, sd = trained.tilt_profile(cond, 4)
    assert isinstance(drift_sum, float) and sd.shape == (4,) and np.all(sd > 0)
    # origin 2 is the most volatile context: its paths are the widest
    out = trained.simulate(cond, 2000, 3, np.random.default_rng(1))
    assert out[2].std() > out[0].std()
    with pytest.raises(InvalidInput, match="n_paths=0"):
        trained.simulate(cond, 0, 3, np.random.default_rng(0))


def test_thinning_draws_the_integrated_intensity():
    from aetheris_ray.components.jump_sde.module import thinned_counts

    rng = np.random.default_rng(0)
    flat = torch.full((2, 200_000), 0.3, dtype=torch.float64)
    n = thinned_counts(flat, rng).numpy()
    assert abs(n.mean() - 0.3) < 0.006 and abs(n.var() - 0.3) < 0.01  # Poisson(0.3)
    ramp = torch.stack([torch.zeros(200_000), torch.full((200_000,), 0.6)]).double()  # lam from 0 to 0.6
    assert abs(thinned_counts(ramp, rng).numpy().mean() - 0.3) < 0.006


def test_mixture_is_a_density_and_its_posterior_sees_jumps():
    from aetheris_ray.components.jump_sde.module import mixture

    r = torch.linspace(-1.0, 1.0, 40001, dtype=torch.float64)
    one = torch.ones_like(r)
    d = {"Lam": 0.2 * one, "V": 4e-4 * one, "M": 1e-3 * one, "jump_mean": -0.05 * one, "jump_sd": 0.06 * one}
    logp, en, ed2 = mixture(r, d, max_jumps=8)
    mass = float(torch.trapezoid(torch.exp(logp), r))
    mean = float(torch.trapezoid(r * torch.exp(logp), r))
    assert abs(mass - 1.0) < 1e-6
    assert abs(mean - (1e-3 + 0.2 * -0.05)) < 1e-5
    assert float(en[20000]) < 0.2 < float(en[0])  # a day at 0: fewer jumps than the prior; at -100 %: more
    assert float(ed2[0]) < 1.0  # the crash is blamed on jumps, not the diffusion


def test_simulated_day_has_the_likelihoods_moments(trained):
    cond = trained.condition(_ctx(1))
    p = trained.day_params(cond)
    r = trained.simulate(cond, 200_000, 1, np.random.default_rng(2))[0, :, 0]
    mean = p["M"][0] + p["Lam"][0] * p["jump_mean"][0]
    var = p["V"][0] + p["Lam"][0] * (p["jump_mean"][0] ** 2 + p["jump_sd"][0] ** 2)
    assert abs(r.mean() - mean) < 4 * np.sqrt(var / r.size)
    assert abs(r.var() / var - 1.0) < 0.03
    np.testing.assert_allclose(trained.drift(cond, 1)[0, 0, 0], mean, rtol=1e-5)


def test_a_jump_raises_volatility(trained):
    from aetheris_ray.features.state import MarketState
    import pandas as pd

    r = 0.02 * np.random.default_rng(4).standard_normal(80)
    crash = r.copy()
    crash[-1] = -0.25
    states = [MarketState(asset="X", origin=pd.Timestamp("2024-01-01"), spot=1.0, returns=x, mu=0.0, sigma=0.02,
                          regime_label="normal", regime_vector=np.zeros(2)) for x in (r, crash)]
    ctx = Context.from_states(states, lookback=100)
    cond = trained.condition(ctx)
    assert cond["j"][1] > cond["j"][0] + 0.5  # the crash counts as (about) one jump
    # the same anchor for both: the raised state alone widens the next days
    cond["anchor"] = np.full(2, cond["anchor"][0])
    assert trained.day_params(cond)["V"][1] > trained.day_params(cond)["V"][0]


def test_tilted_paths_reweight_to_the_plain_distribution(trained):
    cond = trained.condition(_ctx(1))
    h = 5
    plain = trained.simulate(cond, 4000, h, np.random.default_rng(6))
    same, log_lr = trained.simulate_tilted(cond, 4000, h, np.zeros((1, h)), np.random.default_rng(6))
    np.testing.assert_array_equal(plain, same)
    assert np.all(log_lr == 0.0)
    xs = plain[0].sum(axis=1)
    u = np.quantile(xs, 0.02)
    tilted, log_lr = trained.simulate_tilted(cond, 10000, h, np.full((1, h), -0.8), np.random.default_rng(7))
    w = np.exp(log_lr[0])
    assert abs(w.mean() - 1.0) < 0.05
    p_is = float(np.mean(w * (tilted[0].sum(axis=1) < u)))
    assert abs(p_is - 0.02) < 0.006


def test_fit_route_and_spec_checks(trained):
    assert JumpSdePaths().fit(np.zeros(10), artefact=trained) is trained
    with pytest.raises(InvalidInput, match="no trained artefact"):
        JumpSdePaths().fit(np.zeros(10))
    with pytest.raises(InvalidInput, match="substeps=0"):
        JumpSdePaths(substeps=0)
    untrained = FittedJumpSde.from_params(seed=0)
    assert untrained.n_regime == 0 and untrained.shared and not untrained.params


@pytest.mark.slow
def test_forecast_through_the_engine_names_the_registered_version(trained, isolated_home):
    """``--component paths=jump_sde``: the engine resolves the registered artefact once and draws the paths with it."""
    from aetheris_ray.api import forecast
    from aetheris_ray.data.synthetic import SyntheticSource
    from aetheris_ray.registry import register_model

    rec = register_model(trained)
    src = SyntheticSource(seed=4, start="2021-01-01", end="2022-12-31")
    fc = forecast("SYN-BTC", 7, source=src, paths=2000, seed=3, components=["paths=jump_sde"])
    assert fc.model_version.endswith(f"+paths=jump_sde@{rec.version}")
    assert fc.metadata["fallbacks"] == []
    q = np.asarray(fc.quantiles, dtype=float)
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=-1) >= 0)
