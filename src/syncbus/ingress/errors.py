"""JSON error bodies for every refusal: ``{"error": code, "message": text, "status": n}``.

Clients of an ESB are programs; a stable machine-readable code plus a
sentence for the person reading the log is what they need. Never HTML, never
a traceback.
"""

from __future__ import annotations

import http
import json
from collections.abc import Iterable
from typing import Any

from fastapi.responses import JSONResponse

# The code a refusal gets when nothing more specific was chosen; clients switch on it.
DEFAULT_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "unprocessable", 431: "headers_too_large",
    500: "internal_error", 503: "unavailable",
}


class HttpError(Exception):
    """A refusal raised anywhere in a handler; the app turns it into its JSON error response."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.body = body  # extra members of the JSON body (e.g. a dead letter's current status)
        super().__init__(message)

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers, self.body)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> JSONResponse:
    # The three contract members go last so that no extra member can shadow them.
    return JSONResponse({**(extra or {}), "error": code, "message": message, "status": status},
                        status_code=status, headers=headers)


def code_for(status: int) -> str:
    return DEFAULT_CODES.get(status, "error")


def error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message, "status": status}, separators=(",", ":")).encode()


def raw_error_response(status: int, code: str, message: str,
                       headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, closing the connection.

    For the refusals made below the ASGI app, where no request object exists
    yet (connection limit, malformed request, header limits, timeouts): they
    must look exactly like the app's own errors to a client.
    """
    body = error_body(status, code, message)
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
             "content-type: application/json",
             f"content-length: {len(body)}",
             "connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
