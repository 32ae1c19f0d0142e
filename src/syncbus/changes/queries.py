"""Read-only queries over outcomes, trace events and dead letters for the effect report.

Kept beside the report rather than in the store mixins: they serve one
report, read tables other parts own, and never write. They run on the
store's own transactions (``_tx``), so SQLite and PostgreSQL behave alike and
encrypted trace details are opened the way ``TraceStore.trace`` opens them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..state import crypto
from ..state.models import as_utc
from ..state.tables import dead_letters, record_outcomes, trace_events

CHUNK = 500
STAGES = ("mapped", "attempt", "delivered", "replayed")


@dataclass(frozen=True, slots=True)
class Letter:
    id: str
    route: str
    record_id: str
    first_failed_at: datetime
    status: str
    status_at: datetime | None
    mapping_version: int
    replay_of: str | None


def outcomes(store: Any, start: datetime, end: datetime, routes: Sequence[str] | None
             ) -> Iterator[tuple[str, str, str, datetime]]:
    """(route, record_id, outcome, at) finished in [start, end)."""
    t = record_outcomes.c
    query = select(t.route, t.record_id, t.outcome, t.at).where(t.at >= as_utc(start), t.at < as_utc(end))
    if routes:
        query = query.where(t.route.in_(list(routes)))
    with store._tx() as conn:
        yield from ((r.route, r.record_id, r.outcome, as_utc(r.at)) for r in conn.execute(query))


def route_events(store: Any, start: datetime, end: datetime, routes: Sequence[str] | None
                 ) -> Iterator[tuple[str, str, str, datetime, dict[str, Any]]]:
    """(route, record_id, stage, at, detail) of the stages the report reads, in [start, end)."""
    t = trace_events.c
    query = (select(t.route, t.record_id, t.stage, t.at, t.detail)
             .where(t.at >= as_utc(start), t.at < as_utc(end), t.stage.in_(STAGES)).order_by(t.at, t.seq))
    if routes:
        query = query.where(t.route.in_(list(routes)))
    with store._tx(engine=store._trace_engine) as conn:
        for r in conn.execute(query):
            detail = crypto.open_json(r.detail or {}) if r.stage in ("mapped", "attempt") else {}
            yield r.route, r.record_id, r.stage, as_utc(r.at), dict(detail or {})


def received_at(store: Any, record_ids: Sequence[str]) -> dict[str, datetime]:
    """When each record was accepted (its ``received`` trace event)."""
    t = trace_events.c
    out: dict[str, datetime] = {}
    ids = list(record_ids)
    with store._tx(engine=store._trace_engine) as conn:
        for i in range(0, len(ids), CHUNK):
            query = select(t.record_id, t.at).where(t.stage == "received", t.record_id.in_(ids[i:i + CHUNK]))
            for rid, at in conn.execute(query):
                at = as_utc(at)
                if rid not in out or at < out[rid]:
                    out[rid] = at
    return out


def letters(store: Any, start: datetime, end: datetime, routes: Sequence[str] | None
            ) -> tuple[list[Letter], dict[str, Letter]]:
    """(dead letters first failed in [start, end), every letter by id including their replay chains' origins)."""
    t = dead_letters.c
    cols = (t.id, t.route, t.record_id, t.first_failed_at, t.status, t.status_at, t.mapping_version, t.replay_of)
    query = select(*cols).where(t.first_failed_at >= as_utc(start), t.first_failed_at < as_utc(end))
    if routes:
        query = query.where(t.route.in_(list(routes)))
    with store._tx() as conn:
        in_range = [_letter(r) for r in conn.execute(query)]
        by_id = {d.id: d for d in in_range}
        missing = {d.replay_of for d in in_range if d.replay_of and d.replay_of not in by_id}
        while missing:
            batch = list(missing)[:CHUNK]
            missing -= set(batch)
            for d in (_letter(r) for r in conn.execute(select(*cols).where(t.id.in_(batch)))):
                by_id[d.id] = d
                if d.replay_of and d.replay_of not in by_id:
                    missing.add(d.replay_of)
    return in_range, by_id


def _letter(r: Any) -> Letter:
    return Letter(r.id, r.route, r.record_id, as_utc(r.first_failed_at), r.status,
                  as_utc(r.status_at) if r.status_at else None, int(r.mapping_version), r.replay_of)
