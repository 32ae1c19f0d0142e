"""The SQL behind ``sql_poll``: the engine, and the user's query wrapped into pages after a cursor.

The user's query is text they wrote in their own config; it is never
formatted with values. syncbus wraps it as a subquery and adds the paging
itself, with bound parameters only::

    SELECT q.* FROM (<query>) AS q
    WHERE (q.<watermark>, q.<key>) > (:w, :k)          -- after the cursor (absent on a full load's first page)
      AND q.<watermark> IS NOT NULL AND q.<key> IS NOT NULL
    ORDER BY q.<watermark>, q.<key>
    LIMIT :n

Why wrap instead of asking the user to write ``ORDER BY`` and ``LIMIT``
correctly: ties. A nightly ERP extract inserts hundreds of postings in one
transaction, and PostgreSQL's ``now()`` gives them all the same
``changed_at``; a page that ends in the middle of them must resume with the
rest, which only ``(watermark, key) > (last watermark, last key)`` does. Both
PostgreSQL and SQLite (3.15+) compare row values, and PostgreSQL pushes the
outer condition into a simple subquery, so an index on ``(watermark, key)``
is used.

Without a ``key`` the order is by watermark alone and a page never splits a
group of equal watermarks (see :meth:`PageReader.page`).

The engine is read-only (PostgreSQL ``SET TRANSACTION READ ONLY``, SQLite
``PRAGMA query_only``): a poll never changes the source system.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from ..errors import SyncbusError
from ..sinks.sql_errors import first_line, is_transient, redact_url

log = logging.getLogger(__name__)

ALIAS = "syncbus_q"
WATERMARK_PARAM = "watermark"
# PostgreSQL type oids of the watermark column → the value below every other, for a full load of a
# query that compares with :watermark (see SqlPollSource._initial).
_PG_MINIMUM: dict[int, Any] = {
    1082: "-infinity", 1114: "-infinity", 1184: "-infinity",  # date, timestamp, timestamptz
    1700: "-infinity", 700: "-infinity", 701: "-infinity",  # numeric (PostgreSQL 14+), real, double
    20: -(2**63), 21: -(2**15), 23: -(2**31),  # bigint, smallint, integer
    25: "", 1043: "", 1042: "",  # text, varchar, char: the empty string sorts first in every collation
}


class SqlPollError(SyncbusError):
    """Base of what ``sql_poll`` raises; the poll runner retries every one with backoff."""


class SourceUnavailable(SqlPollError):
    """The database cannot be reached or failed for a passing reason (down, restarting, locked, timeout)."""


class QueryError(SqlPollError):
    """The database refused the query, or its result lacks what the options name (fix the config)."""


def bind_names(query: str) -> set[str]:
    """The ``:name`` parameters of a query, as SQLAlchemy's ``text()`` reads them."""
    return set(sa.text(query).compile().params)


def strip_query(query: str) -> str:
    """The query without trailing semicolons and blanks (it becomes a subquery)."""
    return re.sub(r"[\s;]+$", "", query)


def open_engine(dsn: str, connect_args: Mapping[str, Any], timeout: float, *, pool_size: int = 1) -> Engine:
    """A read-only engine; ``connect_args`` (the user's TLS and driver options) win over our defaults.

    ``pool_pre_ping``: after the database restarted, the pooled connection is
    dead; the ping replaces it instead of failing the next poll.
    """
    url: URL = make_url(dsn)
    backend = url.get_backend_name()
    args: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
    if backend == "sqlite":
        args.update(check_same_thread=False, timeout=timeout)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=0, pool_timeout=timeout, pool_recycle=3600)
        if backend == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
            args["connect_timeout"] = max(1, int(timeout))
            if "options" not in url.query:  # the DSN's own server options win
                args["options"] = f"-c statement_timeout={int(timeout * 1000)}"
    args.update(connect_args)
    engine = sa.create_engine(url, connect_args=args, **kwargs)
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_query_only)
    elif backend == "postgresql":
        engine = engine.execution_options(postgresql_readonly=True)
    return engine


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only = ON")
    finally:
        cursor.close()


class ConnectError(SqlPollError):
    """The database answered but refused the connection for good: bad password, unknown database, TLS refused."""


def connect_error(exc: BaseException, what: str, db: str) -> SqlPollError:
    """Our error class for a failed connect: down or busy (retry soon), or refused (fix the config)."""
    orig: Any = getattr(exc, "orig", None)
    detail = first_line(str(orig) if orig is not None else str(exc))
    if is_transient(exc):
        return SourceUnavailable(f"{what}: cannot connect to {db}: {detail}")
    return ConnectError(f"{what}: {db} refused the connection: {detail}")


