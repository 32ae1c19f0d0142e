"""The HTTP app: ingress, health, metrics, dead-letter API, offline /docs (DESIGN §7).

The app holds no state of its own; everything lives on the ``Runtime`` it
serves, so tests can build a runtime around real parts and mount the app.

Every answer that is not a success is a JSON error body, whoever produced it:
our handlers (``HttpError``), Starlette (404, 405 with ``Allow``), request
validation, and the catch-all, which logs the traceback once and never puts
exception text into a 500. Errors below the app (malformed HTTP, header
limits, timeouts, connection limit) are answered in ``connection.py`` with the
same shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, console
from ..reload import ReloadError, ReloadRefused  # issue 9
from ..state.db import StoreUnavailable
from . import dlq_api
from .auth import authenticate_admin  # issue 9
from .errors import HttpError, code_for, error_response
from .fastpath import IngressFastApp  # issue 11
from .openapi import INGRESS_REQUEST, METRICS_RESPONSE, READINESS_RESPONSES, build_openapi
from .publish import ingest

log = logging.getLogger(__name__)

# Pagination bounds shared by every list endpoint, checked before any handler (and so before
# a number too large for SQLite reaches the store: `offset=10**30` was a 500 with OverflowError).
QUERY_BOUNDS: dict[str, tuple[int, int]] = {"limit": (1, 1000), "offset": (0, 10**9)}
# Where validation failed → status: a bad query, path or header is a bad request; a bad body is 422.
_REQUEST_PARTS = ("query", "path", "header", "cookie")

STATIC = Path(__file__).parent / "static"
# /docs/assets/<name> → (file under static/, media type); nothing else is served from disk.
DOCS_ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "favicon-32x32.png": ("swagger-ui/favicon-32x32.png", "image/png"),
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
}
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>syncbus {version} – HTTP API</title>
<link rel="icon" type="image/png" href="{root}/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="{root}/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec="{root}/openapi.json"></div>
<noscript><p>This page needs JavaScript. The API description is at
<a href="{root}/openapi.json">{root}/openapi.json</a>.</p></noscript>
<script src="{root}/docs/assets/swagger-ui-bundle.js"></script>
<script src="{root}/docs/assets/docs.js"></script>
</body>
</html>
"""


def _bounds_error(query: bytes) -> str | None:
    """Why a query string's bounded parameters are out of bounds, or None."""
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        bounds = QUERY_BOUNDS.get(name)
        if bounds is None:
            continue
        low, high = bounds
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 12 and low <= int(text) <= high):
            return f"{name} must be an integer from {low} to {high}"
    return None


class Guard:
    """Outermost app middleware: query bounds before the handler, and the catch-all after it.

    A pure ASGI middleware rather than an ``Exception`` handler: Starlette's
    ServerErrorMiddleware re-raises after answering, so uvicorn logged every
    traceback a second time; here the exception ends. A client that went away
    (``ClientDisconnect``, e.g. cut off by the body timeout) is not an error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        problem = _bounds_error(query) if query else None
        if problem is not None:
            await error_response(400, "bad_request", problem)(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            log.debug("client went away during %s %s", scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await error_response(500, "internal_error", "internal error (logged)")(scope, receive, send)


class _Outage:
    """One WARNING per 30 s of store outage, not one per request (a console or a client retrying would flood)."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._last = -every
        self._suppressed = 0

    def report(self, request: Request, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more refusals since the last line)" if self._suppressed else ""
        log.warning("state store unavailable, answering 503 to %s %s: %s%s", request.method, request.url.path,
                    exc, more)
        self._last, self._suppressed = now, 0


_store_outage = _Outage()


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method of the path, not only the first route's: GET and DELETE /dlq/{id} are two routes."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is Match.PARTIAL:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


@cache
def _asset(name: str) -> bytes:
    return (STATIC / DOCS_ASSETS[name][0]).read_bytes()


