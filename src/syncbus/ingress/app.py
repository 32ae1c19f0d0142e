"""The HTTP server: ingress, health, metrics, dead-letter API (DESIGN §7).

The app holds no state of its own; everything lives on the ``Runtime`` it
serves, so tests can build a runtime around real parts and mount the app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from . import dlq_api
from .errors import HttpError, error_response
from .publish import ingest

log = logging.getLogger(__name__)


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

    app = FastAPI(title="syncbus", version=__version__, lifespan=lifespan,
                  description="Ingress, health, metrics and dead-letter API of a syncbus node.")
    app.state.runtime = runtime

    @app.exception_handler(HttpError)
    async def _http_error(_request: Request, exc: HttpError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "unprocessable", f"{where}: {first.get('msg')}".strip(": "))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in request")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.post("/ingress/{source}", status_code=202,
              summary="Accept a record (JSON or XML) onto the source's topic",
              responses={202: {"description": "durably on the bus: {id, topic, partition, offset}"}})
    async def post_ingress(request: Request, source: str) -> JSONResponse:
        return await ingest(request, source)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: bus reachable and mappings loaded")
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus exposition")
    async def metrics() -> Response:
        return Response(runtime.metrics.exposition(), media_type=runtime.metrics.content_type)

    app.include_router(dlq_api.router)
    return app
