"""The SQL sink: writes each mapped record as one row (or several) of a table in the target database.

This is the "database to database" flow (ERP postings → finance vouchers).
Upsert is the default because delivery is at-least-once: a replayed record
must land on the same row, not a second one. SQLite and PostgreSQL get a
native ``INSERT … ON CONFLICT DO UPDATE``; other dialects a select-then-write
in one transaction (safe because records with the same key arrive in order).

The table is reflected once, so a typo in a column name is reported by name
before any SQL is sent and each record costs one statement. SQLAlchemy is
blocking, so every database call runs on a small thread pool of the sink's
own, as large as its connection pool: a slow database can tie up only these
threads, never the event loop or other sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal, TypeVar

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.base import BaseSink, Delivery, SinkConfig
from syncbus.units import Duration, format_duration

log = logging.getLogger(__name__)

T = TypeVar("T")

_NATIVE_UPSERT: dict[str, Callable[[sa.Table], Any]] = {
    "sqlite": sqlite_dialect.insert,
    "postgresql": pg_dialect.insert,
}
# SQLSTATE classes worth another try: connection exception, transaction rollback
# (deadlock, serialization failure), insufficient resources, operator intervention
# (shutdown, statement timeout), system error. Plus lock_not_available / object in use.
_RETRY_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_RETRY_SQLSTATES = frozenset({"55P03", "55006"})
_RETRY_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_PROTOCOL",
                 "SQLITE_CANTOPEN")
_TRANSIENT_TEXT = re.compile(
    r"database is locked|database table is locked|connection refused|could not connect|"
    r"server closed the connection|connection reset|connection.*(?:closed|lost)|broken pipe|"
    r"timed? ?out|too many connections|deadlock|could not serialize|terminating connection|"
    r"gone away|network is unreachable|no route to host|name or service not known", re.IGNORECASE)
_PERMANENT_TEXT = re.compile(r"no such (?:table|column)|has no column|syntax error|readonly|read-only",
                             re.IGNORECASE)
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact_url(url: str) -> str:
    """A database URL for messages: the password replaced by ***, even if the URL does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _PASSWORD_IN_URL.sub(r"\1***@", url)


