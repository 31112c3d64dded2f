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
    assert set(got) == {"detail", "error"} and got["error"] == "InvalidInput"
    assert got["detail"].startswith(f"{field}: ") and needle in got["detail"], got["detail"]


def test_starlette_errors_are_on_the_contract():
    status, raw = call("GET", "/nope")
    assert status == 404 and json.loads(raw) == {"detail": "path: Not Found (GET /nope)", "error": "NotFound"}
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
