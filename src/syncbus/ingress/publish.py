"""``POST /ingress/{source}``: accept a record and answer 202 once it is durably on the bus.

Order of checks, cheapest first: known source (404) → API key (401/403) →
content type (415) → size (413, before reading more than the limit) → well
formed (400) → acceptable shape (422) → idempotency → publish (503 if the bus
cannot take it). The body is published as received, so XML stays XML.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request

from ..bus.base import AtomicIdempotency, Published
from ..config import Component
from ..errors import BusError, DecodeError, IdempotencyConflict, IdempotencyInProgress
from ..formats import Codec, make_codec
from ..mapping.paths import MISSING, compile_getter, parse_path
from ..record import H_CONTENT_TYPE, H_ID, H_RECEIVED_AT, H_SOURCE, Record, new_id
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
    """Accept one request; every refusal is counted by source and reason."""
    try:
        return await _ingest(request, source)
    except HttpError as exc:
        rt = request.app.state.runtime
        if source in rt.ingress_sources:  # an unknown source name is not a label to grow metrics by
            rt.metrics.rejected_for(source, exc.code).inc()
        raise


def fingerprint(content_type: str, body: bytes) -> str:
    """What makes two requests with one Idempotency-Key "the same request"."""
    return hashlib.sha256(content_type.encode() + b"\0" + body).hexdigest()


async def _ingest(request: Request, source: str) -> JSONResponse:
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
    headers = {H_ID: rid, H_RECEIVED_AT: f"{time.time():.6f}", H_CONTENT_TYPE: ctype, H_SOURCE: source}
    tp = request.headers.get("traceparent")
    if tp:
        headers["traceparent"] = tp
    if idem is None:
        published = await _publish(rt, src.topic, body, key, headers)
    else:
        idem = idem.strip()
        if not idem or len(idem) > 255:
            raise HttpError(400, "bad_request", "Idempotency-Key must be 1 to 255 characters")
        placed = await _publish_once(rt, source, src.topic, body, key, headers, idem, fingerprint(ctype, body))
        if placed.duplicate:
            return JSONResponse({"id": placed.record_id, "duplicate": True, "topic": placed.topic,
                                 "partition": placed.partition, "offset": placed.offset}, status_code=202,
                                headers={"Idempotent-Replayed": "true"})
        published = Record(value=body, key=key, headers=headers, topic=placed.topic, partition=placed.partition,
                           offset=placed.offset)
        rid = placed.record_id
    rt.metrics.received_for(source).inc()
    rt.trace.add(rid, "received", None, source=source, topic=published.topic, partition=published.partition,
                 offset=published.offset, key=key)
    return JSONResponse({"id": rid, "topic": published.topic, "partition": published.partition,
                         "offset": published.offset}, status_code=202)


async def _publish(rt: Any, topic: str, body: bytes, key: str | None, headers: dict[str, str]) -> Record:
    try:
        published: Record = await rt.bus.publish(topic, body, key, headers)
    except BusError as exc:
        raise HttpError(503, "bus_unavailable", f"could not store the record on the bus: {exc}",
                        {"Retry-After": "1"}) from None
    return published


async def _publish_once(rt: Any, source: str, topic: str, body: bytes, key: str | None, headers: dict[str, str],
                        idem: str, fp: str) -> Published:
    """Publish at most once per (source, Idempotency-Key), and never answer "duplicate" for a lost record.

    On the embedded bus the key is claimed in the same transaction that appends
    the record. Elsewhere (Kafka) the claim is pending until the bus acknowledged
    the record; a retry that finds a claim a crash left unconfirmed publishes
    again under the SAME record id, which targets drop by idempotency key.
    """
    bus = rt.bus
    try:
        if isinstance(bus, AtomicIdempotency):
            try:
                return await bus.publish_once(topic, body, key, headers, scope=source, idem_key=idem, fingerprint=fp)
            except BusError as exc:
                raise HttpError(503, "bus_unavailable", f"could not store the record on the bus: {exc}",
                                {"Retry-After": "1"}) from None
        claim = await asyncio.to_thread(rt.store.idempotency_claim, source, idem, headers[H_ID], fp)
    except IdempotencyConflict as exc:
        raise HttpError(422, "idempotency_key_reused", str(exc)) from None
    except IdempotencyInProgress as exc:
        raise HttpError(409, "idempotency_in_progress", str(exc), {"Retry-After": "1"}) from None
    if not claim.new:
        return Published(claim.record_id, claim.topic or topic, claim.partition or 0,
                         -1 if claim.offset is None else claim.offset, duplicate=True)
    headers[H_ID] = claim.record_id
    try:
        published = await rt.bus.publish(topic, body, key, headers)
    except BusError as exc:
        await asyncio.to_thread(rt.store.idempotency_abandon, source, idem, claim.record_id)
        raise HttpError(503, "bus_unavailable", f"could not store the record on the bus: {exc}",
                        {"Retry-After": "1"}) from None
    await asyncio.to_thread(rt.store.idempotency_confirm, source, idem, claim.record_id, published.topic,
                            published.partition, published.offset)
    return Published(claim.record_id, published.topic, published.partition, published.offset, duplicate=False)
