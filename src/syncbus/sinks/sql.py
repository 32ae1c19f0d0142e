"""The SQL sink: writes each mapped record as one row (or several) of a table in the target database.

This is the "database to database" flow (ERP postings → finance vouchers).
Upsert is the default because delivery is at-least-once: a replayed record
must land on the same row, not a second one.

Records are written in batches (:mod:`syncbus.sinks.sql_batch`): concurrent
sends share one transaction, yet each send learns its own record's fate, so
one bad row goes to the dead letters and its batch mates are committed. The
table and its statements live in :mod:`syncbus.sinks.sql_table`, the error
classification in :mod:`syncbus.sinks.sql_errors`.

SQLAlchemy is blocking, so every database call runs on a small thread pool of
the sink's own, as large as its connection pool: a slow database can tie up
only these threads, never the event loop or other sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.base import BaseSink, Delivery
from syncbus.sinks.sql_batch import Batcher, write_batch
from syncbus.sinks.sql_config import SqlSinkConfig
from syncbus.sinks.sql_errors import delivery_error, redact_url
from syncbus.sinks.sql_table import (
    NATIVE_UPSERT,
    RowGroup,
    Statements,
    TableSpec,
    check_table,
    reflect_or_create,
)
from syncbus.units import format_duration

__all__ = ["SqlSink", "SqlSinkConfig", "redact_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SqlSink(BaseSink):
    """Delivers to a database table; see :class:`SqlSinkConfig`."""

    Config: ClassVar[type[SqlSinkConfig]] = SqlSinkConfig
    config: SqlSinkConfig
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "finance-vouchers", "type": "sql", "url_env": "FINANCE_DB_URL", "table": "vouchers",
         "mode": "upsert", "key_columns": ["voucher_no"], "idempotency_column": "idempotency_key",
         "batch_size": 500, "batch_linger": "20ms",
         "connect_args": {"sslmode": "verify-full", "sslrootcert": "/etc/syncbus/finance-ca.pem"},
         "retry": {"attempts": 4, "initial": "1s", "max": "60s"}},
        {"name": "sandbox-orders", "type": "sql", "url_env": "SANDBOX_DB_URL",
         "table": "orders", "mode": "insert", "create_table": True},
    ]

    def __init__(self, config: SqlSinkConfig | Mapping[str, Any]) -> None:
        super().__init__(config)
        config = self.config  # validated
        self._url: URL = make_url(config.url)
        self._backend = self._url.get_backend_name()
        self._spec = TableSpec(sink=self.name, table=config.table, mode=config.mode,
                               key_columns=list(config.key_columns), columns=config.columns,
                               idempotency_column=config.idempotency_column, create_table=config.create_table)
        self._db = redact_url(config.url)
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._table: sa.Table | None = None
        self._statements: Statements | None = None
        self._prepare_lock = asyncio.Lock()
        self._batcher: Batcher[list[RowGroup]] | None = None
        # Tests flip this to exercise the select-then-write path on SQLite.
        self._native_upsert = self._backend in NATIVE_UPSERT
        # SQLite has one writer at a time. Queueing our own threads on a lock is far quicker than
        # letting them collide in SQLite, whose busy handler sleeps in steps of up to 100ms.
        sqlite = self._backend == "sqlite"
        self._serial: contextlib.AbstractContextManager[Any] = threading.Lock() if sqlite else contextlib.nullcontext()
        self._concurrency = 1 if sqlite else config.pool_size

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
        """Write what is queued, then release the connections and threads."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.close()
        engine, executor = self._engine, self._executor
        self._engine = self._executor = None
        self._table = None
        self._statements = None
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
        if self._backend == "sqlite":
            connect_args["check_same_thread"] = False
            if url.database in (None, "", ":memory:"):
                kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
            else:
                kwargs.update(pool_size=cfg.pool_size, max_overflow=0, pool_timeout=cfg.timeout)
        else:
            kwargs.update(pool_size=cfg.pool_size, max_overflow=0, pool_timeout=cfg.timeout,
                          pool_recycle=3600)
            if self._backend == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
                connect_args["connect_timeout"] = max(1, int(cfg.timeout))
        connect_args.update(cfg.connect_args)  # the user's TLS and driver options win
        try:
            engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        except Exception as exc:  # unknown dialect, driver not installed, bad connect_args
            raise DeliveryError(f"{self.name}: cannot use database {self._db}: {exc}",
                                retryable=False) from None
        if self._backend == "sqlite":
            sa.event.listen(engine, "connect", functools.partial(_sqlite_on_connect, cfg.lock_timeout))
            sa.event.listen(engine, "begin", _sqlite_begin)
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=cfg.pool_size,
                                            thread_name_prefix=f"syncbus-sql-{self.name}")
        return engine

    # ------------------------------------------------------------------ delivery

    async def send(self, delivery: Delivery) -> None:
        """One attempt: this record's rows are committed (in some batch) when this returns.

        Raises the record's own error: permanent when the table refuses its
        rows, retryable when the database failed (the whole batch then did).
        """
        rows = self._rows(delivery)
        if not rows:
            return
        if self._engine is None:
            self._open()
        table = await self._target(rows[0])
        assert table is not None  # a sample row always lets _target create the table
        groups = self._bind(table, rows)
        if self._batcher is None:
            cfg = self.config
            self._batcher = Batcher(self._flush, size=cfg.batch_size, linger=cfg.batch_linger,
                                    concurrency=self._concurrency)
        try:
            async with asyncio.timeout(self.config.timeout):
                await self._batcher.submit(groups)
        except TimeoutError:
            raise DeliveryError(
                f"{self.name}: timeout after {format_duration(self.config.timeout)} writing to table "
                f"{self.config.table} ({self._db})", retryable=True) from None

    async def _flush(self, records: list[list[RowGroup]]) -> list[BaseException | None]:
        """Write one batch on a worker thread; turn each record's database error into its DeliveryError."""
        engine = self._open()
        statements = self._statements
        assert statements is not None
        try:
            outcomes = await self._call(write_batch, engine, self._serial, statements, records)
        except DeliveryError as err:
            return [err] * len(records)
        return [None if exc is None else self._error(exc) for exc in outcomes]

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

    def _bind(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[RowGroup]:
        """Check and convert rows; group consecutive rows with the same columns (one executemany each)."""
        cfg = self.config
        wanted = None if cfg.columns is None else set(cfg.columns)
        if wanted is not None and cfg.idempotency_column is not None:
            wanted.add(cfg.idempotency_column)
        groups: list[RowGroup] = []
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
        try:
            return await loop.run_in_executor(self._executor, functools.partial(ctx.run, fn, *args))
        except DeliveryError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc
        except TypeError as exc:  # the driver's connect() refused an option of connect_args
            raise DeliveryError(f"{self.name}: {self._db}: {exc}", retryable=False) from exc

    def _error(self, exc: BaseException) -> DeliveryError:
        if isinstance(exc, sa_exc.SQLAlchemyError):
            return delivery_error(exc, self.name, self.config.table, self._db)
        if isinstance(exc, DeliveryError):
            return exc
        return DeliveryError(f"{self.name}: {type(exc).__name__}: {exc}", retryable=False)

    # ------------------------------------------------------------------ the table

    async def _target(self, sample: Mapping[str, Any] | None) -> sa.Table | None:
        """The reflected (or created) table; None only while create_table waits for a first record."""
        if self._table is not None:
            return self._table
        async with self._prepare_lock:
            if self._table is None:
                engine = self._open()
                names = None if sample is None else list(sample)
                try:
                    async with asyncio.timeout(self.config.timeout):
                        table = await self._call(reflect_or_create, engine, self._spec, self._db, names)
                except TimeoutError:
                    raise DeliveryError(
                        f"{self.name}: timeout after {format_duration(self.config.timeout)} reading table "
                        f"{self.config.table} ({self._db})", retryable=True) from None
                if table is not None:
                    check_table(table, self._spec, self._native_upsert)
                    self._statements = Statements(table, self._spec, self._backend, self._native_upsert)
                    self._table = table
            return self._table


def _sqlite_on_connect(lock_timeout: float, dbapi_connection: Any, _record: Any) -> None:
    """Per connection: let SQLAlchemy run transactions, WAL, a lock timeout, and enforce foreign keys.

    pysqlite's own transaction handling (Python < 3.12) skips BEGIN before a
    SAVEPOINT, which breaks the record-by-record retry of a failed batch;
    ``isolation_level = None`` hands BEGIN to SQLAlchemy (see :func:`_sqlite_begin`).
    WAL lets readers (the finance app) work while we write; busy_timeout
    waits out short locks. SQLite ignores declared foreign keys unless asked:
    the target's schema means them, so a dangling reference must be refused.
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN")
