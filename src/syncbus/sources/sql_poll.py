"""``sql_poll``: read new and changed rows of a database by a watermark column (PostgreSQL, SQLite).

The ERP → finance flow is "database to database, daily 22:00": at 22:00 the
poll runner calls :meth:`SqlPollSource.poll` page after page; each page is
published, then its cursor stored. This module holds the options and the
cursor; the SQL lives in :mod:`.sql_poll_query`, the JSON of rows and cursor
values in :mod:`.sql_poll_values`.

**The cursor** is ``{"watermark": W, "key": [K...], "since": S}``: the
watermark and key of the last row published, and ``since``, the value
``:watermark`` is bound to for the whole run -- the last watermark of the
previous complete run (None during a full load). Keeping ``since`` fixed
while paging is what makes the DESIGN's own form of query,
``WHERE changed_at > :watermark``, safe: were it bound to the last row of
the previous *page*, rows sharing that row's ``changed_at`` but sorting after
it would vanish between two pages. The paging itself never relies on the
user's condition; see :mod:`.sql_poll_query`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy.engine import Connection, Engine, make_url

from ..sinks.sql_errors import check_database_url, redact_url
from ..units import Duration
from .base import NewRecord, PollBatch, PollSource, PollSourceConfig, SourceConfig
from .sql_poll_query import (
    WATERMARK_PARAM,
    ConnectError,
    Page,
    PageReader,
    QueryError,
    SourceUnavailable,
    SqlPollError,
    bind_names,
    connect_error,
    database_error,
    is_database_error,
    open_engine,
    pg_minimum,
    strip_query,
)
from .sql_poll_values import CursorValueError, decode, encode, row_json, text

__all__ = ["ConnectError", "CursorError", "DriverError", "QueryError", "SourceUnavailable", "SqlPollConfig",
           "SqlPollError", "SqlPollSource"]

KEY_SEPARATOR = "/"  # between the values of a compound key in the record key: BUKRS/GJAHR/BELNR/BUZEI


class CursorError(SqlPollError):
    """The stored cursor was not written by this source's options (``syncbus sync --full`` starts afresh)."""


class DriverError(SqlPollError):
    """The DSN names a database syncbus cannot open: unknown dialect, driver not installed, bad connect_args."""


class SqlPollConfig(PollSourceConfig):
    type: Literal["sql_poll"] = "sql_poll"
    dsn: str = Field(
        repr=False, json_schema_extra={"secret": True},
        description="SQLAlchemy URL of the database, from the environment (`dsn_env: VAR`), e.g. "
                    "postgresql+psycopg://user:pw@erp-db/erp?sslmode=verify-full&sslrootcert=/etc/ca.pem or "
                    "sqlite:////data/erp.db. Query parameters go to the driver.")
    query: str = Field(
        min_length=1,
        description="SELECT returning the rows to sync, one record per row. syncbus wraps it as a subquery and "
                    "adds the paging (after the cursor, ordered by watermark and key, LIMIT batch_size): do not "
                    "add ORDER BY or LIMIT. It may use `:watermark`, bound to the last watermark of the previous "
                    "run (compare with >=); on a full load to `initial_watermark`.")
    watermark: str = Field(
        min_length=1,
        description="Column of the query's result that grows with every change (changed_at, a sequence); "
                    "exactly as the query names it (PostgreSQL folds unquoted names to lower case). "
                    "Rows where it is NULL are never read.")
    key: str | list[str] | None = Field(
        None,
        description="Column(s) that identify a row, the tie-breaker among equal watermarks (and the record key, "
                    "values joined by '/'). Without it a page never splits rows of equal watermark, so one page "
                    "may hold more than batch_size rows.")
    initial_watermark: str | int | float | None = Field(
        None,
        description="What `:watermark` is bound to on a full load (first run, `syncbus sync --full`), e.g. "
                    "'1970-01-01'. Default: the lowest value of the column's type (PostgreSQL: -infinity for "
                    "dates, timestamps and numerics; SQLite: below every value).")
    omit_nulls: bool = Field(
        False, description="Leave NULL columns out of the record (so a mapping's `default` applies) "
                           "instead of writing null.")
    connect_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for the driver's connect(), e.g. TLS for PostgreSQL: "
                    "{sslmode: verify-full, sslrootcert: /etc/syncbus/erp-ca.pem, sslcert: ..., sslkey: ...}. "
                    "Passwords belong in dsn (from the environment), not here.")
    timeout: Duration = Field(
        30.0, gt=0, le=3600,
        description="Longest wait to connect and for one page's query (PostgreSQL statement_timeout; "
                    "SQLite: for a locked database).")

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        return check_database_url(value)

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: str) -> str:
        query = strip_query(value.strip())
        if not query:
            raise ValueError("the query is empty")
        try:
            names = bind_names(query)
        except Exception as exc:
            raise ValueError(f"cannot read the query's parameters: {exc}") from None
        unknown = sorted(names - {WATERMARK_PARAM})
        if unknown:
            raise ValueError(f"unknown parameter :{unknown[0]} (only :{WATERMARK_PARAM} is bound; write a "
                             f"literal colon as \\:)")
        return query

    @field_validator("initial_watermark", mode="before")
    @classmethod
    def _dates_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 1970-01-01 as a date: keep the ISO text the user meant
        return value.isoformat() if isinstance(value, dt.date | dt.time) else value

    @model_validator(mode="after")
    def _check_columns(self) -> SqlPollConfig:
        keys = self.keys()
        for name in (self.watermark, *keys):
            if not name.strip():
                raise ValueError("column names must not be empty")
        if self.watermark in keys:
            raise ValueError(f"the watermark column {self.watermark!r} cannot also be the key")
        if len(set(keys)) != len(keys):
            raise ValueError("a key column is listed twice")
        return self

    def keys(self) -> tuple[str, ...]:
        if self.key is None:
            return ()
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Decoded cursor: the last row's watermark and keys (None: its whole watermark group is done), ``since``."""

    watermark: Any
    keys: tuple[Any, ...] | None
    since: Any

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"watermark": encode(self.watermark)}
        if self.keys is not None:
            out["key"] = [encode(k) for k in self.keys]
        out["since"] = encode(self.since)
        return out

    @classmethod
    def from_json(cls, source: str, raw: Any) -> Cursor:
        if not isinstance(raw, Mapping) or "watermark" not in raw:
            raise CursorError(f"source {source}: stored cursor {raw!r} is not a sql_poll cursor; "
                              f"run `syncbus sync --full {source}` to load from scratch")
        try:
            keys = raw.get("key")
            return cls(decode(raw["watermark"]),
                       None if keys is None else tuple(decode(k) for k in (keys if isinstance(keys, list) else [keys])),
                       decode(raw.get("since")))
        except CursorValueError as exc:
            raise CursorError(f"source {source}: {exc}") from None


