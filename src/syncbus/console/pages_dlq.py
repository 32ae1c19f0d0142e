"""Dead letters in the console: list with filters and paging, detail, edit, replay, discard, bulk actions.

Every action calls ``syncbus.dlq.operations`` -- the same code as ``syncbus
dlq`` and ``/dlq`` -- with the session's admin-key name as the actor, then
redirects (post/redirect/get) to a page that shows the outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..dlq.filters import FIELDS, DeadLetterFilter, FilterError, Page, list_page
from ..dlq.operations import (
    OperationError,
    Selection,
    discard_letters,
    edit_letter,
    mapping_versions,
    pretty_value,
    replay_letters,
)
from ..dlq.policy import replay_blocker
from ..dlq.trace_view import load_trace
from ..ingress.security import masker_for, principal_named
from ..state import DeadLetterConflict, DeadLetterNotFound
from ..state.models import REASONS, STATUSES, encode_value
from .format import at, details
from .pages_auth import guarded_post
from .web import (
    ConsoleRoute,
    base,
    current_session,
    error_page,
    field,
    redirect,
    render,
    runtime,
    see_other,
    to_login,
)

router = APIRouter(route_class=ConsoleRoute)

MAX_EDIT = 1024 * 1024
FORCE_HINT = 'the "force" box'


def _routes(request: Request) -> list[str]:
    """Route names for the filter's drop-down: what runs now, so the choice matches the routes page."""
    return sorted(getattr(runtime(request).project, "mappings", {}) or {})


@router.get("/dead-letters")
async def dead_letters(request: Request, limit: int = 50, offset: int = 0) -> Response:
    """The list with every filter of ``syncbus dlq list``; a bad filter shows the page again with the reason (400)."""
    session = await current_session(request)
    if session is None:
        return to_login(request)
    if not principal_named(request, session.name).allows("dlq:read"):
        return error_page(request, 403, f"the key {session.name!r} does not hold the scope 'dlq:read'", session)
    raw: dict[str, str | None] = {k: request.query_params.get(k) or "" for k in FIELDS}
    limit = min(max(limit, 1), 200)
    error = ""
    masker = masker_for(request, principal_named(request, session.name))
    try:
        flt = DeadLetterFilter.from_mapping(raw)
        page = await asyncio.to_thread(list_page, runtime(request).store, flt, limit, offset, masker)
    except FilterError as exc:
        error, flt, page = str(exc), DeadLetterFilter(), Page([], 0, offset, limit)

    def link(to_offset: int) -> str:
        return urlencode({**flt.raw, "limit": limit, "offset": max(0, to_offset)})

    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(request, "dead_letters.html", status=400 if error else 200, session=session, nav="dead-letters",
                  page=page, raw=raw, limit=limit, error=error, link=link, back=back, routes=_routes(request),
                  statuses=sorted(STATUSES), reasons=sorted(REASONS))


@router.get("/dead-letters/{dl_id}")
async def dead_letter(request: Request, dl_id: str) -> Response:
    """Everything needed to decide: the record, the error, every attempt (trace), the edit history and audit."""
    session = await current_session(request)
    if session is None:
        return to_login(request)
    principal = principal_named(request, session.name)
    if not principal.allows("dlq:read"):
        return error_page(request, 403, f"the key {session.name!r} does not hold the scope 'dlq:read'", session)
    rt = runtime(request)
    try:
        dl = await asyncio.to_thread(rt.store.get, dl_id)
    except DeadLetterNotFound:
        return error_page(request, 404, f"no dead letter with id {dl_id}", session)
    audit = await asyncio.to_thread(rt.store.audit, dl.id)
    masker = masker_for(request, principal)
    if masker is not None:  # a read-only key sees personal-data fields masked, here as in the API
        content_type = dl.headers.get("content-type")
        dl = masker.letter(dl)
        audit = [dataclasses.replace(a, details=masker.audit_entry({"details": a.details}, content_type)["details"])
                 for a in audit]
    view = await asyncio.to_thread(load_trace, rt.store, dl.record_id, masker)
    events = [e for e in (view or {}).get("events", []) if e["route"] in (None, dl.route)]
    versions = mapping_versions(rt.project)
    blocker = None
    if dl.status == "pending":
        found = await asyncio.to_thread(replay_blocker, rt.store, dl, versions)
        blocker = found.explain(FORCE_HINT) if found else None
    payload = pretty_value(dl)
    return render(request, "dead_letter.html", session=session, nav="dead-letters", dl=dl, audit=audit,
                  events=events, edits=[a for a in audit if a.action == "edit"], blocker=blocker,
                  payload=payload, rows=min(30, max(6, payload.count("\n") + 2)),
                  editable=(masker is None and encode_value(dl.value)[1] == "utf-8" and len(dl.value) <= MAX_EDIT
                            and principal.allows("dlq:write")),
                  current_version=versions.get(dl.route), details=details, at=at)


