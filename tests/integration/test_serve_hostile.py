"""The hostile-input suite (issue 14 item 3): over 100 bad requests over real HTTP, each answered as bad input.

Every case goes through the served app's HTTP front (HAProxy where its binary exists) and
must get a 4xx whose body is on the error contract, ``{"error", "detail", "field"}``, with
the offending field named, under 10 kB (large inputs are never echoed whole), and no 5xx.
The service answers a normal forecast afterwards.  The table in docs/security.md is what
this module prints at the end (``pytest -s``): requests tried, 4xx with the field named,
5xx, slow (over 1 s).
"""

from __future__ import annotations

import json
import time

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQ = {"asset": "SYN-BTC", "horizon": 7, "paths": 1000, "seed": 7}
OUT = {"asset": "SYN-BTC", "origin": "2024-01-01", "horizon": 7, "price": 101.5}
F, B, O = "/v1/forecast", "/v1/forecast/batch", "/v1/outcomes"


def fc(**kw) -> dict:
    """REQ with fields replaced (``None`` values kept: they are the hostile input); ``_drop`` removes one."""
    d = dict(REQ)
    d.pop(kw.pop("_drop", None), None)
    d.update(kw)
    return d


def raw(text: str) -> bytes:
    return text.encode()


#: (id, method, path, body: dict | list | bytes | None, extra headers, expected status (or None: any 4xx), field)
CASES: list[tuple] = [
    # -- asset ------------------------------------------------------------------------------------------
    ("asset-missing", "POST", F, fc(_drop="asset"), {}, 422, "asset"),
    ("asset-int", "POST", F, fc(asset=123), {}, 422, "asset"),
    ("asset-empty", "POST", F, fc(asset=""), {}, 422, "asset"),
    ("asset-65-chars", "POST", F, fc(asset="A" * 65), {}, 422, "asset"),
    ("asset-null", "POST", F, fc(asset=None), {}, 422, "asset"),
    ("asset-list", "POST", F, fc(asset=["SYN-BTC"]), {}, 422, "asset"),
    ("asset-unknown", "POST", F, fc(asset="NOPE"), {}, 404, "asset"),
    ("asset-nul-byte", "POST", F, fc(asset="SYN-BTC\u0000"), {}, None, "asset"),
    ("asset-path-traversal", "POST", F, fc(asset="../../etc/passwd"), {}, None, "asset"),
    ("asset-sql", "POST", F, fc(asset="SYN-BTC'; DROP TABLE x;--"), {}, None, "asset"),
    ("asset-lowercase", "POST", F, fc(asset="syn-btc"), {}, None, "asset"),
    # -- horizon ----------------------------------------------------------------------------------------
    ("horizon-missing", "POST", F, fc(_drop="horizon"), {}, 422, "horizon"),
    ("horizon-0", "POST", F, fc(horizon=0), {}, 422, "horizon"),
    ("horizon-negative", "POST", F, fc(horizon=-1), {}, 422, "horizon"),
    ("horizon-91", "POST", F, fc(horizon=91), {}, 422, "horizon"),
    ("horizon-1e9", "POST", F, fc(horizon=10**9), {}, 422, "horizon"),
    ("horizon-str", "POST", F, fc(horizon="7"), {}, 422, "horizon"),
    ("horizon-bool", "POST", F, fc(horizon=True), {}, 422, "horizon"),
    ("horizon-float", "POST", F, fc(horizon=7.5), {}, 422, "horizon"),
    ("horizon-null", "POST", F, fc(horizon=None), {}, 422, "horizon"),
    ("horizon-list", "POST", F, fc(horizon=[7]), {}, 422, "horizon"),
    ("horizon-object", "POST", F, fc(horizon={"d": 7}), {}, 422, "horizon"),
    ("horizon-inf", "POST", F, raw('{"asset": "SYN-BTC", "horizon": Infinity}'), {}, 422, "horizon"),
    ("horizon-nan", "POST", F, raw('{"asset": "SYN-BTC", "horizon": NaN}'), {}, 422, "horizon"),
    ("horizon-5000-digits", "POST", F, raw('{"asset": "SYN-BTC", "horizon": ' + "9" * 5000 + "}"), {}, 422, "body"),
    # -- paths --------------------------------------------------------------------------------------------
    ("paths-0", "POST", F, fc(paths=0), {}, 422, "paths"),
    ("paths-negative", "POST", F, fc(paths=-5), {}, 422, "paths"),
    ("paths-1e12", "POST", F, fc(paths=10**12), {}, 422, "paths"),
    ("paths-str", "POST", F, fc(paths="1000"), {}, 422, "paths"),
    ("paths-bool", "POST", F, fc(paths=True), {}, 422, "paths"),
    ("paths-float", "POST", F, fc(paths=1.5), {}, 422, "paths"),
    ("paths-x-horizon-budget", "POST", F, fc(paths=1_000_000, horizon=90), {}, None, "paths"),
    ("batch-item-paths-0", "POST", B, {"requests": [REQ, fc(paths=0)]}, {}, 422, "requests.1.paths"),
    # -- seed ---------------------------------------------------------------------------------------------
    ("seed-negative", "POST", F, fc(seed=-1), {}, 422, "seed"),
    ("seed-2^64", "POST", F, fc(seed=2**64), {}, 422, "seed"),
    ("seed-str", "POST", F, fc(seed="x"), {}, 422, "seed"),
    ("seed-bool", "POST", F, fc(seed=True), {}, 422, "seed"),
    ("seed-float", "POST", F, fc(seed=1.5), {}, 422, "seed"),
    # -- quantiles ----------------------------------------------------------------------------------------
    ("quantiles-empty", "POST", F, fc(quantiles=[]), {}, 422, "quantiles"),
    ("quantiles-0", "POST", F, fc(quantiles=[0]), {}, 422, "quantiles"),
    ("quantiles-1", "POST", F, fc(quantiles=[1]), {}, 422, "quantiles"),
    ("quantiles-1.5", "POST", F, fc(quantiles=[1.5]), {}, 422, "quantiles"),
    ("quantiles-negative", "POST", F, fc(quantiles=[-0.1]), {}, 422, "quantiles"),
    ("quantiles-tiny", "POST", F, fc(quantiles=[1e-12, 0.5]), {}, 422, "quantiles"),
    ("quantiles-near-1", "POST", F, fc(quantiles=[0.5, 1 - 1e-12]), {}, 422, "quantiles"),
    ("quantiles-bad-label", "POST", F, fc(quantiles=["q05x"]), {}, 422, "quantiles"),
    ("quantiles-100", "POST", F, fc(quantiles=[0.5] * 100), {}, 422, "quantiles"),
    ("quantiles-word", "POST", F, fc(quantiles="median"), {}, 422, "quantiles"),
    ("quantiles-null-item", "POST", F, fc(quantiles=[None]), {}, 422, "quantiles"),
    ("quantiles-bool", "POST", F, fc(quantiles=[True]), {}, 422, "quantiles"),
    ("quantiles-nan", "POST", F, raw('{"asset": "SYN-BTC", "horizon": 7, "quantiles": [NaN]}'), {}, 422, "quantiles"),
    # -- thresholds ---------------------------------------------------------------------------------------
    ("thresholds-negative", "POST", F, fc(thresholds=[-1]), {}, 422, "thresholds"),
    ("thresholds-0", "POST", F, fc(thresholds=[0]), {}, 422, "thresholds"),
    ("thresholds-str", "POST", F, fc(thresholds=["x"]), {}, 422, "thresholds.0"),
    ("thresholds-inf", "POST", F, raw('{"asset": "SYN-BTC", "horizon": 7, "thresholds": [1e999]}'), {}, 422,
     "thresholds"),
    ("thresholds-65", "POST", F, fc(thresholds=list(range(1, 66))), {}, 422, "thresholds"),
    ("thresholds-150k", "POST", F, fc(thresholds=list(range(1, 150_001))), {}, 422, "thresholds"),
    ("thresholds-null-item", "POST", F, fc(thresholds=[None]), {}, 422, "thresholds.0"),
    ("thresholds-bool", "POST", F, fc(thresholds=[True]), {}, 422, "thresholds.0"),
    ("thresholds-object", "POST", F, fc(thresholds={"k": 1}), {}, 422, "thresholds"),
    # -- scenario / explain / model / components -----------------------------------------------------------
    ("scenario-unknown-key", "POST", F, fc(scenario={"nope": 1.0}), {}, None, "scenario"),
    ("scenario-str-value", "POST", F, fc(scenario={"iv_level": "x"}), {}, 422, "scenario.iv_level"),
    ("scenario-list", "POST", F, fc(scenario=[1]), {}, 422, "scenario"),
    ("scenario-33-keys", "POST", F, fc(scenario={f"k{i}": 1.0 for i in range(33)}), {}, 422, "scenario"),
    ("explain-str", "POST", F, fc(explain="yes"), {}, 422, "explain"),
    ("explain-int", "POST", F, fc(explain=1), {}, 422, "explain"),
    ("model-unknown", "POST", F, fc(model="nope-9"), {}, None, "model"),
    ("model-201-chars", "POST", F, fc(model="m" * 201), {}, 422, "model"),
    ("model-int", "POST", F, fc(model=5), {}, 422, "model"),
    ("components-str", "POST", F, fc(components="garch"), {}, 422, "components"),
    ("components-unknown", "POST", F, fc(components=["volatility=nope"]), {}, None, "components"),
    ("components-long", "POST", F, fc(components=["x" * 201]), {}, 422, "components"),
    # -- as_of ---------------------------------------------------------------------------------------------
    ("as_of-far-future", "POST", F, fc(as_of="9999-12-31"), {}, 422, "as_of"),
    ("as_of-before-listing", "POST", F, fc(as_of="2000-01-01"), {}, 422, "as_of"),
    ("as_of-not-a-date", "POST", F, fc(as_of="not-a-date"), {}, 422, "as_of"),
    ("as_of-month-13", "POST", F, fc(as_of="2020-13-45"), {}, 422, "as_of"),
    ("as_of-feb-30", "POST", F, fc(as_of="2024-02-30"), {}, 422, "as_of"),
    ("as_of-bool", "POST", F, fc(as_of=True), {}, 422, "as_of"),
    ("as_of-empty", "POST", F, fc(as_of=""), {}, 422, "as_of"),
    ("as_of-year-0", "POST", F, fc(as_of="0000-01-01"), {}, 422, "as_of"),
    # -- unknown fields, body shapes, malformed JSON -------------------------------------------------------
    ("extra-field", "POST", F, fc(foo=1), {}, 422, "foo"),
    ("body-list", "POST", F, [REQ], {}, 422, None),
    ("body-null", "POST", F, raw("null"), {}, 422, None),
    ("body-number", "POST", F, raw("1"), {}, 422, None),
    ("body-string", "POST", F, raw('"SYN-BTC"'), {}, 422, None),
    ("body-empty", "POST", F, b"", {}, 422, None),
    ("body-empty-object", "POST", F, raw("{}"), {}, 422, "asset"),
    ("json-truncated", "POST", F, raw('{"asset": "SYN-BTC", "horizon": '), {}, 422, "body"),
    ("json-trailing-garbage", "POST", F, raw('{"asset": "SYN-BTC", "horizon": 7} xyz'), {}, 422, "body"),
    ("json-single-quotes", "POST", F, raw("{'asset': 'SYN-BTC', 'horizon': 7}"), {}, 422, "body"),
    ("json-nul-after", "POST", F, json.dumps(REQ).encode() + b"\x00", {}, 422, "body"),
    ("json-invalid-utf8", "POST", F, b'{"asset": "SYN-BTC", "horizon": 7, "model": "\xff\xfe"}', {}, 422, "body"),
    ("json-depth-1000", "POST", F, b"[" * 1000 + b"]" * 1000, {}, 422, "body"),
    ("json-depth-100k", "POST", F, b"[" * 100_000 + b"]" * 100_000, {}, 422, "body"),
    ("json-control-char", "POST", F, raw('{"asset": "SYN\nBTC", "horizon": 7}'), {}, 422, "body"),
    ("json-comment", "POST", F, raw('{"asset": "SYN-BTC", /* x */ "horizon": 7}'), {}, 422, "body"),
    # -- batch ---------------------------------------------------------------------------------------------
    ("batch-empty", "POST", B, {"requests": []}, {}, 422, "requests"),
    ("batch-65", "POST", B, {"requests": [REQ] * 65}, {}, 422, "requests"),
    ("batch-not-list", "POST", B, {"requests": "x"}, {}, 422, "requests"),
    ("batch-bad-item", "POST", B, {"requests": [REQ, fc(horizon=0)]}, {}, 422, "requests.1.horizon"),
    ("batch-bool-paths", "POST", B, {"requests": [fc(paths=True)]}, {}, 422, "requests.0.paths"),
    ("batch-over-budget", "POST", B, {"requests": [fc(paths=1_000_000, horizon=90)] * 64}, {}, 413, "requests"),
    ("batch-extra-field", "POST", B, {"requests": [REQ], "x": 1}, {}, 422, "x"),
    ("batch-unknown-asset", "POST", B, {"requests": [REQ, fc(asset="NOPE")]}, {}, 404, "requests.1.asset"),
    # -- outcomes ------------------------------------------------------------------------------------------
    ("outcomes-empty", "POST", O, {"outcomes": []}, {}, 422, "outcomes"),
    ("outcomes-not-list", "POST", O, {"outcomes": OUT}, {}, 422, "outcomes"),
    ("outcomes-price-negative", "POST", O, {"outcomes": [dict(OUT, price=-1)]}, {}, 422, "outcomes.0.price"),
    ("outcomes-price-0", "POST", O, {"outcomes": [dict(OUT, price=0)]}, {}, 422, "outcomes.0.price"),
    ("outcomes-price-str", "POST", O, {"outcomes": [dict(OUT, price="x")]}, {}, 422, "outcomes.0.price"),
    ("outcomes-price-nan", "POST", O, raw('{"outcomes": [{"asset": "SYN-BTC", "origin": "2024-01-01", '
                                          '"horizon": 7, "price": NaN}]}'), {}, 422, "outcomes.0.price"),
    ("outcomes-horizon-0", "POST", O, {"outcomes": [dict(OUT, horizon=0)]}, {}, 422, "outcomes.0.horizon"),
    ("outcomes-horizon-91", "POST", O, {"outcomes": [dict(OUT, horizon=91)]}, {}, 422, "outcomes.0.horizon"),
    ("outcomes-origin-future", "POST", O, {"outcomes": [dict(OUT, origin="9999-12-31")]}, {}, 422,
     "outcomes.0.origin"),
    ("outcomes-origin-missing", "POST", O, {"outcomes": [{k: v for k, v in OUT.items() if k != "origin"}]}, {}, 422,
     "outcomes.0.origin"),
    ("outcomes-unknown-asset", "POST", O, {"outcomes": [dict(OUT, asset="NOPE")]}, {}, 404, "outcomes.0.asset"),
    ("outcomes-1001", "POST", O, {"outcomes": [OUT] * 1_001}, {}, 422, "outcomes"),
    ("outcomes-query-asset-65", "GET", O + "?asset=" + "A" * 65, None, {}, 422, "asset"),
    # -- routes and methods --------------------------------------------------------------------------------
    ("route-unknown", "GET", "/v1/nope", None, {}, 404, "path"),
    ("route-unknown-post", "POST", "/v2/forecast", REQ, {}, 404, "path"),
    ("method-get-forecast", "GET", F, None, {}, 405, "path"),
    ("method-delete-forecast", "DELETE", F, None, {}, 405, "path"),
    ("method-put-outcomes", "PUT", O, {"outcomes": [OUT]}, {}, 405, "path"),
    ("method-post-healthz", "POST", "/healthz", REQ, {}, 405, "path"),
    # -- auth ----------------------------------------------------------------------------------------------
    ("auth-missing", "POST", F, REQ, {"Authorization": None}, 401, "authorization"),
    ("auth-wrong-key", "POST", F, REQ, {"Authorization": "Bearer wrong"}, 401, "authorization"),
    ("auth-basic-scheme", "POST", F, REQ, {"Authorization": "Basic dGVzdDp0ZXN0"}, 401, "authorization"),
    ("auth-empty-bearer", "POST", F, REQ, {"Authorization": "Bearer "}, 401, "authorization"),
    ("auth-wrong-x-api-key", "POST", F, REQ, {"Authorization": None, "X-API-Key": "nope"}, 401, "authorization"),
    ("auth-key-prefix", "POST", F, REQ, {"Authorization": "Bearer test-key"}, 401, "authorization"),
    ("auth-get-models", "GET", "/v1/models", None, {"Authorization": None}, 401, "authorization"),
    # -- size ----------------------------------------------------------------------------------------------
    ("size-2.5MB", "POST", F, fc(model="m" * 2_500_000), {}, 413, "body"),
    ("size-declared-50MB", "POST", F, b"{}", {"Content-Length": "50000000"}, 413, "body"),
]


