"""``POST /ingress/{source}``: accept a record and answer 202 once it is durably on the bus.

Order of checks, cheapest first: known source (404) → API key (401/403) →
content type (415) → size (413, before reading more than the limit) → well
formed (400) → acceptable shape (422) → idempotency → publish (503 if the bus
cannot take it). The body is published as received, so XML stays XML.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request

from ..config import Component
from ..errors import DecodeError
from ..formats import Codec, make_codec
from ..mapping.paths import MISSING, compile_getter, parse_path
from ..record import H_CONTENT_TYPE, H_ID, H_RECEIVED_AT, H_SOURCE, new_id
from .auth import require_key
from .errors import HttpError

JSON_TYPES = ("application/json", "text/json")
XML_TYPES = ("application/xml", "text/xml")


def media_type(header: str | None) -> tuple[str, str]:
    """(format, canonical content type) for a Content-Type header; 415 when unsupported."""
    mt = (header or "").split(";", 1)[0].strip().lower()
    if not mt:
        raise HttpError(415, "unsupported_media_type",
                        "missing Content-Type: send application/json or application/xml")
    if mt in JSON_TYPES or mt.endswith("+json"):
        return "json", "application/json"
    if mt in XML_TYPES or mt.endswith("+xml"):
        return "xml", "application/xml"
    raise HttpError(415, "unsupported_media_type",
                    f"Content-Type {mt!r} is not accepted: send application/json or application/xml")


class IngressSource:
    """One http_ingress source, with its codecs and key getter prepared once."""

    def __init__(self, component: Component) -> None:
        cfg = component.config
        self.name = component.name
        self.topic: str = cfg.topic
        self.max_body: int = cfg.max_body
        self.api_keys: list[str] | None = list(cfg.auth.api_keys) if cfg.auth is not None else None
        self.codecs: dict[str, Codec] = {
            fmt: make_codec(fmt, max_bytes=cfg.max_body, max_depth=cfg.max_depth) for fmt in ("json", "xml")
        }
        self.key = compile_getter(parse_path(cfg.key)) if cfg.key else None

    def record_key(self, obj: Any) -> str | None:
        if self.key is None:
            return None
        target = obj
        if isinstance(obj, dict) and len(obj) == 1 and self.key(obj) is MISSING:
            target = next(iter(obj.values()))  # XML: the key path is inside the root element
        value = self.key(target)
        if value is MISSING or value is None or isinstance(value, dict | list):
            return None
        return value if isinstance(value, str) else str(value)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HttpError(413, "payload_too_large", f"body is {declared} bytes; the limit is {limit}")
        except ValueError:
            raise HttpError(400, "bad_request", "invalid Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, "payload_too_large", f"body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _policy_refusal(message: str) -> bool:
    lowered = message.lower()
    return "nesting" in lowered or "deeper" in lowered or "entit" in lowered or "dtd" in lowered


async def ingest(request: Request, source: str) -> JSONResponse:
    rt = request.app.state.runtime
    src: IngressSource | None = rt.ingress_sources.get(source)
    if src is None:
        raise HttpError(404, "unknown_source", f"no http_ingress source named {source!r}")
    if src.api_keys is not None:
        require_key(request, src.api_keys, f"source {source}")
    fmt, ctype = media_type(request.headers.get("content-type"))
    body = await read_body(request, src.max_body)
    if not body.strip():
        raise HttpError(400, "bad_request", "empty body")
    try:
        obj = src.codecs[fmt].decode(body)
    except DecodeError as exc:
        status = 422 if _policy_refusal(exc.message) else 400
        raise HttpError(status, "invalid_body" if status == 400 else "refused_body", str(exc)) from None
    if not isinstance(obj, dict):
        raise HttpError(422, "unprocessable", f"expected a {fmt.upper()} object as the record, "
                                              f"got {type(obj).__name__}")
    key = src.record_key(obj)
    rid = new_id()
    idem = request.headers.get("idempotency-key")
    if idem is not None:
        idem = idem.strip()
        if not idem or len(idem) > 255:
            raise HttpError(400, "bad_request", "Idempotency-Key must be 1 to 255 characters")
        first = await asyncio.to_thread(rt.store.idempotency_claim, source, idem, rid)
        if first != rid:
            return JSONResponse({"id": first, "duplicate": True}, status_code=202,
                                headers={"Idempotent-Replayed": "true"})
    headers = {H_ID: rid, H_RECEIVED_AT: f"{time.time():.6f}", H_CONTENT_TYPE: ctype, H_SOURCE: source}
    tp = request.headers.get("traceparent")
    if tp:
        headers["traceparent"] = tp
    try:
        published = await rt.bus.publish(src.topic, body, key, headers)
    except Exception as exc:
        if idem is not None:
            await asyncio.to_thread(rt.store.idempotency_release, source, idem, rid)
        raise HttpError(503, "bus_unavailable", f"could not store the record on the bus: {exc}",
                        {"Retry-After": "1"}) from None
    rt.metrics.received_for(source).inc()
    rt.trace.add(rid, "received", None, source=source, topic=published.topic, partition=published.partition,
                 offset=published.offset, key=key)
    return JSONResponse({"id": rid, "topic": published.topic, "partition": published.partition,
                         "offset": published.offset}, status_code=202)