def _detail(request: Request, dl_id: str) -> Response:
    return see_other(f"{base(request)}/dead-letters/{dl_id}")


@router.post("/dead-letters/{dl_id}/edit")
async def edit(request: Request, dl_id: str) -> Response:
    """Save a fixed record value; the edit is what lets a schema/mapping failure be replayed without force."""
    guarded = await guarded_post(request)
    if isinstance(guarded, Response):
        return guarded
    session, form = guarded
    # browsers send a textarea's line breaks as CRLF; the record had LF
    value = field(form, "value").replace("\r\n", "\n").encode("utf-8")
    if len(value) > MAX_EDIT:
        session.flash("error", f"the new value is larger than {MAX_EDIT // 1024} KiB; use syncbus dlq edit")
        return _detail(request, dl_id)
    try:
        _, changed = await asyncio.to_thread(edit_letter, runtime(request).store, dl_id, value,
                                             actor=session.name, reason=field(form, "reason"))
    except DeadLetterNotFound:
        return error_page(request, 404, f"no dead letter with id {dl_id}", session)
    except (DeadLetterConflict, OperationError) as exc:
        session.flash("error", f"not edited: {exc}")
        return _detail(request, dl_id)
    session.flash("ok", "edited: replay it to send the new value" if changed else "nothing changed")
    return _detail(request, dl_id)


async def _replay(request: Request, session: Any, selection: Selection, reason: str, force: bool) -> Any:
    rt = runtime(request)
    return await replay_letters(rt.store, rt.bus, selection, actor=session.name,
                                reason=reason or "replayed in the console", versions=mapping_versions(rt.project),
                                force=force, override=FORCE_HINT)


def _flash_bulk(session: Any, bulk: Any, single: bool) -> None:
    """Tell the person what happened: one line for one letter, a summary and the first failures for many."""
    if single:
        [result] = bulk.results
        if result.ok:
            verb = "replayed: the record is back on the bus" if bulk.action == "replay" else "discarded"
            session.flash("ok", verb)
        else:
            session.flash("error", f"not {bulk.action}ed: {result.message}")
        return
    session.flash("ok" if bulk.ok else "error", bulk.summary(FORCE_HINT))
    for result in [r for r in bulk.results if not r.ok][:5]:
        session.flash("error", result.message)


@router.post("/dead-letters/{dl_id}/replay")
async def replay(request: Request, dl_id: str) -> Response:
    """Replay one letter through the shared guard (needs-fix letters only with the force box)."""
    guarded = await guarded_post(request)
    if isinstance(guarded, Response):
        return guarded
    session, form = guarded
    try:
        bulk = await _replay(request, session, Selection((dl_id,)), field(form, "reason"),
                             field(form, "force") == "on")
    except OperationError as exc:
        session.flash("error", f"not replayed: {exc}")
        return _detail(request, dl_id)
    _flash_bulk(session, bulk, single=True)
    return _detail(request, dl_id)


@router.post("/dead-letters/{dl_id}/discard")
async def discard(request: Request, dl_id: str) -> Response:
    """Discard one letter; a reason is required here because the console has no other way to ask why."""
    guarded = await guarded_post(request)
    if isinstance(guarded, Response):
        return guarded
    session, form = guarded
    reason = field(form, "reason").strip()
    if not reason:
        session.flash("error", "not discarded: give a reason (it is audited)")
        return _detail(request, dl_id)
    try:
        bulk = await asyncio.to_thread(discard_letters, runtime(request).store, Selection((dl_id,)),
                                       actor=session.name, reason=reason)
    except OperationError as exc:
        session.flash("error", f"not discarded: {exc}")
        return _detail(request, dl_id)
    _flash_bulk(session, bulk, single=True)
    return _detail(request, dl_id)


@router.post("/dead-letters/bulk")
async def bulk(request: Request) -> Response:
    """Replay or discard the letters ticked on the list page, then back to the same list (filters kept)."""
    guarded = await guarded_post(request)
    if isinstance(guarded, Response):
        return guarded
    session, form = guarded
    back = field(form, "back")
    target = back if back.startswith(base(request) + "/dead-letters") and "\\" not in back else None
    done = see_other(target) if target else redirect(request, "/dead-letters")
    action, reason = field(form, "action"), field(form, "reason").strip()
    ids = form.get("id", [])
    if action not in ("replay", "discard"):
        session.flash("error", "choose replay or discard")
        return done
    if not ids:
        session.flash("error", "select at least one pending dead letter")
        return done
    if not reason:
        session.flash("error", f"not {action}ed: give a reason (it is audited)")
        return done
    try:
        selection = Selection.of(ids, None)
        if action == "replay":
            result = await _replay(request, session, selection, reason, field(form, "force") == "on")
        else:
            result = await asyncio.to_thread(discard_letters, runtime(request).store, selection,
                                             actor=session.name, reason=reason)
    except OperationError as exc:
        session.flash("error", f"not {action}ed: {exc}")
        return done
    _flash_bulk(session, result, single=False)
    return done