def create_app(runtime: Any, manage_lifecycle: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await runtime.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await runtime.stop()

    # No redirect_slashes: Starlette built those redirects from the client's Host header.
    # IngressFastApp: POST /ingress/{source} skips the framework layers (fastpath.py, issue 11).
    app = IngressFastApp(title="syncbus", version=__version__, lifespan=lifespan, redirect_slashes=False,
                         docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                         description="Ingress, health, metrics and dead-letter API of a syncbus node.")
    app.state.runtime = runtime
    app.add_middleware(Guard)

    @app.exception_handler(HttpError)
    async def _http_error(_request: Request, exc: HttpError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        # The database is down or busy: "try again", like a bus outage -- never a 500 with the driver's text.
        _store_outage.report(request, exc)
        message, headers = "the state store is unavailable; try again shortly", {"Retry-After": "5"}
        if console.web.is_console(request):  # a person at a browser gets a page, not a JSON body
            return console.web.error_page(request, 503, message[0].upper() + message[1:] + ".", headers=headers)
        return error_response(503, "store_unavailable", message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        headers = dict(exc.headers or {})
        if status == 405:
            headers["Allow"] = _allowed_methods(app, request.scope)
        if console.web.is_console(request):
            message = "There is no such page." if status == 404 else str(exc.detail)
            return console.web.error_page(request, status, message, headers=headers)
        return error_response(status, code_for(status), str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        status = 400 if loc and loc[0] in _REQUEST_PARTS else 422
        where = ".".join(loc)
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return error_response(status, code_for(status), message)

    @app.post("/ingress/{source}", status_code=202, openapi_extra=INGRESS_REQUEST,
              summary="Accept a record (JSON or XML) onto the source's topic",
              responses={202: {"description": "durably on the bus: {id, topic, partition, offset}"}})
    async def post_ingress(request: Request, source: str) -> JSONResponse:
        return await ingest(request, source)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: bus reachable and mappings loaded", responses=READINESS_RESPONSES)
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ok = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
        details: dict[str, Any] = {}
        reloader = getattr(runtime, "reloader", None)
        if reloader is not None:  # issue 9: a refused reload shows here but does not flip readiness (reload.py)
            details["config"] = reloader.status()
        supervisor = getattr(runtime, "supervisor", None)
        if supervisor is not None:
            # a poll source whose system is down (e.g. the ERP database) is reported, not made a reason to take
            # the node out of rotation: ingress and the other routes still work
            details["sources"] = supervisor.status()["sources"]
        if details:
            body["details"] = details
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.post("/admin/reload", summary="Reload mappings and connectors now (as on SIGHUP or a file change)",
              responses={200: {"description": "status (applied, unchanged) and the change set: sources, sinks, "
                                              "routes, each {added, removed, changed}. 422: refused, `errors` "
                                              "lists file:line:col: message; the running configuration stays"}})
    async def admin_reload(request: Request) -> JSONResponse:  # issue 9
        actor = authenticate_admin(request, runtime.admin_keys, "the admin API", scope="admin")
        try:
            changes = await runtime.reloader.reload("POST /admin/reload", by=str(actor), everywhere=True)
        except ReloadRefused as exc:
            raise HttpError(422, "config_invalid", "the configuration was not applied; the running one stays",
                            body={"errors": exc.errors}) from None
        except ReloadError as exc:
            raise HttpError(503, "reload_failed", "applying the configuration failed part-way (see the log)",
                            body={"errors": exc.errors}) from None
        return JSONResponse({"status": "unchanged" if changes.empty else "applied", **changes.to_json()})

    @app.get("/metrics", summary="Prometheus exposition", response_class=Response, responses=METRICS_RESPONSE)
    async def metrics() -> Response:
        return Response(runtime.metrics.exposition(), media_type=runtime.metrics.content_type)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return HTMLResponse(DOCS_PAGE.format(root=root, version=__version__),
                            headers={"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"})

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name not in DOCS_ASSETS:
            raise HttpError(404, "not_found", f"no asset {name!r}")
        return Response(_asset(name), media_type=DOCS_ASSETS[name][1],
                        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})

    app.include_router(dlq_api.router)
    app.include_router(console.router)
    app.openapi = lambda: build_openapi(app, QUERY_BOUNDS)  # type: ignore[method-assign]
    return app
