"""``POST /ingress/{source}``: accept records and answer 202 once they are durably on the bus.

Order of checks, cheapest first: known source (404) → network, key, rate
(403/401/429) → content type (415) → size (413, before reading more than the
limit) → well formed (400) → acceptable shape (422) → idempotency → publish
(503 if the bus cannot take it). A single record is published as received,
so XML stays XML; a batch (CSV, JSON Lines, a JSON array) becomes one JSON
record per row (``batches.py``). Every record goes through the one publish
path of all sources (``sources/publisher.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson
from fastapi.responses import JSONResponse
from starlette.requests import Request

from ..bus.base import AtomicIdempotency, Published
from ..config import Component
from ..errors import BusError, DecodeError, IdempotencyConflict, IdempotencyInProgress
from ..formats import Codec, make_codec
from ..mapping.paths import MISSING, compile_getter, parse_path
from ..record import H_ID, H_INDEX, H_LINE, Record
from ..sources.base import NewRecord
from ..sources.publisher import record_id
from .batches import CSV_TYPES, NDJSON_TYPES, Refused, Row, charset_of, row_value, split_array, split_csv, split_ndjson
from .errors import HttpError
from .security.guard import guard_ingress  # issue 12

JSON_TYPES = ("application/json", "text/json")
XML_TYPES = ("application/xml", "text/xml")
ACCEPTED = "application/json, application/xml, text/csv or application/x-ndjson"


def media_type(header: str | None) -> tuple[str, str]:
    """(format, canonical content type) for a Content-Type header; 415 when unsupported.

    Formats: ``json``, ``xml`` (one record each; a JSON array is a batch), ``csv``
    and ``ndjson`` (a batch: one record per row or line).
    """
    mt = (header or "").split(";", 1)[0].strip().lower()
    if not mt:
        raise HttpError(415, "unsupported_media_type", f"missing Content-Type: send {ACCEPTED}")
    if mt in JSON_TYPES or mt.endswith("+json"):
        return "json", "application/json"
    if mt in XML_TYPES or mt.endswith("+xml"):
        return "xml", "application/xml"
    if mt in CSV_TYPES:
        return "csv", "text/csv"
    if mt in NDJSON_TYPES:
        return "ndjson", "application/x-ndjson"
    raise HttpError(415, "unsupported_media_type", f"Content-Type {mt!r} is not accepted: send {ACCEPTED}")


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
        self.delimiter: str = getattr(cfg, "csv_delimiter", ",")

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
    guard_ingress(request, src)  # issue 12: allow_ips, mtls, source key or ingress:<source> key/JWT, rate limits
    header = request.headers.get("content-type")
    fmt, ctype = media_type(header)
    body = await read_body(request, src.max_body)
    if not body.strip():
        raise HttpError(400, "bad_request", "empty body")
    idem = request.headers.get("idempotency-key")
    if idem is not None:
        idem = idem.strip()
        if not idem or len(idem) > 255:
            raise HttpError(400, "bad_request", "Idempotency-Key must be 1 to 255 characters")
    extra = {"traceparent": tp} if (tp := request.headers.get("traceparent")) else {}
    try:
        if fmt == "csv":
            return await _batch(rt, src, *split_csv(body, charset_of(header), src.delimiter), idem, extra)
        if fmt == "ndjson":
            return await _batch(rt, src, *split_ndjson(body, src.codecs["json"]), idem, extra)
        obj = src.codecs[fmt].decode(body)
    except DecodeError as exc:
        status = 422 if _policy_refusal(exc.message) else 400
        raise HttpError(status, "invalid_body" if status == 400 else "refused_body", str(exc)) from None
    if fmt == "json" and isinstance(obj, list):
        return await _batch(rt, src, *split_array(obj), idem, extra)
    if not isinstance(obj, dict):
        raise HttpError(422, "unprocessable", f"expected a {fmt.upper()} object as the record, "
                                              f"got {type(obj).__name__}")
    record = NewRecord(value=body, key=src.record_key(obj), content_type=ctype, headers=extra, id=record_id())
    if idem is None:
        [published] = await _publish(rt, source, src.topic, [record])
        placed = Published(published.id, published.topic, published.partition, published.offset, duplicate=False)
    else:
        placed = await _publish_once(rt, source, src.topic, record, idem, fingerprint(ctype, body))
    return Accepted(_answer(placed), status_code=202,
                        headers={"Idempotent-Replayed": "true"} if placed.duplicate else None)


class Accepted(JSONResponse):
    """The 202 of one record: the same bytes JSONResponse writes for it (ids, topic names, numbers), by orjson.

    ``json.dumps`` was a visible share of the ingress CPU per record (issue 11).
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _answer(placed: Published) -> dict[str, Any]:
    out: dict[str, Any] = {"id": placed.record_id, "topic": placed.topic, "partition": placed.partition,
                           "offset": placed.offset}
    if placed.duplicate:
        out["duplicate"] = True
    return out


