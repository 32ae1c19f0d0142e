"""The console's read-only pages: routes, audit, trace, the interface catalogue, the ledger."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..dlq.filters import FilterError, parse_time
from ..dlq.operations import ACTIONS, list_audit
from ..dlq.trace_view import load_trace
from ..ingress.security import masker_for, principal_named
from ..units import parse_duration
from .format import at, details, seconds, when
from .metrics_view import route_rows
from .sanitize import sanitize
from .web import ConsoleRoute, current_session, render, runtime, state, to_login

log = logging.getLogger(__name__)
router = APIRouter(route_class=ConsoleRoute)

AUDIT_LIMIT = 1000
LEDGER_GRACE = "10m"


@router.get("/routes")
async def routes(request: Request) -> Response:
    """Per route: rate, errors, p95, lag, pending letters, owner, version, last success -- from the metrics."""
    session = await current_session(request)
    if session is None:
        return to_login(request)
    rt = runtime(request)
    loaded = {name: (m.version, getattr(m.spec, "owner", "")) for name, m in rt.project.mappings.items()}
    rows = route_rows(rt.metrics.registry, loaded, state(request).rates)
    return render(request, "routes.html", session=session, nav="routes", rows=rows, seconds=seconds, when=when)


@router.get("/audit")
async def audit(request: Request) -> Response:
    """Every action on dead letters, newest first; defaults to the last 24 hours so the page stays small."""
    session = await current_session(request)
    if session is None:
        return to_login(request)
    raw = {k: (request.query_params.get(k) or "").strip() for k in ("id", "actor", "action", "since")}
    if "since" not in request.query_params:
        raw["since"] = "24h"
    entries: list[Any] = []
    error = ""
    try:
        since = parse_time(raw["since"], "since") if raw["since"] else None
        entries = await asyncio.to_thread(list_audit, runtime(request).store, dl_id=raw["id"] or None,
                                          actor=raw["actor"] or None, action=raw["action"] or None, since=since,
                                          limit=AUDIT_LIMIT)
    except FilterError as exc:
        error = str(exc)
    return render(request, "audit.html", status=400 if error else 200, session=session, nav="audit",
                  entries=list(reversed(entries)), truncated=len(entries) >= AUDIT_LIMIT, raw=raw, error=error,
                  actions=sorted(ACTIONS))


@router.get("/trace")
async def trace(request: Request) -> Response:
    """The life of one record (or of a dead letter's record), as ``syncbus trace``."""
    session = await current_session(request)
    if session is None:
        return to_login(request)
    query = (request.query_params.get("id") or "").strip()[:200]
    masker = masker_for(request, principal_named(request, session.name))  # as the API shows it to this key
    view = await asyncio.to_thread(load_trace, runtime(request).store, query, masker) if query else None
    return render(request, "trace.html", session=session, nav="trace", query=query, view=view, details=details, at=at)


def catalogue(project: Any) -> tuple[str, str]:
    """(kind, content): sanitized HTML, else Markdown (shown preformatted), else ("none", "").

    The catalogue module is being rewritten, so its functions are looked up
    and called defensively: whatever it raises, the console shows the rest.
    """
    try:
        from ..mapping import catalog as module
    except Exception:
        log.exception("the interface catalogue module cannot be imported")
        return "none", ""
    build = getattr(module, "build_catalog", None)
    if build is None:
        return "none", ""
    mappings = list(project.mappings.values())
    try:
        try:
            entries = build(mappings, project.connectors)
        except TypeError:
            entries = build(mappings)
    except Exception:
        log.exception("the interface catalogue cannot be built")
        return "none", ""
    for kind, name in (("html", "render_html"), ("markdown", "render_markdown")):
        render_fn = getattr(module, name, None)
        if render_fn is None:
            continue
        try:
            text = str(render_fn(entries))
        except Exception:
            log.exception("the interface catalogue cannot be rendered by %s", name)
            continue
        return kind, sanitize(text) if kind == "html" else text
    return "none", ""


@router.get("/catalog")
async def catalog(request: Request) -> Response:
    """The interface catalogue as generated from the running files (sanitized HTML, or Markdown as text)."""
    session = await current_session(request)
    if session is None:
        return to_login(request)
    kind, content = await asyncio.to_thread(catalogue, runtime(request).project)
    return render(request, "catalog.html", session=session, nav="catalog", kind=kind, content=content)


@router.get("/ledger")
async def ledger(request: Request) -> Response:
    """Counts of every accepted record's fate (``syncbus ledger``): the proof that nothing was lost."""
    session = await current_session(request)
    if session is None:
        return to_login(request)
    from ..ledger import FATES, build, scope

    rt = runtime(request)
    sources = sorted(rt.project.connectors.sources)
    since = (request.query_params.get("since") or "24h").strip()[:64]
    source = (request.query_params.get("source") or "").strip() or None
    report, error = None, ""
    if source is not None and source not in sources:
        error = f"no source named {source!r}"
    else:
        try:
            since_at = parse_time(since, "since").timestamp()
            routes, topics = scope(rt.project, source)
            report = await build(rt.store, rt.bus.url, routes, topics, since=since_at, source=source,
                                 grace=parse_duration(LEDGER_GRACE))
        except FilterError as exc:
            error = str(exc)
    return render(request, "ledger.html", status=400 if error else 200, session=session, nav="ledger",
                  report=report, error=error, since=since, source=source or "", sources=sources, fates=FATES)
