"""The embedded bus: a durable, append-only log in one SQLite file.

It is the default so that syncbus runs with no broker. Design choices:

* **Durability.** The file is in WAL mode with ``synchronous=FULL``: every
  commit fsyncs the WAL, so once ``publish`` returns the record survives a
  power loss, not just a process crash. ``NORMAL`` would only sync at
  checkpoints and could lose the last records after a power cut, while the
  HTTP ingress has already answered 202 ("durably on the bus"). The fsync
  cost is paid once per *group* of publishes, see below.
* **Group commit.** Every write (publishes and offset commits) is queued; one
  writer thread with its own connection takes everything that queued while
  the previous transaction ran and writes it in one transaction. Each caller's
  future resolves only after that commit. The event loop never runs SQLite.
* **Offsets.** One partition per topic (partition 0); offsets 0, 1, 2, ... The
  high-water mark lives in table ``topics`` (not ``MAX(offset)``), so a future
  retention job may delete old log rows without offsets ever being reused.
* **Consumers.** ``offsets(group, topic, partition, next_offset)`` holds the
  committed position of each group; each group sees every record. Within one
  process, a (group, topic) is owned by one consumer at a time (like a Kafka
  group whose topic has one partition); when the owner stops, another
  consumer of the group takes over from the committed offset. Consumers of the
  same group in *different* processes are not coordinated -- except for the
  workers of one ``syncbus run --workers N`` (``share``): each of them takes
  the records whose key falls in its share (a hash of the key; records without
  a key go to worker 0, so their order holds), and commits its own position,
  ``<group>@<i>/<N>``. The group's own row is kept at the lowest of the
  workers' positions, in the same transaction, so the ledger and a later run
  with another number of workers start from a position every worker is past.
  Run one ``syncbus run`` per embedded file.
* **Wake-ups.** A publish in this process wakes waiting consumers at once; a
  publish by another process (e.g. ``syncbus dlq replay``) is noticed by a
  watcher that polls the ``topics`` table every 50 ms while anyone waits.
* **Reading what we wrote.** Records this process committed are also kept in a
  bounded in-memory tail per topic (``tail.py``); a consumer whose position is
  inside it takes them from there instead of reading SQLite back (issue 11).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..errors import BusError, IdempotencyConflict
from ..record import H_ID, Record
from ..state import crypto  # issue 12: values sealed with SYNCBUS_ENCRYPT_BUS; reading always opens
from .base import Published
from .offsets import OffsetTracker
from .tail import Tail

T = TypeVar("T")

PARTITION = 0
POLL_INTERVAL = 0.05        # seconds between checks for publishes by other processes
SHARED_POLL_INTERVAL = 0.01  # ... when workers share the file: half the records come from the others
BUSY_TIMEOUT_MS = 10_000    # wait this long for another process's write lock
MAX_BATCH = 5_000           # bound one transaction (and so the latency of its callers)

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


@dataclass(slots=True)
class _Publish:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str]
    ts: float
    future: asyncio.Future[Any]
    # (scope, key, fingerprint, record id) for publish_once: claim and append in one transaction
    once: tuple[str, str, str, str] | None = None


@dataclass(slots=True)
class _Commit:
    group: str
    offsets: dict[tuple[str, int], int]
    future: asyncio.Future[Any]
    # Workers sharing a group (EmbeddedBus.share): (the group, every worker's share group). The group's
    # row then moves to the lowest of the shares' rows -- once every share has one.
    derive: tuple[str, tuple[str, ...]] | None = None


def share_of(key: str | None, count: int) -> int:
    """Which of ``count`` workers takes a record with ``key``: a stable hash; no key → worker 0."""
    if key is None or count <= 1:
        return 0
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % count


_Op = _Publish | _Commit


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


def _earlier_claim(conn: sqlite3.Connection, claims: dict[tuple[str, str], Published], op: _Publish,
                   ) -> Published | IdempotencyConflict | None:
    """The record an earlier publish_once of the same (scope, key) made, or a conflict, or None."""
    assert op.once is not None
    scope, key, fingerprint, _rid = op.once
    found = claims.get((scope, key))
    if found is None:
        row = conn.execute('SELECT record_id, fingerprint, topic, "offset" FROM idempotency '
                           'WHERE scope=? AND key=?', (scope, key)).fetchone()
        if row is None:
            return None
        found = Published(row[0], row[2], PARTITION, row[3], duplicate=True, fingerprint=row[1])
    if found.fingerprint != fingerprint:
        return IdempotencyConflict(scope, key)
    return Published(found.record_id, found.topic, found.partition, found.offset, duplicate=True,
                     fingerprint=found.fingerprint)


def _write_batch(conn: sqlite3.Connection, ops: list[_Op]) -> list[Any]:
    """One transaction for everything queued; returns each op's result.

    A publish gets its offset; a publish_once its :class:`Published` (or the
    conflict to raise); a commit -1.
    """
    seal = crypto.codec().seal_bus  # issue 12
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read the high-water marks inside the write transaction: another process
        # may have appended since our last batch.
        next_off: dict[str, int] = {}
        results: list[Any] = []
        rows: list[tuple[Any, ...]] = []
        claims: dict[tuple[str, str], Published] = {}
        commits: list[tuple[str, str, int, int]] = []
        derived: list[tuple[str, tuple[str, ...], str, int]] = []
        for op in ops:
            if isinstance(op, _Publish):
                if op.once is not None:
                    earlier = _earlier_claim(conn, claims, op)
                    if earlier is not None:
                        results.append(earlier)
                        continue
                off = next_off.get(op.topic)
                if off is None:
                    row = conn.execute('SELECT next_offset FROM topics WHERE topic=? AND "partition"=?',
                                       (op.topic, PARTITION)).fetchone()
                    off = row[0] if row else 0
                next_off[op.topic] = off + 1
                rows.append((op.topic, PARTITION, off, op.key, seal(op.value),  # issue 12
                             orjson.dumps(op.headers), op.ts))
                if op.once is None:
                    results.append(off)
                else:
                    scope, key, fingerprint, rid = op.once
                    claims[(scope, key)] = Published(rid, op.topic, PARTITION, off, duplicate=False,
                                                     fingerprint=fingerprint)
                    conn.execute('INSERT INTO idempotency (scope, key, record_id, fingerprint, topic, "offset", '
                                 'created) VALUES (?, ?, ?, ?, ?, ?, ?)', (scope, key, rid, fingerprint, op.topic,
                                                                          off, op.ts))
                    results.append(claims[(scope, key)])
            else:
                commits.extend((op.group, t, p, o) for (t, p), o in op.offsets.items())
                if op.derive is not None:
                    derived.extend((op.derive[0], op.derive[1], t, p) for t, p in op.offsets)
                results.append(-1)
        if rows:
            conn.executemany('INSERT INTO log (topic, "partition", "offset", key, value, headers, ts) '
                             'VALUES (?, ?, ?, ?, ?, ?, ?)', rows)
            conn.executemany('INSERT INTO topics (topic, "partition", next_offset) VALUES (?, ?, ?) '
                             'ON CONFLICT (topic, "partition") '
                             'DO UPDATE SET next_offset=excluded.next_offset',
                             [(t, PARTITION, o) for t, o in next_off.items()])
        if commits:
            # MAX: a commit never moves a group backwards (e.g. a late commit from a
            # consumer that lost ownership); resetting a group is a deliberate UPDATE.
            conn.executemany('INSERT INTO offsets ("group", topic, "partition", next_offset) '
                             'VALUES (?, ?, ?, ?) ON CONFLICT ("group", topic, "partition") '
                             'DO UPDATE SET next_offset=MAX(next_offset, excluded.next_offset)', commits)
        for group, shares, topic, part in derived:
            marks = ",".join("?" * len(shares))
            conn.execute('INSERT INTO offsets ("group", topic, "partition", next_offset) '
                         'SELECT ?, ?, ?, MIN(next_offset) FROM offsets '
                         f'WHERE topic=? AND "partition"=? AND "group" IN ({marks}) HAVING COUNT(*)=? '
                         'ON CONFLICT ("group", topic, "partition") '
                         'DO UPDATE SET next_offset=MAX(next_offset, excluded.next_offset)',
                         (group, topic, part, topic, part, *shares, len(shares)))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return results


def _read_records(conn: sqlite3.Connection, positions: list[tuple[str, int]], limit: int) -> list[Record]:
    out: list[Record] = []
    for topic, pos in positions:
        if len(out) >= limit:
            break
        cur = conn.execute('SELECT "offset", key, value, headers, ts FROM log '
                           'WHERE topic=? AND "partition"=? AND "offset">=? ORDER BY "offset" LIMIT ?',
                           (topic, PARTITION, pos, limit - len(out)))
        for off, key, value, headers, ts in cur:
            out.append(Record(value=crypto.open(bytes(value)), key=key,  # issue 12
                              headers=orjson.loads(headers), topic=topic,
                              partition=PARTITION, offset=off, timestamp=ts))
    return out


def _read_share_records(conn: sqlite3.Connection, positions: list[tuple[str, int]], limit: int, index: int,
                        count: int) -> tuple[list[Record], dict[str, int], set[str]]:
    """``_read_records`` of one worker's share: (its records, per topic the position after what was
    scanned, the topics scanned to their end).

    The end is read first: every offset below it was committed when it was
    read, so the scan (a later snapshot) cannot miss one of them.
    """
    out: list[Record] = []
    scanned: dict[str, int] = {}
    at_end: set[str] = set()
    for topic, pos in positions:
        room = limit - len(out)
        if room <= 0:
            break
        row = conn.execute('SELECT next_offset FROM topics WHERE topic=? AND "partition"=?',
                           (topic, PARTITION)).fetchone()
        end = row[0] if row else 0
        if end <= pos:
            scanned[topic] = pos
            at_end.add(topic)
            continue
        rows = conn.execute('SELECT "offset", key, value, headers, ts FROM log '
                            'WHERE topic=? AND "partition"=? AND "offset">=? AND "offset"<? '
                            'AND syncbus_share(key, ?)=? ORDER BY "offset" LIMIT ?',
                            (topic, PARTITION, pos, end, count, index, room)).fetchall()
        for off, key, value, headers, ts in rows:
            out.append(Record(value=crypto.open(bytes(value)), key=key,  # issue 12
                              headers=orjson.loads(headers), topic=topic,
                              partition=PARTITION, offset=off, timestamp=ts))
        if len(rows) < room:
            scanned[topic] = end
            at_end.add(topic)
        else:
            scanned[topic] = rows[-1][0] + 1
    return out, scanned, at_end


def _read_high_water(conn: sqlite3.Connection, topics: Sequence[str] | None) -> dict[str, int]:
    if topics is None:
        rows = conn.execute('SELECT topic, next_offset FROM topics WHERE "partition"=?', (PARTITION,))
    else:
        marks = ",".join("?" * len(topics))
        rows = conn.execute('SELECT topic, next_offset FROM topics '
                            f'WHERE "partition"=? AND topic IN ({marks})', (PARTITION, *topics))
    return {t: o for t, o in rows}


def _read_committed(conn: sqlite3.Connection, group: str, topic: str) -> int:
    row = conn.execute('SELECT next_offset FROM offsets WHERE "group"=? AND topic=? AND "partition"=?',
                       (group, topic, PARTITION)).fetchone()
    return row[0] if row else 0


class EmbeddedBus:
    """The Bus protocol on one SQLite file (see the module docstring for the design)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = "embedded://" + path
        self._writer: _SqliteThread | None = None
        self._reader: _SqliteThread | None = None
        self._start_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._consumers: set[EmbeddedConsumer] = set()
        self._waiting: set[EmbeddedConsumer] = set()
        self._owners: dict[tuple[str, str], EmbeddedConsumer] = {}
        self._tails: dict[str, Tail] = {}
        self._share: tuple[int, int] | None = None   # (this worker, workers) of `syncbus run --workers`
        self._poll_interval = POLL_INTERVAL
        # Per topic, the highest next offset this process knows of (its own commits, the watcher's
        # polls, reads that came back short): a consumer at or past it has nothing to read.
        self._known_end: dict[str, int] = {}
        # Committed write transactions and the ops in them: writes/transactions is
        # the group-commit factor (exposed for metrics and tests).
        self.transactions = 0
        self.writes = 0

    def share(self, index: int, count: int) -> None:
        """This process is worker ``index`` of ``count`` on this file: its consumers take only their share.

        See the module docstring (Consumers). Call before any consumer starts.
        """
        if not 0 <= index < count:
            raise BusError(f"embedded bus {self.path}: worker {index} of {count} does not exist")
        self._share = (index, count) if count > 1 else None
        self._poll_interval = SHARED_POLL_INTERVAL if count > 1 else POLL_INTERVAL

    def _mine(self, key: str | None) -> bool:
        share = self._share
        return share is None or share_of(key, share[1]) == share[0]

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise BusError(f"embedded bus {self.path}: already stopped")
        if self._started:
            return
        try:
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BusError(f"embedded bus {self.path}: cannot create its folder: {e}") from e
        with self._start_lock:
            if self._writer is None:
                self._writer = _SqliteThread(self.path, "syncbus-bus-writer")
                self._reader = _SqliteThread(self.path, "syncbus-bus-reader")
        try:
            await self._writer.run(_init_schema)
        except sqlite3.Error as e:
            raise BusError(f"embedded bus {self.path}: cannot open the database: {e}") from e
        self._started = True

    async def stop(self) -> None:
        """Finish queued writes, then close. Stop consumers first: their final commit needs the bus."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        for thread in (self._writer, self._reader):
            if thread is not None:
                await thread.close()

    async def _ready(self) -> None:
        if self._closed:
            raise BusError(f"embedded bus {self.path}: stopped")
        if not self._started:
            await self.start()

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            await self._ready()
            assert self._reader is not None
            await self._reader.run(lambda c: c.execute("SELECT 1 FROM topics LIMIT 1").fetchall())
        except (BusError, sqlite3.Error):
            return False
        return True

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Topics are implicit here: the first publish creates one."""

    # -- writing -------------------------------------------------------------

    async def publish(self, topic: str, value: bytes, key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Record:
        if not topic or not isinstance(topic, str):
            raise BusError(f"embedded bus {self.path}: publish needs a topic name, got {topic!r}")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise BusError(f"embedded bus {self.path}: topic {topic!r}: value must be bytes, "
                           f"got {type(value).__name__}")
        hdrs = {str(k): str(v) for k, v in (headers or {}).items()}
        await self._ready()
        loop = asyncio.get_running_loop()
        op = _Publish(topic, key, bytes(value), hdrs, time.time(), loop.create_future())
        offset = await self._submit(op)
        return Record(value=op.value, key=key, headers=dict(hdrs), topic=topic, partition=PARTITION,
                      offset=offset, timestamp=op.ts)

    async def publish_once(self, topic: str, value: bytes, key: str | None, headers: Mapping[str, str], *,
                           scope: str, idem_key: str, fingerprint: str) -> Published:
        """Publish unless ``(scope, idem_key)`` was published before: claim and append are ONE transaction.

        So a crash can never leave a claim without its record (the client's
        retry would be told "duplicate" of a record that is not there). The
        record id is ``headers[syncbus-id]``; a duplicate returns the first one's.
        """
        if not topic or not isinstance(topic, str):
            raise BusError(f"embedded bus {self.path}: publish needs a topic name, got {topic!r}")
        hdrs = {str(k): str(v) for k, v in headers.items()}
        rid = hdrs.get(H_ID) or ""
        await self._ready()
        loop = asyncio.get_running_loop()
        op = _Publish(topic, key, bytes(value), hdrs, time.time(), loop.create_future(),
                      once=(scope, idem_key, fingerprint, rid))
        result = await self._submit(op)
        assert isinstance(result, Published)
        return result

    async def _commit_offsets(self, group: str, offsets: dict[tuple[str, int], int],
                              derive: tuple[str, tuple[str, ...]] | None = None) -> None:
        await self._ready()
        await self._submit(_Commit(group, dict(offsets), asyncio.get_running_loop().create_future(), derive))

    async def _submit(self, op: _Op) -> Any:
        self._pending.append(op)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        # Each op has its own future: a caller giving up cancels only its own op
        # (dropped if not yet written), never the transaction others wait for.
        return await op.future

    async def _flush(self) -> None:
        """Group commit: write whatever queued while the previous transaction ran."""
        assert self._writer is not None
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                batch = [op for op in batch if not op.future.cancelled()]
                if not batch:
                    continue
                try:
                    offsets = await self._writer.run(partial(_write_batch, ops=batch))
                except (sqlite3.Error, RuntimeError) as e:
                    err = BusError(f"embedded bus {self.path}: write failed: {e}")
                    for op in batch:
                        if not op.future.done():
                            op.future.set_exception(err)
                    continue
                self.transactions += 1
                self.writes += len(batch)
                touched: set[str] = set()
                for op, off in zip(batch, offsets, strict=True):
                    if isinstance(op, _Publish):
                        touched.add(op.topic)
                        self._remember(op, off)
                    if op.future.done():
                        continue
                    if isinstance(off, IdempotencyConflict):
                        op.future.set_exception(off)
                    else:
                        op.future.set_result(off)
                if touched:
                    self._wake(touched)
        finally:
            self._flusher = None

    def _remember(self, op: _Publish, result: Any) -> None:
        """Put a committed record into its topic's tail (not a duplicate or a conflict: nothing appended)."""
        if op.once is None:
            offset = result
        elif isinstance(result, Published) and not result.duplicate:
            offset = result.offset
        else:
            return
        tail = self._tails.get(op.topic)
        if tail is None:
            tail = self._tails[op.topic] = Tail()
        tail.append(Record(op.value, op.key, op.headers, op.topic, PARTITION, offset, op.ts))
        if offset + 1 > self._known_end.get(op.topic, -1):
            self._known_end[op.topic] = offset + 1

    def _from_memory(self, topic: str, position: int, limit: int) -> tuple[list[Record], int] | None:
        """(records, the position after them) without SQLite: from the tail, or none when nothing is
        there. None: read SQLite."""
        tail = self._tails.get(topic)
        if tail is not None:
            got = tail.read(position, limit, None if self._share is None else self._mine)
            if got is not None:
                return got
        if position >= self._known_end.get(topic, 1 << 62):
            return [], position
        return None

    def _learned_end(self, topic: str, end: int) -> None:
        if end > self._known_end.get(topic, -1):
            self._known_end[topic] = end

    # -- reading -------------------------------------------------------------

    def consumer(self, group: str, topics: Sequence[str]) -> EmbeddedConsumer:
        if not group:
            raise BusError(f"embedded bus {self.path}: a consumer needs a group name")
        if not topics:
            raise BusError(f"embedded bus {self.path}: consumer group {group!r} needs at least one topic")
        return EmbeddedConsumer(self, group, list(dict.fromkeys(topics)))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        await self._ready()
        assert self._reader is not None
        try:
            return await self._reader.run(fn)
        except (sqlite3.Error, RuntimeError) as e:
            raise BusError(f"embedded bus {self.path}: read failed: {e}") from e

    async def high_water(self, topics: Sequence[str] | None = None) -> dict[str, int]:
        """Next offset to be written per topic (all topics when ``topics`` is None)."""
        names = None if topics is None else list(topics)
        return await self._read(partial(_read_high_water, topics=names))

    def _wake(self, topics: set[str]) -> None:
        for c in self._consumers:
            if topics.intersection(c.topics):
                c._wakeup.set()

    def _wait_for_data(self, consumer: EmbeddedConsumer) -> None:
        self._waiting.add(consumer)
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Notice publishes by other processes while some consumer waits."""
        try:
            while self._waiting and not self._closed:
                await asyncio.sleep(self._poll_interval)
                if not self._waiting:
                    break
                try:
                    marks = await self.high_water()
                except BusError:
                    continue
                for topic, end in marks.items():
                    self._learned_end(topic, end)
                for c in list(self._waiting):
                    if c._behind(marks):
                        c._wakeup.set()
        finally:
            self._watcher = None

    def _release(self, consumer: EmbeddedConsumer) -> None:
        freed = [k for k, v in self._owners.items() if v is consumer]
        for k in freed:
            del self._owners[k]
        self._consumers.discard(consumer)
        self._waiting.discard(consumer)
        groups = {g for g, _ in freed}
        for c in self._consumers:
            if c.group in groups:
                c._wakeup.set()


class EmbeddedConsumer:
    """A consumer of one group; see the module docstring for ownership inside one process."""

    def __init__(self, bus: EmbeddedBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._tracker = OffsetTracker()
        self._positions: dict[str, int] = {}   # owned topic -> next offset to fetch
        self._wakeup = asyncio.Event()
        self._started = False
        self._stopped = False
        self._rotate = 0
        # A worker of `syncbus run --workers N` (EmbeddedBus.share): (its share's group, every share's group).
        self._shared: tuple[str, tuple[str, ...]] | None = None
        if bus._share is not None:
            index, count = bus._share
            shares = tuple(f"{group}@{i}/{count}" for i in range(count))
            self._shared = (shares[index], shares)

    def _where(self) -> str:
        return f"embedded bus {self.bus.path}: consumer group {self.group!r}"

    async def start(self) -> None:
        if self._stopped:
            raise BusError(f"{self._where()}: stopped consumers cannot restart; create a new one")
        if self._started:
            return
        await self.bus._ready()
        self.bus._consumers.add(self)
        self._started = True
        await self._claim()

    async def _claim(self) -> None:
        """Take over topics no consumer of this group in this process owns."""
        for topic in self.topics:
            if topic in self._positions or (self.group, topic) in self.bus._owners:
                continue
            self.bus._owners[(self.group, topic)] = self   # before awaiting: no double claims
            try:
                committed = await self.bus._read(partial(_read_committed, group=self.group, topic=topic))
                if self._shared is not None:  # a worker: its share's own position, if it is further
                    own = await self.bus._read(partial(_read_committed, group=self._shared[0], topic=topic))
                    committed = max(committed, own)
            except BaseException:
                self.bus._owners.pop((self.group, topic), None)
                raise
            self._tracker.assign((topic, PARTITION), committed)
            self._positions[topic] = committed

    def _behind(self, marks: dict[str, int]) -> bool:
        return any(marks.get(t, 0) > pos for t, pos in self._positions.items())

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        if not self._started or self._stopped:
            raise BusError(f"{self._where()}: fetch before start() or after stop()")
        limit = max(1, max_records)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            self._wakeup.clear()     # before reading: a publish during the read sets it again
            await self._claim()
            if self._positions:
                topics = list(self._positions)
                self._rotate = (self._rotate + 1) % len(topics)
                order = topics[self._rotate:] + topics[:self._rotate]   # fairness between topics
                records, ends = await self._read_from(order, limit)
                self._advance(records, ends)
                if records:
                    return records
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopped:
                return []
            self.bus._wait_for_data(self)
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return []
            finally:
                self.bus._waiting.discard(self)

    async def _read_from(self, topics: list[str], limit: int) -> tuple[list[Record], dict[str, int]]:
        """Records from each topic's position on -- from memory where it holds them, else from SQLite --
        and per topic the position after what was looked at (past other workers' records, when shared)."""
        bus = self.bus
        out: list[Record] = []
        ends: dict[str, int] = {}
        unread: list[tuple[str, int]] = []
        for topic in topics:
            if len(out) >= limit:
                break
            position = self._positions[topic]
            got = bus._from_memory(topic, position, limit - len(out))
            if got is None:
                unread.append((topic, position))
            else:
                out.extend(got[0])
                ends[topic] = got[1]
        if unread and len(out) < limit:
            room = limit - len(out)
            share = bus._share
            if share is None:
                read = await bus._read(partial(_read_records, positions=unread, limit=room))
                scanned = {t: p for t, p in unread}
                for r in read:
                    scanned[r.topic] = r.offset + 1
                at_end = set(scanned) if len(read) < room else set()  # every topic read to its end
            else:
                read, scanned, at_end = await bus._read(partial(
                    _read_share_records, positions=unread, limit=room, index=share[0], count=share[1]))
            for topic in at_end:
                bus._learned_end(topic, scanned[topic])
            out.extend(read)
            ends.update(scanned)
        owned = self._positions  # ownership may have been lost meanwhile
        return [r for r in out if r.topic in owned], {t: e for t, e in ends.items() if t in owned}

    def _advance(self, records: list[Record], ends: dict[str, int]) -> None:
        """Track fetched records; move positions past what was looked at.

        A worker's share skips other workers' records. When the scan went past
        its last own record, the last offset looked at is recorded as fetched
        and done, so commits move past those records too (their own worker
        tracks them) instead of stopping at this worker's last record.
        """
        last: dict[str, int] = {}
        tracker = self._tracker
        for r in records:
            tracker.fetched((r.topic, r.partition), r.offset)
            last[r.topic] = r.offset + 1
        for topic, end in ends.items():
            if end > last.get(topic, self._positions[topic]) and self._shared is not None:
                tracker.fetched((topic, PARTITION), end - 1)
                tracker.done((topic, PARTITION), end - 1)
            if end > self._positions[topic]:
                self._positions[topic] = end

    def done(self, record: Record) -> None:
        self._tracker.done((record.topic, record.partition), record.offset)

    async def commit(self) -> None:
        offsets = self._tracker.to_commit()
        if not offsets:
            return
        if self._shared is None:
            await self.bus._commit_offsets(self.group, offsets)
        else:  # the share's own row; the group's row follows the lowest share (module docstring)
            await self.bus._commit_offsets(self._shared[0], offsets, derive=(self.group, self._shared[1]))
        self._tracker.committed(offsets)

    async def lag(self) -> dict[tuple[str, int], int]:
        if not self._positions:
            return {}
        if self._shared is not None and self._shared[0] != self._shared[1][0]:
            return {}  # workers share a group: worker 0 reports the group's lag (summed over workers)
        marks = await self.bus.high_water(list(self._positions))
        out: dict[tuple[str, int], int] = {}
        for topic in self._positions:
            part = self._tracker.parts.get((topic, PARTITION))
            committed = part.committed if part else 0
            if self._shared is not None:  # the group's row: the lowest of the workers' positions
                committed = await self.bus._read(partial(_read_committed, group=self.group, topic=topic))
            out[(topic, PARTITION)] = max(0, marks.get(topic, 0) - committed)
        return out

    async def stop(self) -> None:
        if self._stopped:
            return
        try:
            if self._started:
                await self.commit()
        finally:
            self._stopped = True
            self._positions.clear()
            self.bus._release(self)
            self._wakeup.set()
