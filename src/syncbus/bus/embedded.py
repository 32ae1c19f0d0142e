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

The code is split along those lines, the modules importing one way only
(``embedded_sqlite`` ← ``embedded_write``/``embedded_read`` ←
``embedded_consumer`` ← this module): ``embedded_sqlite`` (schema, connection
settings, the thread owning a connection, the share hash), ``embedded_write``
(the queued operations and the group-commit transaction), ``embedded_read``
(what the reader thread runs) and ``embedded_consumer``. This module keeps
:class:`EmbeddedBus` -- lifecycle, the write queue and its flusher, the
in-memory tails, wake-ups -- and re-exports the rest of the public names.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ..aio import cancel_and_wait
from ..errors import BusError, IdempotencyConflict
from ..record import H_ID, Record
from .base import Published
from .embedded_consumer import EmbeddedConsumer
from .embedded_read import _read_high_water
from .embedded_sqlite import BUSY_TIMEOUT_MS, PARTITION, T, _init_schema, _SqliteThread, share_of
from .embedded_write import _Commit, _Op, _Publish, _write_batch
from .tail import Tail

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MAX_BATCH",
    "PARTITION",
    "POLL_INTERVAL",
    "SHARED_POLL_INTERVAL",
    "EmbeddedBus",
    "EmbeddedConsumer",
    "share_of",
]

POLL_INTERVAL = 0.05        # seconds between checks for publishes by other processes
SHARED_POLL_INTERVAL = 0.01  # ... when workers share the file: half the records come from the others
MAX_BATCH = 5_000           # bound one transaction (and so the latency of its callers)


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
        await cancel_and_wait(self._watcher)
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
