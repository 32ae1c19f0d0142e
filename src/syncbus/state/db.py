"""The database under the state store: one SQLAlchemy engine, transactions, time handling.

SQLAlchemy Core, so any database SQLAlchemy speaks works (SQLite by default,
PostgreSQL for several nodes). The API is synchronous: the CLI calls it
directly, the event loop through ``asyncio.to_thread``.

SQLite specifics, because the CLI and a running node use the file at once:

* WAL and a busy timeout, so readers never block and writers wait their turn;
* every write transaction starts with ``BEGIN IMMEDIATE``: it takes the write
  lock up front, so check-then-write sequences (dead-letter transitions,
  idempotency claims) are atomic across processes and never fail half-way
  with "database is locked" on lock upgrade;
* state that guards delivery commits with ``synchronous=FULL``; trace events
  use a second pool with ``synchronous=NORMAL`` -- they are observability, and
  the next FULL commit on the file syncs them too;
* ``secure_delete``, so a value re-sealed or deleted leaves no clear text in free pages.

On PostgreSQL the same check-then-write sequences take row locks
(``SELECT ... FOR UPDATE``) or rely on unique constraints; see the callers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import BigInteger, Engine, bindparam, create_engine, event, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from ..errors import SyncbusError
from .tables import metadata

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
SCHEMA_LOCK_KEY = 0x53594E43  # "SYNC": the advisory lock creating the tables
# The table every syncbus store has had since the first one: its presence says "this is a store".
STATE_MARKER_TABLE = "dead_letters"

# The autoincrement keys (and the sequences behind them) of a PostgreSQL store, with their types.
# pg_get_serial_sequence finds the sequence of a SERIAL or an identity column alike.
_SEQ_TYPES = text("""
    SELECT c.table_name, c.column_name, c.data_type AS column_type,
           format_type(s.seqtypid, NULL) AS sequence_type, s.seqrelid::regclass::text AS sequence
    FROM information_schema.columns c
    LEFT JOIN pg_sequence s
      ON s.seqrelid = pg_get_serial_sequence(format('%I.%I', c.table_schema, c.table_name), c.column_name)::regclass
    WHERE c.table_schema = current_schema() AND c.table_name IN :tables
""").bindparams(bindparam("tables", expanding=True))



def _json_text(obj: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()

class StoreError(SyncbusError):
    """The state store cannot do what was asked (database unreachable, bad URL, invalid input)."""


class StoreUnavailable(StoreError):
    """The database did not answer, refused the connection or was busy: it passes once the database is back.

    A class of its own so callers can answer "try again" (HTTP 503, keep the
    offsets uncommitted) instead of treating it like a bug in what was asked.
    """


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file, absolute (``sqlite:////abs/path.db``)."""
    return "sqlite:///" + str(Path(path).expanduser().resolve())


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver we ship), not SQLAlchemy's psycopg2 default."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """Engines and transactions; the store's parts (dead letters, trace, ...) build on this."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the store; ``create=False`` touches nothing (to look at a database that may not be a store)."""
        self.url = url
        try:
            parsed = make_url(normalize_url(url))
        except ArgumentError as e:
            raise StoreError(f"store URL {url!r} is not a SQLAlchemy database URL: {e}") from e
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        try:
            if self.is_sqlite:
                db = parsed.database or ""
                if db and db != ":memory:" and not db.startswith("file:"):
                    Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
                self._engine = self._sqlite_engine(parsed.render_as_string(hide_password=False), "FULL")
                self._trace_engine = self._sqlite_engine(parsed.render_as_string(hide_password=False), "NORMAL")
            else:
                # JSON the way the SQLite path writes it (orjson, anything else as str): a Decimal or a
                # datetime in a trace detail must not fail the whole batch on PostgreSQL only
                self._engine = create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=8,
                                             json_serializer=_json_text)
                self._trace_engine = self._engine
            self._write_engine = self._engine.execution_options(syncbus_immediate=True)
            self._trace_write_engine = self._trace_engine.execution_options(syncbus_immediate=True)
            if create:
                self._create_tables()
        except (SQLAlchemyError, OSError, ImportError) as e:
            raise StoreError(f"store {self.safe_url()}: cannot open: {e}") from e

    def _create_tables(self) -> None:
        """Create what is missing, once, even when several nodes open a fresh database at the same moment.

        On PostgreSQL two concurrent ``CREATE TABLE`` of the same name make one of
        them fail (a unique violation in the catalog), so the creation runs under a
        transaction-scoped advisory lock; SQLite's ``BEGIN IMMEDIATE`` serialises it.
        """
        with self._write_engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            metadata.create_all(conn)
            if self.dialect == "postgresql":
                self._widen_seq_columns(conn)

    def _widen_seq_columns(self, conn: Connection) -> None:
        """Make the ``seq`` keys of a store created with 32-bit SERIAL columns 64-bit, once.

        ``create_all`` never changes an existing table, and an ``integer`` key (or
        its ``integer`` sequence: its own type caps it too) makes every insert fail
        after 2^31 rows ever written -- trace stops, audited dead-letter actions
        fail. It runs under the caller's advisory lock, so when several nodes open
        the store together one of them upgrades (and logs it) and the others find
        ``bigint`` already. DDL is transactional on PostgreSQL: a failure leaves the
        old types, and the next open tries again.
        """
        wanted = {(t.name, col.name) for t in metadata.sorted_tables
                  if (col := t.autoincrement_column) is not None
                  and isinstance(col.type.dialect_impl(conn.dialect), BigInteger)}
        if not wanted:
            return
        quote = conn.dialect.identifier_preparer.quote
        rows = conn.execute(_SEQ_TYPES, {"tables": sorted({t for t, _ in wanted})}).all()
        for table, column, column_type, sequence_type, sequence in rows:
            if (table, column) not in wanted or "integer" not in (column_type, sequence_type):
                continue
            log.warning("state store %s: widening %s.%s from a 32-bit integer to bigint (it would stop "
                        "accepting rows after 2^31); this rewrites the table once", self.safe_url(), table, column)
            if column_type == "integer":
                conn.execute(text(f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} TYPE bigint"))
            if sequence and sequence_type == "integer":
                conn.execute(text(f"ALTER SEQUENCE {sequence} AS bigint"))

    def has_state(self) -> bool:
        """Whether the database holds a syncbus store (its tables), without creating anything.

        Read-only commands ask this before opening a store with ``create=True``: an
        empty PostgreSQL database would otherwise get the whole schema and answer
        "nothing here" instead of saying it is the wrong database.
        """
        with self._tx() as conn:
            return inspect(conn).has_table(STATE_MARKER_TABLE)

    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        try:
            return make_url(normalize_url(self.url)).render_as_string(hide_password=True)
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
            # Zero what is deleted or overwritten: payloads re-sealed by `keys rotate` (or purged) must not
            # stay readable in free pages. Debian's SQLite does this by default; other builds do not.
            cur.execute("PRAGMA secure_delete=ON")
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
            kind = StoreUnavailable if isinstance(e, OperationalError | InterfaceError) else StoreError
            raise kind(f"store {self.safe_url()}: {type(cause).__name__}: {cause}") from e

    def _lock(self, query: Any) -> Any:
        """``SELECT ... FOR UPDATE`` where the database has row locks (SQLite locks the file instead)."""
        return query if self.is_sqlite else query.with_for_update()
