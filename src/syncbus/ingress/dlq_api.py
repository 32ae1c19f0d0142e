"""The dead-letter and trace API (DESIGN §7): the same operations as ``syncbus dlq`` and the console.

Authenticated with the named admin keys (``SYNCBUS_ADMIN_KEYS``); with none
set the API refuses every call rather than exposing records to anyone. The
work itself is ``syncbus.dlq.operations`` -- this module only maps HTTP to it
and its outcomes to statuses: a malformed query is 400, a malformed or
unusable body 422, a letter that moved on 409 with its current status, a
replay that would fail the same way 422 (``needs_fix``, override with
``"force": true``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..dlq.filters import MAX_PAGE, DeadLetterFilter, FilterError, list_page, parse_time
from ..dlq.operations import (
    MAX_REASON,
    OperationError,
    Selection,
    discard_letters,
    list_audit,
    mapping_versions,
    replay_letters,
)
from ..dlq.ratelimit import RateError, parse_rate
from ..dlq.replay import ReplayResult, parse_since
from ..errors import SyncbusError
from ..state import DeadLetterConflict, DeadLetterNotFound
from .auth import authenticate_admin
from .errors import HttpError
from .security import masker_for

router = APIRouter()
FORCE_HINT = '"force": true'


def _admin(request: Request) -> str:
    """The audit actor: the admin key's name, with X-Actor only as "(for …)" (auth.authenticate_admin)."""
    return str(authenticate_admin(request, request.app.state.runtime.admin_keys, "the dead-letter API"))


class FilterBody(BaseModel):
    """Which pending letters a bulk replay or discard is about (the filters of ``GET /dlq``)."""

    model_config = ConfigDict(extra="forbid")

    route: str | None = None
    reason: str | None = Field(None, description="schema, mapping, delivery or decode")
    sink: str | None = None
    since: str | None = Field(None, description="ISO date/time or a duration ago (2h)")
    until: str | None = Field(None, description="ISO date/time or a duration ago (2h)")
    key: str | None = None
    text: str | None = Field(None, description="text in the payload or the error")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(None, max_length=MAX_PAGE)
    filter: FilterBody | None = None
    route: str | None = Field(None, description="deprecated: use filter.route")
    since: str | None = Field(None, description="deprecated: use filter.since")
    reason: str = Field("", max_length=MAX_REASON, description="why (audited)")
    force: bool = Field(False, description="also replay schema/mapping/decode failures that were not fixed")
    rate: str | None = Field(None, description="at most this fast, e.g. 50/s")
    limit: int = Field(MAX_PAGE, ge=1, le=MAX_PAGE, description="at most this many letters of a filter")


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(None, max_length=MAX_PAGE)
    filter: FilterBody | None = None
    reason: str = Field("", max_length=MAX_REASON, description="why (audited; required)")
    limit: int = Field(MAX_PAGE, ge=1, le=MAX_PAGE)


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=MAX_REASON)
    force: bool = False


async def _json(request: Request, model: type[BaseModel]) -> Any:
    """An optional JSON body validated by ``model``; an empty body means all defaults."""
    raw = await request.body()
    if not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValueError as exc:
        raise HttpError(422, "unprocessable", str(exc).splitlines()[0]) from None


def _refusal(result: ReplayResult) -> HttpError:
    """The HTTP answer for a replay that did not happen, by the kind of refusal."""
    if result.refusal == "not_found":
        return HttpError(404, "not_found", result.message)
    if result.refusal == "conflict":
        return HttpError(409, "conflict", result.message, body={"current_status": result.status})
    if result.refusal == "needs_fix":
        return HttpError(422, "needs_fix", result.message, body={"current_status": result.status})
    return HttpError(503, "bus_unavailable", result.message, {"Retry-After": "1"})


def _selection(ids: list[str] | None, body_filter: FilterBody | None, limit: int,
               legacy: dict[str, str | None] | None = None) -> Selection:
    """ids, or a filter (``legacy``: the top-level route/since the first version of the API took); 422 if neither."""
    fields = body_filter.model_dump() if body_filter is not None else {}
    old = {k: v for k, v in (legacy or {}).items() if v}
    if old and body_filter is not None:
        raise HttpError(422, "unprocessable", "give filter, or the old top-level route/since, not both")
    fields = fields or old
    try:
        flt = DeadLetterFilter.from_mapping(fields, labels={k: f"filter.{k}" for k in fields}) if fields else None
        return Selection.of(ids, flt, limit)
    except (FilterError, OperationError) as exc:
        raise HttpError(422, "unprocessable", str(exc)) from None


@router.get("/dlq")
async def list_dead_letters(request: Request, route: str | None = None, status: str | None = None,
                            reason: str | None = None, sink: str | None = None, since: str | None = None,
                            until: str | None = None, key: str | None = None, text: str | None = None,
                            limit: int = 100, offset: int = 0) -> JSONResponse:
    """Newest failure first: ``{items, total, offset, limit}``; every filter optional and bounded (400)."""
    _admin(request)
    store = request.app.state.runtime.store
    try:
        flt = DeadLetterFilter.parse(route=route, status=status, reason=reason, sink=sink, since=since,
                                     until=until, key=key, text=text)
        masker = masker_for(request)  # a read-only key searches only what it may see (the answer is masked too)
        page = await asyncio.to_thread(list_page, store, flt, min(limit, 1000), offset, masker)
    except FilterError as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    return JSONResponse(page.to_json())