class SqlSinkConfig(SinkConfig):
    """``type: sql`` — write each mapped record as a row of a database table (insert or upsert)."""

    type: Literal["sql"] = "sql"
    url: str = Field(
        repr=False,
        description="SQLAlchemy database URL, e.g. postgresql+psycopg://user:pw@host/db or "
                    "sqlite:////abs/path.db (give it as url_env: VAR: it usually holds a password).")
    table: str = Field(min_length=1, description="Target table; `schema.table` for another schema.")
    mode: Literal["insert", "upsert"] = Field(
        "upsert",
        description="upsert: insert, or update the row with the same key_columns (replays are harmless); "
                    "insert: plain INSERT (a duplicate key is a permanent error).")
    key_columns: list[str] = Field(
        default_factory=list,
        description="The row's identity (the ON CONFLICT target); required for upsert. The table needs "
                    "a primary key or unique constraint on exactly these columns.")
    columns: list[str] | None = Field(
        None,
        description="Columns to write, taken from the mapped record's fields of the same name; other "
                    "fields are ignored. Default: every field of the record (an unknown one is an error).")
    idempotency_column: str | None = Field(
        None,
        description="Also write the delivery's idempotency key to this column (a record that maps to "
                    "several rows gets `<key>#<row index>`).")
    create_table: bool = Field(
        False,
        description="Create the table if it is missing, with TEXT columns and key_columns as primary key "
                    "(for sandboxes and tests; production tables belong to the target system).")
    pool_size: int = Field(
        4, ge=1, le=64, description="Database connections, and threads running the blocking calls.")
    lock_timeout: Duration = Field(
        5.0, ge=0,
        description="SQLite only: how long to wait for a locked database before the attempt fails "
                    "(and is retried).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            make_url(value)
        except Exception:
            raise ValueError(
                f"invalid database URL {redact_url(value)!r}: expected dialect+driver://user:password@host/db "
                "or sqlite:////absolute/path.db") from None
        return value

    @field_validator("key_columns", "columns")
    @classmethod
    def _check_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        seen: set[str] = set()
        for name in value:
            if not name.strip():
                raise ValueError("column names must not be empty")
            if name in seen:
                raise ValueError(f"column {name!r} is listed twice")
            seen.add(name)
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> SqlSinkConfig:
        if self.mode == "upsert" and not self.key_columns:
            raise ValueError("mode upsert needs key_columns (the columns that identify a row)")
        if self.columns is not None:
            missing = [k for k in self.key_columns if k not in self.columns]
            if missing:
                raise ValueError(f"key column {missing[0]!r} is not in columns")
        if self.idempotency_column is not None and not self.idempotency_column.strip():
            raise ValueError("idempotency_column must not be empty")
        return self


class SqlSink(BaseSink):
    """Delivers to a database table; see :class:`SqlSinkConfig`."""

    Config: ClassVar[type[SqlSinkConfig]] = SqlSinkConfig
    config: SqlSinkConfig

    def __init__(self, config: SqlSinkConfig | Mapping[str, Any]) -> None:
        super().__init__(config)
        config = self.config  # validated
        self._url: URL = make_url(config.url)
        schema, _, table = config.table.rpartition(".")
        self._schema: str | None = schema or None
        self._table_name = table
        self._db = redact_url(config.url)
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._table: sa.Table | None = None
        self._prepare_lock = asyncio.Lock()
        self._statements: dict[tuple[str, ...], Any] = {}
        # Tests flip this to exercise the select-then-write path on SQLite.
        self._native_upsert = self._url.get_backend_name() in _NATIVE_UPSERT
        # SQLite has one writer at a time. Queueing our own threads on a lock is far quicker than
        # letting them collide in SQLite, whose busy handler sleeps in steps of up to 100ms
        # (measured: 4 threads at 16 concurrent deliveries wrote 2.7x slower than one).
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self._url.get_backend_name() == "sqlite" else contextlib.nullcontext())

    @property
    def table(self) -> sa.Table | None:
        """The reflected table (None until the first successful reflection)."""
        return self._table

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the engine and reflect the table.

        A database that is down is only logged (the nightly flow must not stop
        the bus from starting at noon); a missing table or column is a
        configuration mistake and raises :class:`ConfigError` now.
        """
        try:
            self._open()
            await self._target(None)
        except DeliveryError as err:
            if not err.retryable:
                raise ConfigError(str(err)) from None
            log.warning("sink %s: database not reachable at start, will retry on first delivery: %s",
                        self.name, err)

    async def close(self) -> None:
        engine, executor = self._engine, self._executor
        self._engine = self._executor = None
        self._table = None
        self._statements.clear()
        if engine is not None:
            await asyncio.to_thread(engine.dispose)
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True)

    def _open(self) -> Engine:
        if self._engine is not None:
            return self._engine
        cfg = self.config
        url = self._url
        kwargs: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
        connect_args: dict[str, Any] = {}
        backend = url.get_backend_name()
        if backend == "sqlite":
            connect_args["check_same_thread"] = False
            if url.database in (None, "", ":memory:"):
                kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
            else:
                kwargs.update(pool_size=cfg.pool_size, max_overflow=0, pool_timeout=cfg.timeout)
        else:
            kwargs.update(pool_size=cfg.pool_size, max_overflow=0, pool_timeout=cfg.timeout,
                          pool_recycle=3600)
            if backend == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
                connect_args["connect_timeout"] = max(1, int(cfg.timeout))
        try:
            engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        except Exception as exc:  # unknown dialect, driver not installed
            raise DeliveryError(f"{self.name}: cannot use database {self._db}: {exc}",
                                retryable=False) from None
        if backend == "sqlite":
            sa.event.listen(engine, "connect", functools.partial(_sqlite_on_connect, cfg.lock_timeout))
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=cfg.pool_size,
                                            thread_name_prefix=f"syncbus-sql-{self.name}")
        return engine

    # ------------------------------------------------------------------ delivery

    async def send(self, delivery: Delivery) -> None:
        """One attempt: every row of the record in one transaction."""
        rows = self._rows(delivery)
        if not rows:
            return
        if self._engine is None:
            self._open()
        table = await self._target(rows[0])
        assert table is not None  # a sample row always lets _target create the table
        groups = self._bind(table, rows)
        await self._call(self._write, table, groups)

    def _rows(self, delivery: Delivery) -> list[dict[str, Any]]:
        payload = delivery.payload
        if isinstance(payload, Mapping):
            items: Sequence[Any] = [payload]
        elif isinstance(payload, list | tuple):
            items = payload
        else:
            raise DeliveryError(
                f"{self.name}: a record for table {self.config.table} must be an object of "
                f"column: value (or a list of them), not {type(payload).__name__}", retryable=False)
        idem = self.config.idempotency_column
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise DeliveryError(
                    f"{self.name}: row {index} for table {self.config.table} must be an object of "
                    f"column: value, not {type(item).__name__}", retryable=False)
            row = dict(item)
            if idem is not None:
                key = delivery.idempotency_key
                row[idem] = key if isinstance(payload, Mapping) else f"{key}#{index}"
            rows.append(row)
        return rows

    def _bind(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], list[dict]]]:
        """Check and convert rows; group consecutive rows with the same columns (one executemany each)."""
        cfg = self.config
        wanted = None if cfg.columns is None else set(cfg.columns)
        if wanted is not None and cfg.idempotency_column is not None:
            wanted.add(cfg.idempotency_column)
        groups: list[tuple[tuple[str, ...], list[dict]]] = []
        for row in rows:
            out: dict[str, Any] = {}
            for col, value in row.items():
                if wanted is not None and col not in wanted:
                    continue
                column = table.c.get(col) if isinstance(col, str) else None
                if column is None:
                    raise DeliveryError(
                        f"{self.name}: column {col!r} does not exist in table {cfg.table}", retryable=False)
                out[col] = self._convert(column, value)
            for key in cfg.key_columns:
                if out.get(key) is None:
                    raise DeliveryError(
                        f"{self.name}: key column {key!r} is missing or null in the record for table "
                        f"{cfg.table}", retryable=False)
            if not out:
                raise DeliveryError(f"{self.name}: the record has no column to write to table {cfg.table}",
                                    retryable=False)
            cols = tuple(out)
            if groups and groups[-1][0] == cols:
                groups[-1][1].append(out)
            else:
                groups.append((cols, [out]))
        return groups

    def _convert(self, column: sa.Column[Any], value: Any) -> Any:
        """Make a mapped value bindable to the column, or say why it cannot be."""
        if isinstance(value, Mapping | list | tuple | set):
            raise DeliveryError(
                f"{self.name}: column {column.name!r}: a nested value ({type(value).__name__}) cannot be "
                f"written to table {self.config.table}; flatten it in the mapping", retryable=False)
        if value is None:
            return None
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            return value
        if python_type is str and isinstance(value, Decimal | dt.date | dt.time):
            # Exact text for money, ISO 8601 for dates; drivers would refuse or float them.
            return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
        if isinstance(value, str) and python_type in (dt.date, dt.datetime, dt.time, Decimal):
            try:
                return Decimal(value) if python_type is Decimal else python_type.fromisoformat(value)
            except (ValueError, InvalidOperation):
                kind = {Decimal: "number", dt.date: "date", dt.datetime: "date-time", dt.time: "time"}
                raise DeliveryError(
                    f"{self.name}: column {column.name!r}: {value!r} is not a valid {kind[python_type]}",
                    retryable=False) from None
        return value

    # ------------------------------------------------------------------ the blocking part

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking database call on the sink's threads; turn its failure into a DeliveryError."""
        self._open()
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        future = loop.run_in_executor(self._executor, functools.partial(ctx.run, fn, *args))
        try:
            async with asyncio.timeout(self.config.timeout):
                return await future
        except TimeoutError:
            raise DeliveryError(
                f"{self.name}: timeout after {format_duration(self.config.timeout)} writing to table "
                f"{self.config.table} ({self._db})", retryable=True) from None
        except DeliveryError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            raise self._classify(exc) from exc

    def _write(self, table: sa.Table, groups: list[tuple[tuple[str, ...], list[dict]]]) -> None:
        assert self._engine is not None
        with self._serial, self._engine.begin() as conn:
            for cols, rows in groups:
                if self.config.mode == "upsert" and not self._native_upsert:
                    for row in rows:
                        _select_then_write(conn, table, self.config.key_columns, row)
                else:
                    conn.execute(self._statement(table, cols), rows)

    def _statement(self, table: sa.Table, cols: tuple[str, ...]) -> Any:
        stmt = self._statements.get(cols)
        if stmt is not None:
            return stmt
        if self.config.mode == "insert":
            stmt = sa.insert(table)
        else:
            keys = self.config.key_columns
            ins = _NATIVE_UPSERT[self._url.get_backend_name()](table)
            targets = [table.c[k] for k in keys]
            updates = {c: ins.excluded[c] for c in cols if c not in keys}
            stmt = (ins.on_conflict_do_update(index_elements=targets, set_=updates) if updates
                    else ins.on_conflict_do_nothing(index_elements=targets))
        self._statements[cols] = stmt
        return stmt

    # ------------------------------------------------------------------ the table

    async def _target(self, sample: Mapping[str, Any] | None) -> sa.Table | None:
        """The reflected (or created) table; None only while create_table waits for a first record."""
        if self._table is not None:
            return self._table
        async with self._prepare_lock:
            if self._table is None:
                table = await self._call(self._reflect_or_create, None if sample is None else list(sample))
                if table is not None:
                    self._check_table(table)
                    self._table = table
            return self._table

    def _reflect_or_create(self, sample: list[str] | None) -> sa.Table | None:
        engine = self._open()
        try:
            return self._reflect(engine)
        except sa_exc.NoSuchTableError:
            if not self.config.create_table:
                raise DeliveryError(
                    f"{self.name}: table {self.config.table} does not exist in {self._db} "
                    "(create it, or set create_table: true for a sandbox)", retryable=False) from None
        names = self._columns_to_create(sample)
        if names is None:
            return None
        keys = set(self.config.key_columns)
        table = sa.Table(self._table_name, sa.MetaData(),
                         *[sa.Column(n, sa.Text, primary_key=n in keys, nullable=n not in keys) for n in names],
                         schema=self._schema)
        try:
            table.create(engine, checkfirst=True)
        except (sa_exc.OperationalError, sa_exc.ProgrammingError) as exc:
            if not _exists_error(exc):  # another process won the race: reflect theirs
                raise
        log.info("sink %s: created table %s (%s)", self.name, self.config.table, ", ".join(names))
        return self._reflect(engine)

    def _reflect(self, engine: Engine) -> sa.Table:
        with engine.connect() as conn:
            return sa.Table(self._table_name, sa.MetaData(), schema=self._schema, autoload_with=conn)

    def _columns_to_create(self, sample: list[str] | None) -> list[str] | None:
        cfg = self.config
        if cfg.columns is not None:
            body: list[str] = list(cfg.columns)
        elif sample is not None:
            body = [c for c in sample if isinstance(c, str)]
        else:
            return None
        extra = [cfg.idempotency_column] if cfg.idempotency_column else []
        return list(dict.fromkeys([*cfg.key_columns, *body, *extra]))

    def _check_table(self, table: sa.Table) -> None:
        cfg = self.config
        named = [("key column", k) for k in cfg.key_columns]
        named += [("column", c) for c in cfg.columns or []]
        if cfg.idempotency_column:
            named.append(("idempotency column", cfg.idempotency_column))
        for what, col in named:
            if col not in table.c:
                raise DeliveryError(f"{self.name}: {what} {col!r} does not exist in table {cfg.table}",
                                    retryable=False)
        if cfg.mode == "upsert" and self._native_upsert and not _has_unique(table, cfg.key_columns):
            raise DeliveryError(
                f"{self.name}: upsert needs a primary key or unique constraint on "
                f"({', '.join(cfg.key_columns)}) in table {cfg.table}", retryable=False)

    # ------------------------------------------------------------------ errors

    def _classify(self, exc: sa_exc.SQLAlchemyError) -> DeliveryError:
        """Retryable: the database is away, busy or out of resources. Permanent: the data or the SQL."""
        orig = getattr(exc, "orig", None)
        text = _first_line(str(orig) if orig is not None else str(exc))
        where = f"table {self.config.table}"
        retryable = _is_transient(exc, orig, text)
        if isinstance(exc, sa_exc.IntegrityError):
            message = f"{self.name}: rejected by {where}: {text}"
        elif retryable:
            message = f"{self.name}: {text} ({where} in {self._db})"
        else:
            message = f"{self.name}: {where}: {text}"
        return DeliveryError(message, retryable=retryable)


