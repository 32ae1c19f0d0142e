"""The embedded bus's SQLite file: its schema, how a connection is set up, the thread that owns one.

Split out of :mod:`syncbus.bus.embedded` (its docstring has the design): the
bottom layer, which every other ``embedded_*`` module builds on and which
imports none of them. A connection runs ``synchronous=FULL`` in WAL mode (the
durability promise) and carries the ``syncbus_share`` SQL function, so the
worker share hash (``share_of``) lives here with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

PARTITION = 0
BUSY_TIMEOUT_MS = 10_000    # wait this long for another process's write lock

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS log (
        topic TEXT NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        key TEXT,
        value BLOB NOT NULL,
        headers TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (topic, "partition", "offset"))""",
    """CREATE TABLE IF NOT EXISTS topics (
        topic TEXT NOT NULL,
        "partition" INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        PRIMARY KEY (topic, "partition"))""",
    """CREATE TABLE IF NOT EXISTS idempotency (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        record_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        topic TEXT NOT NULL,
        "offset" INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (scope, key))""",
    """CREATE TABLE IF NOT EXISTS offsets (
        "group" TEXT NOT NULL,
        topic TEXT NOT NULL,
        "partition" INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        PRIMARY KEY ("group", topic, "partition"))""",
)


def share_of(key: str | None, count: int) -> int:
    """Which of ``count`` workers takes a record with ``key``: a stable hash; no key → worker 0."""
    if key is None or count <= 1:
        return 0
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % count


class _SqliteThread:
    """One thread owning one SQLite connection; everything on it runs in order."""

    def __init__(self, path: str, name: str) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.create_function("syncbus_share", 2, share_of, deterministic=True)
            self._conn = conn
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._open()))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError):  # pool already shut down
            await loop.run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)


def _init_schema(conn: sqlite3.Connection) -> None:
    # journal_mode is a property of the file; setting it needs no transaction.
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"could not switch to WAL mode (got {mode!r})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _SCHEMA:
            conn.execute(stmt)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