@pytest.fixture(scope="module")
def results(served):
    """Collects (id, status, field named, seconds) and prints the suite's table at the end."""
    rows: list[tuple[str, int, bool, float]] = []
    for asset in ("SYN-BTC", "SYN-ETH"):  # warm: an asset's first forecast fits its model (about 3 s)
        assert requests.post(served.url + F, json=dict(REQ, asset=asset), headers=served.headers,
                             timeout=120).status_code == 200
    yield rows
    if not rows:
        return
    n4 = sum(1 for _, st, named, _ in rows if 400 <= st < 500 and named)
    n5 = sum(1 for _, st, _, _ in rows if st >= 500)
    slow = [(i, round(t, 2)) for i, _, _, t in rows if t > 1.0]
    print(f"\nhostile-input suite: {len(rows)} requests; {n4} answered 4xx on the contract with the field named; "
          f"{n5} answered 5xx; {len(slow)} slower than 1 s {slow}")


def send(served, method: str, path: str, body, extra: dict) -> requests.Response:
    headers = {**served.headers, "Content-Type": "application/json"}
    for k, v in extra.items():
        if v is None:
            headers.pop(k, None)
        else:
            headers[k] = v
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    if "Content-Length" in extra:  # a declared length the body does not have: raw socket
        import socket
        from urllib.parse import urlparse

        u = urlparse(served.url)
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + (data or b""))
            buf = b""
            while b"\r\n\r\n" not in buf or len(buf) < buf.index(b"\r\n\r\n") + 4 + _length(buf):
                more = s.recv(65536)
                if not more:
                    break
                buf += more
        r = requests.Response()
        r.status_code = int(buf.split(b" ", 2)[1])
        r._content = buf.split(b"\r\n\r\n", 1)[1]
        return r
    return requests.request(method, served.url + path, data=data, headers=headers, timeout=120)


def _length(buf: bytes) -> int:
    for line in buf.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@pytest.mark.parametrize("case_id, method, path, body, extra, status, field", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_is_answered_as_bad_input(served, results, case_id, method, path, body, extra, status, field):
    t = time.perf_counter()
    r = send(served, method, path, body, extra)
    took = time.perf_counter() - t
    named = False
    try:
        got = r.json()
        named = field is None or got.get("field") == field
    finally:
        results.append((case_id, r.status_code, named, took))
    assert r.status_code < 500, r.text[:500]
    assert (status is None and 400 <= r.status_code < 500) or r.status_code == status, (r.status_code, r.text[:500])
    assert len(r.content) < 10_000
    assert set(got) == {"error", "detail", "field"} and isinstance(got["detail"], str) and got["error"], got
    if field is not None:
        assert got["field"] == field and got["detail"].startswith(field), got
    else:
        assert got["field"] is None or isinstance(got["field"], str)


def test_the_suite_is_big_enough_and_the_service_is_still_up(served):
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)
    r = requests.post(served.url + F, json=REQ, headers=served.headers, timeout=60)
    assert r.status_code == 200 and r.json()["horizons"] == list(range(1, 8))