async def _batch(rt: Any, src: IngressSource, rows: list[Row], refused: list[Refused], idem: str | None,
                 extra: dict[str, str]) -> JSONResponse:
    """One record per row; refused rows are listed with their line or index, the others go through."""
    if not rows:
        raise HttpError(422, "unprocessable", f"no row of the batch could be read ({len(refused)} refused)",
                        body={"refused": [r.to_json() for r in refused[:1000]]})
    records = []
    for row in rows:
        where = {(H_LINE if k == "line" else H_INDEX): str(v) for k, v in row.where.items()}
        records.append(NewRecord(value=row_value(row), key=src.record_key(row.obj), content_type="application/json",
                                 headers={**extra, **where}, id=record_id()))
    if idem is None:
        published = await _publish(rt, src.name, src.topic, records)
        placed = [Published(p.id, p.topic, p.partition, p.offset, duplicate=False) for p in published]
    else:
        # one key per row (`<key>#line=5`): a client retrying the whole file republishes nothing it already has
        placed = list(await asyncio.gather(*(
            _publish_once(rt, src.name, src.topic, rec, f"{idem}#{_where(row)}", fingerprint(rec.content_type,
                                                                                            rec.value))
            for row, rec in zip(rows, records, strict=True))))
    return JSONResponse({"accepted": len(placed), "refused": [r.to_json() for r in refused[:1000]],
                         "refused_count": len(refused), "topic": src.topic,
                         "ids": [{**row.where, **_answer(p)} for row, p in zip(rows, placed, strict=True)]},
                        status_code=202)


def _where(row: Row) -> str:
    return ",".join(f"{k}={v}" for k, v in row.where.items())


async def _publish(rt: Any, source: str, topic: str, records: list[NewRecord]) -> list[Record]:
    try:
        published: list[Record] = await rt.publisher.publish(source, topic, records)
    except BusError as exc:
        more = " (some may be stored: retry with an Idempotency-Key to avoid duplicates)" if len(records) > 1 else ""
        raise HttpError(503, "bus_unavailable", f"could not store the record on the bus{more}: {exc}",
                        {"Retry-After": "1"}) from None
    return published


async def _publish_once(rt: Any, source: str, topic: str, record: NewRecord, idem: str, fp: str) -> Published:
    """Publish at most once per (source, Idempotency-Key), and never answer "duplicate" for a lost record.

    On the embedded bus the key is claimed in the same transaction that appends
    the record. Elsewhere (Kafka) the claim is pending until the bus acknowledged
    the record; a retry that finds a claim a crash left unconfirmed publishes
    again under the SAME record id, which targets drop by idempotency key.
    """
    bus = rt.bus
    headers = rt.publisher.stamp(source, record, time.time())
    try:
        if isinstance(bus, AtomicIdempotency):
            try:
                placed: Published = await bus.publish_once(topic, record.value, record.key, headers, scope=source,
                                                           idem_key=idem, fingerprint=fp)
            except BusError as exc:
                raise HttpError(503, "bus_unavailable", f"could not store the record on the bus: {exc}",
                                {"Retry-After": "1"}) from None
            if not placed.duplicate:
                rt.publisher.accepted(source, [Record(record.value, record.key, headers, placed.topic,
                                                      placed.partition, placed.offset)])
            return placed
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
        published = await bus.publish(topic, record.value, record.key, headers)
    except BusError as exc:
        await asyncio.to_thread(rt.store.idempotency_abandon, source, idem, claim.record_id)
        raise HttpError(503, "bus_unavailable", f"could not store the record on the bus: {exc}",
                        {"Retry-After": "1"}) from None
    await asyncio.to_thread(rt.store.idempotency_confirm, source, idem, claim.record_id, published.topic,
                            published.partition, published.offset)
    rt.publisher.accepted(source, [published])
    return Published(claim.record_id, published.topic, published.partition, published.offset, duplicate=False)
