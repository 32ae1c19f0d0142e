"""The SQL sink against real SQLite files: insert, upsert, several rows, errors, locks, retries."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.base import Delivery
from syncbus.sinks.retry import DeliveryFailed, RetryPolicy, RetrySpec
from syncbus.sinks.sql import SqlSink, SqlSinkConfig, redact_url

VOUCHERS = """CREATE TABLE vouchers (
    voucher_no TEXT PRIMARY KEY, amount TEXT NOT NULL, date TEXT, idempotency_key TEXT)"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "finance.db"
    with sqlite3.connect(path) as conn:
        conn.execute(VOUCHERS)
    return path


def rows(path: Path, sql: str = "SELECT * FROM vouchers ORDER BY voucher_no") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def config(db: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"name": "finance-vouchers", "type": "sql", "url": f"sqlite:///{db}",
                              "table": "vouchers", "key_columns": ["voucher_no"]}
    values.update(overrides)
    return values


def voucher(make_delivery: Callable[..., Delivery], payload: Any, record_id: str = "7") -> Delivery:
    return make_delivery(route="erp-posting-to-finance", sink="finance-vouchers", record_id=record_id,
                         key="4900001", idempotency_key=f"erp-posting-to-finance:4900001:{record_id}",
                         payload=payload)


@pytest.fixture
async def open_sink(db: Path) -> AsyncIterator[Callable[..., Any]]:
    sinks: list[SqlSink] = []

    async def make(**overrides: Any) -> SqlSink:
        sink = SqlSink(config(db, **overrides))
        sinks.append(sink)
        await sink.start()
        return sink

    yield make
    for sink in sinks:
        await sink.close()


@pytest.fixture
def exclusive_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Another process's writer holding the database: BEGIN EXCLUSIVE on a second connection."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


async def test_insert_writes_a_row_and_a_duplicate_is_permanent(open_sink, make_delivery, db) -> None:
    sink = await open_sink(mode="insert")
    await sink.send(voucher(make_delivery, {"voucher_no": "1000-2026-4900001-1", "amount": "-12.30"}))
    assert rows(db) == [("1000-2026-4900001-1", "-12.30", None, None)]
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "1000-2026-4900001-1", "amount": "1.00"}))
    assert not caught.value.retryable
    assert str(caught.value) == ("finance-vouchers: rejected by table vouchers: "
                                 "UNIQUE constraint failed: vouchers.voucher_no")


async def test_upsert_replay_keeps_one_row_and_updates_it(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    record = voucher(make_delivery, {"voucher_no": "V1", "amount": "10.00", "date": "2026-11-20"})
    await sink.send(record)
    await sink.send(record)  # the replay of the same record
    assert rows(db) == [("V1", "10.00", "2026-11-20", None)]
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "11.00"}, record_id="8"))
    assert rows(db) == [("V1", "11.00", "2026-11-20", None)]  # a column not sent keeps its value


async def test_upsert_without_native_on_conflict_selects_then_writes(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    sink._native_upsert = False  # the path for dialects other than SQLite and PostgreSQL
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "10.00"}))
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "12.00"}))
    await sink.send(voucher(make_delivery, [{"voucher_no": "V2", "amount": "1"}, {"voucher_no": "V1"}]))
    assert rows(db) == [("V1", "12.00", None, None), ("V2", "1", None, None)]


async def test_several_rows_are_one_transaction(open_sink, make_delivery, db) -> None:
    sink = await open_sink(mode="insert")
    lines = [{"voucher_no": f"V{i}", "amount": f"{i}.00"} for i in range(3)]
    await sink.send(voucher(make_delivery, lines))
    assert [r[0] for r in rows(db)] == ["V0", "V1", "V2"]
    # The third row collides with the first: nothing of this record may be left behind.
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, [{"voucher_no": "W1", "amount": "1"},
                                                {"voucher_no": "W2", "amount": "2"},
                                                {"voucher_no": "W1", "amount": "3"}]))
    assert not caught.value.retryable
    assert [r[0] for r in rows(db)] == ["V0", "V1", "V2"]


