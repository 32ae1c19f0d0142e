"""The persistent store: dead letters, their audit trail, trace events, ingress idempotency keys.

SQLAlchemy Core, so any database SQLAlchemy speaks works; the default is the
SQLite file of the embedded bus (table names do not clash with the bus's
``log``/``topics``/``offsets``). The API is synchronous -- it is called from
the CLI directly and from the event loop through ``asyncio.to_thread``.

SQLite specifics, because the CLI and a running bus use the file at once:

* WAL and a busy timeout, so readers never block and writers wait their turn;
* every write transaction starts with ``BEGIN IMMEDIATE``: it takes the write
  lock up front, so check-then-write sequences (the pending-duplicate rule,
  idempotency claims) are atomic across processes and never fail half-way with
  "database is locked" on lock upgrade;
* dead letters, audit rows and idempotency keys commit with
  ``synchronous=FULL`` (they guard at-least-once delivery); trace events use a
  second pool with ``synchronous=NORMAL`` -- they are observability, and the
  next FULL commit on the file (e.g. the bus committing offsets) syncs them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from ..errors import SyncbusError
from .models import (
    REASONS,
    STAGES,
    STATUSES,
    AuditEntry,
    DeadLetter,
    TraceEvent,
    as_utc,
    encode_value,
    utcnow,
)

BUSY_TIMEOUT_S = 10.0


class StoreError(SyncbusError):
    """A dead letter is unknown or not in the state an operation needs, or the database failed."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite and MySQL keep no zone: store naive UTC there (ISO text on SQLite
    compares correctly as text).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name in ("sqlite", "mysql", "mariadb") else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