def database_error(exc: BaseException, what: str, db: str) -> SqlPollError:
    """Our error class for a driver error: passing (retry soon) or the query's fault (fix the config)."""
    orig: Any = getattr(exc, "orig", None)
    detail = first_line(str(orig) if orig is not None else str(exc))
    if is_transient(exc):
        return SourceUnavailable(f"{what}: cannot read {db}: {detail}")
    return QueryError(f"{what}: {db} refused the query: {detail}")


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of one page: column names (query order) and the row tuples."""

    names: tuple[str, ...]
    rows: Sequence[Sequence[Any]]


class PageReader:
    """Builds the wrapped statements once and reads pages with bound values only."""

    def __init__(self, source: str, query: str, watermark: str, keys: Sequence[str]) -> None:
        self.source = source
        self.watermark = watermark
        self.keys = tuple(keys)
        self.uses_watermark = WATERMARK_PARAM in bind_names(query)
        inner = sa.text(strip_query(query)).columns(*(sa.column(c) for c in (watermark, *self.keys)))
        q = inner.subquery(ALIAS)
        self._wm = q.c[watermark]
        self._key_cols = [q.c[k] for k in self.keys]
        ordered = [self._wm, *self._key_cols]
        base: sa.Select[Any] = (sa.select(sa.literal_column(f"{ALIAS}.*")).select_from(q)
                .where(*(c.isnot(None) for c in ordered)))
        self._probe = sa.select(self._wm).select_from(q).limit(0)
        limit = sa.bindparam("syncbus_n", type_=sa.Integer)
        self._first = base.order_by(*ordered).limit(limit)
        after: list[sa.BindParameter[Any]] = [sa.bindparam("syncbus_w")]
        after += [sa.bindparam(f"syncbus_k{i}") for i in range(len(self.keys))]
        self._past = base.where(self._wm > after[0]).order_by(*ordered).limit(limit)
        self._after = (base.where(sa.tuple_(*ordered) > sa.tuple_(*after)).order_by(*ordered).limit(limit)
                       if self.keys else self._past)
        self._from = base.where(self._wm >= after[0]).order_by(*ordered).limit(limit)
        self._ties = base.where(self._wm == after[0]).order_by(*ordered)

    def _params(self, since: Any) -> dict[str, Any]:
        return {WATERMARK_PARAM: since} if self.uses_watermark else {}

    def first(self, conn: Connection, since: Any, limit: int) -> Page:
        """The first ``limit`` rows of the query (a full load's first page)."""
        return self._read(conn, self._first, {**self._params(since), "syncbus_n": limit})

    def after(self, conn: Connection, since: Any, watermark: Any, keys: Sequence[Any] | None, limit: int) -> Page:
        """Up to ``limit`` rows after the cursor. ``keys`` None: after the watermark's whole group.

        A cursor whose keys do not fit the options (the ``key`` option changed)
        re-reads from the watermark's group on: duplicates, never losses.
        """
        params = {**self._params(since), "syncbus_w": watermark, "syncbus_n": limit}
        if keys is None:
            stmt = self._past
        elif len(keys) == len(self.keys) and self.keys:
            stmt = self._after
            params.update({f"syncbus_k{i}": v for i, v in enumerate(keys)})
        else:
            stmt = self._from
        return self._read(conn, stmt, params)

    def ties(self, conn: Connection, since: Any, watermark: Any) -> Page:
        """Every row whose watermark equals ``watermark`` (a group larger than a page, without a key)."""
        return self._read(conn, self._ties, {**self._params(since), "syncbus_w": watermark})

    def watermark_type(self, conn: Connection) -> int | None:
        """PostgreSQL's type oid of the watermark column (for the full-load minimum), None if unknown."""
        result = conn.execute(self._probe, self._params(None))
        try:
            description = result.cursor.description if result.cursor is not None else None
            code = description[0][1] if description else None
        finally:
            result.close()
        return code if isinstance(code, int) else None

    def _read(self, conn: Connection, stmt: sa.Executable, params: dict[str, Any]) -> Page:
        result = conn.execute(stmt, params)
        names = tuple(result.keys())
        rows = [tuple(r) for r in result]
        return Page(names, rows)


def pg_minimum(oid: int | None) -> Any:
    """The value below every other of a PostgreSQL type, or None when there is none we know."""
    return None if oid is None else _PG_MINIMUM.get(oid)


def describe(dsn: str) -> str:
    """The database for messages and status: its URL without the password."""
    return redact_url(dsn)


def is_database_error(exc: BaseException) -> bool:
    return isinstance(exc, sa_exc.SQLAlchemyError)