async def test_rows_with_different_columns_in_one_record(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    await sink.send(voucher(make_delivery, [{"voucher_no": "A", "amount": "1"},
                                            {"voucher_no": "B", "amount": "2", "date": "2026-01-02"},
                                            {"voucher_no": "C", "amount": "3", "date": "2026-01-03"}]))
    assert rows(db) == [("A", "1", None, None), ("B", "2", "2026-01-02", None), ("C", "3", "2026-01-03", None)]


async def test_idempotency_column_gets_the_delivery_key(open_sink, make_delivery, db) -> None:
    sink = await open_sink(idempotency_column="idempotency_key")
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    await sink.send(voucher(make_delivery, [{"voucher_no": "V2", "amount": "2"},
                                            {"voucher_no": "V3", "amount": "3"}], record_id="9"))
    assert rows(db, "SELECT voucher_no, idempotency_key FROM vouchers ORDER BY 1") == [
        ("V1", "erp-posting-to-finance:4900001:7"),
        ("V2", "erp-posting-to-finance:4900001:9#0"),
        ("V3", "erp-posting-to-finance:4900001:9#1"),
    ]


async def test_unknown_column_is_permanent_and_named(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amnt": "1"}))
    assert not caught.value.retryable
    assert str(caught.value) == "finance-vouchers: column 'amnt' does not exist in table vouchers"
    assert rows(db) == []


async def test_columns_option_picks_fields_and_ignores_the_rest(open_sink, make_delivery, db) -> None:
    sink = await open_sink(columns=["voucher_no", "amount"])
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "5", "date": "x", "extra": 1}))
    assert rows(db) == [("V1", "5", None, None)]


async def test_nested_value_names_the_column(open_sink, make_delivery) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": {"value": 1}}))
    assert not caught.value.retryable
    assert "column 'amount'" in str(caught.value) and "nested value (dict)" in str(caught.value)


async def test_missing_key_and_not_null_violations_are_permanent(open_sink, make_delivery) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError, match="key column 'voucher_no' is missing or null") as caught:
        await sink.send(voucher(make_delivery, {"amount": "1"}))
    assert not caught.value.retryable
    with pytest.raises(DeliveryError, match=r"NOT NULL constraint failed: vouchers\.amount") as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "date": "2026-01-01"}))
    assert not caught.value.retryable


async def test_decimal_goes_into_a_text_column_exactly(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": Decimal("12.30")}))
    assert rows(db)[0][1] == "12.30"


async def test_payload_that_is_not_rows_is_permanent(open_sink, make_delivery) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError, match="must be an object of column: value") as caught:
        await sink.send(voucher(make_delivery, "V1,12.30"))
    assert not caught.value.retryable


async def test_locked_database_is_retryable(open_sink, make_delivery, exclusive_lock) -> None:
    sink = await open_sink(lock_timeout="50ms")
    started = time.perf_counter()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    assert caught.value.retryable
    assert "database is locked" in str(caught.value)
    assert "table vouchers" in str(caught.value)
    assert time.perf_counter() - started < 5


async def test_retry_policy_recovers_once_the_lock_is_released(
        open_sink, make_delivery, db, exclusive_lock) -> None:
    sink = await open_sink(lock_timeout="20ms")
    policy = RetryPolicy(RetrySpec(attempts=50, backoff="fixed", initial=0.03, jitter=False))
    asyncio.get_running_loop().call_later(0.3, exclusive_lock.execute, "ROLLBACK")
    outcomes: list[str] = []
    record = voucher(make_delivery, {"voucher_no": "V1", "amount": "1"})
    attempts = await policy.run(lambda: sink.send(record), lambda outcome, _s, _e: outcomes.append(outcome))
    assert attempts > 1
    assert outcomes[-1] == "ok" and set(outcomes[:-1]) == {"retryable"}
    assert rows(db) == [("V1", "1", None, None)]


async def test_sink_retry_gives_up_on_a_permanent_error_at_once(open_sink, make_delivery) -> None:
    sink = await open_sink(retry={"attempts": 4, "initial": "10ms"})
    record = voucher(make_delivery, {"voucher_no": "V1", "amnt": "1"})
    with pytest.raises(DeliveryFailed) as caught:
        await sink.retry.run(lambda: sink.send(record))
    assert caught.value.permanent and caught.value.attempts == 1


