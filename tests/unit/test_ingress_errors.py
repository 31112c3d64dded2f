"""The ingress's error bodies without Ray running: the exception handlers on a bare FastAPI app, driven over ASGI."""

import asyncio
import json

import pytest

pytestmark = pytest.mark.ray  # deployments.ingress imports ray (not started)


def _app():
    from fastapi import FastAPI

    from aetheris_ray.contract import ForecastRequest
    from deployments import ingress

    app = FastAPI()
    app.exception_handlers.update(ingress.api.exception_handlers)

    @app.post("/f")
    async def f(req: ForecastRequest):  # noqa: ARG001
        return {"ok": True}

    return app


def call(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app: (status, body)."""
    app, sent, out = _app(), [False], {"status": 0, "body": b""}

    async def receive():
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg):
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "root_path": "", "scheme": "http", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    return out["status"], out["body"]


@pytest.mark.parametrize(
    "body, status, field, needle",
    [
        (b'{"asset": "A", "horizon": 7}', 200, None, None),
        (b'{"asset": "A", "horizon": true}', 422, "horizon", "not bool"),
        (b'{"asset": "A", "horizon": 7, "quantiles": [1e-12, 0.5]}', 422, "quantiles", "rounds to 0"),
        (b'{"asset": "A", "horizon": 7, "as_of": "9999-12-31"}', 422, "as_of", "outside"),
        (b'{"asset": "A", "horizon": ', 422, "body", "malformed JSON"),
        (b'{"asset": "A\xff", "horizon": 7}', 422, "body", "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, 422, "body", "nested too deeply"),
        (b'{"asset": "A", "horizon": ' + b"9" * 5000 + b"}", 422, "body", "4,300 digits"),
        (json.dumps({"asset": "A", "horizon": 7, "thresholds": list(range(1_000_000))}).encode(), 422, "thresholds",
         "at most 64"),
    ],
    ids=["ok", "bool", "tiny-level", "far-as_of", "truncated", "utf8", "deep", "5000-digits", "1M-thresholds"],
)
def test_error_bodies_are_on_the_contract(body, status, field, needle):
    got_status, raw = call("POST", "/f", body)
    assert got_status == status, raw[:300]
    if field is None:
        return
    assert len(raw) < 10_000
    got = json.loads(raw)
    assert set(got) == {"error", "detail", "field"} and got["error"] == "InvalidInput" and got["field"] == field
    assert got["detail"].startswith(f"{field}: ") and needle in got["detail"], got["detail"]


def test_starlette_errors_are_on_the_contract():
    status, raw = call("GET", "/nope")
    assert status == 404 and json.loads(raw) == {"detail": "path: Not Found (GET /nope)", "error": "NotFound",
                                                 "field": "path"}
    status, raw = call("GET", "/f")
    assert status == 405 and json.loads(raw)["error"] == "MethodNotAllowed"


def test_error_response_clips_the_detail():
    from deployments.ingress import MAX_DETAIL, body_problem, error_response

    r = error_response(422, "x" * 1_000_000, "InvalidInput")
    body = json.loads(r.body)
    assert body["error"] == "InvalidInput" and len(body["detail"]) < MAX_DETAIL + 50
    assert body["detail"].endswith("(998,000 more characters)")
    assert body_problem(None) == "not valid JSON"
    assert len(body_problem(ValueError("y" * 10_000))) < 300


# -- the body limit, enforced while reading (issue 14 item 3) ----------------------------------------------------


def guarded(chunks, headers, method="POST"):
    """Drive `Guard` (keys set, one valid) over ASGI with a body arriving in ``chunks``.

    Returns (status, body, chunks read, what the route received).
    """
    from deployments import ingress
    from deployments.auth import KeyChecker

    seen = {}

    async def route(scope, receive, send):
        msg = await receive()
        seen["body"] = msg["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    read, out = [0], {"status": 0, "body": b""}
    it = iter(chunks)

    async def receive():
        try:
            chunk = next(it)
        except StopIteration:
            return {"type": "http.disconnect"}
        read[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": read[0] < len(chunks)}

    async def send(msg):
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    scope = {"type": "http", "method": method, "path": "/v1/forecast",
             "headers": [(b"x-api-key", b"k"), *headers]}
    old = ingress._STATE["checker"]
    ingress._STATE["checker"] = KeyChecker(["k"])
    try:
        asyncio.run(ingress.Guard(route)(scope, receive, send))
    finally:
        ingress._STATE["checker"] = old
    return out["status"], out["body"], read[0], seen.get("body")


def test_a_chunked_body_over_the_limit_is_refused_without_reading_the_rest():
    from deployments.ingress import MAX_BODY_BYTES

    chunk = b"9" * 65_536
    n = 50_000_000 // len(chunk)  # 50 MB, chunked (no Content-Length)
    status, raw, read, routed = guarded([chunk] * n, [(b"transfer-encoding", b"chunked")])
    assert status == 413 and routed is None
    assert read == MAX_BODY_BYTES // len(chunk) + 1 < n  # stopped at the first chunk past the limit
    got = json.loads(raw)
    assert got["error"] == "InvalidInput" and got["field"] == "body" and "2,000,000-byte limit" in got["detail"]


def test_a_body_that_lies_about_its_length_is_counted_too():
    chunk = b"9" * 1_000_000
    status, _, read, routed = guarded([chunk] * 5, [(b"content-length", b"100")])
    assert status == 413 and read == 3 and routed is None


def test_a_body_within_the_limit_reaches_the_route_whole():
    parts = [b'{"asset": ', b'"SYN-BTC", ', b'"horizon": 7}']
    status, raw, read, routed = guarded(parts, [(b"transfer-encoding", b"chunked")])
    assert (status, raw, read, routed) == (200, b"ok", 3, b"".join(parts))


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    status, raw, read, _ = guarded([b"x"], [(b"content-length", b"50000000")])
    assert status == 413 and read == 0 and json.loads(raw)["field"] == "body"


def test_no_key_is_refused_before_the_body_is_read():
    from deployments import ingress
    from deployments.auth import KeyChecker

    out, read = {}, [0]

    async def receive():
        read[0] += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def send(msg):
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            out["body"] = msg.get("body", b"")

    old = ingress._STATE["checker"]
    ingress._STATE["checker"] = KeyChecker(["k"])
    try:
        asyncio.run(ingress.Guard(None)({"type": "http", "method": "POST", "path": "/v1/forecast", "headers": []},
                                        receive, send))
    finally:
        ingress._STATE["checker"] = old
    assert out["status"] == 401 and read[0] == 0 and json.loads(out["body"])["field"] == "authorization"
