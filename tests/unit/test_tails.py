"""Importance sampling of far threshold probabilities (aetheris_ray.tails)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aetheris_ray import simulation as sim
from aetheris_ray import tails
from aetheris_ray.calibration import KNOTS, Calibrator, CalibrationConfig, ConformalLevelMap
from aetheris_ray.components import Context
from aetheris_ray.components import residuals as res_mod
from aetheris_ray.components.jumps import FittedNoJumps
from aetheris_ray.components.residuals import FhsResiduals, FittedGaussian, FittedStudentT, unit_t
from aetheris_ray.components.trend import FittedZeroTrend
from aetheris_ray.components.volatility import EwmaVolatility, FittedEwma
from aetheris_ray.contract import ForecastRequest, ForecastResponse
from aetheris_ray.data import CsvSource, SyntheticSource
from aetheris_ray.data.schema import AssetData, bar_ts_from_dates
from aetheris_ray.engine import finish, forecast, prepare
from aetheris_ray.model import ComponentChoice, EngineConfig, FittedModel, PRESETS

SIGMA, H = 0.03, 14


def random_walk(residuals=None, vol=None, v1=SIGMA**2) -> tails.ModelSampler:
    """A zero-drift model with constant daily vol ``SIGMA`` (Gaussian by default): analytic tails."""
    model = FittedModel.from_parts(trend=FittedZeroTrend.from_params(),
                        volatility=vol or FittedEwma.from_params(EwmaVolatility(path_dependent=False), lam=0.94),
                        jumps=FittedNoJumps.from_params(), residuals=residuals or FittedGaussian.from_params())
    res_cond = {"n": np.zeros(1)} if not isinstance(model.part("residuals"), FittedStudentT) else {
        "nu": np.asarray(model.part("residuals").params["nu"], dtype=float)}
    cond = {"trend": {"drift": np.zeros((1, 90))}, "volatility": {"v1": np.array([v1])},
            "jumps": {"n": np.zeros(1)}, "residuals": res_cond}
    return tails.ModelSampler(model, cond)


# -- the estimator on a Gaussian random walk (analytic answer) ---------------------------------


@pytest.mark.parametrize("side", ["below", "above"])
def test_gaussian_random_walk_matches_the_analytic_tail(side):
    p = 1e-4
    u = stats.norm.ppf(p if side == "below" else 1 - p) * SIGMA * np.sqrt(H)
    n = 10_000
    est = tails.importance_estimate(random_walk(), u, H, side, n, seed=3)
    got = est.p_below if side == "below" else est.p_above
    assert est.estimator == tails.IMPORTANCE_SAMPLING and est.side == side
    assert abs(got - p) < 4 * est.se
    assert est.p_below + est.p_above == pytest.approx(1.0, abs=1e-15)
    # plain MC at the same path count: relative SE sqrt((1 - p) / (n p)) = 1.0
    plain_rel_se = np.sqrt((1 - p) / (n * p))
    assert est.se / got < plain_rel_se / 20
    assert est.hits > n // 4  # the tilt puts about half the paths beyond K


class DrawnLastStep:
    """A sampler that draws the last step like the others (importance sampling of the indicator only)."""

    def __init__(self, inner):
        self.inner = inner
        self.tiltable, self.conditional = inner.tiltable, False

    def profile(self, horizon):
        return self.inner.profile(horizon)

    def sample(self, *a):
        return self.inner.sample(*a)


@pytest.mark.parametrize("residuals", ["gaussian", "student_t"])
@pytest.mark.parametrize("horizon", [1, 7])
def test_integrating_the_last_step_agrees_with_drawing_it_and_is_more_precise(residuals, horizon):
    """Both estimators are unbiased for P(X_h < u); integrating the last step (its law exact) has the smaller SE
    at the same path count, and at one step there is nothing left to draw (SE 0)."""
    res = FittedGaussian.from_params() if residuals == "gaussian" else FittedStudentT.from_params(nu=4.0)
    walk = random_walk(residuals=res)
    assert walk.conditional
    u = -4.0 * SIGMA * np.sqrt(horizon)
    cond = tails.importance_estimate(walk, u, horizon, "below", 4096, seed=5)
    drawn = tails.importance_estimate(DrawnLastStep(walk), u, horizon, "below", 4096, seed=5)
    assert abs(cond.p_below - drawn.p_below) < 4 * np.hypot(cond.se, drawn.se)
    assert cond.se < drawn.se
    if horizon == 1:  # constant vol, no drift: every path gives the same, exact, probability
        want = stats.norm.cdf(-4.0) if residuals == "gaussian" else stats.t.cdf(-4.0 * np.sqrt(2.0), 4.0)
        assert cond.se == pytest.approx(0.0, abs=1e-15) and cond.p_below == pytest.approx(want, rel=1e-9)


def test_gaussian_tilt_is_the_exponential_tilt_of_the_sum():
    """For a constant-vol Gaussian walk the rule gives theta = u / (h sigma^2): tilted mean = threshold."""
    u = -4.0 * SIGMA * np.sqrt(H)
    theta = tails.choose_tilt(random_walk(), u, H, "below", np.random.SeedSequence(0))
    assert theta == pytest.approx(u / (H * SIGMA**2), rel=0.1)


def test_estimate_is_reproducible_with_the_seed():
    u = -4.0 * SIGMA * np.sqrt(H)
    a = tails.importance_estimate(random_walk(), u, H, "below", 5000, seed=7)
    b = tails.importance_estimate(random_walk(), u, H, "below", 5000, seed=7)
    c = tails.importance_estimate(random_walk(), u, H, "below", 5000, seed=8)
    assert a == b
    assert a.p_below != c.p_below and abs(a.p_below - c.p_below) < 5 * np.hypot(a.se, c.se)


def test_path_count_is_sized_from_the_target_standard_error(monkeypatch):
    """The request's paths at least; more blocks while the relative SE is above the target, up to the cap."""
    u = -4.0 * SIGMA * np.sqrt(H)
    sampler = random_walk()  # relative SE about 0.016 at 5,000 paths (the last step integrated)
    easy = tails.importance_estimate(sampler, u, H, "below", 5000, seed=7)
    assert easy.paths == 5000 and easy.se / easy.p_below <= tails.TARGET_REL_SE
    monkeypatch.setattr(tails, "TARGET_REL_SE", 1e-6)  # unreachable: every block up to the cap
    capped = tails.importance_estimate(sampler, u, H, "below", 5000, seed=7)
    assert capped.paths == tails.IS_MAX_PATHS and capped.se < easy.se
    target = 0.8 * easy.se / easy.p_below  # reachable past the request's paths (about 7,800 needed)
    monkeypatch.setattr(tails, "TARGET_REL_SE", target)
    grown = tails.importance_estimate(sampler, u, H, "below", 5000, seed=7)
    assert 5000 < grown.paths < tails.IS_MAX_PATHS and (grown.paths - 5000) % tails.IS_BLOCK_PATHS == 0
    assert grown.se / grown.p_below <= target
    assert abs(grown.p_below - easy.p_below) < 4 * np.hypot(grown.se, easy.se)


