"""The HTTP ingress: FastAPI on Serve (auth, validation, OpenAPI) composing the model deployments.

Routes (OpenAPI at ``/docs``):

* ``POST /v1/forecast``        ForecastRequest -> ForecastResponse (the contract, exactly)
* ``POST /v1/forecast/batch``  ``{"requests": [...]}`` (1..64) -> ``{"results": [...]}``
* ``POST /v1/outcomes``        ``{"outcomes": [{asset, origin|as_of, horizon, price}]}`` -> counts
* ``GET  /v1/outcomes``        the stored outcomes (``?asset=``)
* ``GET  /v1/models``          model version, assets, calibration state
* ``GET  /healthz``            open, no auth
* ``GET  /``                   the web page (static HTML + JS)

Errors: `AetherisError` subclasses map to their ``http_status`` with the message;
pydantic errors become 422 with `contract.validation_message`'s one line naming each
field; a body that is not JSON (truncated, not UTF-8, nested too deeply, an integer of
over 4,300 digits) is 422 naming ``body``; Starlette's own errors (unknown route, wrong
method) keep their status.  Every error body is ``{"error": "<class>", "detail": "<field>: ...",
"field": "<field>" | null}``, its detail at most `MAX_DETAIL` characters (echoed inputs are
shortened).  A body over `MAX_BODY_BYTES` is refused with 413 as soon as that many bytes
have arrived, chunked or not (`Guard`), without reading the rest.
"""


import asyncio
import dataclasses
import logging
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from aetheris_ray.components import offload
from aetheris_ray.history import resolve_seed
from aetheris_ray.contract import ForecastRequest, ForecastResponse, clip, validation_message
from aetheris_ray.distributed.budget import MAX_BATCH_CELLS, cells, check_request
from aetheris_ray.distributed.montecarlo import forecast_prepared
from aetheris_ray.errors import AetherisError
from deployments.auth import KeyChecker
from deployments.models import NO_ACCESS_LOG, model_id, resolve_model_version
from aetheris_ray.outcomes import OutcomeBatch
from deployments.ratelimit import OUTCOMES_PER_MINUTE, OutcomeRateLimit, client_id

log = logging.getLogger("ray.serve")

STATIC = Path(__file__).resolve().parent / "static"
MAX_BATCH = 64
#: Largest request body (a full 64-item batch is about 150 kB; 1,000 outcomes, the most a request may carry, about 80 kB).
MAX_BODY_BYTES = 2_000_000
#: Longest error detail sent back (validation messages are shorter; this bounds every other message too).
MAX_DETAIL = 2_000

#: Prepared requests an ingress replica keeps (LRU).
PREPARED_CACHE_SIZE = 256
#: Requests up to this many path-steps are drawn on the event loop (about 1 ms), larger ones on a thread.
INLINE_MAX_CELLS = 16_384
#: Seconds between background checks of the outcome epoch (outcomes posted through another replica).
EPOCH_CHECK_S = 1.0

#: The replica's key checker (one Ingress per replica process; set in ``Ingress.__init__``).
_STATE: dict[str, Any] = {"checker": None}


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[ForecastRequest] = Field(min_length=1, max_length=MAX_BATCH, description="1..64 forecast requests")


class BatchResponse(BaseModel):
    results: list[ForecastResponse]


class OutcomesAccepted(BaseModel):
    accepted: int
    new: int
    stored: int


api = FastAPI(
    title="Aetheris-Ray",
    version="0.1.0",
    description="Calibrated probabilistic forecasts of crypto prices: quantile cones and threshold probabilities. "
    "Send `Authorization: Bearer <key>` or `X-API-Key: <key>` when the service has API keys.",
)


#: ``field: ...`` at the start of a detail (``horizon``, ``outcomes.3.asset``, ``body``).
_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*): ")


def outcome_limit_response(n: int, wait: int) -> JSONResponse:
    """429 for a client over `OUTCOMES_PER_MINUTE` posted outcomes, with ``Retry-After`` (seconds).

    >>> import json
    >>> r = outcome_limit_response(500, 12)
    >>> r.status_code, r.headers["retry-after"], json.loads(r.body)["field"]
    (429, '12', 'outcomes')
    """
    return error_response(429, f"outcomes: {n:,} outcomes would exceed this client's limit of "
                               f"{OUTCOMES_PER_MINUTE:,} per minute; retry after {wait} s",
                          "RateLimited", headers={"Retry-After": str(int(wait))})


