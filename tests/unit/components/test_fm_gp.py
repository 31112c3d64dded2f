"""fm_gp: the GP prior's covariance, flow matching on a known non-Gaussian target, save/load equality, one
featuriser, point-in-time targets, horizons beyond the trained one, the importance-sampling tilt, checkpoints.

The contract harness (test_contract.py) covers the protocol, shapes, seeds, take/stack and
save/load of the seeded untrained artefact; these tests cover what is particular to the part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from aetheris_ray.components.base import Context, load_component
from aetheris_ray.components.fm_gp import FittedFlowMatching, FlowMatchingResiduals
from aetheris_ray.components.fm_gp.component import (
    conditioning_features,
    from_gaussian,
    gp_covariance,
    standardise,
    to_gaussian,
)
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.errors import DataError, InvalidInput, ModelNotFound
from aetheris_ray.features.state import MarketState
from aetheris_ray.windows import WindowSpec, concat_windows, make_windows

pytestmark = pytest.mark.torch

SPEC = WindowSpec(lookback=32, horizon=7, stride=2, regime=True)


@pytest.fixture(scope="module")
def windows():
    src = SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31")
    return concat_windows([make_windows(src.history(a), SPEC) for a in src.assets()], SPEC)


@pytest.fixture(scope="module")
def trainer(windows):
    import torch

    torch.set_num_threads(1)
    sp = FlowMatchingResiduals(lookback=32, hidden=16, max_steps=30, batch_size=128, refit_days=365, val_paths=50,
                               device="cpu")
    tr = sp.trainer(windows)
    tr.train(30)
    return tr


@pytest.fixture(scope="module")
def fitted(trainer):
    return trainer.fitted()


def _state(n=200, seed=0, regime=None):
    r = 0.03 * np.random.default_rng(seed).standard_normal(n)
    return MarketState(asset="X", origin=pd.Timestamp("2024-01-01"), spot=100.0, returns=r, mu=0.0, sigma=0.03,
                       regime_label="normal", regime_vector=np.zeros(4) if regime is None else regime,
                       mm_indices={"gamma_squeeze": 1.0, "inventory_unwind": float("nan")})


# -- the GP prior ----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["matern52", "rbf"])
def test_numpy_covariance_is_the_gpytorch_kernel(kernel):
    import torch

    from aetheris_ray.components.fm_gp.module import gp_kernel

    k = gp_kernel(kernel, 2.3, 0.7).double()
    steps = torch.arange(1, 15, dtype=torch.float64)[:, None]
    dense = k(steps).to_dense().detach().numpy() + 0.4 * np.eye(14)
    np.testing.assert_allclose(gp_covariance(14, kernel, 2.3, 0.7, 0.4), dense, rtol=1e-6, atol=1e-9)


def test_gp_prior_samples_have_the_kernel_covariance():
    """The part's source (x0 = L eps) over 40,000 draws: empirical covariance within sampling error of K + noise I."""
    part = FittedFlowMatching.from_params(horizon=10, lengthscale=3.0, outputscale=0.6, noise=0.4)
    cov = part.source_covariance()
    np.testing.assert_allclose(cov, gp_covariance(10, "matern52", 3.0, 0.6, 0.4))
    n = 40_000
    eps = np.random.default_rng(0).standard_normal((n, 10))
    x = eps @ part._cache()["chol_t"].numpy().T.astype(float).T
    emp = x.T @ x / n
    # sd of an empirical covariance entry: sqrt((S_ii S_jj + S_ij^2) / n); 5 sd
    tol = 5.0 * np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(emp - cov) < tol + 2e-6)  # + float32 rounding of the factor
    assert cov[0, 1] > 0.5 and cov[0, 9] < cov[0, 1]  # a smooth kernel: correlated neighbours, decaying with lag


def test_marginal_likelihood_recovers_the_kernel_hyperparameters():
    from aetheris_ray.components.fm_gp.module import fit_gp_prior

    cov = gp_covariance(14, "matern52", 2.5, 0.8, 0.3)
    x = np.random.default_rng(1).standard_normal((4000, 14)) @ np.linalg.cholesky(cov).T
    gp = fit_gp_prior(x, "matern52")
    assert gp["lengthscale"] == pytest.approx(2.5, rel=0.15)
    assert gp["outputscale"] == pytest.approx(0.8, rel=0.15)
    assert gp["noise"] == pytest.approx(0.3, rel=0.15)


