"""``POST /ingress/{source}`` answered by a plain ASGI handler in front of FastAPI (issue 11).

Every accepted record used to pass ten framework layers before our handler
ran (Starlette's error and exception middleware, FastAPI's body limit,
telemetry and exit-stack middleware, the router's regex match, the endpoint
wrapper resolving ``Request`` and ``source``, our ``Guard``): profiled under
load that was about 45 % of the ingress CPU, more than the handler itself.
The ingress is the one endpoint called per record, so it gets a direct path;
every other endpoint keeps the full app.

Behaviour is the same by construction: the direct path calls the very same
``publish.ingest`` with a Starlette ``Request``, and handles what it raises
as the app does -- a registered exception handler first (``HttpError`` → its
JSON, ``CryptoError`` → 503 ...), then the ``Guard`` catch-all (logged once,
``500 internal_error`` without exception text), and a client that went away
ends quietly. Requests the direct path is not sure about (a query string,
which ``Guard`` bounds; a ``root_path``; a path that is not exactly
``/ingress/<one segment>``; another method) go to the full app, so 404, 405
and the query checks are answered exactly as before. The route stays
registered in FastAPI, so ``/openapi.json`` and ``/docs`` still show it.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import error_response
from .publish import ingest

log = logging.getLogger("syncbus.ingress.app")  # the Guard's logger: one place to look for 500s

PREFIX = "/ingress/"


def ingress_source(scope: Scope) -> str | None:
    """The ``{source}`` of a request the direct path may answer, else None (the full app answers)."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    if scope.get("query_string") or scope.get("root_path"):
        return None
    path: str = scope.get("path", "")
    if not path.startswith(PREFIX):
        return None
    source = path[len(PREFIX):]
    if not source or "/" in source:
        return None
    return source


class IngressFastApp(FastAPI):
    """FastAPI with ``POST /ingress/{source}`` served directly (see the module docstring)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = ingress_source(scope)
        if source is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Starlette sets: Request.app -> app.state.runtime
        request = Request(scope, receive)
        try:
            response: Response = await ingest(request, source)
        except ClientDisconnect:
            log.debug("client went away during POST %s", scope.get("path"))
            return
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The app's exception handler for ``exc`` (by class, most specific first), else the Guard's 500."""
        for cls in type(exc).__mro__:
            handler: Any = self.exception_handlers.get(cls)
            if handler is None:
                continue
            if cls is Exception:
                break  # Starlette gives a handler of Exception to the error middleware, i.e. after Guard
            if is_async_callable(handler):
                return await handler(request, exc)  # type: ignore[no-any-return]
            return await run_in_threadpool(handler, request, exc)
        log.exception("unexpected error in %s %s", request.scope.get("method"), request.scope.get("path"),
                      exc_info=exc)
        return error_response(500, "internal_error", "internal error (logged)")
