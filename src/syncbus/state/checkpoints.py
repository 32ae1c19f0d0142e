"""Poll-source checkpoints (the durable cursor) and schedule slots (each slot runs once).

Two small tables:

* ``source_checkpoints``: one JSON cursor per source. The poll runner writes
  it only after the bus acknowledged every record of the page it covers, so
  a restart resumes exactly after what is safely on the bus.
* ``source_slots``: one row per (source, slot) that some node claimed. The
  primary key makes the claim atomic across processes and nodes: on SQLite
  the write transaction (``BEGIN IMMEDIATE``) serialises claimers, on
  PostgreSQL the losing insert fails on the key and reads the winner. A
  running node renews its claim (``renew_slot``); a claim not renewed for
  ``lease`` seconds belongs to a node that died and can be taken over, and a
  node stopping mid-run gives its claim back (``release_slot``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, Column, String, Table, Text, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .db import Database, StoreError
from .models import as_utc, utcnow
from .tables import UTCDateTime, metadata

DEFAULT_LEASE_S = 120.0  # a claim not renewed for this long belongs to a dead node (runners renew it)
MAX_DETAIL = 2000

source_checkpoints = Table(
    "source_checkpoints", metadata,
    Column("source", String(200), primary_key=True),
    Column("cursor", JSON, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

source_slots = Table(
    "source_slots", metadata,
    Column("source", String(200), primary_key=True),
    Column("slot", UTCDateTime, primary_key=True),
    Column("node", String(200), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("ok", Boolean, nullable=True),
    Column("detail", Text, nullable=False, server_default=""),
)


class CheckpointError(StoreError):
    """A cursor cannot be stored (it is not JSON-serialisable)."""


@dataclass(frozen=True, slots=True)
class SlotRun:
    """One claimed slot, as ``slots()`` lists them (newest first)."""

    source: str
    slot: datetime
    node: str
    claimed_at: datetime
    finished_at: datetime | None
    ok: bool | None
    detail: str


def _check_cursor(source: str, cursor: Any) -> None:
    try:
        json.dumps(cursor, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint of source {source!r}: the cursor {cursor!r} is not "
                              f"JSON-serialisable ({exc}); return text, numbers, lists or maps") from None


def _as_datetime(value: datetime | str) -> datetime:
    # SQLite's max() returns the stored text: the aggregate bypasses the column type
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


class CheckpointStore(Database):
    """The checkpoint part of the state store."""

    # -- cursors -------------------------------------------------------------------

    def get_checkpoint(self, source: str) -> Any | None:
        """The stored cursor, or None when the source never stored one."""
        with self._tx() as conn:
            row = conn.execute(select(source_checkpoints.c.cursor).where(
                source_checkpoints.c.source == source)).first()
        return None if row is None else row.cursor

    def put_checkpoint(self, source: str, cursor: Any) -> None:
        """Store ``cursor`` as the source's position (insert or replace)."""
        _check_cursor(source, cursor)
        with self._tx(write=True) as conn:
            self._write_cursor(conn, source, cursor)

    def merge_checkpoint(self, source: str, cursor: Any, later: Callable[[Any | None, Any], Any]) -> Any:
        """Store ``later(stored, cursor)`` in one transaction; returns what was stored.

        For a full load that finishes beside a running node: the cursor
        becomes the furthest of the two, never goes back.
        """
        _check_cursor(source, cursor)
        for _ in range(3):
            try:
                with self._tx(write=True) as conn:
                    row = conn.execute(self._lock(select(source_checkpoints.c.cursor).where(
                        source_checkpoints.c.source == source))).first()
                    merged = later(None if row is None else row.cursor, cursor)
                    _check_cursor(source, merged)
                    self._write_cursor(conn, source, merged, exists=row is not None)
                    return merged
            except StoreError as e:
                if not isinstance(e.__cause__, IntegrityError):  # lost an insert race: read again
                    raise
        raise StoreError(f"checkpoint of source {source!r}: could not be stored")

    def _write_cursor(self, conn: Connection, source: str, cursor: Any, exists: bool | None = None) -> None:
        now = utcnow()
        if exists is None:
            exists = conn.execute(self._lock(select(source_checkpoints.c.source).where(
                source_checkpoints.c.source == source))).first() is not None
        if exists:
            conn.execute(update(source_checkpoints).where(source_checkpoints.c.source == source).values(
                cursor=cursor, updated_at=now))
        else:
            conn.execute(insert(source_checkpoints).values(source=source, cursor=cursor, updated_at=now))

    # -- slots ---------------------------------------------------------------------

    def claim_slot(self, source: str, slot: datetime, node: str, *, lease: float = DEFAULT_LEASE_S) -> bool:
        """True when this call claimed ``slot`` for ``node``: run it. False: someone else has or had it.

        A finished slot is never claimed again. An unfinished one is taken over
        by the same node, or by anyone once ``lease`` seconds passed since it
        was claimed or renewed (its node died).
        """
        slot = as_utc(slot)
        now = utcnow()
        try:
            with self._tx(write=True) as conn:
                row = conn.execute(self._lock(select(source_slots).where(
                    source_slots.c.source == source, source_slots.c.slot == slot))).first()
                if row is None:
                    conn.execute(insert(source_slots).values(source=source, slot=slot, node=node, claimed_at=now,
                                                             detail=""))
                    return True
                stale = as_utc(row.claimed_at) < now - timedelta(seconds=lease)  # claimed_at = last renewal
                if row.finished_at is not None or not (row.node == node or stale):
                    return False
                conn.execute(update(source_slots).where(
                    source_slots.c.source == source, source_slots.c.slot == slot).values(node=node, claimed_at=now))
                return True
        except StoreError as e:
            if isinstance(e.__cause__, IntegrityError):  # another node inserted it first
                return False
            raise

    def renew_slot(self, source: str, slot: datetime, node: str) -> bool:
        """Heartbeat of a long run: push the lease forward. False when the claim is no longer ours."""
        with self._tx(write=True) as conn:
            return conn.execute(update(source_slots).where(
                source_slots.c.source == source, source_slots.c.slot == as_utc(slot), source_slots.c.node == node,
                source_slots.c.finished_at.is_(None)).values(claimed_at=utcnow())).rowcount > 0

    def release_slot(self, source: str, slot: datetime, node: str) -> bool:
        """Give back an unfinished claim (a graceful stop mid-run), so the slot runs again at the next start."""
        with self._tx(write=True) as conn:
            return conn.execute(source_slots.delete().where(
                source_slots.c.source == source, source_slots.c.slot == as_utc(slot), source_slots.c.node == node,
                source_slots.c.finished_at.is_(None))).rowcount > 0

    def finish_slot(self, source: str, slot: datetime, ok: bool, detail: str = "") -> None:
        """Record how the slot's run ended (``detail``: records published, or the error)."""
        with self._tx(write=True) as conn:
            conn.execute(update(source_slots).where(
                source_slots.c.source == source, source_slots.c.slot == as_utc(slot)).values(
                finished_at=utcnow(), ok=ok, detail=detail[:MAX_DETAIL]))

    def last_slot(self, source: str) -> datetime | None:
        """The latest slot any node claimed for the source (run or running), or None."""
        with self._tx() as conn:
            value = conn.execute(select(func.max(source_slots.c.slot)).where(
                source_slots.c.source == source)).scalar()
        return None if value is None else _as_datetime(value)

    def slots(self, source: str, limit: int = 20) -> list[SlotRun]:
        """The source's latest claimed slots, newest first (status pages, ``syncbus sync``)."""
        query = (select(source_slots).where(source_slots.c.source == source)
                 .order_by(source_slots.c.slot.desc()).limit(limit))
        with self._tx() as conn:
            return [SlotRun(r.source, r.slot, r.node, r.claimed_at, r.finished_at, r.ok, r.detail)
                    for r in conn.execute(query)]

    def purge_slots(self, before: datetime) -> int:
        """Retention: forget finished slots older than ``before`` (the latest one per source stays)."""
        latest = (select(source_slots.c.source, func.max(source_slots.c.slot).label("slot"))
                  .group_by(source_slots.c.source).subquery())
        with self._tx(write=True) as conn:
            keep = {(r.source, _as_datetime(r.slot)) for r in conn.execute(select(latest))}
            rows = conn.execute(select(source_slots.c.source, source_slots.c.slot).where(
                source_slots.c.slot < as_utc(before), source_slots.c.finished_at.is_not(None))).all()
            gone = 0
            for r in rows:
                if (r.source, as_utc(r.slot)) in keep:
                    continue
                gone += conn.execute(source_slots.delete().where(
                    source_slots.c.source == r.source, source_slots.c.slot == r.slot)).rowcount
            return gone
