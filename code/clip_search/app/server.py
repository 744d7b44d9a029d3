"""The search app over HTTP: Starlette routes on uvicorn, the page at `/`, Prometheus metrics.

  GET  /                           the search page (static HTML/CSS/JS, no CDN)
  GET  /api/search?q=TEXT&k=10&filter=field:value&hybrid=1     (filter repeatable, field=value too; like=ID also)
  POST /api/search                 multipart `image` upload, or JSON {"text"} / {"image": base64} / {"like": ID}
  GET  /api/products/{id}          the product's title, image URL and metadata
  GET  /api/products/{id}/image    the product's photo (local file, or a redirect for s3:// and http(s)://)
  GET  /api/facets                 the filterable metadata fields and their most common values
  GET  /healthz, GET /metrics

Every error is `{"error": "...", "status": N}` (400, 404, 405, 413, 415, 422; 502 when the encoder or
the search backend failed; 500 with no detail for a bug, whose traceback goes to the log only).
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import orjson

from clip_search.errors import BadRequest, PayloadTooLarge, RequestError, UnsupportedMediaType
from clip_search.extras import require

require("app", what="the search app")

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from clip_search.app.service import Query, SearchService, UpstreamError, parse_k  # noqa: E402
from clip_search.images import decode_base64  # noqa: E402
from clip_search.search.filters import parse_filters  # noqa: E402
from clip_search.settings import parse_bool  # noqa: E402

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 6 * 1024 * 1024
DRAIN_FACTOR = 8  # an oversize body is read (and dropped) up to this many times the limit, then cut
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.06, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_SECURITY_HEADERS = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
# Every answer says how long the app took from the request's arrival at the ASGI app to its first
# byte (routing, parsing, the work, JSON), in ms: `Server-Timing: app;dur=1.234` (W3C Server Timing,
# shown by browsers' developer tools). A client's round trip minus it is HTTP, sockets and the client.
SERVER_TIMING = b"server-timing"
# The page loads only its own files; product photos may redirect to S3 or to the catalogue's web host.
PAGE_CSP = ("default-src 'self'; img-src 'self' https: http: data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
ROUTE_KEY = "clip_search.route"  # the route template, for metrics labels
PRODUCTS_PREFIX = "/api/products/"
PRODUCT_ROUTE, PRODUCT_IMAGE_ROUTE = "/api/products/{id}", "/api/products/{id}/image"


class Metrics:
    """Requests, errors and latency per route and per stage, in the app's own registry (several
    apps in one process, as in the tests, do not share counters)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("clip_search_app_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.errors = Counter("clip_search_app_errors", "HTTP answers with a 4xx or 5xx status",
                              ["route", "status"], registry=self.registry)
        self.latency = Histogram("clip_search_app_request_seconds", "time to answer a request, per route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stages = Histogram("clip_search_app_stage_seconds",
                                "time per stage of a search: encode (the query) and search (the index)",
                                ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def stage(self, name: str, seconds: float) -> None:
        self.stages.labels(name).observe(seconds)


class MetricsMiddleware:
    """Pure ASGI: counts every answer by route template (never the raw path: ids would explode the
    label set) and status, including the 500 of an exception that escaped; adds the security
    headers and Server-Timing to every answer."""

    def __init__(self, app, metrics: Metrics, route_names: dict):
        self.app, self.metrics, self.route_names = app, metrics, route_names

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                took = f"app;dur={(time.perf_counter() - started) * 1000:.3f}".encode()
                headers = [*message.get("headers", ()), *_SECURITY_HEADERS, (SERVER_TIMING, took)]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get(ROUTE_KEY) or self.route_names.get(scope.get("endpoint"), "unmatched")
            code = str(status["code"])
            self.metrics.requests.labels(route, scope.get("method", ""), code).inc()
            if status["code"] >= 400:
                self.metrics.errors.labels(route, code).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


class FastJSONResponse(JSONResponse):
    """JSON by orjson (several times faster than json.dumps on an answer of 100 hits; the same
    compact UTF-8). Non-finite floats are null (json.dumps with allow_nan=False would raise); a value
    orjson does not take (an integer beyond 64 bits in stored metadata) falls back to json."""

    def render(self, content) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError
            return super().render(content)


def error_response(status: int, message: str) -> JSONResponse:
    return FastJSONResponse({"error": message, "status": int(status)}, status_code=int(status))


def _as_response(error: Exception) -> JSONResponse:
    if isinstance(error, RequestError):
        return error_response(error.status_code, error.message)
    if isinstance(error, UpstreamError):
        logger.warning("upstream failure: %s", error)
        return error_response(502, str(error))
    logger.exception("internal error")
    return error_response(500, "internal error (see the app's log)")


def _json_errors(endpoint):
    """Bad input is a 4xx JSON answer naming what was wrong; a bug is a 500 with no traceback."""
    async def wrapped(request: Request):
        try:
            return await endpoint(request)
        except HTTPException:
            raise
        except Exception as error:  # noqa: BLE001 - rendered, logged, the app keeps serving
            return _as_response(error)

    wrapped.__name__ = endpoint.__name__
    return wrapped


def _flag(raw, name: str) -> bool:
    """A yes/no request parameter or JSON field, read as settings.parse_bool reads variables."""
    try:
        return parse_bool(False if raw is None else raw)
    except ValueError as error:
        raise BadRequest(f"{name} must be {error}, not {str(raw)[:20]!r}") from None


def _product_path(request: Request) -> tuple[str, bool] | None:
    """(product id, image?) from /api/products/ID or /api/products/ID/image, ID percent-decoded."""
    from urllib.parse import unquote

    scope = request.scope
    raw = scope.get("raw_path")
    if isinstance(raw, (bytes, bytearray)):  # uvicorn: the path as sent, still percent-encoded
        raw = raw.decode("latin-1")
        root = scope.get("root_path") or ""
        if root and raw.startswith(root + PRODUCTS_PREFIX):
            raw = raw[len(root):]
    else:  # Mangum: API Gateway's rawPath (it may start with the stage name)
        event = scope.get("aws.event")
        raw = event.get("rawPath") if isinstance(event, dict) else None
        raw = raw[raw.index(PRODUCTS_PREFIX):] if raw and PRODUCTS_PREFIX in raw else scope["path"]
    if not raw.startswith(PRODUCTS_PREFIX):
        return None
    segments = raw[len(PRODUCTS_PREFIX):].split("/")
    if not segments[0] or len(segments) > 2 or (len(segments) == 2 and segments[1] != "image"):
        return None
    try:
        return unquote(segments[0], errors="strict"), len(segments) == 2
    except UnicodeDecodeError:
        raise BadRequest("the product id in the path is not valid UTF-8") from None


def _root(request: Request) -> str:
    return (request.scope.get("root_path") or "").rstrip("/")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 once it passes `limit` bytes (an oversize body is drained up to a
    bound first, so the client reads the 413 instead of a reset connection)."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise BadRequest("Content-Length is not a number")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > DRAIN_FACTOR * limit:
            break
    if size > limit:
        raise PayloadTooLarge(f"request body is over the {limit / 1e6:g} MB limit (CLIP_SEARCH_APP_MAX_UPLOAD_MB)")
    return b"".join(chunks)


# --- the routes: module-level functions; what they serve is on request.app.state (create_app) ----
async def search(request: Request):
    state = request.app.state
    if request.method == "GET":
        params = request.query_params
        query = Query(text=params.get("q"), like=params.get("like") or None, k=parse_k(params.get("k")),
                      filters=parse_filters(params.getlist("filter")), hybrid=_flag(params.get("hybrid"), "hybrid"))
        if query.text is None and query.like is None:
            raise BadRequest("give a text query: /api/search?q=TEXT (or like=PRODUCT_ID, or POST a photo)")
    else:
        query = await _query_from_body(request, state.max_upload_bytes)
    answer = await run_in_threadpool(state.service.search, query, state.metrics.stage, _root(request))
    if answer.get("query_path") == "neural":  # OpenSearch encoded the query (connected mode)
        return FastJSONResponse(answer, headers={"Server-Timing": f"neural;dur={answer['took_ms']['neural']:.3f}"})
    return FastJSONResponse(answer)


async def _query_from_body(request: Request, limit: int) -> Query:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "multipart/form-data"):
        raise UnsupportedMediaType(f"POST /api/search takes application/json or multipart/form-data, not "
                                   f"{content_type or 'a body without Content-Type'}")
    body = await read_body(request, limit)
    if content_type == "application/json":
        return _query_from_json(body)
    form = await _form(request, body, limit)
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise BadRequest('the multipart body needs a file field named "image"')
    media = (upload.content_type or "").split(";")[0].strip().lower()
    if media and not media.startswith("image/") and media != "application/octet-stream":
        raise UnsupportedMediaType(f"the upload is {media}, not an image (JPEG, PNG, WebP, ...)")
    data = await upload.read()
    return Query(image=data, k=parse_k(form.get("k")), filters=parse_filters(form.getlist("filter")))


