"""fBm math: covariance, exact sampling, Hurst estimation (oracles, not smoke)."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.components.rough_vol import fbm
from aetheris_ray.errors import InvalidInput


@pytest.mark.parametrize("hurst", [0.05, 0.1, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("n", [1, 7, 90])
def test_covariance_symmetric_positive_definite(n, hurst):
    cov = fbm.fbm_covariance(n, hurst)
    assert np.allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0
    np.testing.assert_allclose(np.diag(cov), np.arange(1, n + 1) ** (2 * hurst))


@pytest.mark.parametrize("hurst", [0.1, 0.3])
def test_factor_reproduces_covariance_and_is_cached(hurst):
    lower = fbm.fbm_factor(30, hurst)
    np.testing.assert_allclose(lower @ lower.T, fbm.fbm_covariance(30, hurst), atol=1e-9)
    assert fbm.fbm_factor(30, hurst) is lower
    assert not lower.flags.writeable


def test_eigen_fallback_when_cholesky_fails(monkeypatch):
    def fail(*_a, **_k):
        raise np.linalg.LinAlgError("forced")

    fbm._factor.cache_clear()
    monkeypatch.setattr(fbm.np.linalg, "cholesky", fail)
    lower = fbm.fbm_factor(12, 0.1)
    np.testing.assert_allclose(lower @ lower.T, fbm.fbm_covariance(12, 0.1), atol=1e-9)
    fbm._factor.cache_clear()


@pytest.mark.parametrize("hurst", [0.1, 0.3])
def test_sampled_variance_scaling(hurst):
    rng = np.random.default_rng(7)
    n_paths, n = 40_000, 20
    b = fbm.sample_fbm(n_paths, n, hurst, rng)
    t = np.arange(1, n + 1)
    # Var(B_H(t)) = t^(2H); sample variance has relative sd sqrt(2/n_paths) ~ 0.7%
    np.testing.assert_allclose(b.var(axis=0), t ** (2 * hurst), rtol=0.04)
    # self-similarity with dt: Var(B_H(t dt)) = (t dt)^(2H)
    b2 = fbm.sample_fbm(n_paths, n, hurst, rng, dt=0.25)
    np.testing.assert_allclose(b2.var(axis=0), (0.25 * t) ** (2 * hurst), rtol=0.04)


@pytest.mark.parametrize("hurst", [0.1, 0.3])
def test_increment_autocovariance(hurst):
    rng = np.random.default_rng(11)
    x = fbm.sample_fgn(40_000, 12, hurst, rng)
    gamma = fbm.fgn_autocovariance(6, hurst)
    emp = [np.mean(x[:, 5:] * x[:, 5 - k : 12 - k]) for k in range(6)]
    np.testing.assert_allclose(emp, gamma, atol=0.02)
    assert gamma[1] < 0  # rough (H < 1/2): increments are negatively correlated


def test_circulant_long_series_matches_autocovariance():
    rng = np.random.default_rng(3)
    x = fbm.sample_fgn_long(200_000, 0.1, rng)
    gamma = fbm.fgn_autocovariance(4, 0.1)
    emp = [np.mean(x[k:] * x[: x.size - k]) for k in range(4)]
    np.testing.assert_allclose(emp, gamma, atol=0.015)


@pytest.mark.parametrize("hurst", [0.1, 0.3])
def test_estimated_hurst_on_synthetic_log_vol(hurst):
    rng = np.random.default_rng(5)
    # rough fOU-like log vol: level + vol-of-vol * fBm (weak mean reversion does not change small-lag scaling)
    log_vol = -3.5 + 0.3 * np.cumsum(fbm.sample_fgn_long(6000, hurst, rng))
    est = fbm.estimate_hurst(log_vol)
    assert abs(est.hurst - hurst) < 0.03
    assert est.r2 > 0.95
    np.testing.assert_allclose(est.zeta, hurst * np.asarray(est.qs), atol=0.08)


def test_estimate_hurst_skips_missing_days():
    rng = np.random.default_rng(2)
    x = np.cumsum(fbm.sample_fgn_long(6000, 0.1, rng))
    x[rng.choice(6000, 300, replace=False)] = np.nan
    assert abs(fbm.estimate_hurst(x).hurst - 0.1) < 0.03


def test_errors_name_the_argument():
    with pytest.raises(InvalidInput, match="hurst=1.2"):
        fbm.fbm_covariance(5, 1.2)
    with pytest.raises(InvalidInput, match="n=0"):
        fbm.fbm_factor(0, 0.1)
    with pytest.raises(InvalidInput, match="finite values"):
        fbm.estimate_hurst(np.zeros(10))