async def test_create_table_from_the_first_record(tmp_path: Path, make_delivery) -> None:
    path = tmp_path / "sandbox.db"
    sink = SqlSink(config(path, create_table=True, idempotency_column="idem"))
    await sink.start()  # nothing to create yet: the columns come with the first record
    try:
        record = voucher(make_delivery, {"voucher_no": "V1", "amount": "1.50", "line": 1})
        await sink.send(record)
        await sink.send(record)
    finally:
        await sink.close()
    assert rows(path) == [("V1", "1.50", "1", "erp-posting-to-finance:4900001:7")]
    assert [(c[1], c[2], c[5]) for c in rows(path, "PRAGMA table_info(vouchers)")] == [
        ("voucher_no", "TEXT", 1), ("amount", "TEXT", 0), ("line", "TEXT", 0), ("idem", "TEXT", 0)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


async def test_create_table_with_columns_happens_at_start(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    sink = SqlSink(config(path, create_table=True, columns=["voucher_no", "amount"]))
    await sink.start()
    await sink.close()
    assert [c[1] for c in rows(path, "PRAGMA table_info(vouchers)")] == ["voucher_no", "amount"]


async def test_start_reports_a_missing_table(tmp_path: Path) -> None:
    sink = SqlSink(config(tmp_path / "empty.db", table="vouchrs"))
    with pytest.raises(ConfigError, match=r"table vouchrs does not exist in sqlite:///.*empty\.db"):
        await sink.start()
    await sink.close()


async def test_start_reports_config_columns_missing_from_the_table(db: Path) -> None:
    sink = SqlSink(config(db, columns=["voucher_no", "amnt"]))
    with pytest.raises(ConfigError, match="column 'amnt' does not exist in table vouchers"):
        await sink.start()
    await sink.close()


async def test_upsert_needs_a_unique_key(db: Path) -> None:
    sink = SqlSink(config(db, key_columns=["date"]))
    with pytest.raises(ConfigError, match=r"upsert needs a primary key or unique constraint on \(date\)"):
        await sink.start()
    await sink.close()


async def test_unique_index_is_enough_for_upsert(tmp_path: Path, make_delivery) -> None:
    path = tmp_path / "idx.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE vouchers (id INTEGER PRIMARY KEY, company TEXT, no TEXT, amount TEXT)")
        conn.execute("CREATE UNIQUE INDEX vouchers_key ON vouchers (company, no)")
    sink = SqlSink(config(path, key_columns=["company", "no"]))
    await sink.start()
    try:
        for amount in ("1", "2"):
            await sink.send(voucher(make_delivery, {"company": "1000", "no": "A", "amount": amount}))
    finally:
        await sink.close()
    assert rows(path, "SELECT * FROM vouchers") == [(1, "1000", "A", "2")]


async def test_database_that_cannot_be_opened_is_retryable_at_send(tmp_path: Path, make_delivery) -> None:
    sink = SqlSink(config(tmp_path / "no" / "such" / "dir.db"))
    await sink.start()  # logged, not raised: the database may come back before the nightly run
    try:
        with pytest.raises(DeliveryError, match="unable to open database file") as caught:
            await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
        assert caught.value.retryable
    finally:
        await sink.close()


def test_config_rules() -> None:
    with pytest.raises(ValidationError, match="mode upsert needs key_columns"):
        SqlSinkConfig.model_validate({"name": "s", "url": "sqlite://", "table": "t"})
    with pytest.raises(ValidationError, match="key column 'id' is not in columns"):
        SqlSinkConfig.model_validate({"name": "s", "url": "sqlite://", "table": "t", "key_columns": ["id"],
                                      "columns": ["a"]})
    assert SqlSinkConfig.model_validate({"name": "s", "url": "sqlite://", "table": "t", "mode": "insert"})
    with pytest.raises(ValidationError) as caught:
        SqlSinkConfig.model_validate({"name": "s", "url": "not a url:s3cret@", "table": "t", "mode": "insert"})
    assert "invalid database URL" in str(caught.value)
    secret = SqlSinkConfig.model_validate({"name": "s", "url": "postgresql+psycopg://fin:s3cret@db/fin",
                                           "table": "t", "mode": "insert"})
    assert "s3cret" not in repr(secret)


def test_redact_url_hides_passwords_even_in_bad_urls() -> None:
    assert redact_url("postgresql+psycopg://fin:s3cret@db:5432/fin") == "postgresql+psycopg://fin:***@db:5432/fin"
    assert "s3cret" not in redact_url("weird://fin:s3cret@")


async def test_text_dates_go_into_date_columns(tmp_path: Path, make_delivery) -> None:
    path = tmp_path / "typed.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE vouchers (voucher_no TEXT PRIMARY KEY, date DATE, posted_at DATETIME)")
    sink = SqlSink(config(path))
    await sink.start()
    try:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "date": "2026-11-20",
                                                "posted_at": "2026-11-20T22:00:05"}))
        with pytest.raises(DeliveryError, match="column 'date': '2026-13-01' is not a valid date") as caught:
            await sink.send(voucher(make_delivery, {"voucher_no": "V2", "date": "2026-13-01"}))
        assert not caught.value.retryable
    finally:
        await sink.close()
    assert rows(path) == [("V1", "2026-11-20", "2026-11-20 22:00:05.000000")]
