"""Jump components: Poisson inversion, Hawkes recursion vs a loop, fitted rates and sizes."""

from __future__ import annotations

import numpy as np
from scipy import stats

from aetheris_ray.components import Context
from aetheris_ray.components.jumps import (
    MAX_JUMP,
    FittedHawkes,
    HawkesJumps,
    PoissonJumps,
    jump_flags,
    poisson_inverse,
)


def test_poisson_inverse_has_the_poisson_distribution():
    u = np.random.default_rng(0).random(400_000)
    for lam in (0.01, 0.7, 3.0):
        n = poisson_inverse(np.array(lam), u)
        freq = np.bincount(n, minlength=8)[:8] / u.size
        np.testing.assert_allclose(freq, stats.poisson.pmf(np.arange(8), lam), atol=3e-3)


def test_jump_flags_find_planted_jumps(make):
    r = make.returns(1200, seed=3, jump_every=100)
    flags, z = jump_flags(r, 4.0)
    planted = np.zeros(r.size, dtype=bool)
    planted[100::100] = True
    assert flags[planted].mean() > 0.7 and flags[~planted].mean() < 0.01


def test_poisson_fit_rate_and_sizes(make):
    r = make.returns(1200, seed=3, jump_every=100)
    fit = PoissonJumps().fit(r)
    lam = float(fit.params["lambda0"][0])
    assert 0.004 < lam < 0.02  # about one jump per 100 days (with a weak prior)
    assert 0.2 < float(fit.params["p_down"][0]) < 0.8
    st = make.state(r)
    x = fit.sample(st, 20_000, 10, np.random.default_rng(0))
    share = np.mean(x != 0)
    assert abs(share - lam) < 0.3 * lam
    assert np.all(np.abs(x) <= MAX_JUMP + 1e-6)


def test_intensity_regression_uses_features(make):
    """With a feature that flags every jump eve, the regression raises the intensity when it is on."""
    r = make.returns(1500, seed=4, jump_every=50)
    feat = np.zeros((r.size, 2))
    feat[49::50, 0] = 1.0  # known the day before each jump
    fit = PoissonJumps(ridge=1.0).fit(r, features=feat)
    beta = fit.params["beta"][0]
    assert beta[0] > 0.5 and abs(beta[1]) < 1e-6
    st_on = make.state(r, d=2)
    ctx_on = Context.from_states([st_on])
    ctx_on.regime_vector[:] = [1.0, 0.0]
    ctx_off = Context.from_states([make.state(r, d=2)])
    assert fit.condition(ctx_on)["lambda"][0] > fit.condition(ctx_off)["lambda"][0]


def _loop_hawkes_counts(e0, mu, alpha, delta, g, u):
    n, h = u.shape
    out = np.zeros((n, h), dtype=int)
    for i in range(n):
        e = e0
        for t in range(h):
            lam = (mu + alpha * e) * g
            k, p, cdf = 0, np.exp(-lam), np.exp(-lam)
            while u[i, t] > cdf and k < 100:
                k += 1
                p *= lam / k
                cdf += p
            out[i, t] = k
            e = delta * (e + k)
    return out


def test_hawkes_counts_match_the_loop_recursion():
    fit = FittedHawkes.from_params(HawkesJumps(), mu=0.05, alpha=0.3, delta=0.8, p_down=0.5, scale=1.0,
                                   beta=np.zeros(0))
    cond = {"e0": np.array([1.5]), "g": np.array([1.2]), "sigma_ref": np.array([0.03]), "mu": np.array([0.05]),
            "alpha": np.array([0.3]), "delta": np.array([0.8]), "p_down": np.array([0.5]), "scale": np.array([1.0])}
    rng = np.random.default_rng(7)
    child = np.random.default_rng(7)
    u = child.random((1, 300, 12))
    x = fit.simulate(cond, 300, 12, rng)
    counts = _loop_hawkes_counts(1.5, 0.05, 0.3, 0.8, 1.2, u[0])
    assert np.array_equal(x[0] != 0, counts > 0)


def test_hawkes_fit_detects_clustering():
    rng = np.random.default_rng(0)
    r = 0.02 * rng.standard_normal(1500)
    for start in range(100, 1500, 150):  # clusters of jumps
        r[start:start + 4:2] += 0.3 * rng.choice([-1, 1], 2)
    fit = HawkesJumps().fit(r)
    assert fit.info["branching"] > 0.05
    assert float(fit.params["alpha"][0]) <= 0.9 * (1 - 0.9) / 0.9 + 1e-12


def test_jump_sizes_do_not_depend_on_later_origins():
    """An origin's jump draws are the same whatever the intensity of the origins after it."""
    fit = PoissonJumps().fit(0.02 * np.random.default_rng(0).standard_normal(600))
    base = {"sigma_ref": np.array([0.02, 0.02]), "p_down": fit.params["p_down"], "scale": fit.params["scale"]}
    a = fit.simulate({**base, "lambda": np.array([0.05, 0.01])}, 500, 10, np.random.default_rng(1))
    b = fit.simulate({**base, "lambda": np.array([0.05, 0.5])}, 500, 10, np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])
