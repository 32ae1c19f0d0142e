"""Every table of the state store, on one ``MetaData`` so one ``create_all`` makes them all.

Table names do not clash with the embedded bus's ``log``/``topics``/``offsets``
(the default store is the bus file itself).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    func,
)

from .models import as_utc

metadata = MetaData()

# The type of every autoincrement ``seq`` key. 64-bit on PostgreSQL: a 32-bit SERIAL stops
# every insert after 2^31 rows *ever* written (deleted rows do not give numbers back), and
# trace events alone reach that in weeks on a busy node. SQLite keeps INTEGER: only an
# ``INTEGER PRIMARY KEY`` is the rowid alias that numbers itself (and it is 64-bit there
# already); a BIGINT key on SQLite is a plain column that stays NULL. Stores created
# before are upgraded in place when opened (``db.Database._widen_seq_columns``).
SEQ = BigInteger().with_variant(Integer(), "sqlite")


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
    Column("status_at", UTCDateTime),
    Column("mapping_version", Integer, nullable=False),
    Column("sink", String(200)),
    Column("record_id", String(200), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", Text),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("replay_of", String(64)),
    Index("ix_dead_letters_route_record", "route", "record_id"),
    Index("ix_dead_letters_status_route", "status", "route"),
    Index("ix_dead_letters_last_failed", "last_failed_at"),
)

# At most one pending dead letter per (route, record, sink): the database enforces
# the merge rule of `add`, where it can express it (a partial unique index).
# (The ignore: SQLAlchemy documents ddl_if's `dialect` as a name or a tuple of names, and
# DDLIf handles both, but annotates it `str | None`.)
Index("uq_dead_letters_pending", dead_letters.c.route, dead_letters.c.record_id,
      func.coalesce(dead_letters.c.sink, ""), unique=True,
      sqlite_where=dead_letters.c.status == "pending",
      postgresql_where=dead_letters.c.status == "pending").ddl_if(dialect=("sqlite", "postgresql"))  # type: ignore[arg-type]

dlq_audit = Table(
    "dlq_audit", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("dead_letter_id", String(64), nullable=False, index=True),
    Column("action", String(20), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("details", JSON, nullable=False),
)

trace_events = Table(
    "trace_events", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
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
    Column("fingerprint", String(64), nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="confirmed"),  # pending | confirmed
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)

# The fate of each record per route, written in batches before the route commits
# its offsets: what `syncbus ledger` reads (trace events are best effort, these are not).
record_outcomes = Table(
    "record_outcomes", metadata,
    Column("route", String(200), primary_key=True),
    Column("record_id", String(200), primary_key=True),
    Column("outcome", String(16), nullable=False),     # delivered | skipped | dead_lettered
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("at", UTCDateTime, nullable=False, index=True),
)
