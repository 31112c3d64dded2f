"""Residual components: unit variance, jump exclusion, Student-t fit."""

from __future__ import annotations

import numpy as np

from aetheris_ray.components import Context
from aetheris_ray.components.residuals import FhsResiduals, StudentTResiduals, standardised_residuals


def test_fhs_pool_excludes_jumps_and_carries_the_diffusive_variance(make):
    r = make.returns(1200, seed=3, jump_every=100)
    fit = FhsResiduals().fit(r)
    ctx = Context.from_states([make.state(r)])
    cond = fit.condition(ctx)
    pool = cond["pool"][0, : cond["count"][0]]
    z = standardised_residuals(ctx)[0][ctx.valid[0]]
    assert cond["count"][0] == int(np.sum(np.abs(z) <= 4.0))
    assert np.max(np.abs(pool)) <= 4.0 / np.std(z) + 1e-5
    assert abs(float(np.mean(pool))) < 1e-6
    # scaled by the spread of all residuals: the jumps' share of the variance is left to the jump component
    keep = np.abs(z) <= 4.0
    np.testing.assert_allclose(np.var(pool), np.var(z[keep]) / np.var(z), rtol=5e-3)
    assert float(np.var(pool)) < 1.0
    draws = fit.simulate(cond, 5000, 10, np.random.default_rng(0))
    assert set(np.unique(draws)) <= set(np.unique(pool))


def test_fhs_falls_back_to_gaussian_on_short_history(make):
    fit = FhsResiduals().fit(np.zeros(5))
    ctx = Context.from_states([make.state(0.01 * np.random.default_rng(0).standard_normal(20))])
    x = fit.simulate(fit.condition(ctx), 20_000, 3, np.random.default_rng(0))
    assert abs(float(np.std(x)) - 1.0) < 0.02


def test_student_t_fit_recovers_the_tail(make):
    r = make.returns(3000, seed=1, alpha=0.05, beta=0.9, nu=4.0)
    fit = StudentTResiduals().fit(r)
    assert 3.0 < float(fit.params["nu"][0]) < 7.0
    x = fit.simulate(fit.condition(Context.from_returns(r)), 50_000, 2, np.random.default_rng(0))
    assert abs(float(np.var(x)) - 1.0) < 0.1
    assert StudentTResiduals(nu=8.0).fit(r).params["nu"][0] == 8.0


def test_unit_t_draws_the_formula_it_documents():
    """``z sqrt((nu - 2) / chi2_nu)`` in float32, normals first then gammas origin by origin (in-place arithmetic
    must not change a number: the engine's forecasts are pinned by seed)."""
    from aetheris_ray.components._innovations import unit_t

    nu = [3.1, 3.1, 7.0, 2.05]
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 500, 14), dtype=np.float32)
    want = np.empty_like(z)
    for a, e, k in ((0, 2, 3.1), (2, 3, 7.0), (3, 4, 2.05)):
        g = rng.standard_gamma(np.float32(k / 2.0), size=(e - a, 500, 14), dtype=np.float32)
        want[a:e] = z[a:e] * np.sqrt(np.float32(k - 2.0) / np.maximum(2.0 * g, np.float32(1e-30)))
    got = unit_t(nu, 500, 14, np.random.default_rng(3))
    assert got.dtype == np.float32 and np.array_equal(got, np.clip(want, -40.0, 40.0))
