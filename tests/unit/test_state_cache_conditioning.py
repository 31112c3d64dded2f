"""The conditioning arrays kept next to a disk state entry (aetheris_ray.state_cache.OriginState.conditioning)."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.contract import ForecastRequest
from aetheris_ray.data import SyntheticSource
from aetheris_ray.engine import forecast
from aetheris_ray.model import FittedModel
from aetheris_ray.state_cache import clear_caches

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    return SyntheticSource(seed=0).history("SYN-BTC", until="2022-06-01")


def test_conditioning_is_reused_from_disk_and_gives_the_same_forecast(data, isolated_home, monkeypatch):
    req = ForecastRequest(asset="SYN-BTC", horizon=5, paths=2000, seed=3, thresholds=[1e-3])
    clear_caches()
    cold = forecast(data, req)
    files = list((isolated_home / "state" / "engine").rglob("cond-*.npz"))
    assert len(files) == 1
    clear_caches()  # a fresh process: the fitted parts and the conditioning come from disk

    def no_filter(self, ctx):
        raise AssertionError("conditioning recomputed although it is on disk")

    with monkeypatch.context() as m:
        m.setattr(FittedModel, "condition", no_filter)
        warm = forecast(data, req)
    np.testing.assert_array_equal(warm.quantiles, cold.quantiles)
    np.testing.assert_array_equal(warm.p_below, cold.p_below)
    np.testing.assert_array_equal(warm.cdf_prices, cold.cdf_prices)
    # an unreadable file is recomputed (and rewritten), with the same answer
    files[0].write_bytes(b"not an npz")
    clear_caches()
    again = forecast(data, req)
    np.testing.assert_array_equal(again.quantiles, cold.quantiles)
    assert np.load(files[0]).files  # rewritten


def test_other_context_gets_its_own_file(data, isolated_home):
    """A different context (here: another origin, hence another entry or another context hash) never reuses it."""
    clear_caches()
    a = forecast(data, ForecastRequest(asset="SYN-BTC", horizon=5, paths=2000, seed=3))
    b = forecast(data, ForecastRequest(asset="SYN-BTC", horizon=5, paths=2000, seed=3, as_of="2022-05-01"))
    files = list((isolated_home / "state" / "engine").rglob("cond-*.npz"))
    assert len(files) == 2
    assert not np.array_equal(a.quantiles, b.quantiles)
