"""The OpenAPI description, completed beyond what FastAPI infers from the handlers.

Most of our answers are raised (``HttpError``) or produced below the app
(431, 408, 503 in ``connection.py``), so FastAPI alone documented only the
successes and a 422 shape we never send. Clients generate code from this
file and schemathesis checks the server against it, so every operation lists
every status it can return with the one error schema, the ingress bodies
(JSON and XML now, CSV and JSON Lines accepted by the same operation), and
both ways to present a key.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "status"],
    "properties": {
        "error": {"type": "string", "description": "stable machine-readable code, e.g. payload_too_large"},
        "message": {"type": "string", "description": "what was wrong, for the person reading the log"},
        "status": {"type": "integer", "description": "the HTTP status, repeated"},
    },
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

# Status → (component name, description).
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed request: invalid HTTP, body or header, or a query parameter out of bounds"),
    401: ("Unauthorized", "No API key (send X-API-Key or Authorization: Bearer), or an invalid or expired token"),
    403: ("Forbidden", "The key is not accepted here, lacks the scope, or the client address is not allowed"),
    404: ("NotFound", "No such source, dead letter, trace or endpoint"),
    409: ("Conflict", "The dead letter is no longer pending (the body names its current status), or a request "
                      "with the same Idempotency-Key is still in progress"),
    413: ("PayloadTooLarge", "The body is over the source's limit (1 MiB unless configured)"),
    415: ("UnsupportedMediaType", "Content-Type not accepted"),
    422: ("Unprocessable", "Well-formed but not acceptable: wrong shape, too deep, an Idempotency-Key reused "
                          "with another body, invalid JSON request fields"),
    429: ("TooManyRequests", "Over the rate limit of the source or the key; see Retry-After"),
    431: ("HeadersTooLarge", "Request headers over the server's size or count limit"),
    503: ("Unavailable", "Overloaded (connection limit) or the bus cannot take the record; retry later"),
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"schema": {"type": "integer"}}},
    503: {"Retry-After": {"schema": {"type": "integer"}}},
}

INGRESS_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 429, 431, 503)
ADMIN_STATUSES = (400, 401, 403, 404, 429, 431, 503)
PUBLIC_STATUSES = (400, 431, 503)
ADMIN_PREFIXES = ("/dlq", "/trace", "/ledger", "/admin")
KEYS: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]

INGRESS_REQUEST: dict[str, Any] = {
    "parameters": [
        {"name": "Idempotency-Key", "in": "header", "required": False,
         "description": "A repeat gets the first id and is not published again; reused with another body: 422",
         "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
    ],
    "requestBody": {
        "required": True,
        "description": "One record (a JSON object or an XML document), or a batch: a JSON array, "
                       "CSV with a header row, or JSON Lines. The source's max_body applies (413).",
        "content": {
            "application/json": {"schema": {"oneOf": [
                {"type": "object", "additionalProperties": True},
                {"type": "array", "items": {"type": "object", "additionalProperties": True}},
            ]}},
            # Any well-formed document is a record (its root element holds the fields): no type to violate.
            "application/xml": {"schema": {"description": "an XML document", "xml": {"name": "record"}}},
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    },
}
_ONE: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "topic": {"type": "string"},
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
        "duplicate": {"type": "boolean", "description": "true when an Idempotency-Key was seen before"},
    },
}
_BATCH: dict[str, Any] = {
    "type": "object",
    "description": "A batch: one record per row; rows that could not be read are listed by line or index.",
    "required": ["accepted", "refused", "ids"],
    "properties": {
        "accepted": {"type": "integer"},
        "refused_count": {"type": "integer"},
        "topic": {"type": "string"},
        "refused": {"type": "array", "items": {"type": "object", "required": ["error"], "properties": {
            "line": {"type": "integer"}, "index": {"type": "integer"}, "error": {"type": "string"}}}},
        "ids": {"type": "array", "items": {**_ONE, "properties": {
            **_ONE["properties"], "line": {"type": "integer"}, "index": {"type": "integer"}}}},
    },
}
ACCEPTED_SCHEMA: dict[str, Any] = {"oneOf": [_ONE, _BATCH]}
_READINESS = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {"status": {"type": "string", "enum": ["ready", "not ready"]},
                   "checks": {"type": "object", "additionalProperties": {"type": "boolean"}}},
}
READINESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "ready", "content": {"application/json": {"schema": _READINESS}}},
    503: {"description": "not ready (see checks), or overloaded (an Error)",
          "content": {"application/json": {"schema": {"oneOf": [_READINESS, {"$ref": "#/components/schemas/Error"}]}}}},
}
METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition format 0.0.4",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}


def _statuses(path: str, method: str) -> tuple[int, ...]:
    if path.startswith("/ingress/"):
        return INGRESS_STATUSES
    if path.startswith(ADMIN_PREFIXES):
        extra: tuple[int, ...] = ()
        if method in ("post", "put", "patch", "delete"):
            extra = (409, 422) if path.startswith("/dlq") else (422,)
        return ADMIN_STATUSES + extra
    return PUBLIC_STATUSES


def _complete_operation(path: str, method: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    generated_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if generated_422.get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]  # FastAPI's shape; we answer 400 (parameters) or 422 (body) with Error
    for status in _statuses(path, method):
        responses.setdefault(str(status), {"$ref": f"#/components/responses/{ERRORS[status][0]}"})
    if path.startswith("/ingress/"):
        responses["202"]["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}
        op.setdefault("security", [{}, *KEYS])
    elif path.startswith(ADMIN_PREFIXES):
        op.setdefault("security", KEYS)


def _bound_parameters(op: dict[str, Any], bounds: dict[str, tuple[int, int]]) -> None:
    for param in op.get("parameters", []):
        if param.get("in") == "query" and param.get("name") in bounds:
            low, high = bounds[param["name"]]
            param.setdefault("schema", {}).update({"type": "integer", "minimum": low, "maximum": high})
            param["schema"].pop("anyOf", None)


def build_openapi(app: FastAPI, query_bounds: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """The app's OpenAPI document, built once; ``query_bounds`` are the bounds the app enforces by name."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["Accepted"] = ACCEPTED_SCHEMA
    components["responses"] = {
        name: {"description": text, "content": _ERROR_CONTENT, **({"headers": _HEADERS[s]} if s in _HEADERS else {})}
        for s, (name, text) in ERRORS.items()
    }
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "description": "the same key as a bearer token"},
    }
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                _complete_operation(path, method, op)
                _bound_parameters(op, query_bounds or {})
    if "HTTPValidationError" not in repr(spec["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    app.openapi_schema = spec
    return spec