def _is_transient(exc: sa_exc.SQLAlchemyError, orig: Any, text: str) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool checkout timed out / connection dropped
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.NotSupportedError):
        return False
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if isinstance(sqlite_name, str):
        return sqlite_name.startswith(_RETRY_SQLITE)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and len(state) == 5:
        return state[:2] in _RETRY_SQLSTATE_CLASSES or state in _RETRY_SQLSTATES
    if _PERMANENT_TEXT.search(text):
        return False
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True  # drivers use these for "cannot talk to the server"
    return bool(_TRANSIENT_TEXT.search(text))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown database error"


def _exists_error(exc: sa_exc.DBAPIError) -> bool:
    return "already exists" in str(exc.orig).lower()


def _has_unique(table: sa.Table, keys: list[str]) -> bool:
    wanted = set(keys)
    if {c.name for c in table.primary_key.columns} == wanted:
        return True
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and {c.name for c in constraint.columns} == wanted:
            return True
    return any(index.unique and {c.name for c in index.columns} == wanted for index in table.indexes)


def _select_then_write(conn: Connection, table: sa.Table, keys: list[str], row: dict[str, Any]) -> None:
    """Upsert for dialects without ON CONFLICT: look the key up, then update or insert."""
    match = sa.and_(*[table.c[k] == row[k] for k in keys])
    found = conn.execute(sa.select(sa.literal(1)).select_from(table).where(match).limit(1)).first()
    if found is None:
        conn.execute(sa.insert(table), [row])
        return
    updates = {c: v for c, v in row.items() if c not in keys}
    if updates:
        conn.execute(sa.update(table).where(match).values(updates))


def _sqlite_on_connect(lock_timeout: float, dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers (the finance app) work while we write; busy_timeout waits out short locks."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()