def test_student_t_marginal_map_round_trips_and_gaussianises():
    from aetheris_ray.components.residuals import unit_t

    z = np.linspace(-20.0, 20.0, 2001)
    for nu in (2.8, 4.0, 30.0):
        np.testing.assert_allclose(from_gaussian(to_gaussian(z, nu), nu), z, rtol=1e-6, atol=1e-5)
        t = unit_t(np.array([nu]), 20_000, 1, np.random.default_rng(0)).ravel()
        x = to_gaussian(t, nu)
        assert ks_2samp(x, np.random.default_rng(1).standard_normal(20_000)).pvalue > 1e-3
    assert np.all(np.isfinite(to_gaussian(np.array([-1e6, 1e6]), 3.0)))


# -- flow matching on a known target ------------------------------------------------------------


@pytest.mark.slow
def test_flow_matching_recovers_a_conditional_non_gaussian_target():
    """A skewed target (standardised Gamma(2), mirrored when c = -1): the flow passes a two-sample KS test per
    step and for the sum, in both conditions; the GP prior alone fails it."""
    import torch

    from aetheris_ray.components.fm_gp.module import VelocityNet, fm_loss, integrate
    from aetheris_ray.components.torch_utils import make_generator

    torch.set_num_threads(1)
    h = 3

    def target(c, rng):
        g = (rng.gamma(2.0, size=(c.size, h)) - 2.0) / np.sqrt(2.0)
        return g * np.where(c > 0, 1.0, -1.0)[:, None]

    chol = np.linalg.cholesky(gp_covariance(h, "matern52", 1.0, 0.5, 0.5))
    net = VelocityNet(h, 1, 32, 2, generator=make_generator(0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        c = rng.choice([-1.0, 1.0], size=256)
        x1 = torch.as_tensor(target(c, rng), dtype=torch.float32)
        x0 = torch.as_tensor(rng.standard_normal((256, h)) @ chol.T, dtype=torch.float32)
        t = torch.as_tensor(rng.random(256), dtype=torch.float32)
        loss = fm_loss(net, x0, x1, t, torch.as_tensor(c[:, None], dtype=torch.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()

    def pvalues(x, ref):
        return [ks_2samp(x[:, j], ref[:, j]).pvalue for j in range(h)] + [ks_2samp(x.sum(1), ref.sum(1)).pvalue]

    for cv in (1.0, -1.0):
        ref = target(np.full(1000, cv), np.random.default_rng(1))
        x0 = np.random.default_rng(2).standard_normal((1, 1000, h)) @ chol.T
        with torch.no_grad():
            cproj = net.cond_projection(torch.tensor([[cv]], dtype=torch.float32))[:, None, :]
            x = integrate(net, torch.as_tensor(x0, dtype=torch.float32), cproj, "rk4", 2).numpy()[0]
        assert min(pvalues(x, ref)) > 1e-3, (cv, pvalues(x, ref))
        assert max(pvalues(x0[0], ref)) < 1e-3, (cv, pvalues(x0[0], ref))


# -- the trained part ----------------------------------------------------------------------------


def test_trained_part_shapes_unit_variance_and_info(fitted, trainer):
    assert fitted.horizon == 7 and fitted.n_regime == trainer.n_regime > 0
    assert fitted.marginal_nu == trainer.nu_t > 2  # the Student-t marginal map is on by default
    assert set(fitted.info["metrics"]) >= {"val_ql", "val_es", "val_ql_t", "val_ql_gp", "gp_lengthscale"}
    assert np.isfinite(fitted.info["metrics"]["val_ql"])
    assert not fitted.params and all(k.startswith(("w.", "gp_", "feat_", "out_", "marginal_")) for k in fitted.shared)
    # standardised over the horizon: each step has mean 0, variance 1 over the training conditions
    c = trainer.c_train.numpy().astype(float)[:400]
    z = fitted.simulate({"c": c}, 64, 7, np.random.default_rng(5))
    assert z.dtype == np.float32 and z.shape == (400, 64, 7)
    np.testing.assert_allclose(z.reshape(-1, 7).mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(z.reshape(-1, 7).std(axis=0), 1.0, atol=0.05)


def test_trainer_score_of_its_own_part_equals_its_validation_ql(trainer, fitted):
    """score() runs the forecast-time path (condition with the GARCH variances, draw); on the trainer's own part it
    gives evaluate()'s val_ql; an untrained part scores differently."""
    assert trainer.score(fitted)["val_ql"] == pytest.approx(fitted.info["metrics"]["val_ql"], rel=1e-9)
    other = FittedFlowMatching.from_params(horizon=7, n_regime=trainer.n_regime, hidden=16, lookback=32)
    assert np.isfinite(trainer.score(other)["val_ql"])
    assert trainer.score(other)["val_ql"] != pytest.approx(fitted.info["metrics"]["val_ql"], rel=1e-9)


def test_save_load_forecasts_the_same_numbers(fitted, tmp_path):
    ctx = Context.from_states([_state(300), _state(120, seed=1)], lookback=64)
    var = np.full(ctx.returns.shape, 9e-4)
    back = load_component(fitted.save(tmp_path / "fm"))
    assert type(back) is FittedFlowMatching and back.spec == fitted.spec
    assert back.info["metrics"]["val_ql"] == fitted.info["metrics"]["val_ql"]
    for part_cond in (lambda p: p.condition(ctx), lambda p: p.condition(ctx, variance=var)):
        ca, cb = part_cond(fitted), part_cond(back)
        np.testing.assert_array_equal(ca["c"], cb["c"])
        np.testing.assert_array_equal(fitted.draw(ca, 200, 20, np.random.default_rng(3)),
                                      back.draw(cb, 200, 20, np.random.default_rng(3)))
        eta = np.full((2, 20), -0.3)
        za, la = fitted.draw_tilted(ca, 100, 20, eta, np.random.default_rng(4))
        zb, lb = back.draw_tilted(cb, 100, 20, eta, np.random.default_rng(4))
        np.testing.assert_array_equal(za, zb)
        np.testing.assert_array_equal(la, lb)


def test_corrupt_weights_are_refused_on_load(fitted, tmp_path):
    d = fitted.save(tmp_path / "fm")
    with np.load(d / "shared.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["w.out.weight"] = arrays["w.out.weight"][:, :3]
    np.savez(d / "shared.npz", **arrays)
    with pytest.raises(ModelNotFound, match="fm_gp artefact: cannot build the flow"):
        load_component(d)


def test_one_featuriser_for_training_and_use(windows, trainer, fitted):
    """A window's training features equal the forecast route's: a `MarketState` with the window's returns and
    regime vector, conditioned on a GARCH part with the window's point-in-time parameters."""
    from aetheris_ray.components.volatility import FittedGarch

    i = len(trainer.train_np["origin"]) // 2
    w = {k: v[i:i + 1] for k, v in trainer.train_np.items()}
    feats, _ = trainer._inputs(w)
    r = (w["x_ret"][0].astype(float) * float(w["sigma"][0]) + float(w["mu"][0]))
    state = MarketState(asset="X", origin=pd.Timestamp(w["origin"][0]), spot=1.0, returns=r, mu=0.0, sigma=0.03,
                        regime_label="normal", regime_vector=w["regime"][0].astype(float))
    ctx = Context.from_states([state], lookback=SPEC.lookback)
    garch = FittedGarch.from_params(omega=float(w["garch_omega"][0]), alpha=float(w["garch_alpha"][0]),
                                    beta=float(w["garch_beta"][0]), nu=8.0)
    cond = fitted.condition(ctx, variance=garch.filter(ctx))
    np.testing.assert_allclose(cond["c"], standardise(feats, fitted.shared["feat_mean"], fitted.shared["feat_std"]),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("vol", ["blend", "rough_vol"])
def test_composes_with_volatility_variants(vol):
    """Through the composer: the volatility part's filter is the variance path (EWMA stand-in for rough vol,
    which has no returns filter)."""
    from aetheris_ray.components.rough_vol import FittedRoughVol
    from aetheris_ray.model import ComponentChoice, EngineConfig, fit_model, resolve_config

    r = 0.03 * np.random.default_rng(0).standard_normal(600)
    cfg = EngineConfig(volatility=ComponentChoice(name=vol), residuals=ComponentChoice(name="fm_gp"))
    cfg = cfg.model_copy(update={"resolved": True})
    arts = {"residuals": FittedFlowMatching.from_params(seed=0)}
    if vol == "rough_vol":
        arts["volatility"] = FittedRoughVol.from_params(seed=0)
    paths = fit_model(resolve_config(cfg), cfg.specs(), r, artefacts=arts).paths
    ctx = Context.from_returns(r)
    cond = paths.condition(ctx)
    res = paths.part("residuals")
    variance = None if vol == "rough_vol" else paths.part("volatility").filter(ctx)
    np.testing.assert_array_equal(cond["residuals"]["c"], res.condition(ctx, variance=variance)["c"])
    out = paths.simulate(cond, 200, 20, np.random.default_rng(0))
    assert out.shape == (1, 200, 20) and np.all(np.isfinite(out))


def test_features_regime_mm_and_short_histories():
    ctx = Context.from_states([_state(300, regime=np.array([0.5, -1.0, 2.0])), _state(3, seed=2)], lookback=64)
    f = conditioning_features(ctx, None, 64, 4)
    assert f.shape == (2, 7 + 4) and np.all(np.isfinite(f))
    np.testing.assert_array_equal(f[0, 4:7], [1.0, 0.0, 0.0])  # MM indices, NaN -> 0
    np.testing.assert_array_equal(f[0, 7:], [0.5, -1.0, 2.0, 0.0])  # regime vector, zero-padded
    np.testing.assert_array_equal(f[1, :4], 0.0)  # under 5 returns: no volatility-path summary
    with pytest.raises(InvalidInput, match="variance has shape"):
        conditioning_features(ctx, np.ones((2, 10)), 64, 4)


def test_garch_targets_are_point_in_time(windows):
    """The GARCH parameters of a window do not change when everything after its origin is removed."""
    from aetheris_ray.components.fm_gp.training import pit_garch_params

    one = {k: v[windows["asset"] == windows["asset"][0]] for k, v in windows.items()}
    full = pit_garch_params(one, 365)
    cut = one["origin"][len(one["origin"]) * 2 // 3]
    keep = one["origin"] <= cut
    past = pit_garch_params({k: v[keep] for k, v in one.items()}, 365)
    for k in full:
        np.testing.assert_array_equal(full[k][keep], past[k])
    assert len(np.unique(full["beta"])) > 1  # refitted along the way


def test_horizons_beyond_the_trained_one_are_independent_blocks(fitted):
    cond = fitted.condition(Context.from_states([_state(300)], lookback=64))
    z = fitted.draw(cond, 4000, 17, np.random.default_rng(0))[0]  # H = 7: blocks 1..7, 8..14, 15..17
    assert z.shape == (4000, 17)
    assert abs(np.corrcoef(np.abs(z[:, 6]), np.abs(z[:, 7]))[0, 1]) < 0.06  # across a block boundary
    for j in range(3):  # each block's step j has the same distribution
        assert ks_2samp(z[:, j], z[:, 7 + j]).pvalue > 1e-3
        assert ks_2samp(z[:, j], z[:, 14 + j]).pvalue > 1e-3
    np.testing.assert_array_equal(fitted.draw(cond, 50, 3, np.random.default_rng(1)).shape, (1, 50, 3))


def test_symmetric_part_draws_mean_zero_paths_even_far_outside_the_training_conditions(fitted):
    c = np.full((1, np.size(fitted.shared["feat_mean"])), 5.0)  # every feature at the clip
    z = fitted.draw({"c": c}, 20_000, 7, np.random.default_rng(0))[0].astype(float)
    s = z.sum(axis=1)
    assert abs(s.mean()) < 4.0 * s.std() / np.sqrt(s.size)
    assert ks_2samp(s, -s).pvalue > 1e-3


def test_tilt_is_exact_importance_sampling(fitted):
    cond = fitted.condition(Context.from_states([_state(300)], lookback=64))
    z0, lr0 = fitted.draw_tilted(cond, 500, 9, np.zeros((1, 9)), np.random.default_rng(0))
    np.testing.assert_array_equal(lr0, 0.0)
    plain = fitted.draw(cond, 40_000, 9, np.random.default_rng(1))[0].astype(float).sum(axis=1)
    thr = np.quantile(plain, 0.02)
    z, log_lr = fitted.draw_tilted(cond, 40_000, 9, np.full((1, 9), -0.25), np.random.default_rng(2))
    w = np.exp(log_lr[0])
    assert np.mean(w) == pytest.approx(1.0, abs=0.05)
    s = z[0].sum(axis=1)
    assert np.mean(s < thr) > 0.04  # the tilt moves mass toward the threshold
    assert np.mean(w * (s < thr)) == pytest.approx(0.02, rel=0.2)


def test_checkpoint_restore_continues_the_same_sequence(windows, trainer):
    import copy

    state = copy.deepcopy(trainer.state_dict())
    a = trainer.train(3)
    trainer.load_state_dict(state)
    assert trainer.train(3) == a


def test_spec_checks_and_routes(windows):
    with pytest.raises(InvalidInput, match="solver='heun'"):
        FlowMatchingResiduals(solver="heun")
    with pytest.raises(InvalidInput, match="marginal='laplace'"):
        FlowMatchingResiduals(marginal="laplace")
    with pytest.raises(InvalidInput, match="marginal_nu=1.5"):
        FittedFlowMatching.from_params(marginal_nu=1.5)
    with pytest.raises(InvalidInput, match="kernel='periodic'"):
        FlowMatchingResiduals(kernel="periodic")
    with pytest.raises(InvalidInput, match="no trained artefact given"):
        FlowMatchingResiduals().fit(np.zeros(100))
    part = FittedFlowMatching.from_params()
    assert FlowMatchingResiduals().fit(np.zeros(100), artefact=part) is part
    with pytest.raises(DataError, match="lookback=64 needs at least that many"):
        FlowMatchingResiduals(lookback=64).trainer(windows)
