"""The Serve app over real HTTP on 127.0.0.1 (no mocks): contract, equality with in-process, errors, auth."""

from __future__ import annotations

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.integration

REQ = {"asset": "SYN-BTC", "horizon": 7, "paths": 1000, "seed": 7, "thresholds": [50_000.0, 80_000.0]}


def post(served, path, body, headers=None, **kw):
    return requests.post(served.url + path, json=body, headers=served.headers if headers is None else headers,
                         timeout=kw.pop("timeout", 60), **kw)




def test_forecast_equals_in_process(served, synthetic_source, in_process):
    r = post(served, "/v1/forecast", REQ)
    assert r.status_code == 200, r.text
    from aetheris_ray.contract import ForecastResponse

    got = ForecastResponse.model_validate(r.json()).model_dump(mode="json")
    assert got == in_process(synthetic_source, REQ)
    assert got["seed"] == 7 and got["horizons"] == list(range(1, 8))
    assert set(got["quantiles"]) == {"q05", "q10", "q25", "q50", "q75", "q90", "q95"}


def test_repeated_question_new_seed_equals_in_process(served, synthetic_source, in_process):
    bodies = [REQ, dict(REQ, seed=8), dict(REQ, seed=8, paths=2500), dict(REQ, seed=None)]
    got = [post(served, "/v1/forecast", b).json() for b in bodies]
    drawn = got[3]["seed"]
    assert isinstance(drawn, int) and drawn >= 0
    assert got == in_process(synthetic_source, bodies[:3] + [dict(REQ, seed=drawn)])


def test_forecast_with_as_of_equals_in_process(served, synthetic_source, in_process):
    asset = synthetic_source.assets()[1]
    hist = synthetic_source.history(asset).daily_close()
    body = {"asset": asset, "horizon": 3, "paths": 500, "seed": 3, "as_of": str(hist.index[-40].date()),
            "quantiles": ["q10", 0.5, "0.9"]}
    r = post(served, "/v1/forecast", body)
    assert r.status_code == 200, r.text
    assert r.json() == in_process(synthetic_source, body)
    assert r.json()["as_of"] == body["as_of"]


def test_batch_equals_in_process(served, synthetic_source, in_process):
    reqs = [dict(REQ, asset=a, seed=i) for i, a in enumerate(synthetic_source.assets())]
    r = post(served, "/v1/forecast/batch", {"requests": reqs})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["asset"] for x in results] == [q["asset"] for q in reqs]
    assert results == in_process(synthetic_source, reqs)


def test_batch_item_error_names_the_item(served):
    r = post(served, "/v1/forecast/batch", {"requests": [REQ, dict(REQ, asset="NOPE-USD")]})
    assert r.status_code == 404
    assert r.json()["detail"].startswith("requests.1.asset: ") and "NOPE-USD" in r.json()["detail"]
    assert r.json()["field"] == "requests.1.asset"