metadata = MetaData()

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", String(64), primary_key=True),
    Column("route", String(200), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", UTCDateTime, nullable=False),
    Column("last_failed_at", UTCDateTime, nullable=False),
    Column("status", String(20), nullable=False),
    Column("mapping_version", Integer, nullable=False),
    Column("sink", String(200)),
    Column("record_id", String(200), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", Text),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Index("ix_dead_letters_route_record", "route", "record_id"),
    Index("ix_dead_letters_status_route", "status", "route"),
    Index("ix_dead_letters_last_failed", "last_failed_at"),
)

# At most one pending dead letter per (route, record): the database enforces the
# rule `add` implements, where it can express it (a partial unique index).
Index("uq_dead_letters_pending", dead_letters.c.route, dead_letters.c.record_id, unique=True,
      sqlite_where=dead_letters.c.status == "pending",
      postgresql_where=dead_letters.c.status == "pending").ddl_if(dialect=("sqlite", "postgresql"))

dlq_audit = Table(
    "dlq_audit", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("dead_letter_id", String(64), nullable=False, index=True),
    Column("action", String(20), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("details", JSON, nullable=False),
)

trace_events = Table(
    "trace_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("record_id", String(200), nullable=False),
    Column("route", String(200)),
    Column("stage", String(20), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_trace_events_record", "record_id", "at"),
    Index("ix_trace_events_at", "at"),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("source", String(200), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("record_id", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file, absolute (``sqlite:////abs/path.db``)."""
    return "sqlite:///" + str(Path(path).expanduser().resolve())


def _row_to_dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(id=row.id, route=row.route, reason=row.reason, error=row.error, attempts=row.attempts,
                      first_failed_at=row.first_failed_at, last_failed_at=row.last_failed_at,
                      status=row.status, mapping_version=row.mapping_version, sink=row.sink,
                      record_id=row.record_id, topic=row.topic, partition=row.partition, offset=row.offset,
                      key=row.key, value=bytes(row.value), headers=dict(row.headers or {}))


class Store:
    """Dead letters, audit, trace and idempotency keys in one SQLAlchemy database."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as e:
            raise StoreError(f"store URL {url!r} is not a SQLAlchemy database URL: {e}") from e
        self._sqlite = parsed.get_backend_name() == "sqlite"
        try:
            if self._sqlite:
                db = parsed.database or ""
                if db and db != ":memory:" and not db.startswith("file:"):
                    Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
                self._engine = self._sqlite_engine(url, "FULL")
                self._trace_engine = self._sqlite_engine(url, "NORMAL")
            else:
                self._engine = create_engine(url, pool_pre_ping=True)
                self._trace_engine = self._engine
            self._write_engine = self._engine.execution_options(syncbus_immediate=True)
            self._trace_write_engine = self._trace_engine.execution_options(syncbus_immediate=True)
            metadata.create_all(self._write_engine)
        except (SQLAlchemyError, OSError, ImportError) as e:
            raise StoreError(f"store {self._safe_url()}: cannot open: {e}") from e

    def _safe_url(self) -> str:
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return "?"

    @staticmethod
    def _sqlite_engine(url: str, synchronous: str) -> Engine:
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None          # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("syncbus_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def close(self) -> None:
        self._engine.dispose()
        if self._trace_engine is not self._engine:
            self._trace_engine.dispose()

    def ping(self) -> bool:
        try:
            with self._engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    @contextmanager
    def _tx(self, write: bool = False, engine: Engine | None = None) -> Iterator[Connection]:
        eng = engine or (self._write_engine if write else self._engine)
        try:
            with eng.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            cause = getattr(e, "orig", None) or e
            raise StoreError(f"store {self._safe_url()}: {type(cause).__name__}: {cause}") from e

    # -- dead letters ----------------------------------------------------------

    def add(self, dl: DeadLetter) -> str:
        """Store a dead letter; returns its id.

        A record that fails again while its dead letter is still pending does
        not get a second one: the pending one gets the new attempts added and
        the latest error, reason, mapping version, sink and time, and its id is
        returned (``dl`` itself is not changed). After a replay the old entry is
        'replayed', so a new failure makes a new entry.
        """
        if dl.reason not in REASONS:
            raise StoreError(f"dead letter for route {dl.route!r}: unknown reason {dl.reason!r} "
                             f"(expected one of {', '.join(sorted(REASONS))})")
        if dl.status not in STATUSES:
            raise StoreError(f"dead letter for route {dl.route!r}: unknown status {dl.status!r}")
        if not dl.route or not dl.record_id:
            raise StoreError("a dead letter needs a route and a record_id")
        for attempt in range(3):
            try:
                with self._tx(write=True) as conn:
                    existing = None
                    if dl.status == "pending":
                        existing = conn.execute(
                            select(dead_letters.c.id).where(dead_letters.c.route == dl.route,
                                                            dead_letters.c.record_id == dl.record_id,
                                                            dead_letters.c.status == "pending")).first()
                    if existing is not None:
                        conn.execute(update(dead_letters).where(dead_letters.c.id == existing.id).values(
                            attempts=dead_letters.c.attempts + dl.attempts,
                            last_failed_at=dl.last_failed_at, error=dl.error, reason=dl.reason,
                            mapping_version=dl.mapping_version, sink=dl.sink))
                        return str(existing.id)
                    conn.execute(insert(dead_letters).values(
                        id=dl.id, route=dl.route, reason=dl.reason, error=dl.error, attempts=dl.attempts,
                        first_failed_at=dl.first_failed_at, last_failed_at=dl.last_failed_at,
                        status=dl.status, mapping_version=dl.mapping_version, sink=dl.sink,
                        record_id=dl.record_id, topic=dl.topic, partition=dl.partition, offset=dl.offset,
                        key=dl.key, value=dl.value, headers=dict(dl.headers)))
                    return dl.id
            except StoreError as e:
                # Another writer inserted the pending entry between our check and insert
                # (possible only on databases without BEGIN IMMEDIATE): update it instead.
                if isinstance(e.__cause__, IntegrityError) and attempt < 2:
                    continue
                raise
        raise StoreError(f"dead letter for route {dl.route!r}, record {dl.record_id!r}: could not be stored")

    def get(self, id: str) -> DeadLetter:
        with self._tx() as conn:
            row = conn.execute(select(dead_letters).where(dead_letters.c.id == id)).first()
        if row is None:
            raise StoreError(f"no dead letter with id {id!r}")
        return _row_to_dead_letter(row)

    def list(self, route: str | None = None, status: str | None = None, since: datetime | None = None,
             limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Newest failure first; ``since`` filters on the last failure time."""
        query = select(dead_letters)
        for cond in self._filters(route, status, since):
            query = query.where(cond)
        query = query.order_by(dead_letters.c.last_failed_at.desc(), dead_letters.c.id.desc())
        query = query.limit(max(0, limit)).offset(max(0, offset))
        with self._tx() as conn:
            return [_row_to_dead_letter(r) for r in conn.execute(query)]

    def count(self, route: str | None = None, status: str | None = None,
              since: datetime | None = None) -> int:
        """How many ``list`` would return without a limit (for paging)."""
        query = select(func.count()).select_from(dead_letters)
        for cond in self._filters(route, status, since):
            query = query.where(cond)
        with self._tx() as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _filters(route: str | None, status: str | None, since: datetime | None) -> list[Any]:
        conds: list[Any] = []
        if route is not None:
            conds.append(dead_letters.c.route == route)
        if status is not None:
            if status not in STATUSES:
                raise StoreError(f"unknown dead-letter status {status!r} "
                                 f"(expected one of {', '.join(sorted(STATUSES))})")
            conds.append(dead_letters.c.status == status)
        if since is not None:
            conds.append(dead_letters.c.last_failed_at >= as_utc(since))
        return conds

    def count_pending(self) -> dict[str, int]:
        query = (select(dead_letters.c.route, func.count()).where(dead_letters.c.status == "pending")
                 .group_by(dead_letters.c.route))
        with self._tx() as conn:
            return {route: int(n) for route, n in conn.execute(query)}

    def edit(self, id: str, value: bytes, actor: str, reason: str) -> DeadLetter:
        """Replace the value of a pending dead letter (e.g. fix a bad field before replaying)."""
        if not isinstance(value, bytes | bytearray):
            raise StoreError(f"dead letter {id}: the new value must be bytes, got {type(value).__name__}")
        with self._tx(write=True) as conn:
            [row] = self._pending_rows(conn, [id])
            before, before_enc = encode_value(bytes(row.value))
            after, after_enc = encode_value(bytes(value))
            conn.execute(update(dead_letters).where(dead_letters.c.id == id).values(value=bytes(value)))
            self._audit(conn, [id], "edit", actor, reason, {
                "before": before, "before_encoding": before_enc, "after": after, "after_encoding": after_enc})
        return self.get(id)

    def mark_replayed(self, ids: Iterable[str], actor: str, reason: str,
                      details: dict[str, Any] | None = None) -> list[DeadLetter]:
        """All or nothing: every id must be pending. ``details`` go into the audit rows."""
        return self._close_out(ids, "replayed", "replay", actor, reason, details)

    def discard(self, ids: Iterable[str], actor: str, reason: str,
                details: dict[str, Any] | None = None) -> list[DeadLetter]:
        """All or nothing: every id must be pending."""
        return self._close_out(ids, "discarded", "discard", actor, reason, details)

    def _close_out(self, ids: Iterable[str], status: str, action: str, actor: str, reason: str,
                   details: dict[str, Any] | None) -> list[DeadLetter]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        with self._tx(write=True) as conn:
            self._pending_rows(conn, wanted)
            conn.execute(update(dead_letters).where(dead_letters.c.id.in_(wanted)).values(status=status))
            self._audit(conn, wanted, action, actor, reason, details or {})
            rows = conn.execute(select(dead_letters).where(dead_letters.c.id.in_(wanted))).all()
        by_id = {r.id: _row_to_dead_letter(r) for r in rows}
        return [by_id[i] for i in wanted]

    @staticmethod
    def _pending_rows(conn: Connection, ids: Sequence[str]) -> list[Any]:
        rows = {r.id: r for r in conn.execute(select(dead_letters).where(dead_letters.c.id.in_(ids)))}
        problems = []
        for i in ids:
            row = rows.get(i)
            if row is None:
                problems.append(f"no dead letter with id {i!r}")
            elif row.status != "pending":
                problems.append(f"dead letter {i} is {row.status}, not pending")
        if problems:
            raise StoreError("; ".join(problems))
        return [rows[i] for i in ids]

    @staticmethod
    def _audit(conn: Connection, ids: Sequence[str], action: str, actor: str, reason: str,
               details: dict[str, Any]) -> None:
        at = utcnow()
        conn.execute(insert(dlq_audit), [
            {"dead_letter_id": i, "action": action, "actor": actor or "unknown", "reason": reason or "",
             "at": at, "details": details} for i in ids])

    def audit(self, id: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Oldest first; all dead letters when ``id`` is None."""
        query = select(dlq_audit).order_by(dlq_audit.c.at, dlq_audit.c.seq)
        if id is not None:
            query = query.where(dlq_audit.c.dead_letter_id == id)
        if limit is not None:
            query = query.limit(limit)
        with self._tx() as conn:
            return [AuditEntry(id=r.seq, dead_letter_id=r.dead_letter_id, action=r.action, actor=r.actor,
                               reason=r.reason, at=r.at, details=dict(r.details or {}))
                    for r in conn.execute(query)]

    # -- trace -------------------------------------------------------------------

    def add_trace(self, events: Sequence[TraceEvent]) -> None:
        """One multi-row insert per call: the router should hand over a batch, not one event."""
        self.add_trace_rows([(ev.record_id, ev.route, ev.stage, ev.at.timestamp(), ev.detail) for ev in events])

    def add_trace_rows(self, rows: Sequence[tuple[str, str | None, str, float, dict[str, Any]]]) -> None:
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
        if self._engine.dialect.name != "sqlite":
            values = [{"record_id": r[0], "route": r[1], "stage": r[2], "detail": dict(r[4]),
                       "at": datetime.fromtimestamp(r[3], UTC)} for r in rows]
            with self._tx(engine=self._trace_write_engine) as conn:
                conn.execute(insert(trace_events), values)
            return
        fromts = datetime.fromtimestamp
        dumps = orjson.dumps
        values = [(r[0], r[1], r[2], fromts(r[3], UTC).replace(tzinfo=None).isoformat(" ", "microseconds"),
                   dumps(r[4], default=str).decode()) for r in rows]
        with self._tx(engine=self._trace_write_engine) as conn:
            conn.exec_driver_sql(
                "INSERT INTO trace_events (record_id, route, stage, at, detail) VALUES (?, ?, ?, ?, ?)", values)

    def trace(self, record_id: str) -> list[TraceEvent]:
        query = (select(trace_events).where(trace_events.c.record_id == record_id)
                 .order_by(trace_events.c.at, trace_events.c.seq))
        with self._tx(engine=self._trace_engine) as conn:
            return [TraceEvent(record_id=r.record_id, route=r.route, stage=r.stage, at=r.at,
                               detail=dict(r.detail or {})) for r in conn.execute(query)]

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

    # -- ingress idempotency ------------------------------------------------------

    def idempotency_claim(self, source: str, key: str, record_id: str) -> str:
        """The record id first stored for (source, key); stores ``record_id`` if none was.

        Atomic across threads and processes: the primary key decides, the loser
        reads the winner's id.
        """
        for _ in range(3):
            try:
                with self._tx(write=True) as conn:
                    row = conn.execute(select(idempotency_keys.c.record_id).where(
                        idempotency_keys.c.source == source, idempotency_keys.c.key == key)).first()
                    if row is not None:
                        return str(row.record_id)
                    conn.execute(insert(idempotency_keys).values(source=source, key=key, record_id=record_id,
                                                                 created_at=utcnow()))
                    return record_id
            except StoreError as e:
                if not isinstance(e.__cause__, IntegrityError):
                    raise
        raise StoreError(f"idempotency key {key!r} of source {source!r}: could not be claimed")

    def idempotency_release(self, source: str, key: str, record_id: str) -> bool:
        """Undo our claim (the publish failed, the client may retry). Never removes someone else's."""
        with self._tx(write=True) as conn:
            result = conn.execute(delete(idempotency_keys).where(
                idempotency_keys.c.source == source, idempotency_keys.c.key == key,
                idempotency_keys.c.record_id == record_id))
            return result.rowcount > 0

    def purge_idempotency(self, before: datetime) -> int:
        """Retention: forget keys claimed before ``before``; returns how many."""
        with self._tx(write=True) as conn:
            return conn.execute(delete(idempotency_keys).where(
                idempotency_keys.c.created_at < as_utc(before))).rowcount