def test_tilt_puts_the_tilted_median_near_the_threshold():
    """The pilot's root finding stops within PILOT_TOL sd of u (or at the cap) on a model with vol feedback."""
    from aetheris_ray.components.volatility import FittedGarch

    vol = FittedGarch.from_params(omega=2e-5, alpha=0.1, beta=0.85, nu=4.0)
    sampler = random_walk(residuals=FittedStudentT.from_params(nu=4.0), vol=vol)
    drift, sbar = sampler.profile(H)
    sd = float(np.sqrt(np.sum(sbar**2)))
    for side, u in (("below", -5 * sd), ("above", 3 * sd)):
        theta = tails.choose_tilt(sampler, u, H, side, np.random.SeedSequence(1))
        x, _ = sampler.sample(20_000, H, theta * sbar, np.random.default_rng(2))
        assert abs(np.median(x) - u) < 2 * tails.PILOT_TOL * sd, (side, np.median(x), u)


def test_tilt_is_remembered_per_model_and_threshold_and_the_estimate_is_the_same():
    """The pilot runs once per (model, conditioning, K, horizon, side); other seeds reuse the tilt."""
    calls = []

    class Counting(tails.ModelSampler):
        def sample(self, n_paths, horizon, eta, rng):
            calls.append(n_paths)
            return super().sample(n_paths, horizon, eta, rng)

    base = random_walk()
    sampler = Counting(base.model, base.cond)
    u = -3.5 * SIGMA * np.sqrt(H)
    tails._TILTS.clear()
    a = tails.importance_estimate(sampler, u, H, "below", 4096, seed=1)
    pilots = calls.count(tails.PILOT_PATHS)
    assert pilots >= 1
    b = tails.importance_estimate(sampler, u, H, "below", 4096, seed=1)
    c = tails.importance_estimate(Counting(base.model, base.cond), u, H, "below", 4096, seed=2)
    assert calls.count(tails.PILOT_PATHS) == pilots  # remembered: no pilot draw for b nor c
    assert a == b and c.tilt == a.tilt and c.p_below != a.p_below
    tails._TILTS.clear()
    assert tails.importance_estimate(sampler, u, H, "below", 4096, seed=1) == a  # cold cache: the same estimate
    # the same model with other conditioning arrays (twice the variance): its own tilt
    other = Counting(base.model, {**base.cond, "volatility": {"v1": np.array([2 * SIGMA**2])}})
    d = tails.importance_estimate(other, u, H, "below", 4096, seed=1)
    assert d.tilt != a.tilt


