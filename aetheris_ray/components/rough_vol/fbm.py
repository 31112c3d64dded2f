"""Fractional Brownian motion: exact covariance, exact sampling, Hurst estimation.

Pure numpy (no torch, no Ray).  Sampling is exact on the grid ``t = dt, 2 dt, ...,
n dt``: the Cholesky factor of the fBm covariance (with a growing jitter when the
matrix is numerically semi-definite, and an eigen-decomposition fallback) is cached
per ``(n, H)`` with `functools.lru_cache`.

The Hurst estimator follows Gatheral, Jaisson & Rosenbaum (2018), "Volatility is
rough": for a log-volatility series ``x``, the empirical moments
``m(q, d) = mean |x[t+d] - x[t]|^q`` scale as ``d ** zeta(q)`` with ``zeta(q) = q H``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from aetheris_ray.errors import InvalidInput

__all__ = [
    "fbm_covariance",
    "fgn_autocovariance",
    "fbm_factor",
    "sample_fbm",
    "sample_fgn",
    "sample_fgn_long",
    "HurstEstimate",
    "estimate_hurst",
]

#: Jitters tried (relative to the largest diagonal entry) before the eigen fallback.
_JITTERS = (0.0, 1e-12, 1e-10, 1e-8, 1e-6)


def _check(n: int, hurst: float) -> None:
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise InvalidInput(f"n={n!r}: the number of grid points must be an integer >= 1")
    if not (0.0 < float(hurst) < 1.0):
        raise InvalidInput(f"hurst={hurst!r}: the Hurst exponent must lie in (0, 1); rough volatility uses about 0.1")


def fbm_covariance(n: int, hurst: float, dt: float = 1.0) -> np.ndarray:
    """Covariance of ``B_H`` at ``t_i = i dt``, ``i = 1..n``.

    ``Cov(B_H(s), B_H(t)) = (s^2H + t^2H - |t - s|^2H) / 2``.

    Returns
    -------
    ndarray, shape (n, n)

    >>> np.round(fbm_covariance(2, 0.5), 6).tolist()   # Brownian motion: min(s, t)
    [[1.0, 1.0], [1.0, 2.0]]
    """
    _check(n, hurst)
    t = dt * np.arange(1, n + 1, dtype=float)
    h2 = 2.0 * float(hurst)
    return 0.5 * (t[:, None] ** h2 + t[None, :] ** h2 - np.abs(t[:, None] - t[None, :]) ** h2)


def fgn_autocovariance(n_lags: int, hurst: float) -> np.ndarray:
    """Autocovariance ``gamma(k)``, ``k = 0..n_lags-1``, of unit-step fractional Gaussian noise.

    ``gamma(k) = (|k+1|^2H - 2|k|^2H + |k-1|^2H) / 2``.

    >>> np.round(fgn_autocovariance(3, 0.5), 6).tolist()   # white noise
    [1.0, 0.0, 0.0]
    """
    _check(n_lags, hurst)
    k = np.arange(n_lags, dtype=float)
    h2 = 2.0 * float(hurst)
    return 0.5 * (np.abs(k + 1) ** h2 - 2 * np.abs(k) ** h2 + np.abs(k - 1) ** h2)


@lru_cache(maxsize=64)
def _factor(n: int, hurst: float) -> np.ndarray:
    cov = fbm_covariance(n, hurst)
    scale = float(np.max(np.diag(cov)))
    for jitter in _JITTERS:
        try:
            lower = np.linalg.cholesky(cov + jitter * scale * np.eye(n))
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(lower)):
            lower.setflags(write=False)
            return lower
    w, v = np.linalg.eigh(cov)
    lower = v * np.sqrt(np.clip(w, 0.0, None))[None, :]
    lower.setflags(write=False)
    return lower


def fbm_factor(n: int, hurst: float) -> np.ndarray:
    """A read-only ``L`` with ``L @ L.T == fbm_covariance(n, hurst)`` (unit step), cached per ``(n, H)``.

    Cholesky with a growing jitter; when every jitter fails, ``V sqrt(max(w, 0))``
    from the eigen-decomposition (not triangular, still an exact square root up to
    the clipped eigenvalues).
    """
    _check(n, hurst)
    return _factor(int(n), round(float(hurst), 12))


def sample_fbm(n_paths: int, n: int, hurst: float, rng: np.random.Generator, dt: float = 1.0) -> np.ndarray:
    """Exact fBm paths on ``t = dt .. n dt`` (``B_H(0) = 0`` is not included).

    Parameters
    ----------
    n_paths, n : int
    hurst : float in (0, 1)
    rng : numpy Generator (the only source of randomness)
    dt : float, step length (self-similarity: the unit-step paths are scaled by ``dt**H``)

    Returns
    -------
    ndarray, shape (n_paths, n)
    """
    lower = fbm_factor(n, hurst)
    z = rng.standard_normal((int(n_paths), int(n)))
    return (z @ lower.T) * float(dt) ** float(hurst)


def sample_fgn(n_paths: int, n: int, hurst: float, rng: np.random.Generator, dt: float = 1.0) -> np.ndarray:
    """Exact fractional Gaussian noise: the increments of `sample_fbm` (first step from 0).

    Returns
    -------
    ndarray, shape (n_paths, n)
    """
    b = sample_fbm(n_paths, n, hurst, rng, dt)
    return np.diff(b, axis=1, prepend=0.0)


def sample_fgn_long(n: int, hurst: float, rng: np.random.Generator) -> np.ndarray:
    """One long fGn series by circulant embedding (Davies-Harte, exact; O(n log n)).

    For series too long for the cached Cholesky (e.g. synthetic log-vol of thousands
    of days); negative embedding eigenvalues (none for ``H`` in (0, 1) in theory)
    are clipped.

    Returns
    -------
    ndarray, shape (n,)
    """
    _check(n, hurst)
    g = fgn_autocovariance(n + 1, hurst)
    row = np.concatenate([g[: n + 1], g[n - 1 : 0 : -1]])
    m = row.size
    eig = np.clip(np.fft.fft(row).real, 0.0, None)
    w = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    return np.fft.fft(np.sqrt(eig / m) * w).real[:n]


@dataclass(frozen=True)
class HurstEstimate:
    """Result of `estimate_hurst`.

    Attributes
    ----------
    hurst : float
        Slope of ``zeta(q)`` against ``q`` (through the origin).
    zeta : ndarray, shape (n_q,)
        Scaling exponent of ``m(q, d)`` for each ``q``.
    qs, lags : tuples
        The moments and lags used.
    r2 : float
        Worst R^2 of the log-log regressions (a check that the scaling holds).
    """

    hurst: float
    zeta: np.ndarray
    qs: tuple[float, ...]
    lags: tuple[int, ...]
    r2: float


def estimate_hurst(
    log_vol: np.ndarray,
    lags: Sequence[int] = tuple(range(1, 21)),
    qs: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 3.0),
) -> HurstEstimate:
    """Estimate H from the scaling of ``E|x[t+d] - x[t]|^q`` over lags ``d`` (Gatheral-Jaisson-Rosenbaum).

    Parameters
    ----------
    log_vol : ndarray, shape (n_obs,)
        Log-volatility series on a regular grid; NaNs (missing days) are skipped
        pairwise.
    lags : sequence of int
        Lags ``d`` in grid steps.
    qs : sequence of float
        Moment orders ``q > 0``.

    Returns
    -------
    HurstEstimate

    >>> rng = np.random.default_rng(0)
    >>> x = np.cumsum(rng.standard_normal(20000))          # Brownian: H = 0.5
    >>> round(estimate_hurst(x).hurst, 1)
    0.5
    """
    x = np.asarray(log_vol, dtype=float)
    lags = tuple(int(d) for d in lags)
    qs = tuple(float(q) for q in qs)
    if len(lags) < 2 or min(lags) < 1:
        raise InvalidInput(f"lags={lags!r}: need at least two lags >= 1")
    if any(q <= 0 for q in qs):
        raise InvalidInput(f"qs={qs!r}: moment orders must be > 0")
    if np.isfinite(x).sum() < max(lags) + 30:
        raise InvalidInput(
            f"log_vol: {int(np.isfinite(x).sum())} finite values, need at least {max(lags) + 30} for lags up to {max(lags)}"
        )
    logd = np.log(np.asarray(lags, dtype=float))
    zeta = np.empty(len(qs))
    worst_r2 = 1.0
    absdiff = []
    for d in lags:
        diff = np.abs(x[d:] - x[:-d])
        absdiff.append(diff[np.isfinite(diff)])
    for i, q in enumerate(qs):
        logm = np.log(np.array([np.mean(a**q) for a in absdiff]))
        slope, intercept = np.polyfit(logd, logm, 1)
        resid = logm - (slope * logd + intercept)
        ss = float(np.sum((logm - logm.mean()) ** 2))
        worst_r2 = min(worst_r2, 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else 0.0)
        zeta[i] = slope
    q_arr = np.asarray(qs)
    hurst = float(np.sum(q_arr * zeta) / np.sum(q_arr**2))
    return HurstEstimate(hurst=hurst, zeta=zeta, qs=qs, lags=lags, r2=worst_r2)
