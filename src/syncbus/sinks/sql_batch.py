"""Batched writes for the SQL sink: many records, one transaction, and still one outcome per record.

A commit costs a disk flush (SQLite) or a WAL flush plus a round trip
(PostgreSQL); one per record caps a nightly load at a few hundred rows per
second. :class:`Batcher` collects the records that concurrent ``send()`` calls
hand in — up to ``batch_size``, waiting at most ``batch_linger`` for company —
and :func:`write_batch` writes them in ONE transaction.

At-least-once delivery needs each record's fate, not the batch's: when the
batch transaction fails on a record's data (a NOT NULL, CHECK, UNIQUE or FK
violation, a value the column cannot hold) it is rolled back and redone
record by record, each inside a SAVEPOINT, so only the culprit(s) fail — as
permanent errors, for the dead letters — and the rest commit together. A
failure of the database itself (connection lost, locked, deadlock) fails every
record of the batch as retryable: nothing of it was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from syncbus.sinks.sql_errors import is_transient
from syncbus.sinks.sql_table import RowGroup, Statements

T = TypeVar("T")
Outcome = BaseException | None
Flush = Callable[[list[T]], Awaitable[Sequence[Outcome]]]


@dataclass(slots=True)
class _Waiting(Generic[T]):
    item: T
    future: asyncio.Future[None]
    since: float


class Batcher(Generic[T]):
    """Groups items submitted from many tasks into batches for ``flush``; each submitter gets its own outcome.

    A batch goes out when it holds ``size`` items or its oldest item has
    waited ``linger`` seconds. At most ``concurrency`` batches are in flight;
    while all of them are busy the next batch keeps filling, so the batch size
    follows the load by itself (group commit).
    """

    def __init__(self, flush: Flush[T], *, size: int, linger: float, concurrency: int) -> None:
        self._flush = flush
        self._size = size
        self._linger = linger
        self._slots = asyncio.Semaphore(concurrency)
        self._queue: list[_Waiting[T]] = []
        self._grown = asyncio.Event()
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> None:
        """Wait for the batch holding ``item`` to be written; raise the item's own error.

        Cancelled (e.g. by the caller's timeout) while still queued, the item
        is taken out and never written; once its batch is being written it
        cannot be recalled.
        """
        loop = asyncio.get_running_loop()
        waiting = _Waiting(item, loop.create_future(), loop.time())
        # Nobody may be left to read the outcome (the caller timed out): mark it read.
        waiting.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append(waiting)
        if len(self._queue) >= self._size:
            self._grown.set()
        if self._collector is None or self._collector.done():
            self._collector = loop.create_task(self._collect(), name="syncbus-sql-batcher")
        try:
            await asyncio.shield(waiting.future)
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._queue.remove(waiting)
            raise

    async def close(self) -> None:
        """Write what is queued now (no more lingering) and wait for every batch in flight."""
        self._linger = 0.0
        self._grown.set()
        while self._collector is not None and not self._collector.done():
            await asyncio.shield(self._collector)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            while self._queue and len(self._queue) < self._size:
                # Re-read each time: the oldest may have given up, close() may have cut the linger.
                remaining = self._queue[0].since + self._linger - loop.time()
                if remaining <= 0:
                    break
                self._grown.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._grown.wait()
                except TimeoutError:
                    break
            await self._slots.acquire()
            batch, self._queue = self._queue[:self._size], self._queue[self._size:]
            if not batch:  # every waiting caller gave up meanwhile
                self._slots.release()
                continue
            task = loop.create_task(self._write(batch), name="syncbus-sql-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _write(self, batch: list[_Waiting[T]]) -> None:
        try:
            outcomes = await self._flush([w.item for w in batch])
        except BaseException as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._slots.release()
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():
                continue
            if outcome is None:
                waiting.future.set_result(None)
            else:
                waiting.future.set_exception(outcome)


class _Abort(Exception):
    """The database itself failed during the record-by-record pass: nothing of the batch is kept."""

    def __init__(self, cause: sa_exc.SQLAlchemyError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def write_batch(engine: Engine, lock: contextlib.AbstractContextManager[Any], statements: Statements,
                records: list[list[RowGroup]]) -> list[sa_exc.SQLAlchemyError | None]:
    """Write every record's rows in one transaction; per record: None or the error that refused it.

    Blocking: runs on the sink's worker threads. ``lock`` serialises writers
    where the database has one writer at a time anyway (SQLite).
    """
    with lock:
        try:
            with engine.begin() as conn:
                for cols, rows in _merged(records):
                    statements.execute(conn, cols, rows)
            return [None] * len(records)
        except sa_exc.SQLAlchemyError as exc:
            if len(records) == 1 or is_transient(exc):
                return [exc] * len(records)
        return _one_by_one(engine, statements, records)


def _one_by_one(engine: Engine, statements: Statements,
                records: list[list[RowGroup]]) -> list[sa_exc.SQLAlchemyError | None]:
    """The slow path after a batch failed on data: each record in its own SAVEPOINT of one transaction."""
    outcomes: list[sa_exc.SQLAlchemyError | None] = [None] * len(records)
    try:
        with engine.begin() as conn:
            for index, groups in enumerate(records):
                try:
                    with conn.begin_nested():
                        for cols, rows in groups:
                            statements.execute(conn, cols, rows)
                except sa_exc.SQLAlchemyError as exc:
                    if is_transient(exc):
                        raise _Abort(exc) from exc
                    outcomes[index] = exc
    except _Abort as abort:
        return [abort.cause] * len(records)
    except sa_exc.SQLAlchemyError as exc:  # the commit itself failed (e.g. a deferred constraint)
        return [exc] * len(records)
    return outcomes


def _merged(records: list[list[RowGroup]]) -> list[RowGroup]:
    """Consecutive rows with the same columns across records, in order: one executemany each."""
    merged: list[RowGroup] = []
    for groups in records:
        for cols, rows in groups:
            if merged and merged[-1][0] == cols:
                merged[-1][1].extend(rows)
            else:
                merged.append((cols, list(rows)))
    return merged