# -- exact likelihood ratios of each residual model -------------------------------------------


def garch_returns(n: int, seed: int, omega=2e-5, alpha=0.1, beta=0.85, nu=5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
    r, v = np.empty(n), omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = np.sqrt(v) * z[t]
        v = omega + alpha * r[t] ** 2 + beta * v
    return r


def fhs_cond():
    r = garch_returns(1200, seed=4)
    fit = FhsResiduals().fit(r)
    return fit, fit.condition(Context.from_returns(r))


@pytest.mark.parametrize("kind", ["gaussian", "student_t", "fhs", "fhs_short_pool"])
def test_likelihood_ratios_reweight_to_the_model(kind):
    """Under the tilt, E[LR] = 1 and LR-weighted moments are the model's (mean 0, variance of the draws)."""
    h, n = 3, 200_000
    eta = np.array([[-0.8, 0.5, -1.5]])
    if kind == "gaussian":
        comp, cond, var = FittedGaussian.from_params(), {"n": np.zeros(1)}, 1.0
    elif kind == "student_t":
        comp = FittedStudentT.from_params(nu=4.0)
        cond, var = {"nu": np.array([4.0])}, 1.0
    elif kind == "fhs":
        comp, cond = fhs_cond()
        pool = cond["pool"][0, : cond["count"][0]].astype(float)
        var = float(np.mean(pool**2))
    else:
        comp = FhsResiduals().fit(np.zeros(5))
        cond = comp.condition(Context.from_returns(0.01 * np.random.default_rng(0).standard_normal(20)))
        var = 1.0
    z, log_lr = comp.draw_tilted(cond, n, h, eta, np.random.default_rng(1))
    assert z.shape == (1, n, h) and log_lr.shape == (1, n)
    w = np.exp(log_lr[0])
    se = w.std() / np.sqrt(n)
    assert abs(w.mean() - 1.0) < 4 * se
    for t in range(h):
        m1 = w * z[0, :, t]
        m2 = w * z[0, :, t] ** 2
        assert abs(m1.mean()) < 4 * m1.std() / np.sqrt(n)
        assert abs(m2.mean() - var) < 4 * m2.std() / np.sqrt(n)
        # the tilt moved the draws toward its side
        assert np.sign(z[0, :, t].mean()) == np.sign(eta[0, t])
    if kind == "fhs":
        assert set(np.unique(z).astype(np.float32)) <= set(np.unique(cond["pool"][0, : cond["count"][0]]))


@pytest.mark.parametrize("nu", [2.3, 3.4, 8.0, 60.0])
def test_tabulated_t_quantiles_match_scipy(nu):
    from scipy import special

    s = np.sqrt(nu / (nu - 2.0))
    p = np.concatenate([np.logspace(-12, -0.31, 400), 1 - np.logspace(-12, -0.31, 400), [0.5]])
    exact = np.clip(special.stdtrit(nu, p) / s, -res_mod.T_CLIP, res_mod.T_CLIP)
    got = res_mod.unit_t_ppf(nu, np.log(p) - np.log1p(-p))
    np.testing.assert_allclose(got, exact, rtol=1e-9, atol=1e-9)
    assert res_mod.unit_t_ppf(nu, np.array([-800.0, 800.0])).tolist() == [-res_mod.T_CLIP, res_mod.T_CLIP]


@pytest.mark.parametrize("nu", [2.05, 3.4, 8.0, 60.0, 500.0])
def test_tabulated_t_cdf_matches_scipy_relative_to_the_tail(nu):
    from scipy import special

    s = np.sqrt(nu / (nu - 2.0))
    x = np.concatenate([np.linspace(-res_mod.T_CLIP, res_mod.T_CLIP, 20001), np.geomspace(1e-9, 39.0, 500),
                        -np.geomspace(1e-9, 39.0, 500), [0.0]])
    exact = special.stdtr(nu, x * s)
    got = res_mod.unit_t_cdf(nu, x)
    lower = x <= 0  # the tail side, computed directly (the upper half is 1 minus the mirrored lower one)
    np.testing.assert_allclose(got[lower], exact[lower], rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-11)
    # the residual part's step CDF: P(z < x) and P(z >= x) add up, atoms at the clip
    part = res_mod.FittedStudentT(spec=res_mod.StudentTResiduals(), params={"nu": np.array([nu])}, info={})
    cond = {"nu": np.array([nu])}
    xs = np.array([[-50.0, -3.0, 0.0, 2.0, 50.0]])
    below, above = part.unit_cdf(cond, xs, "below"), part.unit_cdf(cond, xs, "above")
    np.testing.assert_allclose(below + above, 1.0, atol=1e-12)
    assert below[0, 0] == 0.0 and below[0, -1] == 1.0 and above[0, 0] == 1.0 and above[0, -1] == 0.0
    np.testing.assert_allclose(below[0, 1:4], special.stdtr(nu, xs[0, 1:4] * s), rtol=1e-10)


def test_student_t_ratio_is_exact_with_the_clip(monkeypatch):
    """With the clip at 1.5 (atoms of several percent) the weighted tilted draws reproduce the model's."""
    monkeypatch.setattr(res_mod, "T_CLIP", 1.5)
    comp = FittedStudentT.from_params(nu=3.5)
    cond = {"nu": np.array([3.5])}
    n = 200_000
    z, log_lr = comp.draw_tilted(cond, n, 1, np.array([[-2.0]]), np.random.default_rng(2))
    w, x = np.exp(log_lr[0]), z[0, :, 0]
    plain = unit_t(np.array([3.5]), n, 1, np.random.default_rng(3))[0, :, 0].astype(float)
    for f in (lambda v: v <= -1.5, lambda v: v >= 1.5, lambda v: v * v):
        a, b = w * f(x), f(plain)
        assert abs(a.mean() - b.mean()) < 4 * np.hypot(a.std(), b.std()) / np.sqrt(n)


# -- the real engine model --------------------------------------------------------------------


def engine_model(source: str, residuals: str, shared=None):
    cfg = PRESETS["baseline"] if residuals == "student_t" else EngineConfig(
        name="fhs", residuals=ComponentChoice(name="fhs"))
    if source == "synthetic":
        data, asset = SyntheticSource(seed=0).history("SYN-BTC", until="2021-12-01"), "SYN-BTC"
    else:
        data, asset = CsvSource(shared).history("BTC-USD", until="2021-12-01"), "BTC-USD"
    return prepare(data, ForecastRequest(asset=asset, horizon=7, seed=1), config=cfg, use_cache=False)


@pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")
@pytest.mark.parametrize("source,residuals", [("synthetic", "student_t"), ("synthetic", "fhs"),
                                              ("shared", "student_t")])
@pytest.mark.slow
def test_engine_model_agrees_with_two_million_plain_paths(source, residuals, request):
    shared = request.getfixturevalue("shared_data") if source == "shared" else None
    prep = engine_model(source, residuals, shared)
    h = 7
    pilot = sim.cumulative(sim.simulate_blocks(prep.sample, 100_000, h, 5))[:, -1]
    big = sim.cumulative(sim.simulate_blocks(prep.sample, 2_000_000, h, 6))[:, -1]
    sampler = tails.ModelSampler(prep.model, prep.cond)
    for side, level in (("below", 0.01), ("above", 0.99)):
        u = float(np.quantile(pilot, level))
        mc = float(np.mean(big < u)) if side == "below" else float(np.mean(big >= u))
        mc_se = np.sqrt(mc * (1 - mc) / big.size)
        est = tails.importance_estimate(sampler, u, h, side, 10_000, seed=2)
        got = est.p_below if side == "below" else est.p_above
        assert 0.003 < mc < 0.03
        assert abs(got - mc) < 4 * np.hypot(est.se, mc_se), (side, got, mc, est.se, mc_se)
        assert est.se / got < 0.1  # plain MC with 10,000 paths: about 0.1 at P = 0.01


# -- in the forecast -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticSource(seed=0).history("SYN-BTC", until="2021-12-01")


def spot_of(data) -> float:
    return float(data.daily_close().iloc[-1])


@pytest.mark.slow
def test_far_thresholds_use_importance_sampling_and_near_ones_do_not(synthetic):
    s = spot_of(synthetic)
    ks = [1e-6 * s, 0.15 * s, 0.97 * s, s, 5.0 * s, 1e6 * s]  # the 7-day 5-95% range is about 0.6-1.6 x spot
    fc = forecast(synthetic, ForecastRequest(asset="SYN-BTC", horizon=7, paths=5000, seed=4, thresholds=ks))
    assert fc.threshold_estimator == ("importance_sampling", "importance_sampling", "monte_carlo", "monte_carlo",
                                      "importance_sampling", "importance_sampling")
    pb, pa, se = fc.p_below, fc.p_above, fc.threshold_se
    assert np.all(np.isfinite(pb)) and np.all(np.isfinite(pa)) and np.all(np.isfinite(se))
    np.testing.assert_allclose(pb + pa, 1.0, atol=1e-12)
    # the far ones are small but resolved, never exactly 0 / 1, and ordered
    assert 0 < pb[0] < pb[1] < 1e-3 and 0 < pa[5] < pa[4] < 1e-3
    assert pb[0] < 1e-6 and pa[5] < 1e-6
    assert np.all(se[[0, 1, 4, 5]] < 0.5 * np.array([pb[0], pb[1], pa[4], pa[5]]))
    # the calibration layer maps the raw IS probability through the level map's inverse
    details = {d["price"]: d for d in fc.metadata["importance_sampling"]}
    step = fc.quantiles.shape[0] - 1
    prep = prepare(synthetic, ForecastRequest(asset="SYN-BTC", horizon=7, paths=5000, seed=4))
    raw_low = details[float(ks[1])]["raw_p"]
    assert pb[1] == pytest.approx(float(prep.level_map.calibrated_prob(step, np.array([raw_low]))[0]), rel=1e-12)
    raw_high = details[float(ks[4])]["raw_p"]
    assert pa[4] == pytest.approx(float(prep.level_map.calibrated_prob_above(step, np.array([raw_high]))[0]),
                                  rel=1e-12)
    # near the money: exactly the share of paths, as before
    cum = np.cumsum(fc.paths.astype(float), axis=1)[:, -1]
    raw = np.mean(cum < np.log(ks[3] / fc.spot))
    assert pb[3] == float(np.clip(prep.level_map.calibrated_prob(step, np.array([raw]))[0], 0, 1))
    # and on the wire
    payload = json.loads(fc.to_json())
    ForecastResponse.model_validate(payload)
    row = payload["thresholds"][0]
    assert row["estimator"] == "importance_sampling" and row["std_error"] == pytest.approx(se[0])
    assert fc.prob_above(ks[5]) == pa[5] and fc.prob_below(ks[0]) == pb[0]


@pytest.mark.slow
def test_threshold_estimates_are_reproducible_and_independent_of_other_thresholds(synthetic):
    s = spot_of(synthetic)
    req = dict(asset="SYN-BTC", horizon=5, paths=3000, seed=9)
    lo, hi = 0.3 * s, 3.0 * s
    a = forecast(synthetic, ForecastRequest(**req, thresholds=[lo, hi]))
    assert a.threshold_estimator == ("importance_sampling",) * 2
    b = forecast(synthetic, ForecastRequest(**req, thresholds=[lo, hi]))
    np.testing.assert_array_equal(a.p_below, b.p_below)
    np.testing.assert_array_equal(a.threshold_se, b.threshold_se)
    c = forecast(synthetic, ForecastRequest(**req, thresholds=[hi, s, lo]))
    assert c.p_below[2] == a.p_below[0] and c.p_below[0] == a.p_below[1]
    d = forecast(synthetic, ForecastRequest(**{**req, "seed": 10}, thresholds=[lo]))
    assert d.threshold_estimator == ("importance_sampling",) and d.p_below[0] != a.p_below[0]
    # finish on shard-merged paths gives the same estimate (the IS streams do not depend on the shards)
    prep = prepare(synthetic, ForecastRequest(**req, thresholds=[lo, hi]))
    parts = [sim.simulate_blocks(prep.sample, 3000, 5, prep.seed, blocks=r) for r in sim.shard_blocks(3000, 2)]
    merged = finish(prep, np.concatenate([p for p in parts if len(p)]))
    np.testing.assert_array_equal(merged.p_below, a.p_below)


def test_an_unreachable_threshold_reports_zero_with_a_warning():
    """Vol at the floor and bounded tilts: no path, tilted or not, gets near K; P = 0, never NaN."""
    sampler = random_walk(v1=1e-12)
    x, _ = sampler.sample(2000, H, np.zeros(H), np.random.default_rng(0))
    tp = tails.threshold_probabilities(x, np.log([0.5, 2.0]), sim.IdentityLevelMap(), H - 1, sampler=sampler, seed=1)
    assert tp.estimator == ("importance_sampling", "importance_sampling")
    np.testing.assert_array_equal(tp.p_below, [0.0, 1.0])
    np.testing.assert_array_equal(tp.p_above, [1.0, 0.0])
    np.testing.assert_array_equal(tp.se, [0.0, 0.0])
    assert len(tp.warnings) == 2 and "even under importance sampling" in tp.warnings[0]
    # the plain paths' count (last step integrated: at least CONDITIONAL_MIN_PATHS); no hit: no extra blocks
    assert [e.paths for e in tp.estimates] == [max(2000, tails.CONDITIONAL_MIN_PATHS)] * 2
    assert "reported as 0" in tp.warnings[0]


def test_flat_history_gives_finite_threshold_probabilities():
    dates = pd.date_range("2020-01-01", periods=401, freq="D")
    bars = pd.DataFrame({"ts": bar_ts_from_dates(dates), "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                         "volume": np.nan})
    d = AssetData(asset="SYN-USD", bars={"1D": bars})
    fc = forecast(d, ForecastRequest(asset="SYN-USD", horizon=7, paths=1000, seed=1, thresholds=[0.5, 2.0]))
    assert fc.threshold_estimator == ("importance_sampling", "importance_sampling")
    assert np.all(np.isfinite(fc.p_below)) and np.all(np.isfinite(fc.threshold_se))
    assert fc.p_below[0] < 1e-20 and fc.p_above[1] < 1e-20
    np.testing.assert_allclose(fc.p_below + fc.p_above, 1.0, atol=1e-15)


def test_models_without_a_tilt_keep_plain_monte_carlo():
    class Plain:
        tiltable = False

    lm = sim.IdentityLevelMap()
    x = np.random.default_rng(0).standard_normal(10_000)
    tp = tails.threshold_probabilities(x, np.array([-5.0, 0.0]), lm, 0, sampler=Plain(), seed=1)
    assert tp.estimator == ("monte_carlo", "monte_carlo")
    np.testing.assert_array_equal(tp.p_below, sim.prob_below(x, np.array([-5.0, 0.0])))
    assert "no simulated path of 10,000" in tp.warnings[0]


def test_the_gate():
    assert tails.use_importance(0, 10_000) and tails.use_importance(49, 10_000)
    assert not tails.use_importance(50, 10_000)
    assert not tails.use_importance(10, 100)  # 10% of the paths: inside the bulk
    assert tails.use_importance(4, 100)


# -- the level map's tails ----------------------------------------------------------------------


def test_level_map_keeps_far_tail_probabilities_and_reads_the_top_exactly():
    rng = np.random.default_rng(0)
    cal = Calibrator(CalibrationConfig(by_regime=False))
    # raw PITs squeezed toward the middle: the raw model's tails are too fat
    cal.add(np.arange(2000), 1, "normal", 0.5 + 0.8 * (rng.random(2000) - 0.5))
    lm = cal.level_map("normal", 5000)
    t = lm.table(0)
    assert t[0] == 0.0 and t[-1] == 1.0
    tiny = np.array([1e-9, 1e-6])
    lo = lm.calibrated_prob(0, tiny)
    assert np.all(lo > 0) and lo[1] / lo[0] == pytest.approx(1000.0, rel=1e-9)  # proportional below KNOTS[1]
    np.testing.assert_allclose(lm.calibrated_prob_above(0, tiny), lo, rtol=1e-9)  # symmetric map
    q = np.array([0.003, 0.02, 0.3])
    np.testing.assert_allclose(lm.calibrated_prob_above(0, q), 1 - lm.calibrated_prob(0, 1 - q), atol=1e-12)
    ident = ConformalLevelMap.identity()
    np.testing.assert_array_equal(ident.calibrated_prob_above(0, tiny), tiny)
    assert KNOTS[0] == 0.0 and KNOTS[-1] == 1.0
