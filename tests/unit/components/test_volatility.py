"""Volatility components against loop re-implementations, `arch`, and their analytic moments."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.components import Context, build_spec
from aetheris_ray.components.volatility import (
    BlendVolatility,
    EwmaVolatility,
    FittedEwma,
    FittedGarch,
    GarchVolatility,
    HarVolatility,
)
from aetheris_ray.errors import InvalidInput


def _loop_garch(v1, omega, alpha, beta, z):
    """sigma paths of v' = omega + alpha (sigma z)^2 + beta v, one path and one step at a time."""
    n, h = z.shape
    out = np.empty((n, h))
    for i in range(n):
        v = v1
        for t in range(h):
            out[i, t] = np.sqrt(v)
            r = out[i, t] * z[i, t]
            v = omega + alpha * r * r + beta * v
    return out


def _loop_filter(r, omega, alpha, beta):
    """One-step variance forecasts along a series, seeded with the mean square of the first 30 returns."""
    v = np.mean(r[:30] ** 2)
    out = np.empty(r.size)
    for t in range(r.size):
        v = omega + alpha * r[t] ** 2 + beta * v
        out[t] = v
    return out


def test_garch_paths_match_the_loop_recursion():
    g = FittedGarch.from_params(GarchVolatility(), omega=3e-6, alpha=0.12, beta=0.85, nu=5.0)
    z = np.random.default_rng(0).standard_normal((1, 40, 12)).astype(np.float32)
    cond = {"v1": np.array([4e-4])}
    sig = g.sample_vol(cond, z, np.random.default_rng(1))
    np.testing.assert_allclose(sig[0], _loop_garch(4e-4, 3e-6, 0.12, 0.85, z[0].astype(float)), rtol=1e-6)


def test_ewma_paths_match_the_loop_recursion_and_the_static_rule():
    e = FittedEwma.from_params(EwmaVolatility(), lam=0.9)
    z = np.random.default_rng(2).standard_normal((1, 30, 10))
    cond = {"v1": np.array([1e-3])}
    sig = e.sample_vol(cond, z, np.random.default_rng(0))
    np.testing.assert_allclose(sig[0], _loop_garch(1e-3, 0.0, 0.1, 0.9, z[0]), rtol=1e-10)
    static = FittedEwma.from_params(EwmaVolatility(path_dependent=False), lam=0.9)
    np.testing.assert_allclose(static.sample_vol(cond, z, np.random.default_rng(0)), np.sqrt(1e-3))


def test_filters_match_the_loop(returns):
    ctx = Context.from_returns(returns[:700], lookback=700)
    g = FittedGarch.from_params(GarchVolatility(), omega=2e-5, alpha=0.1, beta=0.85, nu=5.0)
    np.testing.assert_allclose(g.filter(ctx)[0], _loop_filter(returns[:700], 2e-5, 0.1, 0.85), rtol=1e-10)
    e = FittedEwma.from_params(EwmaVolatility(), lam=0.94)
    np.testing.assert_allclose(e.filter(ctx)[0], _loop_filter(returns[:700], 0.0, 0.06, 0.94), rtol=1e-10)


def test_left_padding_keeps_the_seed_variance(returns):
    """A short history padded into a long window gives the same forecast as an exact-length window."""
    g = FittedGarch.from_params(GarchVolatility(), omega=0.0, alpha=0.06, beta=0.94, nu=5.0)
    short = returns[:200]
    a = g.condition(Context.from_returns(short, lookback=200))["v1"]
    b = g.condition(Context.from_returns(short, lookback=1000))["v1"]
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_garch_t_fit_matches_arch(returns):
    from arch import arch_model

    fit = GarchVolatility(dist="t").fit(returns)
    res = arch_model(returns[-1000:] * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False).fit(disp="off")
    p = res.params.to_numpy()
    np.testing.assert_allclose(float(fit.params["omega"][0]) * 1e4, p[0], rtol=1e-3)
    np.testing.assert_allclose([float(fit.params[k][0]) for k in ("alpha", "beta", "nu")], p[1:], rtol=1e-3)
    # the data were made with alpha 0.1, beta 0.85, nu 5
    assert abs(float(fit.params["alpha"][0]) - 0.1) < 0.05 and abs(float(fit.params["beta"][0]) - 0.85) < 0.08


def test_garch_warm_start_reaches_the_cold_optimum(returns):
    cold = GarchVolatility().fit(returns[:-7])
    warm = GarchVolatility().fit(returns, warm=cold)
    again = GarchVolatility().fit(returns)
    assert warm.info["warm_start"] is True
    for k in ("alpha", "beta", "nu"):
        np.testing.assert_allclose(warm.params[k], again.params[k], rtol=2e-3)


def test_garch_falls_back_on_short_or_flat_history():
    short = GarchVolatility().fit(0.01 * np.random.default_rng(0).standard_normal(100))
    assert "fallback" in short.info and short.params["alpha"][0] == pytest.approx(0.06)
    flat = GarchVolatility().fit(np.zeros(600))
    assert "flat" in flat.info["fallback"]


def test_analytic_garch_variance_matches_the_simulated_mean():
    g = FittedGarch.from_params(GarchVolatility(), omega=1e-5, alpha=0.1, beta=0.85, nu=6.0)
    cond = {"v1": np.array([9e-4])}
    ev = g.expected_variance(cond, 10)
    # closed form: s_1 = v1, s_k = omega + (alpha + beta) s_{k-1}
    s = [9e-4]
    for _ in range(9):
        s.append(1e-5 + 0.95 * s[-1])
    np.testing.assert_allclose(ev[0], s, rtol=1e-12)
    r = g.simulate(cond, 200_000, 10, np.random.default_rng(5))
    np.testing.assert_allclose((r[0] ** 2).mean(axis=0), ev[0], rtol=0.05)


