"""Standardised innovation draws shared by the volatility and residual components.

A lower module than both: `volatility` (GARCH-t paths) and `residuals` (the
Student-t residual model) draw unit-variance Student-t shocks here, so neither
imports the other for them.
"""

from __future__ import annotations

import numpy as np

from aetheris_ray._typing import FloatArray

__all__ = ["T_CLIP", "unit_t"]

#: Largest absolute unit-variance Student-t innovation drawn (a 40-sigma day).
T_CLIP = 40.0


def unit_t(nu: FloatArray, n_paths: int, horizon: int, rng: np.random.Generator,
           clip: float = T_CLIP) -> FloatArray:
    """Unit-variance Student-t innovations, shape (n_origins, n_paths, horizon), float32.

    ``t = z sqrt((nu - 2) / chi2_nu)`` with all normals drawn first and the
    chi-square (gamma) draws last, origin by origin, so an origin's draws never
    depend on the ``nu`` of later origins.  Clipped at +-``clip`` (default `T_CLIP`).

    Parameters
    ----------
    nu : ndarray, shape (n_origins,)
        Degrees of freedom (> 2) per origin.
    n_paths, horizon : int
    rng : numpy Generator (the only source of randomness)
    clip : float

    >>> unit_t([5.0, 5.0], 3, 2, np.random.default_rng(0)).shape
    (2, 3, 2)
    """
    nu = np.asarray(nu, dtype=float).ravel()
    b = nu.size
    z = rng.standard_normal((b, n_paths, horizon), dtype=np.float32)
    starts = np.flatnonzero(np.concatenate([[True], nu[1:] != nu[:-1]]))
    for a, e in zip(starts, np.append(starts[1:], b)):
        k = float(nu[a])
        g = rng.standard_gamma(np.float32(k / 2.0), size=(e - a, n_paths, horizon), dtype=np.float32)
        # z * sqrt((k - 2) / max(2 g, 1e-30)), in place (the same float32 operations, no temporaries)
        np.multiply(g, np.float32(2.0), out=g)
        np.maximum(g, np.float32(1e-30), out=g)
        np.divide(np.float32(k - 2.0), g, out=g)
        np.sqrt(g, out=g)
        np.multiply(z[a:e], g, out=z[a:e])
    return np.clip(z, -clip, clip, out=z)