def error_response(status: int, detail: str, kind: str, headers: dict[str, str] | None = None,
                   field: str | None = None) -> JSONResponse:
    """The contract's error body, ``{"error": kind, "detail": ..., "field": ...}``, the detail clipped to `MAX_DETAIL`.

    ``field`` defaults to the field the detail starts with (``"horizon: must be ..."``), None
    where the error is not about one field.

    >>> import json
    >>> json.loads(error_response(422, "horizon: must be at most 365 (got 9999)", "InvalidInput").body)["field"]
    'horizon'
    """
    detail = clip(detail, MAX_DETAIL)
    if field is None:
        m = _FIELD.match(detail)
        field = m.group(1) if m else None
    return JSONResponse(status_code=status, content={"error": kind, "detail": detail, "field": field},
                        headers=headers)


def body_problem(e: BaseException | None) -> str:
    """Why a request body could not be read as JSON, in a few words (never the body itself)."""
    if isinstance(e, UnicodeDecodeError):
        return f"not valid UTF-8 at byte {e.start}"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, ValueError) and "integer string conversion" in str(e):
        return "an integer literal of more than 4,300 digits"
    return clip(f"{type(e).__name__}: {e}" if e is not None else "not valid JSON")


_HTTP_KINDS = {404: "NotFound", 405: "MethodNotAllowed", 413: "InvalidInput", 415: "InvalidInput",
               422: "InvalidInput"}


def json_response(body: str | bytes) -> Response:
    """A 200 JSON response from an already serialised body (pydantic's Rust serialiser:
    about 50 us less than `JSONResponse` re-encoding a dict for a 1,000 x 7 forecast)."""
    return Response(content=body, media_type="application/json")


def root_cause(e: BaseException) -> BaseException:
    """The exception a deployment raised, unwrapped from Ray's ``RayTaskError`` layers."""
    seen = set()
    while getattr(e, "cause", None) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.cause  # type: ignore[assignment]
    return e


#: Request fields an error message may start with (``"scenario key 'vix' is not supported"``).
_REQUEST_FIELDS = frozenset(ForecastRequest.model_fields)
#: The request field an error class is about, whatever its message says.
_FIELD_OF = {"UnknownAsset": "asset", "ModelNotFound": "model"}


def error_field(e: AetherisError) -> tuple[str | None, str]:
    """The request field an error is about, and its message without a leading ``field:``.

    >>> from aetheris_ray.errors import InvalidInput, UnknownAsset
    >>> error_field(UnknownAsset("unknown asset 'X'"))
    ('asset', "unknown asset 'X'")
    >>> error_field(InvalidInput("as_of: after the newest close"))
    ('as_of', 'after the newest close')
    >>> error_field(InvalidInput("scenario key 'vix' is not supported"))
    ('scenario', "scenario key 'vix' is not supported")
    """
    msg = str(e)
    m = _FIELD.match(msg)
    if m:
        return m.group(1), msg[m.end():]
    if type(e).__name__ in _FIELD_OF:
        return _FIELD_OF[type(e).__name__], msg
    first = re.match(r"\w+", msg)
    return (first.group(0), msg) if first and first.group(0) in _REQUEST_FIELDS else (None, msg)


def to_error(e: BaseException, field: str = "") -> JSONResponse:
    """Map an exception to an error response (AetherisError -> its status; Ray unavailability -> 503).

    ``field`` is where the request part that failed sits (``requests.3`` in a batch); the
    error's own field (`error_field`) is appended to it.
    """
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError

    c = root_cause(e)
    prefix = f"{field}: " if field else ""
    if isinstance(c, AetherisError):
        sub, msg = error_field(c)
        where = ".".join(p for p in (field, sub) if p) or None
        return error_response(c.http_status, f"{where}: {msg}" if where else msg, type(c).__name__, field=where)
    if isinstance(c, (RayActorError, BackPressureError)):
        return error_response(503, f"{prefix}service busy or a worker restarted ({type(c).__name__}); retry", "Unavailable")
    log.exception("unexpected error", exc_info=c)
    return error_response(500, f"{prefix}internal error: {type(c).__name__}", "InternalError")


def replica_lost(e: BaseException) -> bool:
    """Whether a call failed because the replica or actor serving it died or became unreachable.

    A forecast is a pure function of the request and its seed, so such a call is retried
    once (`Ingress._forecast_once_more`): the router sends it to a live (or restarted) replica.
    """
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import ReplicaUnavailableError

    return isinstance(root_cause(e), (RayActorError, ReplicaUnavailableError))


