"""The fate of each record per route, the ledger's durable evidence.

The router hands over finished records in batches, BEFORE it commits their
offsets; one transaction writes their outcomes and resolves the open dead
letters of records that now got through (a record delivered after a crash
resolves its own earlier dead letter). A crash between this write and the
offset commit re-processes the records: the rows are upserted, so nothing
is counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from .deadletters import DeadLetterStore
from .models import as_utc, utcnow
from .tables import record_outcomes

OUTCOMES = frozenset({"delivered", "skipped", "dead_lettered"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished record of one route. ``delivered_sinks`` got it even when others failed."""

    record_id: str
    outcome: str
    topic: str
    partition: int
    offset: int
    delivered_sinks: tuple[str, ...] = ()


class OutcomeStore(DeadLetterStore):
    """Outcome rows, and dead-letter resolution in the same transaction."""

    def record_outcomes(self, route: str, outcomes: Sequence[Outcome]) -> list[str]:
        """Upsert the outcomes; returns the ids of dead letters resolved as delivered."""
        if not outcomes:
            return []
        now = utcnow()
        rows = [{"route": route, "record_id": o.record_id, "outcome": o.outcome, "topic": o.topic,
                 "partition": o.partition, "offset": o.offset, "at": now} for o in outcomes]
        ins: Any = (sqlite.insert if self.is_sqlite else postgresql.insert)(record_outcomes)
        stmt = ins.on_conflict_do_update(
            index_elements=[record_outcomes.c.route, record_outcomes.c.record_id],
            set_={"outcome": ins.excluded.outcome, "topic": ins.excluded.topic,
                  "partition": ins.excluded.partition, "offset": ins.excluded.offset, "at": ins.excluded.at})
        delivered = [o.record_id for o in outcomes if o.outcome == "delivered"]
        partial = [(o.record_id, s) for o in outcomes if o.outcome != "delivered" for s in o.delivered_sinks]
        with self._tx(write=True) as conn:
            conn.execute(stmt, rows)
            resolved = self._resolve(conn, route, delivered, None)
            for record_id, sink in partial:
                resolved.extend(self._resolve(conn, route, [record_id], sink))
        return resolved

    def last_delivered(self) -> dict[str, float]:
        """Per route, when a record was last delivered (epoch s): the last-success gauge after a restart."""
        query = (select(record_outcomes.c.route, func.max(record_outcomes.c.at))
                 .where(record_outcomes.c.outcome == "delivered").group_by(record_outcomes.c.route))
        out: dict[str, float] = {}
        with self._tx() as conn:
            for route, at in conn.execute(query):
                when = datetime.fromisoformat(at) if isinstance(at, str) else at
                out[route] = as_utc(when).timestamp()
        return out

    def outcomes_for(self, record_ids: Sequence[str]) -> dict[tuple[str, str], str]:
        """(route, record id) → outcome, for the ledger."""
        out: dict[tuple[str, str], str] = {}
        ids = list(record_ids)
        with self._tx() as conn:
            for i in range(0, len(ids), 500):
                query = select(record_outcomes.c.route, record_outcomes.c.record_id, record_outcomes.c.outcome).where(
                    record_outcomes.c.record_id.in_(ids[i:i + 500]))
                out.update({(r.route, r.record_id): r.outcome for r in conn.execute(query)})
        return out
