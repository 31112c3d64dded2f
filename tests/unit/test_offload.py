"""The network seam (`components.offload`): a forecast whose network calls leave the process equals the local one.

The runner here pickles each call and its answer, as a Serve handle does, and runs it
through `run_batch`, the function the part's deployment runs; the Serve deployments
themselves are tested over HTTP in tests/integration/test_serve_api.py.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from aetheris_ray.components import offload, spec_class
from aetheris_ray.data.synthetic import SyntheticSource

pytestmark = pytest.mark.torch

PARTS = (("volatility", "rough_vol"), ("residuals", "fm_gp"), ("trend", "mamba"), ("paths", "jump_sde"))


@pytest.fixture
def registered(isolated_home):
    """Every neural part that runs a network at forecast time, registered (untrained, seeded weights)."""
    pytest.importorskip("torch")
    from aetheris_ray.registry import Registry

    reg = Registry()
    for kind, name in PARTS:
        reg.register(spec_class(kind, name).fitted_cls.from_params(seed=0))
    return reg


def _forecast(model: str, thresholds=()):
    from aetheris_ray.api import forecast

    return forecast("SYN-BTC", 7, source=SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31"),
                    paths=400, seed=11, model=model, thresholds=list(thresholds))


@pytest.mark.parametrize("model", ["sota", "jump_sde"])
def test_a_forecast_with_remote_networks_equals_the_local_one(registered, model):
    import shutil

    from aetheris_ray.config import load_settings
    from aetheris_ray.state_cache import clear_caches

    local = _forecast(model, thresholds=[15_000.0])
    clear_caches()  # and the stored calibration state: the second forecast computes everything again
    shutil.rmtree(load_settings().state_path, ignore_errors=True)
    seen: dict[str, list[str]] = {}
    _install_remote(seen)
    try:
        remote = _forecast(model, thresholds=[15_000.0])
    finally:
        offload.uninstall()
    np.testing.assert_array_equal(remote.quantiles, local.quantiles)
    np.testing.assert_array_equal(remote.p_below, local.p_below)
    assert remote.metadata["components"] == local.metadata["components"]
    expected = {"sota": {"rough_vol", "fm_gp", "mamba"}, "jump_sde": {"jump_sde"}}[model]
    assert set(seen) == expected, seen
    if model == "jump_sde":
        assert {"_filter", "_simulate", "_skeleton"} <= set(seen["jump_sde"])


def test_merged_calls_equal_separate_ones_and_errors_stay_with_their_call(registered):
    from aetheris_ray.registry import load_artefact

    part = load_artefact("fm_gp", "latest")
    ref = offload.artefact_ref(part)
    assert ref is not None and ref[1] == "fm_gp"
    rng = np.random.default_rng(0)
    calls = [offload.Call(ref, "_push", (rng.standard_normal((n, part.shared["feat_mean"].size)),
                                         rng.standard_normal((n, 50, part.horizon)).astype(np.float32), None))
             for n in (1, 3)]
    bad = offload.Call(ref, "condition", ())
    out = offload.run_batch([calls[0], bad, calls[1]])
    assert isinstance(out[1], AttributeError) and "not a network call" in str(out[1])
    for call, (merged, states) in zip(calls, (out[0], out[2])):
        alone = type(part)._push.local(part, *call.args)
        np.testing.assert_allclose(merged, alone, rtol=1e-5, atol=1e-6)
        assert merged.shape == alone.shape and states == []


def test_a_part_built_in_memory_runs_locally(registered):
    part = spec_class("residuals", "fm_gp").fitted_cls.from_params(seed=0)
    assert offload.artefact_ref(part) is None
    calls = []
    offload.install("fm_gp", lambda call: calls.append(call))
    try:
        z = part.simulate(part.condition(_context(part)), 20, 5, np.random.default_rng(1))
    finally:
        offload.uninstall()
    assert z.shape == (1, 20, 5) and not calls


def _context(part):
    from aetheris_ray.components.base import Context
    from aetheris_ray.features.build import compute_state

    data = SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31").history("SYN-BTC")
    return Context.from_states([compute_state(data, data.daily_close().index[-1])], 400)


def _install_remote(seen: dict[str, list[str]]) -> None:
    """Each part's calls pickled out and back through `run_batch`, as a Serve handle carries them."""
    def runner(call):
        seen.setdefault(call.ref[1], []).append(call.method)
        result = offload.run_batch([pickle.loads(pickle.dumps(call))])[0]
        if isinstance(result, BaseException):
            raise result
        return pickle.loads(pickle.dumps(result))

    for _, name in PARTS:
        offload.install(name, runner)