@router.get("/dlq/audit")
async def get_audit(request: Request, id: str | None = None, actor: str | None = None,
                    action: str | None = None, since: str | None = None, limit: int = 1000) -> JSONResponse:
    """Every action on dead letters, oldest first: ``{items}`` (as ``syncbus dlq audit --json``)."""
    _admin(request)
    store = request.app.state.runtime.store
    try:
        when = parse_time(since, "since") if since else None
        entries = await asyncio.to_thread(list_audit, store, dl_id=id or None, actor=actor or None,
                                          action=action or None, since=when, limit=min(limit, 1000))
    except FilterError as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    return JSONResponse({"items": [e.to_json() for e in entries]})


@router.get("/dlq/{dl_id}")
async def get_dead_letter(request: Request, dl_id: str) -> JSONResponse:
    """One letter with its whole audit trail."""
    _admin(request)
    store = request.app.state.runtime.store
    try:
        dl = await asyncio.to_thread(store.get, dl_id)
    except DeadLetterNotFound as exc:
        raise HttpError(404, "not_found", str(exc)) from None
    audit = await asyncio.to_thread(store.audit, dl_id)
    return JSONResponse({**dl.to_json(), "audit": [a.to_json() for a in audit]})


@router.post("/dlq/{dl_id}/replay")
async def replay_one(request: Request, dl_id: str) -> JSONResponse:
    """Replay one letter: 404, 409 (with the current status), 422 needs_fix (``force``), 503 bus down."""
    actor = _admin(request)
    body: ActionRequest = await _json(request, ActionRequest)
    rt = request.app.state.runtime
    bulk = await replay_letters(rt.store, rt.bus, Selection((dl_id,)), actor=actor,
                                reason=body.reason or "replay via API", versions=mapping_versions(rt.project),
                                force=body.force, override=FORCE_HINT)
    [result] = bulk.results
    if not result.ok:
        raise _refusal(result)
    return JSONResponse(result.to_json())


@router.post("/dlq/replay")
async def replay_many(request: Request) -> JSONResponse:
    """ids, or every pending letter of ``filter`` (oldest first); 200 with a result per letter."""
    actor = _admin(request)
    body: ReplayRequest = await _json(request, ReplayRequest)
    selection = _selection(body.ids, body.filter, body.limit, {"route": body.route, "since": body.since})
    try:
        rate = parse_rate(body.rate) if body.rate else None
    except RateError as exc:
        raise HttpError(422, "unprocessable", str(exc)) from None
    rt = request.app.state.runtime
    bulk = await replay_letters(rt.store, rt.bus, selection, actor=actor, reason=body.reason or "replay via API",
                                versions=mapping_versions(rt.project), force=body.force, rate=rate,
                                override=FORCE_HINT)
    return JSONResponse(bulk.to_json())


@router.post("/dlq/discard")
async def discard_many(request: Request) -> JSONResponse:
    """ids, or every pending letter of ``filter``; a reason is required. 200 with a result per letter."""
    actor = _admin(request)
    body: DiscardRequest = await _json(request, DiscardRequest)
    selection = _selection(body.ids, body.filter, body.limit)
    if not body.reason.strip():
        raise HttpError(422, "unprocessable", "a discard needs a reason (it is audited)")
    store = request.app.state.runtime.store
    try:
        bulk = await asyncio.to_thread(discard_letters, store, selection, actor=actor, reason=body.reason)
    except OperationError as exc:
        raise HttpError(422, "unprocessable", str(exc)) from None
    return JSONResponse(bulk.to_json())


@router.delete("/dlq/{dl_id}")
async def discard(request: Request, dl_id: str) -> JSONResponse:
    """Discard one letter (``?reason=``); 409 with the current status when it is no longer pending."""
    actor = _admin(request)
    reason = (request.query_params.get("reason") or "").strip() or "discarded via API"
    if len(reason) > MAX_REASON:
        raise HttpError(400, "bad_request", f"reason is longer than {MAX_REASON} characters")
    store = request.app.state.runtime.store
    try:
        [dl] = await asyncio.to_thread(store.discard, [dl_id], actor, reason)
    except DeadLetterNotFound as exc:
        raise HttpError(404, "not_found", str(exc)) from None
    except DeadLetterConflict as exc:
        raise HttpError(409, "conflict", str(exc), body={"current_status": exc.status}) from None
    return JSONResponse(dl.to_json())


@router.get("/trace/{record_id}")
async def trace(request: Request, record_id: str) -> JSONResponse:
    """As ``syncbus trace``: by record id or dead-letter id."""
    _admin(request)
    from ..dlq.trace_view import load_trace

    store = request.app.state.runtime.store
    view = await asyncio.to_thread(load_trace, store, record_id, masker_for(request))
    if view is None:
        raise HttpError(404, "not_found", f"no trace for {record_id!r}")
    return JSONResponse(view)


@router.get("/ledger")
async def get_ledger(request: Request, source: str | None = None, since: str = "24h", until: str | None = None,
                     grace: str = "10m") -> JSONResponse:
    """As ``syncbus ledger --json``; 200 either way -- ``ok`` says whether every record has a fate."""
    _admin(request)
    from ..ledger import build, scope
    from ..units import parse_duration

    rt = request.app.state.runtime
    project = rt.project
    if source is not None and source not in project.connectors.sources:
        raise HttpError(404, "not_found", f"no source named {source!r}")
    try:
        since_at = parse_since(since).timestamp()
        until_at = parse_since(until).timestamp() if until else None
        grace_s = parse_duration(grace)
    except (SyncbusError, ValueError) as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    routes, topics = scope(project, source)
    report = await build(rt.store, rt.bus.url, routes, topics, since=since_at, until=until_at, source=source,
                         grace=grace_s)
    return JSONResponse(report.to_json())