class _Errors:
    def __init__(self, errs: list[dict[str, Any]]) -> None:
        self._errs = errs

    def errors(self) -> list[dict[str, Any]]:
        return self._errs


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            ctx = clip(str(err.get("ctx", {}).get("error", "")))
            return error_response(422, f"body: malformed JSON ({ctx or 'not valid JSON'})", "InvalidInput")
        if loc and loc[0] in ("body", "query"):
            loc = loc[1:]
        errs.append({**err, "loc": loc})
    return error_response(422, validation_message(_Errors(errs)), "InvalidInput")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's and Starlette's own errors on the contract's body.

    A body FastAPI could not parse (anything but a JSON syntax error: invalid UTF-8,
    nesting past the recursion limit, an over-long integer) comes as a 400 with the
    cause chained; it is answered like any malformed JSON, 422 naming ``body``.
    """
    if exc.status_code == 400 and exc.__cause__ is not None:
        return error_response(422, f"body: malformed JSON ({body_problem(exc.__cause__)})", "InvalidInput")
    field = "path" if exc.status_code in (404, 405) else "request"
    kind = _HTTP_KINDS.get(exc.status_code, "InvalidInput" if 400 <= exc.status_code < 500 else "HTTPError")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, f"{field}: {clip(detail)} ({request.method} {clip(request.url.path, 100)})",
                          kind, headers=getattr(exc, "headers", None))


@api.exception_handler(AetherisError)
async def _aetheris_error(request: Request, exc: AetherisError) -> JSONResponse:
    return error_response(exc.http_status, str(exc), type(exc).__name__)


#: Methods whose body `Guard` reads (and bounds) before the route sees it.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _too_large(what: str) -> JSONResponse:
    return error_response(413, f"body: {what} is more than the {MAX_BODY_BYTES:,}-byte limit; split the batch",
                          "InvalidInput", headers={"Connection": "close"})


class Guard:
    """API key check (before the body is read), then the body size: declared, and counted while it is read.

    A declared ``Content-Length`` over `MAX_BODY_BYTES` is refused before any of the body
    is read.  Any other body (chunked, or a length that lies) is read here, counting, and
    refused with 413 the moment it passes the limit; the rest is never read, and the
    connection closes.  A body within the limit is handed to the route as one message.
    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``)
    wraps every response in a stream and costs measurable CPU per request.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        checker: KeyChecker | None = _STATE["checker"]
        headers = Headers(scope=scope)
        resp = None
        if checker is None:
            resp = error_response(503, "service starting", "Unavailable")
        elif checker.enabled and not checker.is_open(scope["path"]) and not checker.allowed(headers):
            resp = error_response(401, "authorization: missing or invalid API key; send 'Authorization: Bearer <key>' "
                                       "or 'X-API-Key: <key>'", "Unauthorized", field="authorization")
            resp.headers["WWW-Authenticate"] = "Bearer"
        else:
            size = headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
                resp = _too_large(f"{clip(size, 40)} bytes")
            elif scope["method"] in _BODY_METHODS:
                chunks, n, more = [], 0, True
                while more:
                    msg = await receive()
                    if msg["type"] != "http.request":  # the client went away
                        return
                    chunk = msg.get("body", b"")
                    n += len(chunk)
                    if n > MAX_BODY_BYTES:
                        resp = _too_large(f"the body (over {n:,} bytes so far)")
                        break
                    chunks.append(chunk)
                    more = msg.get("more_body", False)
                if resp is None:
                    receive = _replay(b"".join(chunks), receive)
        if resp is not None:
            return await resp(scope, receive, send)
        await self.app(scope, receive, send)


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that gives the already-read body once, then waits on the real one (disconnects)."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


