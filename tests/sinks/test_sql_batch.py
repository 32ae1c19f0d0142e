"""The SQL sink's batches on real databases (SQLite and PostgreSQL).

Concurrent sends share one transaction; a record the table refuses fails alone
(its send raises a permanent error) while its batch mates are committed; a
database failure fails the whole batch as retryable.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus.errors import DeliveryError
from syncbus.sinks.base import Delivery
from syncbus.sinks.sql import SqlSink
from syncbus.sinks.sql_batch import Batcher
from tests.sinks.conftest import Database

SCHEMA = [
    "CREATE TABLE accounts (code TEXT PRIMARY KEY)",
    "INSERT INTO accounts VALUES ('1000'), ('2000')",
    """CREATE TABLE postings (
        doc_no TEXT PRIMARY KEY,
        amount TEXT NOT NULL CHECK (amount <> ''),
        account TEXT REFERENCES accounts (code),
        note TEXT)""",
]
# (payload of the bad record, what the database says about it)
VIOLATIONS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "not-null": ({"doc_no": "D5", "account": "1000"},
                 {"sqlite": "NOT NULL constraint failed: postings.amount",
                  "postgresql": 'null value in column "amount" of relation "postings" violates not-null'}),
    "check": ({"doc_no": "D5", "amount": "", "account": "1000"},
              {"sqlite": "CHECK constraint failed", "postgresql": 'violates check constraint "postings_amount_check"'}),
    "foreign-key": ({"doc_no": "D5", "amount": "5.00", "account": "9999"},
                    {"sqlite": "FOREIGN KEY constraint failed",
                     "postgresql": 'violates foreign key constraint "postings_account_fkey"'}),
}


def posting(make_delivery: Callable[..., Delivery], payload: Any, n: int) -> Delivery:
    return make_delivery(route="erp-posting-to-finance", sink="finance-postings", record_id=str(n),
                         key=f"doc-{n}", idempotency_key=f"erp-posting-to-finance:doc-{n}:{n}", payload=payload)


def good(n: int) -> dict[str, Any]:
    return {"doc_no": f"D{n}", "amount": f"{n}.00", "account": "1000"}


class Commits:
    """Counts the transactions the sink commits on its own engine (a real SQLAlchemy event)."""

    def __init__(self, sink: SqlSink) -> None:
        assert sink._engine is not None
        self.count = 0
        sa.event.listen(sink._engine, "commit", self._seen)

    def _seen(self, _conn: Any) -> None:
        self.count += 1


@pytest.fixture
def db(database: Database) -> Database:
    database.execute(*SCHEMA)
    return database


@pytest.fixture
async def open_sink(db: Database) -> AsyncIterator[Callable[..., Any]]:
    sinks: list[SqlSink] = []

    async def make(**overrides: Any) -> SqlSink:
        config: dict[str, Any] = {"name": "finance-postings", "type": "sql", "url": db.url, "table": "postings",
                                  "key_columns": ["doc_no"], "batch_linger": "50ms"}
        config.update(overrides)
        sink = SqlSink(config)
        sinks.append(sink)
        await sink.start()
        return sink

    yield make
    for sink in sinks:
        await sink.close()


async def outcomes(sink: SqlSink, deliveries: list[Delivery]) -> list[BaseException | None]:
    results = await asyncio.gather(*(sink.send(d) for d in deliveries), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def doc_numbers(db: Database) -> list[str]:
    return sorted((r[0] for r in db.rows("SELECT doc_no FROM postings")), key=lambda d: int(d[1:]))


# ---------------------------------------------------------------------- batching


async def test_concurrent_sends_share_one_transaction(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    commits = Commits(sink)
    assert await outcomes(sink, [posting(make_delivery, good(n), n) for n in range(100)]) == [None] * 100
    assert commits.count == 1
    assert doc_numbers(db) == [f"D{n}" for n in range(100)]


async def test_batch_size_caps_a_transaction(open_sink, make_delivery, db) -> None:
    sink = await open_sink(batch_size=10)
    commits = Commits(sink)
    assert await outcomes(sink, [posting(make_delivery, good(n), n) for n in range(95)]) == [None] * 95
    assert commits.count == 10
    assert len(doc_numbers(db)) == 95


async def test_linger_waits_for_company_and_zero_does_not(open_sink, make_delivery, db) -> None:
    lingering = await open_sink(batch_linger="1s")
    commits = Commits(lingering)
    started = time.perf_counter()
    first = asyncio.create_task(lingering.send(posting(make_delivery, good(1), 1)))
    await asyncio.sleep(0.2)
    await lingering.send(posting(make_delivery, good(2), 2))  # joins the first one's batch
    await first
    assert time.perf_counter() - started >= 1.0
    assert commits.count == 1
    eager = await open_sink(batch_linger=0)
    started = time.perf_counter()
    await eager.send(posting(make_delivery, good(3), 3))
    assert time.perf_counter() - started < 0.5
    assert doc_numbers(db) == ["D1", "D2", "D3"]


async def test_close_writes_what_is_queued_without_lingering(db, make_delivery) -> None:
    sink = SqlSink({"name": "finance-postings", "type": "sql", "url": db.url, "table": "postings",
                    "key_columns": ["doc_no"], "batch_linger": "10s"})
    await sink.start()
    sends = [asyncio.create_task(sink.send(posting(make_delivery, good(n), n))) for n in range(3)]
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await sink.close()
    assert time.perf_counter() - started < 2
    await asyncio.gather(*sends)
    assert doc_numbers(db) == ["D0", "D1", "D2"]


async def test_rows_of_different_shapes_in_one_batch_keep_their_order(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    deliveries = [
        posting(make_delivery, good(1), 1),
        posting(make_delivery, {**good(2), "note": "two"}, 2),
        posting(make_delivery, [good(3), {"doc_no": "D1", "amount": "1.50", "account": "1000"}], 3),  # upserts D1
        posting(make_delivery, {"doc_no": "D2", "amount": "2.50"}, 4),  # upserts D2, keeps its note
    ]
    assert await outcomes(sink, deliveries) == [None] * 4
    assert db.rows("SELECT doc_no, amount, account, note FROM postings ORDER BY doc_no") == [
        ("D1", "1.50", "1000", None), ("D2", "2.50", "1000", "two"), ("D3", "3.00", "1000", None)]


async def test_the_same_key_twice_in_one_batch_ends_with_the_later_record(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    first = posting(make_delivery, {"doc_no": "D1", "amount": "1.00"}, 1)
    second = posting(make_delivery, {"doc_no": "D1", "amount": "2.00"}, 2)
    assert await outcomes(sink, [first, second]) == [None, None]
    assert db.rows("SELECT doc_no, amount FROM postings") == [("D1", "2.00")]


# ---------------------------------------------------------------------- one bad record


@pytest.mark.parametrize("violation", list(VIOLATIONS))
async def test_a_constraint_violation_fails_only_its_own_record(open_sink, make_delivery, db,
                                                                violation: str) -> None:
    bad, says = VIOLATIONS[violation]
    sink = await open_sink()
    commits = Commits(sink)
    deliveries = [posting(make_delivery, bad if n == 5 else good(n), n) for n in range(10)]
    results = await outcomes(sink, deliveries)
    errors = {n: err for n, err in enumerate(results) if err is not None}
    assert list(errors) == [5]
    err = errors[5]
    assert isinstance(err, DeliveryError) and not err.retryable
    assert str(err).startswith("finance-postings: rejected by table postings: ")
    assert says[db.kind] in str(err)
    assert doc_numbers(db) == [f"D{n}" for n in range(10) if n != 5]
    assert commits.count == 1  # the failed batch rolled back, the record-by-record pass committed once


async def test_several_culprits_and_a_duplicate_in_insert_mode(open_sink, make_delivery, db) -> None:
    db.execute("INSERT INTO postings (doc_no, amount) VALUES ('D7', 'old')")
    sink = await open_sink(mode="insert")
    payloads = {n: good(n) for n in range(10)}
    payloads[2] = {"doc_no": "D2", "account": "1000"}  # NOT NULL
    payloads[7] = good(7)  # already there: a duplicate key
    payloads[9] = {"doc_no": "D9", "amount": "9.00", "account": "nope"}  # FK
    results = await outcomes(sink, [posting(make_delivery, payloads[n], n) for n in range(10)])
    failed = {n for n, err in enumerate(results) if err is not None}
    assert failed == {2, 7, 9}
    assert all(isinstance(results[n], DeliveryError) and not results[n].retryable for n in failed)
    assert doc_numbers(db) == ["D0", "D1", "D3", "D4", "D5", "D6", "D7", "D8"]
    assert db.rows("SELECT amount FROM postings WHERE doc_no = 'D7'") == [("old",)]


async def test_a_record_with_a_bad_row_keeps_none_of_its_rows(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    split = [good(20), {"doc_no": "D21", "amount": "", "account": "1000"}]  # its second row breaks the CHECK
    results = await outcomes(sink, [posting(make_delivery, good(1), 1), posting(make_delivery, split, 2),
                                    posting(make_delivery, good(3), 3)])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], DeliveryError) and not results[1].retryable
    assert doc_numbers(db) == ["D1", "D3"]


async def test_a_lone_bad_record_is_not_retried_row_by_row(open_sink, make_delivery, db) -> None:
    sink = await open_sink(batch_linger=0)
    commits = Commits(sink)
    with pytest.raises(DeliveryError) as caught:
        await sink.send(posting(make_delivery, VIOLATIONS["check"][0], 1))
    assert not caught.value.retryable
    assert commits.count == 0


# ---------------------------------------------------------------------- the database itself failing


async def test_a_locked_database_fails_the_whole_batch_as_retryable(sqlite_database: Database,
                                                                    make_delivery) -> None:
    sqlite_database.execute(*SCHEMA)
    sink = SqlSink({"name": "finance-postings", "type": "sql", "url": sqlite_database.url, "table": "postings",
                    "key_columns": ["doc_no"], "lock_timeout": "50ms"})
    await sink.start()
    holder = sqlite3.connect(sqlite_database.url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        results = await outcomes(sink, [posting(make_delivery, good(n), n) for n in range(5)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    try:
        assert all(isinstance(r, DeliveryError) and r.retryable for r in results)
        assert all("database is locked" in str(r) for r in results)
        assert doc_numbers(sqlite_database) == []
        # and the next attempt goes through
        assert await outcomes(sink, [posting(make_delivery, good(n), n) for n in range(5)]) == [None] * 5
    finally:
        await sink.close()


@pytest.mark.postgres
async def test_postgres_down_fails_the_batch_as_retryable(postgres_server, pg_url, make_delivery) -> None:
    Database("postgresql", pg_url).execute(*SCHEMA)
    sink = SqlSink({"name": "finance-postings", "type": "sql", "url": pg_url, "table": "postings",
                    "key_columns": ["doc_no"], "timeout": "5s"})
    await sink.start()
    try:
        await asyncio.to_thread(postgres_server.stop)
        try:
            results = await outcomes(sink, [posting(make_delivery, good(n), n) for n in range(5)])
        finally:
            await asyncio.to_thread(postgres_server.start)
        assert all(isinstance(r, DeliveryError) and r.retryable for r in results), results
    finally:
        await sink.close()


# ---------------------------------------------------------------------- the batcher on its own


async def test_batcher_drops_a_queued_item_whose_caller_gave_up() -> None:
    written: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> list[BaseException | None]:
        written.append(items)
        await release.wait()
        return [None] * len(items)

    batcher: Batcher[int] = Batcher(flush, size=10, linger=0, concurrency=1)
    first = asyncio.create_task(batcher.submit(1))  # goes out at once and blocks the only slot
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await batcher.submit(2)  # queued behind it, then abandoned
    third = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(first, third)
    await batcher.close()
    assert written == [[1], [3]]


async def test_batcher_hands_each_caller_its_own_outcome() -> None:
    async def flush(items: list[int]) -> list[BaseException | None]:
        return [ValueError(f"odd {i}") if i % 2 else None for i in items]

    batcher: Batcher[int] = Batcher(flush, size=100, linger=0.01, concurrency=1)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    await batcher.close()
    assert [str(r) if r is not None else None for r in results] == [None, "odd 1", None, "odd 3", None, "odd 5"]


async def test_sqlite_savepoints_belong_to_the_enclosing_transaction(sqlite_database: Database) -> None:
    """The record-by-record pass relies on it: pysqlite's legacy mode would commit each released SAVEPOINT."""
    sqlite_database.execute(*SCHEMA)
    sink = SqlSink({"name": "finance-postings", "type": "sql", "url": sqlite_database.url, "table": "postings",
                    "key_columns": ["doc_no"]})
    await sink.start()
    try:
        assert sink._engine is not None

        def write_then_roll_back() -> None:
            assert sink._engine is not None
            with sink._engine.connect() as conn, conn.begin() as outer:
                with conn.begin_nested():
                    conn.exec_driver_sql("INSERT INTO postings (doc_no, amount) VALUES ('D1', '1')")
                outer.rollback()

        await asyncio.to_thread(write_then_roll_back)
        assert doc_numbers(sqlite_database) == []
    finally:
        await sink.close()
