"""Sharded Monte Carlo on simulator actors: bitwise determinism across shard counts, fault tolerance, budget."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool(ray_session):
    from aetheris_ray.distributed.montecarlo import SimulatorPool

    p = SimulatorPool(2, num_cpus=0.25)
    assert p.ready()
    yield p
    p.shutdown()


def prepared(source, paths, horizon, seed=11):
    from aetheris_ray import engine
    from aetheris_ray.contract import parse_request

    req = parse_request({"asset": "SYN-BTC", "horizon": horizon, "paths": paths, "seed": seed, "thresholds": [60_000]})
    return engine.prepare(source.history("SYN-BTC"), req), req


def test_shard_counts_are_bitwise_equal_to_in_process(pool, synthetic_source):
    from aetheris_ray import engine
    from aetheris_ray import simulation as sim
    from aetheris_ray.distributed.montecarlo import forecast_prepared

    prep, req = prepared(synthetic_source, 100_000, 5)
    local = sim.simulate_blocks(prep.sample, req.paths, req.horizon, prep.seed)
    ref = engine.forecast(synthetic_source.history("SYN-BTC"), req)
    for n in (1, 2, 8):
        paths = pool.simulate(prep, n_shards=n)
        assert paths.dtype == local.dtype and paths.shape == (100_000, 5)
        assert np.array_equal(paths, local), f"{n} shards differ"
        fc = forecast_prepared(prep, pool, local_max_paths=0, n_shards=n)
        assert np.array_equal(fc.quantiles, ref.quantiles) and np.array_equal(fc.p_below, ref.p_below)
        assert fc.to_response() == ref.to_response()


@pytest.mark.slow
def test_one_million_paths_sharded(pool, synthetic_source):
    from aetheris_ray import engine
    from aetheris_ray import simulation as sim
    from aetheris_ray.distributed.montecarlo import forecast_prepared

    prep, req = prepared(synthetic_source, 1_000_000, 14, seed=5)
    fc = forecast_prepared(prep, pool)
    ref = engine.finish(prep, sim.simulate_blocks(prep.sample, req.paths, req.horizon, prep.seed))
    assert np.array_equal(fc.quantiles, ref.quantiles)


def test_small_requests_stay_local(synthetic_source):
    from aetheris_ray.distributed.montecarlo import LOCAL_MAX_PATHS, simulate

    class NoPool:
        def simulate(self, *a, **k):
            raise AssertionError("a small request reached the pool")

    prep, _ = prepared(synthetic_source, 10_000, 7)
    assert 10_000 <= LOCAL_MAX_PATHS
    assert simulate(prep, NoPool()).shape == (10_000, 7)


def test_budget_refuses_huge_requests(pool, synthetic_source):
    from aetheris_ray.errors import InvalidInput

    prep, _ = prepared(synthetic_source, 1_000_000, 90)
    with pytest.raises(InvalidInput, match=r"paths x horizon = 1,000,000 x 90"):
        pool.simulate(prep)


@pytest.mark.slow
def test_actor_killed_mid_request_is_retried(pool, synthetic_source):
    import ray

    from aetheris_ray import simulation as sim

    prep, req = prepared(synthetic_source, 1_000_000, 32, seed=2)  # about 1 s of work: the kill lands mid-request
    expected = sim.simulate_blocks(prep.sample, req.paths, req.horizon, prep.seed)
    out: dict = {}
    victim = pool.actors[0]
    t = threading.Thread(target=lambda: out.setdefault("paths", pool.simulate(prep, n_shards=8)))
    t.start()
    time.sleep(0.15)
    ray.kill(victim, no_restart=True)
    t.join(120)
    assert np.array_equal(out["paths"], expected)
    assert pool.replaced >= 1 and victim not in pool.actors
    # the next request succeeds on the repaired pool
    assert np.array_equal(pool.simulate(prep, n_shards=2), expected)


def test_pool_fails_clearly_when_shards_keep_failing(ray_session, synthetic_source):
    import ray

    from aetheris_ray.distributed.montecarlo import SimulationUnavailable, SimulatorPool

    p = SimulatorPool(1, num_cpus=0.25, max_attempts=1)
    try:
        prep, _ = prepared(synthetic_source, 300_000, 14)
        victim = p.actors[0]
        ray.kill(victim, no_restart=True)
        with pytest.raises(SimulationUnavailable, match="retry the request") as e:
            p.simulate(prep)
        assert e.value.http_status == 503
        assert p.simulate(prep).shape == (300_000, 14)
    finally:
        p.shutdown()
