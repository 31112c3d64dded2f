"""Ray Data windows == local windows, and the pipeline never reads past ``until``."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.data.schema import cutoff_for
from aetheris_ray.data.store import ParquetStore
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.windows import WindowSpec, window_schema

pytestmark = pytest.mark.integration
SPEC = WindowSpec(lookback=32, horizon=7, stride=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dp") / "store"
    st = ParquetStore(path)
    st.ingest(SyntheticSource(seed=1, start="2021-01-01", end="2022-12-31"))
    return st


def test_ray_windows_equal_local_windows(ray_session, store):
    from data_pipelines.windows import build_windows, local_windows

    spec = WindowSpec(SPEC.lookback, SPEC.horizon, SPEC.stride, regime=True)
    assets = store.assets()
    local = local_windows(store, assets, spec)
    distributed = build_windows(str(store.path), assets, spec)
    assert set(distributed) == set(window_schema(spec)) and "regime" in distributed
    assert len(local["origin"]) > 1000 and set(local["asset"]) == set(assets)
    for k in local:
        np.testing.assert_array_equal(distributed[k], local[k], err_msg=k)


def test_ray_windows_never_see_past_until(ray_session, store):
    from data_pipelines.windows import build_windows, local_windows

    until = "2022-06-30"
    w = build_windows(str(store.path), ["SYN-BTC"], SPEC, until=until)
    full = local_windows(store, ["SYN-BTC"], SPEC)
    # every target day is known at the cutoff, so the last origin is `until - horizon`
    assert w["origin"].max() == np.datetime64("2022-06-30") - np.timedelta64(SPEC.horizon, "D")
    cut = cutoff_for(until).tz_convert(None).to_datetime64()
    assert (w["origin"] + np.timedelta64(SPEC.horizon, "D") + np.timedelta64(22, "h") <= cut).all()
    n = len(w["origin"])
    for k in ("x_ret", "x_logvol", "y_ret", "y_logvol"):
        np.testing.assert_array_equal(w[k], full[k][:n], err_msg=k)