def _query_from_json(body: bytes) -> Query:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"malformed JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadRequest('the JSON body must be an object: {"text": ...}, {"image": base64} or {"like": id}')
    unknown = set(payload) - {"text", "image", "like", "k", "filter", "filters", "hybrid"}
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(sorted(unknown))}")
    text, like = payload.get("text"), payload.get("like")
    if text is not None and not isinstance(text, str):
        raise BadRequest('"text" must be a string')
    if like is not None and not isinstance(like, (str, int)):
        raise BadRequest('"like" must be a product id')
    image = decode_base64(payload["image"], '"image"') if payload.get("image") is not None else None
    return Query(text=text, image=image, like=None if like is None else str(like), k=parse_k(payload.get("k")),
                 filters=parse_filters(payload.get("filter", payload.get("filters"))),
                 hybrid=_flag(payload.get("hybrid"), "hybrid"))


async def _form(request: Request, body: bytes, limit: int):
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=1, max_fields=50, max_part_size=limit)
    except HTTPException as error:  # Starlette's multipart parser: malformed body
        raise BadRequest(f"malformed multipart body: {error.detail}") from None
    except Exception as error:  # noqa: BLE001 - python-multipart errors on garbage
        raise BadRequest(f"malformed multipart body: {error}") from None


async def products(request: Request):
    """/api/products/{id} and /api/products/{id}/image. The id is read from the raw path, so an
    id with a slash (sent as %2F) is still one id; it is only ever looked up in the index."""
    service = request.app.state.service
    parts = _product_path(request)
    if parts is None:
        raise HTTPException(404)
    product_id, want_image = parts
    request.scope[ROUTE_KEY] = PRODUCT_IMAGE_ROUTE if want_image else PRODUCT_ROUTE
    if not want_image:
        return FastJSONResponse(await run_in_threadpool(service.product, product_id, _root(request)))
    answer = await run_in_threadpool(service.product_image, product_id)
    if answer.redirect:
        return RedirectResponse(answer.redirect, status_code=307)
    return FileResponse(answer.path, media_type=answer.media_type, headers={"Cache-Control": "public, max-age=3600"})