class SqlPollSource(PollSource):
    """Read new and changed rows of a database query, incrementally by a watermark column.

    Each row becomes one JSON record, keyed by the column names the query
    returns: DECIMAL/NUMERIC as exact decimal text, dates and timestamps as
    ISO 8601 text, never binary floats. The first run of a source (no stored
    cursor) and `syncbus sync --full` load every row; later runs read only
    rows after the cursor -- the last (watermark, key) published -- so rows
    with equal watermarks are neither lost nor doubled, as long as rows that
    arrive later with the last watermark read sort after it by key (growing
    document numbers). A row committed late with an older watermark is seen
    only by a full load; `syncbus reconcile` finds such gaps. A database
    that is down makes the poll fail: the runner retries with backoff, the
    cursor stays. The connection is read-only. PostgreSQL and SQLite are
    tested; any SQLAlchemy database with row-value comparison should work.
    """

    Config: ClassVar[type[SourceConfig]] = SqlPollConfig
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "beta"
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "erp-postings", "type": "sql_poll", "dsn_env": "ERP_DSN",
         "query": "SELECT * FROM fi_postings", "watermark": "changed_at", "key": "posting_id",
         "schedule": "0 22 * * *", "timezone": "Asia/Shanghai", "topic": "erp.postings",
         "connect_args": {"sslmode": "verify-full", "sslrootcert": "/etc/syncbus/erp-ca.pem"}},
        {"name": "erp-postings-legacy", "type": "sql_poll", "dsn_env": "ERP_DSN",
         "query": "SELECT * FROM postings WHERE changed_at >= :watermark", "watermark": "changed_at",
         "interval": "5m", "batch_size": 1000, "topic": "erp.postings"},
    ]
    config: SqlPollConfig

    def __init__(self, config: SourceConfig | Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        self._keys = cfg.keys()
        self._reader = PageReader(self.name, cfg.query, cfg.watermark, self._keys)
        self._db = redact_url(cfg.dsn)
        self._backend = make_url(cfg.dsn).get_backend_name()
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._minimum: tuple[Any] | None = None  # the full-load binding of :watermark, once known

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the engine (no connection yet: a database down at start is a failing poll, retried)."""
        if self._engine is not None:
            return
        try:
            engine = open_engine(self.config.dsn, self.config.connect_args, self.config.timeout, pool_size=2)
        except Exception as exc:  # unknown dialect, driver not installed
            raise DriverError(f"source {self.name}: cannot use database {self._db}: {exc}") from None
        self._engine = engine
        # Our own threads: a hung database blocks these, never the loop's default pool (the state store's).
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"syncbus-sql-poll-{self.name}")

    async def stop(self) -> None:
        engine, executor = self._engine, self._executor
        self._engine = self._executor = None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True)

    async def check(self) -> bool:
        """Can we query the database right now (``SELECT 1``)?"""
        try:
            await self._call(_ping)
        except SqlPollError:
            return False
        return True

    # -- polling -----------------------------------------------------------------------

    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        """Rows after ``cursor`` (None: from the start), at most ``limit`` (see ``key``), and the cursor after them."""
        state = None if cursor is None else Cursor.from_json(self.name, cursor)
        batch: PollBatch = await self._call(self._poll, cursor, state, limit)
        return batch

    def _poll(self, conn: Connection, raw: Any, cursor: Cursor | None, limit: int) -> PollBatch:
        since = cursor.since if cursor is not None and cursor.since is not None else self._initial(conn)
        if cursor is None:
            page = self._reader.first(conn, since, limit + 1)
        else:
            page = self._reader.after(conn, since, cursor.watermark, cursor.keys, limit + 1)
        wm_at, key_at = self._positions(page)
        rows = list(page.rows)
        more = len(rows) > limit
        if more:
            rows = rows[:limit]
            if not self._keys:  # never end a page inside a group of equal watermarks
                boundary = page.rows[limit][wm_at]
                while rows and rows[-1][wm_at] == boundary:
                    rows.pop()
                if not rows:  # the group alone is larger than a page: take all of it
                    rows = list(self._reader.ties(conn, since, boundary).rows)
        if not rows:
            if cursor is not None and cursor.since != cursor.watermark:
                # the run is over: the next one binds :watermark to where this one ended
                return PollBatch([], Cursor(cursor.watermark, cursor.keys, cursor.watermark).to_json(), False)
            return PollBatch([], raw, False)
        last = rows[-1]
        keys = tuple(last[i] for i in key_at) if self._keys else None
        run_since = (None if cursor is None else cursor.since) if more else last[wm_at]
        new = Cursor(last[wm_at], keys, run_since)
        records = [self._record(page.names, row, key_at) for row in rows]
        return PollBatch(records, new.to_json(), more)

    def _record(self, names: Sequence[str], row: Sequence[Any], key_at: Sequence[int]) -> NewRecord:
        key = KEY_SEPARATOR.join(text(row[i]) for i in key_at) if key_at else None
        return NewRecord(value=row_json(names, row, omit_nulls=self.config.omit_nulls), key=key)

    def _positions(self, page: Page) -> tuple[int, list[int]]:
        """Where the watermark and key columns are in the result; refuses an ambiguous result."""
        seen: set[str] = set()
        for name in page.names:
            if name in seen:
                raise QueryError(f"source {self.name}: the query returns column {name!r} twice; give one an alias")
            seen.add(name)
        missing = [c for c in (self.config.watermark, *self._keys) if c not in seen]
        if missing:
            raise QueryError(f"source {self.name}: the query returns no column {missing[0]!r} "
                             f"(it returns: {', '.join(page.names)})")
        names = list(page.names)
        return names.index(self.config.watermark), [names.index(k) for k in self._keys]

    def _initial(self, conn: Connection) -> Any:
        """What ``:watermark`` is bound to on a full load: ``initial_watermark``, else the type's minimum."""
        if not self._reader.uses_watermark:
            return None
        if self.config.initial_watermark is not None:
            return self.config.initial_watermark
        if self._minimum is None:
            if self._backend == "sqlite":
                # SQLite orders NULL < numbers < text < blobs, and -inf is below every number; text
                # columns compare it as the text '-Inf', below ISO dates and digits
                value: Any = float("-inf")
            elif self._backend == "postgresql":
                value = pg_minimum(self._reader.watermark_type(conn))
            else:
                value = None
            if value is None:
                raise QueryError(f"source {self.name}: the query uses :{WATERMARK_PARAM}; set initial_watermark "
                                 f"(what a full load binds it to, e.g. '1970-01-01' or 0)")
            self._minimum = (value,)
        return self._minimum[0]

    def later(self, stored: Any | None, seen: Any | None) -> Any | None:
        """The further of two cursors by (watermark, key); an unreadable one loses."""
        try:
            a = None if stored is None else Cursor.from_json(self.name, stored)
        except CursorError:
            a = None
        try:
            b = None if seen is None else Cursor.from_json(self.name, seen)
        except CursorError:
            return stored
        if a is None or b is None:
            return seen if b is not None else stored
        try:
            if a.watermark != b.watermark:
                return seen if b.watermark > a.watermark else stored
            if a.keys is None:  # a whole watermark group is done: beyond any row inside it
                return stored
            if b.keys is None:
                return seen
            return seen if b.keys >= a.keys else stored
        except TypeError:  # the column's type changed between the two
            return seen

    # -- the blocking part ---------------------------------------------------------------

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(connection, *args)`` on our threads; database failures become our error classes."""
        if self._engine is None:
            await self.start()
        engine, executor = self._engine, self._executor
        assert engine is not None and executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(self._in_connection, engine, fn, *args))

    def _in_connection(self, engine: Engine, fn: Any, *args: Any) -> Any:
        what = f"source {self.name}"
        try:
            conn = engine.connect()
        except TypeError as exc:  # the driver's connect() refused an option of connect_args
            raise DriverError(f"{what}: cannot connect to {self._db}: {exc}") from None
        except Exception as exc:
            if is_database_error(exc):
                raise connect_error(exc, what, self._db) from None
            raise
        with conn:
            try:
                result = fn(conn, *args)
            except SqlPollError:
                raise
            except Exception as exc:
                if is_database_error(exc):
                    raise database_error(exc, what, self._db) from None
                raise
            with contextlib.suppress(Exception):
                conn.rollback()  # read-only: nothing to keep; end the transaction cleanly
            return result


def _ping(conn: Connection) -> None:
    conn.execute(sa.text("SELECT 1")).close()