api.add_middleware(Guard)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64, logging_config=NO_ACCESS_LOG)
@serve.ingress(api)
class Ingress:
    """Routes requests to the model deployments; independent calls start together."""

    def __init__(self, features: DeploymentHandle, simulator: DeploymentHandle, calibrator: DeploymentHandle,
                 api_keys: list[str] | None = None, local_max_paths: int | None = None,
                 networks: dict[str, DeploymentHandle] | None = None) -> None:
        from aetheris_ray.distributed.budget import LOCAL_MAX_PATHS

        self.local_max_paths = LOCAL_MAX_PATHS if local_max_paths is None else int(local_max_paths)
        self.features = features
        self.simulator = simulator
        self.calibrator = calibrator
        # small requests drawn here send their network calls to the parts' deployments
        offload.install_handles(networks)
        import deployments.ingress as this_module  # the module the middleware reads, even if this class was pickled by value

        this_module._STATE["checker"] = KeyChecker(api_keys or [])
        self._assets: set[str] | None = None
        self._outcome_limit = OutcomeRateLimit(OUTCOMES_PER_MINUTE)
        self._prepared: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._epoch: str | None = None
        self._epoch_checked = 0.0
        self._epoch_task: asyncio.Task | None = None

    # -- prepared requests, cached per outcome epoch --------------------------------------
    def _set_epoch(self, epoch: str) -> None:
        if epoch != self._epoch:
            self._epoch = epoch
            self._prepared.clear()

    async def _refresh_epoch(self) -> None:
        try:
            self._set_epoch(await self.calibrator.epoch.remote())
        except Exception:  # noqa: BLE001 - the next request tries again
            log.warning("could not read the outcome epoch", exc_info=True)

    def _check_epoch(self) -> None:
        """Every `EPOCH_CHECK_S`, ask the Calibrator (in the background) whether outcomes were posted elsewhere."""
        now = time.monotonic()
        if now - self._epoch_checked >= EPOCH_CHECK_S and (self._epoch_task is None or self._epoch_task.done()):
            self._epoch_checked = now
            self._epoch_task = asyncio.get_running_loop().create_task(self._refresh_epoch())

    async def _prepare(self, req: ForecastRequest):
        """The request's `engine.Prepared`: from this replica's cache, else from `Features` (multiplexed per asset).

        Keyed by the model, the request minus ``seed`` and ``paths`` (`engine.prepare`
        uses those only to store the request and resolve the seed) and the outcome
        epoch; a hit costs a dictionary lookup instead of a hop and about 3 ms of
        point-in-time slicing.  The served == in-process tests cover hits and misses.
        """
        if self._epoch is None:
            await self._refresh_epoch()
        self._check_epoch()
        key = model_id(req.asset, resolve_model_version(req.model, req.components))
        memo = (key, req.model_dump_json(exclude={"seed", "paths"}))
        hit = self._prepared.get(memo)
        if hit is None:
            epoch = self._epoch
            hit = await self.features.options(multiplexed_model_id=key).prepare.remote(req)
            if epoch == self._epoch:  # not stale by the time it came back
                self._prepared[memo] = hit
                while len(self._prepared) > PREPARED_CACHE_SIZE:
                    self._prepared.popitem(last=False)
        else:
            self._prepared.move_to_end(memo)
        return dataclasses.replace(hit, request=req, seed=resolve_seed(req.seed))

    async def _forecast(self, req: ForecastRequest, inline_max: int = INLINE_MAX_CELLS) -> ForecastResponse:
        """One forecast as the contract's response.

        Small requests are drawn here: inline when tiny (`INLINE_MAX_CELLS`, about a
        millisecond: cheaper than a thread hop) and without thresholds (a far one adds
        importance-sampled paths) and without a neural part's network (a call to its
        deployment waits), else on a worker thread, so the replica's event loop
        (shared by every request the replica holds) is never held for long.
        Requests above ``local_max_paths`` go to the `Simulator`, which shards them on
        its actor pool.
        """
        prep = await self._prepare(req)
        if req.paths > self.local_max_paths:
            return await self.simulator.forecast.remote(prep)
        if req.paths * req.horizon <= inline_max and not req.thresholds and not offload.sends_calls(prep.model):
            fc = forecast_prepared(prep, None)
        else:
            fc = await asyncio.to_thread(forecast_prepared, prep, None)
        return fc.to_response()

    async def _forecast_once_more(self, req: ForecastRequest, inline_max: int = INLINE_MAX_CELLS) -> ForecastResponse:
        """`_forecast`, retried once when a replica it called died (`replica_lost`).

        The seed is fixed before the first try, so the retry computes the same answer.
        """
        req = req.model_copy(update={"seed": resolve_seed(req.seed)})
        try:
            return await self._forecast(req, inline_max)
        except Exception as e:  # noqa: BLE001
            if not replica_lost(e):
                raise
            log.warning("forecast of %s: a replica died (%s); retrying once", req.asset, type(root_cause(e)).__name__)
            return await self._forecast(req, inline_max)

    @api.post("/v1/forecast", response_model=ForecastResponse, summary="Forecast one asset",
              responses={401: {}, 404: {}, 422: {}, 503: {}})
    async def forecast(self, req: ForecastRequest):
        try:
            check_request(req.paths, req.horizon)
            return json_response((await self._forecast_once_more(req)).model_dump_json())
        except Exception as e:  # noqa: BLE001 - mapped to a status, never a crash
            return to_error(e)

    @api.post("/v1/forecast/batch", response_model=BatchResponse, summary="Forecast up to 64 requests",
              responses={401: {}, 404: {}, 413: {}, 422: {}, 503: {}})
    async def forecast_batch(self, body: BatchRequest):
        total = sum(cells(r.paths, r.horizon) for r in body.requests)
        if total > MAX_BATCH_CELLS:
            return error_response(413, f"requests: the batch asks for {total:,} path-steps (sum of paths x horizon), "
                                       f"more than {MAX_BATCH_CELLS:,}; split it or lower paths", "InvalidInput")
        for i, r in enumerate(body.requests):
            try:
                check_request(r.paths, r.horizon)
            except Exception as e:  # noqa: BLE001
                return to_error(e, f"requests.{i}")
        inline_max = INLINE_MAX_CELLS if total <= INLINE_MAX_CELLS else 0  # a big batch must not hold the loop
        results = await asyncio.gather(*(self._forecast_once_more(r, inline_max) for r in body.requests),
                                       return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                return to_error(r, f"requests.{i}")
        return json_response(BatchResponse.model_construct(results=results).model_dump_json())

    def _prescore(self, asset: str) -> None:
        """Ask a Features replica to score ``asset``'s new outcomes now (a background task, not awaited by the
        POST), so its next forecast finds them scored."""
        async def run() -> None:
            try:
                await self.features.prescore.remote(asset)
            except Exception:  # noqa: BLE001 - the next forecast scores them itself
                log.warning("could not score the outcomes of %s ahead of its forecast", asset, exc_info=True)

        tasks = self.__dict__.setdefault("_background", set())
        task = asyncio.get_running_loop().create_task(run())
        tasks.add(task)  # a reference, so the task is not collected before it ends
        task.add_done_callback(tasks.discard)

    async def _known_assets(self) -> set[str]:
        if self._assets is None:
            self._assets = set((await self.features.describe.remote())["assets"])
        return self._assets

    @api.post("/v1/outcomes", response_model=OutcomesAccepted, summary="Post realised prices back",
              responses={401: {}, 404: {}, 422: {}})
    async def outcomes(self, body: OutcomeBatch, request: Request):
        try:
            known = await self._known_assets()
            for i, o in enumerate(body.outcomes):
                if o.asset not in known:
                    return error_response(404, f"outcomes.{i}.asset: unknown asset {o.asset!r}; known: "
                                               f"{', '.join(sorted(known))}", "UnknownAsset")
            who = client_id(KeyChecker.presented(request.headers), request.client.host if request.client else None)
            wait = self._outcome_limit.take(who, len(body.outcomes))
            if wait is not None:
                return outcome_limit_response(len(body.outcomes), wait)
            out = await self.calibrator.record.remote(body.outcomes)
            self._set_epoch(out.pop("epoch"))
            for asset in sorted({o.asset for o in body.outcomes}):  # scored in the background, not awaited
                self._prescore(asset)
            return JSONResponse(out)
        except Exception as e:  # noqa: BLE001
            return to_error(e)

    @api.get("/v1/outcomes", summary="Stored outcomes")
    async def list_outcomes(self, asset: str | None = Query(default=None, max_length=64)):
        try:
            return JSONResponse(await self.calibrator.outcomes.remote(asset))
        except Exception as e:  # noqa: BLE001
            return to_error(e)

    @api.get("/v1/models", summary="Model versions")
    async def models(self):
        try:
            feat, cal = self.features.describe.remote(), self.calibrator.describe.remote()
            f, c = await asyncio.gather(feat, cal)
            models = [dict(m, default=m["version"] == f["default"]) for m in f["models"]]
            return JSONResponse({"models": models, "default": f["default"], "assets": f["assets"], "outcomes": c,
                                 "registered": f["registered"]})
        except Exception as e:  # noqa: BLE001
            return to_error(e)

    @api.get("/healthz", summary="Liveness (open)")
    async def healthz(self):
        return {"status": "ok"}

    @api.get("/", include_in_schema=False)
    async def index(self):
        return FileResponse(STATIC / "index.html", media_type="text/html")

    def check_health(self) -> None:
        if not (STATIC / "index.html").is_file():
            raise RuntimeError(f"web page missing at {STATIC / 'index.html'}")
