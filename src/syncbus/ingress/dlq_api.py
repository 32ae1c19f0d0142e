"""The dead-letter and trace API (DESIGN §7), for on-call tools and the future console.

Authenticated with the admin keys (``SYNCBUS_ADMIN_KEYS``); with none set the
API refuses every call rather than exposing records to anyone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..dlq.replay import ReplayResult, parse_since, replay, replay_matching
from ..errors import SyncbusError
from ..state import DeadLetterConflict, DeadLetterNotFound, StoreError
from .auth import presented_key, require_key
from .errors import HttpError

router = APIRouter()


def _admin(request: Request) -> str:
    keys = request.app.state.runtime.admin_keys
    if not keys:
        raise HttpError(403, "forbidden", "the dead-letter API is disabled: set SYNCBUS_ADMIN_KEYS")
    require_key(request, keys, "dead-letter API")
    actor = request.headers.get("x-actor") or f"api-key:{(presented_key(request) or '')[:4]}…"
    return actor


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = None
    route: str | None = None
    since: str | None = Field(None, description="ISO date/time or a duration ago (2h)")
    reason: str = ""


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = ""


async def _json(request: Request, model: type[BaseModel]) -> Any:
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
    return HttpError(503, "bus_unavailable", result.message, {"Retry-After": "1"})


@router.get("/dlq")
async def list_dead_letters(request: Request, route: str | None = None, status: str | None = None,
                            since: str | None = None, limit: int = 100, offset: int = 0) -> JSONResponse:
    _admin(request)
    store = request.app.state.runtime.store
    try:
        when = parse_since(since) if since else None
        items = await asyncio.to_thread(store.list, route=route, status=status, since=when,
                                        limit=min(limit, 1000), offset=offset)
        total = await asyncio.to_thread(store.count, route=route, status=status, since=when)
    except SyncbusError as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    return JSONResponse({"items": [d.to_json() for d in items], "total": total})


@router.get("/dlq/{dl_id}")
async def get_dead_letter(request: Request, dl_id: str) -> JSONResponse:
    _admin(request)
    store = request.app.state.runtime.store
    try:
        dl = await asyncio.to_thread(store.get, dl_id)
    except StoreError as exc:
        raise HttpError(404, "not_found", str(exc)) from None
    audit = await asyncio.to_thread(store.audit, dl_id)
    return JSONResponse({**dl.to_json(), "audit": [a.to_json() for a in audit]})


@router.post("/dlq/{dl_id}/replay")
async def replay_one(request: Request, dl_id: str) -> JSONResponse:
    actor = _admin(request)
    body = await _json(request, ActionRequest)
    rt = request.app.state.runtime
    [result] = await replay(rt.store, rt.bus, [dl_id], actor, body.reason or "replay via API")
    if not result.ok:
        raise _refusal(result)
    return JSONResponse(result.to_json())


@router.post("/dlq/replay")
async def replay_many(request: Request) -> JSONResponse:
    actor = _admin(request)
    body: ReplayRequest = await _json(request, ReplayRequest)
    rt = request.app.state.runtime
    reason = body.reason or "replay via API"
    if body.ids:
        results = await replay(rt.store, rt.bus, body.ids, actor, reason)
    elif body.route or body.since:
        try:
            since = parse_since(body.since) if body.since else None
        except SyncbusError as exc:
            raise HttpError(422, "unprocessable", str(exc)) from None
        results = await replay_matching(rt.store, rt.bus, body.route, since, actor, reason)
    else:
        raise HttpError(422, "unprocessable", "give ids, or route and/or since")
    return JSONResponse({"results": [r.to_json() for r in results],
                         "replayed": sum(r.ok for r in results)})


@router.delete("/dlq/{dl_id}")
async def discard(request: Request, dl_id: str) -> JSONResponse:
    actor = _admin(request)
    reason = request.query_params.get("reason") or "discarded via API"
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
    _admin(request)
    from ..dlq.trace_view import load_trace

    store = request.app.state.runtime.store
    view = await asyncio.to_thread(load_trace, store, record_id)
    if view is None:
        raise HttpError(404, "not_found", f"no trace for {record_id!r}")
    return JSONResponse(view)


@router.get("/ledger")
async def get_ledger(request: Request, source: str | None = None, since: str = "24h", until: str | None = None,
                     grace: str = "10m") -> JSONResponse:
    """As ``syncbus ledger --json``; 200 either way -- ``ok`` says whether every record has a fate."""
    _admin(request)
    from ..ledger import build
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
    routes = {name: m.topic for name, m in project.mappings.items()}
    topics = [c.config.topic for c in project.connectors.sources.values() if source is None or c.name == source]
    report = await build(rt.store, rt.bus.url, routes, topics, since=since_at, until=until_at, source=source,
                         grace=grace_s)
    return JSONResponse(report.to_json())