def test_blend_mixes_member_variances_and_is_analytic(returns):
    blend = BlendVolatility(weights=(0.25, 0.75)).fit(returns)
    ctx = Context.from_returns(returns)
    cond = blend.condition(ctx)
    members = [c.condition(ctx)["v1"] for c in blend.children]
    np.testing.assert_allclose(cond["v1"], 0.25 * members[0] + 0.75 * members[1], rtol=1e-12)
    r = blend.simulate(cond, 100_000, 6, np.random.default_rng(0))
    np.testing.assert_allclose((r[0] ** 2).mean(axis=0), blend.expected_variance(cond, 6)[0], rtol=0.05)


def test_blend_online_weights_prefer_the_better_member(returns):
    bad = build_spec("volatility", "ewma", lam=0.5)
    blend = BlendVolatility(members=(bad, GarchVolatility()), weighting="online", eta=1.0).fit(returns)
    w = blend.weights(Context.from_returns(returns))
    assert w.shape == (1, 2) and w[0, 1] > w[0, 0]
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_blend_spec_round_trips_through_the_registry():
    spec = build_spec("volatility", "blend", members=["ewma", {"name": "garch", "dist": "normal"}], weights=[1, 3])
    assert spec.members[1].dist == "normal" and spec.weights == (1.0, 3.0)
    from aetheris_ray.components.registry import spec_from_dict

    assert spec_from_dict("volatility", spec.to_dict()) == spec
    with pytest.raises(InvalidInput, match="one non-negative weight per member"):
        build_spec("volatility", "blend", weights=[1.0])


def test_har_uses_intraday_rv_and_is_deterministic_in_the_path(returns, make):
    rv = returns ** 2 * np.random.default_rng(0).uniform(0.8, 1.2, returns.size)
    fit = HarVolatility().fit(returns, rv=rv)
    assert fit.info["intraday_rv"] is True
    st = make.state(returns, rv=rv)
    ctx = Context.from_states([st])
    cond = fit.condition(ctx)
    z = np.random.default_rng(0).standard_normal((1, 50, 8))
    sig = fit.sample_vol(cond, z, np.random.default_rng(0))
    np.testing.assert_allclose(sig[0], np.broadcast_to(np.sqrt(fit.expected_variance(cond, 8)[0]), (50, 8)))
    b = fit.params
    assert all(float(b[k][0]) >= 0 for k in ("b1", "b5", "b22"))
    assert float(b["b1"][0] + b["b5"][0] + b["b22"][0]) <= HarVolatility().max_persistence + 1e-12


@pytest.mark.filterwarnings("ignore:Starting values do not satisfy")  # the refused start, on purpose
@pytest.mark.parametrize("dist", ["studentst", "normal"])
def test_fit_garch_slsqp_equals_arch_bit_for_bit(returns, dist):
    """The exact finite differences change nothing: same params, flag, likelihood and variance as arch's fit,
    cold, warm, and from a start arch refuses (outside its constraints)."""
    from arch import arch_model

    from aetheris_ray.components.volatility import fit_garch_slsqp

    def model(w):
        return arch_model(w * 100, mean="Zero", vol="GARCH", p=1, q=1, dist=dist, rescale=False)

    cold = model(returns[-1000:]).fit(disp="off", show_warning=False)
    starts = [None, np.asarray(cold.params) * 1.01, np.array([0.01, 0.6, 0.6, 3.0])[: len(cold.params)]]
    for end in (400, 700, returns.size):
        w = returns[max(0, end - 1000):end]
        for sv in starts:
            a = model(w).fit(disp="off", starting_values=sv, show_warning=False)
            b = fit_garch_slsqp(model(w), sv)
            assert np.array_equal(np.asarray(a.params), np.asarray(b.params))
            assert a.convergence_flag == b.convergence_flag and a.loglikelihood == b.loglikelihood
            assert np.array_equal(a.conditional_volatility, b.conditional_volatility)


def test_forward_difference_equals_scipy_at_and_near_bounds():
    from scipy.optimize._numdiff import approx_derivative

    from aetheris_ray.components.volatility import SLSQP_STEP, forward_difference

    def f(x, c):
        return float(np.sum(np.sin(x * c)) + x[0] ** 3)

    lb, ub = np.array([-1.0, 0.0, -np.inf]), np.array([1.0, 2.0, np.inf])
    for x0 in ([0.3, 1.0, 5.0], [1.0, 0.0, 0.0], [1.0 - 1e-9, 2.0, -3.0], [-1.0, 1e-12, 1e300]):
        x0 = np.array(x0)
        for step in (SLSQP_STEP, 1e-8):
            want = approx_derivative(f, x0, "2-point", abs_step=step, f0=f(x0, 2.0), bounds=(lb, ub), args=(2.0,))
            got = forward_difference(f, x0, f(x0, 2.0), lb, ub, step, (2.0,))
            assert np.array_equal(want, got)


def test_fit_garch_slsqp_puts_scipys_minimize_back_even_on_an_error(returns):
    import arch.univariate.base as arch_base
    import scipy.optimize
    from arch import arch_model

    from aetheris_ray.components.volatility import fit_garch_slsqp

    fit_garch_slsqp(arch_model(returns[-500:] * 100, mean="Zero", vol="GARCH", dist="t", rescale=False))
    assert arch_base.minimize is scipy.optimize.minimize
    broken = arch_model(returns[-500:] * 100, mean="Zero", vol="GARCH", dist="t", rescale=False)
    broken._y_original = None  # arch's fit raises inside the swapped block
    with pytest.raises(RuntimeError):
        fit_garch_slsqp(broken)
    assert arch_base.minimize is scipy.optimize.minimize
