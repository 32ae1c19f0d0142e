"""Dead letters and their audit trail: a compare-and-set state machine.

Every status change is one transition of ``models.TRANSITIONS`` made in one
transaction that re-reads the row under the write lock (SQLite ``BEGIN
IMMEDIATE``, PostgreSQL ``FOR UPDATE``), so of two concurrent operations on
one dead letter exactly one wins and the other is told the current status
(:class:`DeadLetterConflict`, HTTP 409) -- never both, never a 500.

Replays go pending → replaying (before the record is published, so a replay
that fails again at once can never merge into the letter it came from) →
replayed (published). The router resolves open letters when the record is
later delivered (status ``delivered``, audited as the system); a replay that
fails again becomes a NEW pending letter with ``replay_of`` set, so history
stays and the record never disappears.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from . import crypto  # issue 12: payloads encrypted at rest (SYNCBUS_DATA_KEYS); legacy rows pass through
from .db import Database, StoreError
from .deadletter_search import EDITED, NEWEST_FIRST, SearchView, matching_ids
from .models import (
    OPEN_STATUSES,
    REASONS,
    STATUSES,
    TRANSITIONS,
    AuditEntry,
    DeadLetter,
    as_utc,
    encode_value,
    storable,
    utcnow,
)
from .tables import dead_letters, dlq_audit

SYSTEM_ACTOR = "system"

MAX_IDS_PER_STATEMENT = 500


class DeadLetterNotFound(StoreError):
    """No dead letter has this id."""

    def __init__(self, dl_id: str) -> None:
        self.id = dl_id
        super().__init__(f"no dead letter with id {dl_id!r}")


class DeadLetterConflict(StoreError):
    """The dead letter is not in the status the operation needs; ``status`` is what it is now."""

    def __init__(self, dl_id: str, status: str, wanted: str) -> None:
        self.id = dl_id
        self.status = status
        super().__init__(f"dead letter {dl_id} is {status}, not {wanted}")


def row_to_dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(id=row.id, route=row.route, reason=row.reason, error=crypto.open_text(row.error) or "",
                      attempts=row.attempts,
                      first_failed_at=row.first_failed_at, last_failed_at=row.last_failed_at,
                      status=row.status, status_at=row.status_at, mapping_version=row.mapping_version,
                      sink=row.sink, record_id=row.record_id, topic=row.topic, partition=row.partition,
                      offset=row.offset, key=row.key, value=crypto.open(bytes(row.value)),  # issue 12
                      headers=dict(row.headers or {}),
                      replay_of=row.replay_of, edited=bool(getattr(row, "edited", False)))


def _chunks(items: Sequence[str], size: int = MAX_IDS_PER_STATEMENT) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class DeadLetterStore(Database):
    """The dead-letter part of the state store."""

    # -- writing a dead letter -------------------------------------------------

    def add(self, dl: DeadLetter) -> str:
        """Store a dead letter; returns the id of the pending letter that now holds the failure.

        A record that fails again while a letter for it (same route and sink) is
        still pending -- e.g. re-processed after a crash -- does not get a second
        one: the pending one gets the attempts added and the latest error. A
        replay that fails again gets a new letter linked by ``replay_of``; the
        letter it came from, if still ``replaying``, becomes ``replayed``.
        """
        if dl.reason not in REASONS:
            raise StoreError(f"dead letter for route {dl.route!r}: unknown reason {dl.reason!r} "
                             f"(expected one of {', '.join(sorted(REASONS))})")
        if dl.status != "pending":
            raise StoreError(f"dead letter for route {dl.route!r}: a new dead letter is pending, not {dl.status!r}")
        if not dl.route or not dl.record_id:
            raise StoreError("a dead letter needs a route and a record_id")
        for attempt in range(3):
            try:
                with self._tx(write=True) as conn:
                    return self._add(conn, dl)
            except StoreError as e:
                # Another writer inserted the pending entry between our check and insert
                # (possible only on databases without BEGIN IMMEDIATE): merge into it instead.
                if isinstance(e.__cause__, IntegrityError) and attempt < 2:
                    continue
                raise
        raise StoreError(f"dead letter for route {dl.route!r}, record {dl.record_id!r}: could not be stored")

    def _add(self, conn: Connection, dl: DeadLetter) -> str:
        sink_match = dead_letters.c.sink.is_(None) if dl.sink is None else dead_letters.c.sink == dl.sink
        existing = conn.execute(self._lock(select(dead_letters.c.id).where(
            dead_letters.c.route == dl.route, dead_letters.c.record_id == dl.record_id, sink_match,
            dead_letters.c.status == "pending"))).first()
        now = utcnow()
        if existing is not None:
            conn.execute(update(dead_letters).where(dead_letters.c.id == existing.id).values(
                attempts=dead_letters.c.attempts + dl.attempts, last_failed_at=dl.last_failed_at,
                error=crypto.seal_text(storable(dl.error)), reason=dl.reason, mapping_version=dl.mapping_version))
            return str(existing.id)
        if dl.replay_of:
            # The replay's own letter is done: the record was replayed and failed again.
            origin = conn.execute(self._lock(select(dead_letters.c.status).where(
                dead_letters.c.id == dl.replay_of))).first()
            if origin is not None and origin.status == "replaying":
                conn.execute(update(dead_letters).where(dead_letters.c.id == dl.replay_of).values(
                    status="replayed", status_at=now))
        conn.execute(insert(dead_letters).values(
            id=dl.id, route=dl.route, reason=dl.reason, error=crypto.seal_text(storable(dl.error)),
            attempts=dl.attempts,
            first_failed_at=dl.first_failed_at, last_failed_at=dl.last_failed_at, status="pending",
            status_at=now, mapping_version=dl.mapping_version, sink=dl.sink, record_id=dl.record_id,
            topic=dl.topic, partition=dl.partition, offset=dl.offset, key=storable(dl.key),
            value=crypto.seal(dl.value),  # issue 12
            headers={storable(k): storable(v) for k, v in dl.headers.items()}, replay_of=dl.replay_of))
        return dl.id

    # -- reading ---------------------------------------------------------------

    def get(self, id: str) -> DeadLetter:
        with self._tx() as conn:
            row = conn.execute(select(dead_letters, EDITED).where(dead_letters.c.id == id)).first()
        if row is None:
            raise DeadLetterNotFound(id)
        return row_to_dead_letter(row)

    def list(self, route: str | None = None, status: str | None = None, since: datetime | None = None,
             limit: int = 100, offset: int = 0, *, reason: str | None = None, sink: str | None = None,
             until: datetime | None = None, key: str | None = None, text: str | None = None,
             view: SearchView | None = None) -> builtins.list[DeadLetter]:
        """Newest failure first; ``since``/``until`` filter on the last failure time, ``text`` searches payload
        and error (encrypted payloads too, and only what ``view`` shows: ``deadletter_search.py``)."""
        return self.page(limit, offset, route=route, status=status, since=since, reason=reason, sink=sink,
                         until=until, key=key, text=text, view=view, total=False)[0]

    def count(self, route: str | None = None, status: str | None = None, since: datetime | None = None, *,
              reason: str | None = None, sink: str | None = None, until: datetime | None = None,
              key: str | None = None, text: str | None = None, view: SearchView | None = None) -> int:
        """How many ``list`` would return without a limit (for paging)."""
        return self.page(0, 0, route=route, status=status, since=since, reason=reason, sink=sink, until=until,
                         key=key, text=text, view=view)[1]

    def page(self, limit: int = 100, offset: int = 0, *, route: str | None = None, status: str | None = None,
             since: datetime | None = None, reason: str | None = None, sink: str | None = None,
             until: datetime | None = None, key: str | None = None, text: str | None = None,
             view: SearchView | None = None, total: bool = True) -> tuple[builtins.list[DeadLetter], int]:
        """``list`` and ``count`` at once: a text search (which may open every encrypted row) runs once."""
        conds = self._filters(route, status, since, reason=reason, sink=sink, until=until, key=key)
        offset, limit = max(0, offset), max(0, limit)
        with self._tx() as conn:
            if text:
                ids = matching_ids(conn, conds, text, self.is_sqlite, view)
                wanted = ids[offset:offset + limit]
                rows = {r.id: r for chunk in _chunks(wanted)
                        for r in conn.execute(select(dead_letters, EDITED).where(dead_letters.c.id.in_(chunk)))}
                return [row_to_dead_letter(rows[i]) for i in wanted if i in rows], len(ids)
            query = select(dead_letters, EDITED).where(*conds).order_by(*NEWEST_FIRST).limit(limit).offset(offset)
            items = [row_to_dead_letter(r) for r in conn.execute(query)] if limit else []
            n = int(conn.execute(select(func.count()).select_from(dead_letters).where(*conds)).scalar_one()) \
                if total else len(items)
        return items, n

    def letters_of_record(self, record_id: str) -> builtins.list[DeadLetter]:
        """Every dead letter of one record (any route, any status): what a masked trace needs to know."""
        with self._tx() as conn:
            return [row_to_dead_letter(r) for r in conn.execute(
                select(dead_letters, EDITED).where(dead_letters.c.record_id == record_id))]

    def _filters(self, route: str | None, status: str | None, since: datetime | None, *, reason: str | None = None,
                 sink: str | None = None, until: datetime | None = None,
                 key: str | None = None) -> builtins.list[Any]:
        conds: list[Any] = []
        if route is not None:
            conds.append(dead_letters.c.route == route)
        if status is not None:
            if status not in STATUSES:
                raise StoreError(f"unknown dead-letter status {status!r} "
                                 f"(expected one of {', '.join(sorted(STATUSES))})")
            conds.append(dead_letters.c.status == status)
        if reason is not None:
            if reason not in REASONS:
                raise StoreError(f"unknown dead-letter reason {reason!r} "
                                 f"(expected one of {', '.join(sorted(REASONS))})")
            conds.append(dead_letters.c.reason == reason)
        if sink is not None:
            conds.append(dead_letters.c.sink == sink)
        if since is not None:
            conds.append(dead_letters.c.last_failed_at >= as_utc(since))
        if until is not None:
            conds.append(dead_letters.c.last_failed_at < as_utc(until))
        if key is not None:
            conds.append(dead_letters.c.key == key)
        return conds

    def pending_summary(self) -> tuple[dict[str, int], dict[str, float]]:
        """Per route: how many letters are pending, and when the oldest of them first failed (epoch s)."""
        query = (select(dead_letters.c.route, func.count(), func.min(dead_letters.c.first_failed_at))
                 .where(dead_letters.c.status == "pending").group_by(dead_letters.c.route))
        counts: dict[str, int] = {}
        oldest: dict[str, float] = {}
        with self._tx() as conn:
            for route, n, first in conn.execute(query):
                counts[route] = int(n)
                # min() bypasses the column type on SQLite: it may come back as text
                at = datetime.fromisoformat(first) if isinstance(first, str) else first
                oldest[route] = as_utc(at).timestamp()
        return counts, oldest

    def count_pending(self) -> dict[str, int]:
        query = (select(dead_letters.c.route, func.count()).where(dead_letters.c.status == "pending")
                 .group_by(dead_letters.c.route))
        with self._tx() as conn:
            return {route: int(n) for route, n in conn.execute(query)}

    # -- operations ------------------------------------------------------------

    def edit(self, id: str, value: bytes, actor: str, reason: str) -> DeadLetter:
        """Replace the value of a pending dead letter (e.g. fix a bad field before replaying)."""
        if not isinstance(value, bytes | bytearray):
            raise StoreError(f"dead letter {id}: the new value must be bytes, got {type(value).__name__}")
        with self._tx(write=True) as conn:
            [row] = self._rows_in(conn, [id], "pending")
            before, before_enc = encode_value(crypto.open(bytes(row.value)))  # issue 12
            after, after_enc = encode_value(bytes(value))
            conn.execute(update(dead_letters).where(dead_letters.c.id == id).values(
                value=crypto.seal(bytes(value))))  # issue 12
            self._audit(conn, [id], "edit", actor, reason, crypto.seal_json({  # issue 12: the edit holds payloads
                "before": before, "before_encoding": before_enc, "after": after, "after_encoding": after_enc}))
        return self.get(id)

    def transition(self, ids: Iterable[str], frm: str, to: str, action: str, actor: str, reason: str,
                   details: dict[str, Any] | None = None) -> builtins.list[DeadLetter]:
        """Compare-and-set ``frm → to`` for every id, all or nothing, audited.

        Raises :class:`DeadLetterNotFound` or :class:`DeadLetterConflict` (for the
        first id that is not in ``frm``), changing nothing.
        """
        if (frm, to) not in TRANSITIONS:
            raise StoreError(f"dead letters cannot go from {frm} to {to}")
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        now = utcnow()
        with self._tx(write=True) as conn:
            self._rows_in(conn, wanted, frm)
            for chunk in _chunks(wanted):
                conn.execute(update(dead_letters).where(dead_letters.c.id.in_(chunk)).values(
                    status=to, status_at=now))
            self._audit(conn, wanted, action, actor, reason, details or {})
            rows = conn.execute(select(dead_letters).where(dead_letters.c.id.in_(wanted))).all()
        by_id = {r.id: row_to_dead_letter(r) for r in rows}
        return [by_id[i] for i in wanted]

    def begin_replay(self, id: str, actor: str, reason: str) -> DeadLetter:
        """pending → replaying: the caller owns the replay and must publish, then :meth:`end_replay`."""
        [dl] = self.transition([id], "pending", "replaying", "replay", actor, reason)
        return dl

    def end_replay(self, id: str, details: dict[str, Any]) -> None:
        """replaying → replayed once the record is back on the bus.

        The router may have been faster (delivered it, or failed it again into a
        new letter): then the letter already moved on and nothing is changed.
        """
        now = utcnow()
        with self._tx(write=True) as conn:
            result = conn.execute(update(dead_letters).where(
                dead_letters.c.id == id, dead_letters.c.status == "replaying").values(
                status="replayed", status_at=now))
            self._audit(conn, [id], "replayed", SYSTEM_ACTOR, "the record is back on the bus",
                        {**details, "status_changed": result.rowcount > 0})

    def abort_replay(self, id: str, error: str) -> None:
        """replaying → pending: the publish failed, nothing was replayed."""
        with self._tx(write=True) as conn:
            conn.execute(update(dead_letters).where(
                dead_letters.c.id == id, dead_letters.c.status == "replaying").values(
                status="pending", status_at=utcnow()))
            self._audit(conn, [id], "revert", SYSTEM_ACTOR, "the replay could not be published",
                        {"error": error[:1000]})

    def discard(self, ids: Iterable[str], actor: str, reason: str,
                details: dict[str, Any] | None = None) -> builtins.list[DeadLetter]:
        """pending → discarded, all or nothing."""
        return self.transition(ids, "pending", "discarded", "discard", actor, reason, details)

    def resolve_delivered(self, route: str, record_ids: Sequence[str], sink: str | None = None) -> builtins.list[str]:
        """Open letters of these records on this route become ``delivered`` (the record got through).

        With ``sink``, only that sink's letters (one target of a fan-out got
        through); without, every open letter of the record on the route.
        Returns the ids resolved.
        """
        if not record_ids:
            return []
        with self._tx(write=True) as conn:
            return self._resolve(conn, route, record_ids, sink)

    def _resolve(self, conn: Connection, route: str, record_ids: Sequence[str],
                 sink: str | None) -> builtins.list[str]:
        resolved: list[str] = []
        now = utcnow()
        for chunk in _chunks(list(record_ids)):
            query = select(dead_letters.c.id).where(
                dead_letters.c.route == route, dead_letters.c.record_id.in_(chunk),
                dead_letters.c.status.in_(sorted(OPEN_STATUSES)))
            if sink is not None:
                query = query.where(dead_letters.c.sink == sink)
            ids = [r.id for r in conn.execute(self._lock(query))]
            if not ids:
                continue
            conn.execute(update(dead_letters).where(dead_letters.c.id.in_(ids)).values(
                status="delivered", status_at=now))
            self._audit(conn, ids, "resolve", SYSTEM_ACTOR, "the record was delivered", {})
            resolved.extend(ids)
        return resolved

    def latest_letters(self, record_ids: Sequence[str]) -> dict[tuple[str, str], DeadLetter]:
        """(route, record id) → its newest dead letter, for the ledger."""
        out: dict[tuple[str, str], DeadLetter] = {}
        ids = list(record_ids)
        with self._tx() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(select(dead_letters).where(dead_letters.c.record_id.in_(chunk))
                                    .order_by(dead_letters.c.first_failed_at, dead_letters.c.status_at))
                for r in rows:
                    out[(r.route, r.record_id)] = row_to_dead_letter(r)
        return out

    def revert_stale_replays(self, older_than: datetime) -> builtins.list[str]:
        """replaying → pending for replays whose publish never finished (the replaying process died)."""
        with self._tx(write=True) as conn:
            ids = [r.id for r in conn.execute(self._lock(select(dead_letters.c.id).where(
                dead_letters.c.status == "replaying", dead_letters.c.status_at < as_utc(older_than))))]
            if ids:
                conn.execute(update(dead_letters).where(dead_letters.c.id.in_(ids),
                                                        dead_letters.c.status == "replaying").values(
                    status="pending", status_at=utcnow()))
                self._audit(conn, ids, "revert", SYSTEM_ACTOR, "the replay did not finish in time", {})
        return ids

    def _rows_in(self, conn: Connection, ids: Sequence[str], status: str) -> builtins.list[Any]:
        rows: dict[str, Any] = {}
        for chunk in _chunks(list(ids)):
            rows.update({r.id: r for r in conn.execute(self._lock(
                select(dead_letters).where(dead_letters.c.id.in_(chunk))))})
        for i in ids:
            row = rows.get(i)
            if row is None:
                raise DeadLetterNotFound(i)
            if row.status != status:
                raise DeadLetterConflict(i, row.status, status)
        return [rows[i] for i in ids]

    @staticmethod
    def _audit(conn: Connection, ids: Sequence[str], action: str, actor: str, reason: str,
               details: dict[str, Any]) -> None:
        at = utcnow()
        actor, reason = storable(actor) or "unknown", storable(reason) or ""
        conn.execute(insert(dlq_audit), [
            {"dead_letter_id": i, "action": action, "actor": actor, "reason": reason, "at": at, "details": details}
            for i in ids])

    def audit(self, id: str | None = None, limit: int | None = None, *, since: datetime | None = None,
              actor: str | None = None, action: str | None = None) -> builtins.list[AuditEntry]:
        """Oldest first; every dead letter's when ``id`` is None."""
        query = select(dlq_audit).order_by(dlq_audit.c.at, dlq_audit.c.seq)
        if id is not None:
            query = query.where(dlq_audit.c.dead_letter_id == id)
        if since is not None:
            query = query.where(dlq_audit.c.at >= as_utc(since))
        if actor is not None:
            query = query.where(dlq_audit.c.actor == actor)
        if action is not None:
            query = query.where(dlq_audit.c.action == action)
        if limit is not None:
            query = query.limit(limit)
        with self._tx() as conn:
            return [AuditEntry(id=r.seq, dead_letter_id=r.dead_letter_id, action=r.action, actor=r.actor,
                               reason=r.reason, at=r.at,
                               details=dict(crypto.open_json(r.details or {})))  # issue 12
                    for r in conn.execute(query)]


__all__ = [
    "STATUSES",
    "SYSTEM_ACTOR",
    "DeadLetterConflict",
    "DeadLetterNotFound",
    "DeadLetterStore",
    "row_to_dead_letter",
]