@pytest.mark.parametrize(
    "body, status, needle",
    [
        (dict(REQ, asset="NOPE-USD"), 404, "NOPE-USD"),
        (dict(REQ, horizon=0), 422, "horizon"),
        (dict(REQ, horizon=91), 422, "horizon"),
        (dict(REQ, paths=99), 422, "paths"),
        (dict(REQ, paths=1_000_001), 422, "paths"),
        (dict(REQ, quantiles=[0.5, 0.1]), 422, "quantiles"),
        (dict(REQ, quantiles=[0.0, 0.5]), 422, "quantiles"),
        (dict(REQ, quantiles=[0.5, 1.0]), 422, "quantiles"),
        (dict(REQ, thresholds=[-5]), 422, "thresholds"),
        (dict(REQ, bogus=1), 422, "bogus"),
        ({"horizon": 7}, 422, "asset"),
        (dict(REQ, paths=1_000_000, horizon=90), 422, "paths x horizon"),
        (dict(REQ, model="v999"), 404, "model"),
    ],
)
def test_validation_errors_name_the_field(served, body, status, needle):
    r = post(served, "/v1/forecast", body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_malformed_json(served):
    r = requests.post(served.url + "/v1/forecast", data=b'{"asset": "SYN-BTC", "horizon": ',
                      headers={**served.headers, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]


def test_oversized_batch(served):
    r = post(served, "/v1/forecast/batch", {"requests": [REQ] * 65})
    assert r.status_code == 422 and "requests" in r.json()["detail"] and "64" in r.json()["detail"]
    r = post(served, "/v1/forecast/batch", {"requests": [dict(REQ, paths=1_000_000, horizon=30)] * 2})
    assert r.status_code == 413 and r.json()["detail"].startswith("requests:")
    r = post(served, "/v1/forecast/batch", {"requests": []})
    assert r.status_code == 422 and "requests" in r.json()["detail"]


def test_oversized_body(served):
    r = requests.post(served.url + "/v1/outcomes", data=b"x" * 2_100_000,
                      headers={**served.headers, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["detail"].startswith("body: ")


def test_service_survives_bad_requests(served):
    assert post(served, "/v1/forecast", dict(REQ, paths=1_000_000, horizon=90)).status_code == 422
    assert post(served, "/v1/forecast", REQ).status_code == 200


def test_auth(served):
    assert requests.get(served.url + "/healthz", timeout=10).status_code == 200
    r = post(served, "/v1/forecast", REQ, headers={})
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert post(served, "/v1/forecast", REQ, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(served, "/v1/forecast", REQ, headers={"X-API-Key": served.key[:-1]}).status_code == 401
    assert post(served, "/v1/forecast", REQ, headers={"X-API-Key": served.key}).status_code == 200
    assert post(served, "/v1/forecast", REQ, headers={"Authorization": f"Bearer {served.key}"}).status_code == 200
    assert requests.get(served.url + "/v1/models", timeout=10).status_code == 401
    # auth is checked before the body: an invalid body without a key is still 401
    assert post(served, "/v1/forecast", {"horizon": -1}, headers={}).status_code == 401


def test_models_healthz_docs_page(served):
    r = requests.get(served.url + "/v1/models", headers=served.headers, timeout=10)
    assert r.status_code == 200
    from aetheris_ray.model import PRESETS, model_config

    body = r.json()
    assert body["default"] == model_config(None)[0].version and "SYN-BTC" in body["assets"]
    assert [m["name"] for m in body["models"]] == sorted(PRESETS)
    assert isinstance(body["registered"], list)  # registry versions (aetheris_ray.registry.list_models)
    assert requests.get(served.url + "/healthz", timeout=10).json() == {"status": "ok"}
    spec = requests.get(served.url + "/openapi.json", timeout=10).json()
    assert {"/v1/forecast", "/v1/forecast/batch", "/v1/outcomes", "/v1/models", "/healthz"} <= set(spec["paths"])
    assert requests.get(served.url + "/docs", timeout=10).status_code == 200
    page = requests.get(served.url + "/", timeout=10)
    assert page.status_code == 200 and "<svg" in page.text and "v1/forecast" in page.text


def test_haproxy_is_the_http_front_where_its_binary_exists(served):
    """`use_serve_env` puts HAProxy on the Serve port (SERVE_ENV); test_cli_serve covers Serve's Python proxy."""
    import os
    from pathlib import Path

    from aetheris_ray.distributed.serving import HAPROXY

    if os.environ.get(HAPROXY) != "1":
        pytest.skip("this session runs Serve's Python proxy (no HAProxy binary, or RAY_SERVE_ENABLE_HA_PROXY=0)")
    port = served.url.rsplit(":", 1)[1]
    configs = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"haproxy") and b"-f" in argv:
                configs.append(Path(argv[argv.index(b"-f") + 1].decode()).read_text())
        except OSError:
            continue
    assert any(f"127.0.0.1:{port}" in c for c in configs), f"no HAProxy process binds port {port}"


def _coverage_n(resp: dict) -> int:
    return sum(v["n"] for v in resp["coverage"].values())


def test_outcomes_persist_across_serve_restart(served, synthetic_source, in_process):
    """Outcomes are stored durably and join the calibration buffers, here and in-process."""
    from ray import serve

    # a live outcome the data has not caught up with: SYN-ALT's newest origin, 7 days on
    body = {"asset": "SYN-ALT", "horizon": 7, "paths": 1000, "seed": 5}
    first = post(served, "/v1/forecast", body).json()
    spot, origin = first["spot"], first["as_of"]
    r = post(served, "/v1/outcomes", {"outcomes": [{"asset": "SYN-ALT", "origin": origin, "horizon": 7,
                                                    "price": spot * 3.0}]})
    assert r.status_code == 200 and r.json()["new"] == 1, r.text
    live = post(served, "/v1/forecast", body).json()
    assert live["calibration_version"] != first["calibration_version"]
    assert _coverage_n(live) == _coverage_n(first) + 1
    assert live["metadata"]["calibration_pairs"] == first["metadata"]["calibration_pairs"] + 1
    # the outcome tripled the price: far outside the 90% interval, so 90% coverage of bucket 4-7 falls
    assert live["coverage"]["4-7"]["0.9"] < first["coverage"]["4-7"]["0.9"]
    assert live == in_process(synthetic_source, body, served.home)
    # a forecast as of the origin cannot see an outcome realised after it
    past = post(served, "/v1/forecast", dict(body, as_of=origin)).json()
    assert past["calibration_version"] == first["calibration_version"]

    items = [{"asset": "SYN-BTC", "origin": "2024-01-01", "horizon": 7, "price": 101.5},
             {"asset": "SYN-ETH", "as_of": "2024-01-02", "horizon": 1, "price": 20.25}]
    r = post(served, "/v1/outcomes", {"outcomes": items})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    bad = post(served, "/v1/outcomes", {"outcomes": [dict(items[0], asset="NOPE")]})
    assert bad.status_code == 404 and "outcomes.0.asset" in bad.json()["detail"]
    bad = post(served, "/v1/outcomes", {"outcomes": [dict(items[0], price=-1)]})
    assert bad.status_code == 422 and "price" in bad.json()["detail"]
    bad = post(served, "/v1/outcomes", {"outcomes": [dict(items[0], horizon=0)]})
    assert bad.status_code == 422 and "horizon" in bad.json()["detail"]
    before = requests.get(served.url + "/v1/outcomes", headers=served.headers, timeout=10).json()
    assert before["count"] >= 2
    assert (served.home / "state" / "outcomes.json").is_file()

    serve.delete("aetheris")
    served.run_app()

    after = requests.get(served.url + "/v1/outcomes", headers=served.headers, timeout=10).json()
    assert after == before
    eth = requests.get(served.url + "/v1/outcomes?asset=SYN-ETH", headers=served.headers, timeout=10).json()
    assert eth["outcomes"] == [{"asset": "SYN-ETH", "origin": "2024-01-02", "horizon": 1, "price": 20.25}]
    assert post(served, "/v1/forecast", body).json() == live


_JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "path, data, field",
    [
        ("/v1/forecast", dict(REQ, horizon=True), "horizon"),
        ("/v1/forecast", dict(REQ, horizon="7"), "horizon"),
        ("/v1/forecast", dict(REQ, quantiles=[1e-12, 0.5]), "quantiles"),
        ("/v1/forecast", dict(REQ, as_of="9999-12-31"), "as_of"),
        ("/v1/forecast", dict(REQ, as_of="2000-01-01"), "as_of"),
        ("/v1/forecast", dict(REQ, thresholds=list(range(1, 150_001))), "thresholds"),
        ("/v1/forecast/batch", {"requests": [dict(REQ, paths=True)]}, "requests.0.paths"),
        ("/v1/outcomes", {"outcomes": [{"asset": "SYN-BTC", "origin": "9999-12-31", "horizon": 1, "price": 1.0}]},
         "outcomes.0.origin"),
        ("/v1/forecast", b'{"asset": "SYN-BTC", "horizon": 7, "model": "\xff\xfe"}', "body"),
        ("/v1/forecast", b"[" * 1000 + b"]" * 1000, "body"),
        ("/v1/forecast", b'{"asset": "SYN-BTC", "horizon": ' + b"9" * 5000 + b"}", "body"),
    ],
    ids=["bool-horizon", "str-horizon", "tiny-level", "far-as_of", "early-as_of", "huge-thresholds",
         "batch-bool-paths", "far-origin", "invalid-utf8", "deep-nesting", "5000-digit-int"],
)
def test_hostile_requests_are_bad_input(served, path, data, field):
    """Issue 14 item 3: every hostile input is a 4xx on the contract's error body, naming the field, never echoing it whole."""
    import json

    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    r = requests.post(served.url + path, data=body, headers={**served.headers, **_JSON}, timeout=60)
    assert 400 <= r.status_code < 500, r.text[:500]
    assert len(r.content) < 10_000
    got = r.json()
    assert set(got) == {"error", "detail", "field"} and got["error"] == "InvalidInput" and got["field"] == field
    assert got["detail"].startswith(field + ":"), got["detail"]
    assert post(served, "/v1/forecast", REQ).status_code == 200  # the service is still up


def test_unknown_route_is_on_the_error_contract(served):
    r = requests.get(served.url + "/v1/nope", headers=served.headers, timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "NotFound" and r.json()["detail"].startswith("path:")


@pytest.mark.torch
def test_served_sota_equals_in_process(served_neural, synthetic_source, in_process):
    """The neural preset served: every neural part from the service's registry, the same answer as in-process."""
    served = served_neural
    before = network_calls()
    body = {"asset": "SYN-ETH", "horizon": 5, "paths": 2000, "seed": 11, "model": "sota"}
    r = post(served, "/v1/forecast", body, timeout=300)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["metadata"]["fallbacks"] == [], got["metadata"]["fallbacks"]
    assert {k: v.split("@")[0] for k, v in got["metadata"]["components"].items() if "@" in v} == {
        "volatility": "rough_vol", "residuals": "fm_gp", "trend": "mamba"}
    assert got == in_process(synthetic_source, body, served.home)
    after = network_calls()  # each part's network ran in its own deployment
    assert all(after[d] > before[d] for d in ("RoughVolNet", "FlowMatchingNet", "MambaNet")), (before, after)


def network_calls() -> dict[str, int]:
    """Calls run so far by each neural part's deployment (its replica's `Network.stats`)."""
    from ray import serve

    from deployments.models import NETWORK_DEPLOYMENTS

    return {d: serve.get_deployment_handle(d, app_name="aetheris").stats.remote().result()["calls"]
            for d in NETWORK_DEPLOYMENTS.values()}


@pytest.mark.torch
def test_a_sharded_sota_request_runs_its_networks_in_their_deployments(served_neural, synthetic_source, in_process):
    """Above the ingress's local limit the paths are drawn on the Simulator's pool actors; their fm_gp residual
    draws still go to the FlowMatchingNet deployment (once per shard at least), and the answer is the in-process
    one (float32 rounding where the two shards' calls were merged into one batch)."""
    from aetheris_ray.distributed.budget import LOCAL_MAX_PATHS

    served = served_neural
    body = {"asset": "SYN-ETH", "horizon": 3, "paths": LOCAL_MAX_PATHS + 4096, "seed": 12, "model": "sota"}
    post(served, "/v1/forecast", dict(body, paths=1000), timeout=300)  # the asset's model and state, built once
    before = network_calls()
    r = post(served, "/v1/forecast", body, timeout=300)
    assert r.status_code == 200, r.text
    after = network_calls()
    assert after["FlowMatchingNet"] >= before["FlowMatchingNet"] + 2, (before, after)
    got, want = r.json(), in_process(synthetic_source, body, served.home)
    assert got["metadata"] == want["metadata"]
    for q in got["quantiles"]:
        np.testing.assert_allclose(got["quantiles"][q], want["quantiles"][q], rtol=1e-6)


@pytest.mark.torch
def test_served_jump_sde_and_concurrent_sota_equal_in_process(served_neural, synthetic_source, in_process):
    """The whole-path neural SDE served (its filter, simulation and skeleton in JumpSdeNet), and six sota requests
    at once (their network calls batched): each the in-process answer for its seed (float32 rounding where merged)."""
    from concurrent.futures import ThreadPoolExecutor

    served = served_neural
    before = network_calls()
    body = {"asset": "SYN-BTC", "horizon": 7, "paths": 1000, "seed": 5, "model": "jump_sde", "thresholds": [60000.0]}
    r = post(served, "/v1/forecast", body, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["components"]["paths"].startswith("jump_sde@")
    assert r.json() == in_process(synthetic_source, body, served.home)
    assert network_calls()["JumpSdeNet"] >= before["JumpSdeNet"] + 3  # filter, skeleton, simulation

    bodies = [{"asset": "SYN-ETH", "horizon": 5, "paths": 2000, "seed": 20 + i, "model": "sota"} for i in range(6)]
    post(served, "/v1/forecast", bodies[0], timeout=300)  # the asset's model and calibration state, built once
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda b: post(served, "/v1/forecast", b, timeout=300), bodies))
    assert all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers]
    for got, want in zip([a.json() for a in answers], in_process(synthetic_source, bodies, served.home)):
        assert got["metadata"] == want["metadata"]
        assert got["quantiles"].keys() == want["quantiles"].keys()
        for q in got["quantiles"]:
            np.testing.assert_allclose(got["quantiles"][q], want["quantiles"][q], rtol=1e-6)