async def facets(request: Request):
    return FastJSONResponse(await run_in_threadpool(request.app.state.service.facets))


async def health(request: Request):
    return FastJSONResponse(await run_in_threadpool(request.app.state.service.health))


async def metrics_page(request: Request):
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def page(request: Request):
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})


async def http_error(request: Request, error: HTTPException):
    message = {404: f"no route {request.url.path[:200]}", 405: f"{request.method} is not allowed on "
               f"{request.url.path[:200]}"}.get(error.status_code, str(error.detail))
    response = error_response(error.status_code, message)
    response.headers.update(error.headers or {})
    return response


def routes() -> list:
    return [
        Route("/", page, methods=["GET"]),
        Route("/api/search", _json_errors(search), methods=["GET", "POST"]),
        Route("/api/products/{rest:path}", _json_errors(products), methods=["GET"]),
        Route("/api/facets", _json_errors(facets), methods=["GET"]),
        Route("/healthz", _json_errors(health), methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def create_app(service: SearchService, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> Starlette:
    """The app over `service`; the routes find it, the metrics and the upload limit on app.state."""
    metrics = Metrics()
    table = routes()
    route_names = {route.endpoint if isinstance(route, Route) else route.app: route.path for route in table}
    app = Starlette(routes=table, exception_handlers={HTTPException: http_error})
    app.add_middleware(MetricsMiddleware, metrics=metrics, route_names=route_names)
    app.state.service, app.state.metrics, app.state.max_upload_bytes = service, metrics, int(max_upload_bytes)
    return app


# --- running it ---------------------------------------------------------------------------------
def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket (port 0 = any free port), so the printed URL is the real one.

    TCP_NODELAY: uvicorn writes a response's head and body as two segments, and with Nagle on the
    body waits for the client's delayed ACK of the head, 40 ms on Linux, on every keep-alive request.
    asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP (a plain socket() has 0), so
    the socket says so, and the option is also set on the listener, which Linux copies to every
    accepted connection (uvloop sets it itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _uvicorn_server(app, log_level: str = "warning"):
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", timeout_keep_alive=30)
    return uvicorn.Server(config)


def serve(app, sock: socket.socket, log_level: str = "info") -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn's own signal handling)."""
    _uvicorn_server(app, log_level).run(sockets=[sock])


class AppServer:
    """The app on uvicorn in a background thread (tests, benchmarks): `with AppServer(app) as s: s.url`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app, self.sock = app, bind(host, port)
        self.url = url_of(self.sock)
        self.server = _uvicorn_server(app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "AppServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the search app did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info):
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
