"""Trace events: the steps of one record's life (``syncbus trace``), written in big batches.

Trace is observability, not the record of fate (that is ``record_outcomes``):
it is written with ``synchronous=NORMAL`` on SQLite and may lose the last
fraction of a second in a power cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, insert, select

from . import crypto  # issue 12: trace details encrypted at rest (SYNCBUS_DATA_KEYS); legacy rows pass through
from .db import Database, StoreError
from .models import STAGES, TraceEvent, as_utc
from .tables import trace_events

TraceRow = tuple[str, str | None, str, float, dict[str, Any]]


class TraceStore(Database):
    """The trace part of the state store."""


    def add_trace(self, events: Sequence[TraceEvent]) -> None:
        """One multi-row insert per call: the router should hand over a batch, not one event."""
        self.add_trace_rows([(ev.record_id, ev.route, ev.stage, ev.at.timestamp(), ev.detail) for ev in events])

    def add_trace_rows(self, rows: Sequence[TraceRow]) -> None:
        """``(record_id, route, stage, epoch seconds, detail)`` rows, as the trace recorder buffers them.

        Thousands of these arrive per second, so on SQLite they skip SQLAlchemy's
        per-row type processing: one ``executemany`` with the values already in
        the stored form (naive UTC text, JSON text) that ``trace()`` reads back.
        """
        if not rows:
            return
        for row in rows:
            if row[2] not in STAGES:
                raise StoreError(f"trace event for record {row[0]!r}: unknown stage {row[2]!r} "
                                 f"(expected one of {', '.join(sorted(STAGES))})")
        seal = crypto.codec().seal_json  # issue 12
        if self._engine.dialect.name != "sqlite":
            values = [{"record_id": r[0], "route": r[1], "stage": r[2], "detail": seal(dict(r[4])),  # issue 12
                       "at": datetime.fromtimestamp(r[3], UTC)} for r in rows]
            with self._tx(engine=self._trace_write_engine) as conn:
                conn.execute(insert(trace_events), values)
            return
        fromts = datetime.fromtimestamp
        dumps = orjson.dumps
        params = [(r[0], r[1], r[2], fromts(r[3], UTC).replace(tzinfo=None).isoformat(" ", "microseconds"),
                   dumps(seal(r[4]), default=str, option=orjson.OPT_NON_STR_KEYS).decode()) for r in rows]  # issue 12
        with self._tx(engine=self._trace_write_engine) as conn:
            conn.exec_driver_sql(
                "INSERT INTO trace_events (record_id, route, stage, at, detail) VALUES (?, ?, ?, ?, ?)", params)

    def trace(self, record_id: str) -> list[TraceEvent]:
        query = (select(trace_events).where(trace_events.c.record_id == record_id)
                 .order_by(trace_events.c.at, trace_events.c.seq))
        with self._tx(engine=self._trace_engine) as conn:
            return [TraceEvent(record_id=r.record_id, route=r.route, stage=r.stage, at=r.at,
                               detail=dict(crypto.open_json(r.detail or {})))  # issue 12
                    for r in conn.execute(query)]

    def find_record_ids(self, prefix: str, limit: int = 20) -> list[str]:
        """Record ids starting with ``prefix`` (so people can type a short id)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (select(trace_events.c.record_id)
                 .where(trace_events.c.record_id.like(escaped + "%", escape="\\"))
                 .distinct().order_by(trace_events.c.record_id).limit(limit))
        with self._tx(engine=self._trace_engine) as conn:
            return [r[0] for r in conn.execute(query)]

    def purge_trace(self, before: datetime) -> int:
        """Retention: drop trace events older than ``before``; returns how many."""
        with self._tx(engine=self._trace_write_engine) as conn:
            return conn.execute(delete(trace_events).where(trace_events.c.at < as_utc(before))).rowcount

