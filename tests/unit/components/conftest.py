"""Shared inputs of the component tests: seeded GARCH-t returns and market states."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.features.state import MarketState


def garch_returns(n: int = 1500, seed: int = 0, omega: float = 2e-5, alpha: float = 0.1, beta: float = 0.85,
                  nu: float = 5.0, jump_every: int = 0) -> np.ndarray:
    """Daily log-returns from a GARCH(1,1) with unit-variance Student-t shocks (optionally with jumps)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
    r = np.empty(n)
    v = omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = np.sqrt(v) * z[t]
        v = omega + alpha * r[t] ** 2 + beta * v
    if jump_every:
        r[jump_every::jump_every] += np.where(rng.random(r[jump_every::jump_every].size) < 0.5, -1, 1) * 0.25
    return r


def make_state(returns: np.ndarray, label: str = "normal", rv: np.ndarray | None = None, d: int = 17,
               mm: dict | None = None) -> MarketState:
    r = np.asarray(returns, dtype=float)
    return MarketState(asset="TEST-USD", origin=pd.Timestamp("2024-01-01"), spot=100.0, returns=r, mu=0.0,
                       sigma=float(np.std(r)) if r.size else 0.0, regime_label=label, regime_vector=np.zeros(d),
                       mm_indices=mm or {}, intraday_rv=rv)


@pytest.fixture(scope="session")
def make():
    """The helpers as a fixture: ``make.returns(...)``, ``make.state(...)``."""

    class _Make:
        returns = staticmethod(garch_returns)
        state = staticmethod(make_state)

    return _Make


@pytest.fixture(scope="session")
def returns() -> np.ndarray:
    return garch_returns()


@pytest.fixture(scope="session")
def state(returns) -> MarketState:
    return make_state(returns)
