"""A served million-path request is sharded on the simulator pool and survives a killed actor."""

from __future__ import annotations

import threading
import time

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIG = {"asset": "SYN-ETH", "horizon": 20, "paths": 1_000_000, "seed": 42, "thresholds": [10.0, 5_000.0]}




def test_served_sharded_request_survives_killed_actor(served, synthetic_source, in_process):
    import ray
    from ray import serve

    handle = serve.get_deployment_handle("Simulator", app_name="aetheris")
    actors = handle.pool_actors_handles.remote().result()
    assert len(actors) == 2
    out: dict = {}

    def call():
        out["r"] = requests.post(served.url + "/v1/forecast", json=BIG, headers=served.headers, timeout=300)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.6)
    ray.kill(actors[0], no_restart=True)
    t.join(300)
    r = out["r"]
    # the shard is retried on another actor: the request succeeds with the exact numbers
    assert r.status_code == 200, r.text
    expected = in_process(synthetic_source, BIG)
    assert r.json() == expected
    after = handle.pool_actors_handles.remote().result()
    assert actors[0] not in after and len(after) == 2
    # and the next request succeeds too
    r2 = requests.post(served.url + "/v1/forecast", json=dict(BIG, paths=200_000), headers=served.headers, timeout=300)
    assert r2.status_code == 200 and r2.json()["paths"] == 200_000
