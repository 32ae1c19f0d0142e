"""The SQL sink on real databases (SQLite files and PostgreSQL): insert, upsert, several rows, errors, TLS.

Batching and the one-bad-record rule have their own module, test_sql_batch.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.base import Delivery
from syncbus.sinks.retry import DeliveryFailed, RetryPolicy, RetrySpec
from syncbus.sinks.sql import SqlSink, SqlSinkConfig, redact_url
from tests.sinks.conftest import Database

VOUCHERS = """CREATE TABLE vouchers (
    voucher_no TEXT PRIMARY KEY, amount TEXT NOT NULL, date TEXT, idempotency_key TEXT)"""
# What each backend says, for the messages we pass on verbatim.
DUPLICATE = {"sqlite": "UNIQUE constraint failed: vouchers.voucher_no",
             "postgresql": 'duplicate key value violates unique constraint "vouchers_pkey"'}
NOT_NULL = {"sqlite": "NOT NULL constraint failed: vouchers.amount",
            "postgresql": 'null value in column "amount" of relation "vouchers" violates not-null constraint'}


def config(url: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"name": "finance-vouchers", "type": "sql", "url": url,
                              "table": "vouchers", "key_columns": ["voucher_no"], "batch_linger": 0}
    values.update(overrides)
    return values


def voucher(make_delivery: Callable[..., Delivery], payload: Any, record_id: str = "7") -> Delivery:
    return make_delivery(route="erp-posting-to-finance", sink="finance-vouchers", record_id=record_id,
                         key="4900001", idempotency_key=f"erp-posting-to-finance:4900001:{record_id}",
                         payload=payload)


@pytest.fixture
def db(database: Database) -> Database:
    database.execute(VOUCHERS)
    return database


@pytest.fixture
def sqlite_db(sqlite_database: Database) -> Database:
    sqlite_database.execute(VOUCHERS)
    return sqlite_database


@pytest.fixture
async def sinks() -> AsyncIterator[list[SqlSink]]:
    """Sinks a test opens; all closed after it (also when it fails)."""
    opened: list[SqlSink] = []
    yield opened
    for sink in opened:
        await sink.close()


@pytest.fixture
def open_sink(db: Database, sinks: list[SqlSink]) -> Callable[..., Any]:
    async def make(**overrides: Any) -> SqlSink:
        sink = SqlSink(config(db.url, **overrides))
        sinks.append(sink)
        await sink.start()
        return sink

    return make


@pytest.fixture
def exclusive_lock(sqlite_db: Database) -> Iterator[sqlite3.Connection]:
    """Another process's writer holding the database: BEGIN EXCLUSIVE on a second connection."""
    holder = sqlite3.connect(sqlite_db.url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


def dead_postgres_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://finance:s3cret@127.0.0.1:{port}/finance"


# ---------------------------------------------------------------------- insert and upsert


async def test_insert_writes_a_row_and_a_duplicate_is_permanent(open_sink, make_delivery, db) -> None:
    sink = await open_sink(mode="insert")
    await sink.send(voucher(make_delivery, {"voucher_no": "1000-2026-4900001-1", "amount": "-12.30"}))
    assert db.rows() == [("1000-2026-4900001-1", "-12.30", None, None)]
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "1000-2026-4900001-1", "amount": "1.00"}))
    assert not caught.value.retryable
    assert str(caught.value).startswith(f"finance-vouchers: rejected by table vouchers: {DUPLICATE[db.kind]}")


async def test_upsert_replay_keeps_one_row_and_updates_it(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    record = voucher(make_delivery, {"voucher_no": "V1", "amount": "10.00", "date": "2026-11-20"})
    await sink.send(record)
    await sink.send(record)  # the replay of the same record
    assert db.rows() == [("V1", "10.00", "2026-11-20", None)]
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "11.00"}, record_id="8"))
    assert db.rows() == [("V1", "11.00", "2026-11-20", None)]  # a column not sent keeps its value


async def test_upsert_without_native_on_conflict_selects_then_writes(db, sinks, make_delivery) -> None:
    sink = SqlSink(config(db.url))
    sink._native_upsert = False  # the path for dialects other than SQLite and PostgreSQL
    sinks.append(sink)
    await sink.start()
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "10.00"}))
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "12.00"}))
    await sink.send(voucher(make_delivery, [{"voucher_no": "V2", "amount": "1"}, {"voucher_no": "V1"}]))
    assert db.rows() == [("V1", "12.00", None, None), ("V2", "1", None, None)]


async def test_several_rows_are_one_transaction(open_sink, make_delivery, db) -> None:
    sink = await open_sink(mode="insert")
    lines = [{"voucher_no": f"V{i}", "amount": f"{i}.00"} for i in range(3)]
    await sink.send(voucher(make_delivery, lines))
    assert [r[0] for r in db.rows()] == ["V0", "V1", "V2"]
    # The third row collides with the first: nothing of this record may be left behind.
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, [{"voucher_no": "W1", "amount": "1"},
                                                {"voucher_no": "W2", "amount": "2"},
                                                {"voucher_no": "W1", "amount": "3"}]))
    assert not caught.value.retryable
    assert [r[0] for r in db.rows()] == ["V0", "V1", "V2"]


async def test_rows_with_different_columns_in_one_record(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    await sink.send(voucher(make_delivery, [{"voucher_no": "A", "amount": "1"},
                                            {"voucher_no": "B", "amount": "2", "date": "2026-01-02"},
                                            {"voucher_no": "C", "amount": "3", "date": "2026-01-03"}]))
    assert db.rows() == [("A", "1", None, None), ("B", "2", "2026-01-02", None), ("C", "3", "2026-01-03", None)]


async def test_idempotency_column_gets_the_delivery_key(open_sink, make_delivery, db) -> None:
    sink = await open_sink(idempotency_column="idempotency_key")
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    await sink.send(voucher(make_delivery, [{"voucher_no": "V2", "amount": "2"},
                                            {"voucher_no": "V3", "amount": "3"}], record_id="9"))
    assert db.rows("SELECT voucher_no, idempotency_key FROM vouchers ORDER BY 1") == [
        ("V1", "erp-posting-to-finance:4900001:7"),
        ("V2", "erp-posting-to-finance:4900001:9#0"),
        ("V3", "erp-posting-to-finance:4900001:9#1"),
    ]


async def test_columns_option_picks_fields_and_ignores_the_rest(open_sink, make_delivery, db) -> None:
    sink = await open_sink(columns=["voucher_no", "amount"])
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "5", "date": "x", "extra": 1}))
    assert db.rows() == [("V1", "5", None, None)]


async def test_decimal_goes_into_a_text_column_exactly(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": Decimal("12.30")}))
    assert db.rows()[0][1] == "12.30"


# ---------------------------------------------------------------------- refused records


async def test_unknown_column_is_permanent_and_named(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amnt": "1"}))
    assert not caught.value.retryable
    assert str(caught.value) == "finance-vouchers: column 'amnt' does not exist in table vouchers"
    assert db.rows() == []


async def test_nested_value_names_the_column(open_sink, make_delivery) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": {"value": 1}}))
    assert not caught.value.retryable
    assert "column 'amount'" in str(caught.value) and "nested value (dict)" in str(caught.value)


async def test_missing_key_and_not_null_violations_are_permanent(open_sink, make_delivery, db) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError, match="key column 'voucher_no' is missing or null") as caught:
        await sink.send(voucher(make_delivery, {"amount": "1"}))
    assert not caught.value.retryable
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "date": "2026-01-01"}))
    assert not caught.value.retryable
    assert NOT_NULL[db.kind] in str(caught.value)


async def test_payload_that_is_not_rows_is_permanent(open_sink, make_delivery) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError, match="must be an object of column: value") as caught:
        await sink.send(voucher(make_delivery, "V1,12.30"))
    assert not caught.value.retryable


async def test_sink_retry_gives_up_on_a_permanent_error_at_once(open_sink, make_delivery) -> None:
    sink = await open_sink(retry={"attempts": 4, "initial": "10ms"})
    record = voucher(make_delivery, {"voucher_no": "V1", "amnt": "1"})
    with pytest.raises(DeliveryFailed) as caught:
        await sink.retry.run(lambda: sink.send(record))
    assert caught.value.permanent and caught.value.attempts == 1


async def test_text_dates_go_into_date_columns(database: Database, sinks, make_delivery) -> None:
    database.execute("CREATE TABLE vouchers (voucher_no TEXT PRIMARY KEY, date DATE, posted_at TIMESTAMP)")
    sink = SqlSink(config(database.url))
    sinks.append(sink)
    await sink.start()
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "date": "2026-11-20",
                                            "posted_at": "2026-11-20T22:00:05"}))
    with pytest.raises(DeliveryError, match="column 'date': '2026-13-01' is not a valid date") as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V2", "date": "2026-13-01"}))
    assert not caught.value.retryable
    (row,) = database.rows("SELECT voucher_no, CAST(date AS TEXT), CAST(posted_at AS TEXT) FROM vouchers")
    assert row[:2] == ("V1", "2026-11-20")
    assert row[2].startswith("2026-11-20 22:00:05")


# ---------------------------------------------------------------------- the database away or busy


async def test_locked_database_is_retryable(sqlite_db, sinks, make_delivery, exclusive_lock) -> None:
    sink = SqlSink(config(sqlite_db.url, lock_timeout="50ms"))
    sinks.append(sink)
    started = time.perf_counter()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    assert caught.value.retryable
    assert "database is locked" in str(caught.value)
    assert "table vouchers" in str(caught.value)
    assert time.perf_counter() - started < 5


async def test_retry_policy_recovers_once_the_lock_is_released(
        sqlite_db, sinks, make_delivery, exclusive_lock) -> None:
    sink = SqlSink(config(sqlite_db.url, lock_timeout="20ms"))
    sinks.append(sink)
    policy = RetryPolicy(RetrySpec(attempts=50, backoff="fixed", initial=0.03, jitter=False))
    asyncio.get_running_loop().call_later(0.3, exclusive_lock.execute, "ROLLBACK")
    outcomes: list[str] = []
    record = voucher(make_delivery, {"voucher_no": "V1", "amount": "1"})
    attempts = await policy.run(lambda: sink.send(record), lambda outcome, _s, _e: outcomes.append(outcome))
    assert attempts > 1
    assert outcomes[-1] == "ok" and set(outcomes[:-1]) == {"retryable"}
    assert sqlite_db.rows() == [("V1", "1", None, None)]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_database_that_cannot_be_reached_is_retryable_at_send(tmp_path: Path, sinks, make_delivery,
                                                                     kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}" if kind == "sqlite" else dead_postgres_url()
    sink = SqlSink(config(url, timeout="5s"))
    sinks.append(sink)
    await sink.start()  # logged, not raised: the database may come back before the nightly run
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    assert caught.value.retryable
    assert "s3cret" not in str(caught.value)
    if kind == "sqlite":
        assert "unable to open database file" in str(caught.value)


@pytest.mark.postgres
async def test_postgres_restart_is_retried_and_recovers(postgres_server, pg_url, sinks, make_delivery) -> None:
    Database("postgresql", pg_url).execute(VOUCHERS)
    sink = SqlSink(config(pg_url, timeout="5s"))
    sinks.append(sink)
    await sink.start()
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    await asyncio.to_thread(postgres_server.stop)
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.send(voucher(make_delivery, {"voucher_no": "V2", "amount": "2"}))
        assert caught.value.retryable
    finally:
        await asyncio.to_thread(postgres_server.start)
    await sink.send(voucher(make_delivery, {"voucher_no": "V2", "amount": "2"}))  # pool_pre_ping reconnects
    assert [r[0] for r in Database("postgresql", pg_url).rows()] == ["V1", "V2"]


# ---------------------------------------------------------------------- TLS and driver options


async def test_url_query_goes_to_the_driver(sqlite_db: Database, sinks, make_delivery) -> None:
    """SQLite's stand-in for ?sslmode=...: a read-only URI open refuses writes, permanently."""
    path = sqlite_db.url.removeprefix("sqlite:///")
    sink = SqlSink(config(f"sqlite:///file:{path}?mode=ro&uri=true"))
    sinks.append(sink)
    with pytest.raises(ConfigError, match="readonly database"):
        await sink.start()
    with pytest.raises(DeliveryError, match="readonly database") as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    assert not caught.value.retryable
    assert sqlite_db.rows() == []


async def test_connect_args_the_driver_refuses_stop_the_start(sqlite_db: Database) -> None:
    sink = SqlSink(config(sqlite_db.url, connect_args={"sslmode": "require"}))
    with pytest.raises(ConfigError, match="'sslmode' is an invalid keyword argument"):
        await sink.start()
    await sink.close()


@pytest.mark.postgres
async def test_postgres_tls_from_the_url_and_from_connect_args(pg_tls_url: str, pg_tls_server, sinks,
                                                               make_delivery) -> None:
    Database("postgresql", pg_tls_url).execute(VOUCHERS)
    # 1. sslmode=verify-full&sslrootcert=... in the URL query
    sink = SqlSink(config(pg_tls_url))
    sinks.append(sink)
    await sink.start()
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    assert sink._engine is not None
    with sink._engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").scalar() is True
    # 2. the same options as connect_args, on a URL without them
    bare = sa.make_url(pg_tls_url).set(query={}).render_as_string(hide_password=False)
    sink = SqlSink(config(bare, connect_args={"sslmode": "verify-full", "sslrootcert": str(pg_tls_server.ca_file)}))
    sinks.append(sink)
    await sink.start()
    await sink.send(voucher(make_delivery, {"voucher_no": "V2", "amount": "2"}))
    # 3. and connect_args really reach the driver: without TLS this server refuses us
    sink = SqlSink(config(bare, connect_args={"sslmode": "disable"}))
    sinks.append(sink)
    await sink.start()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(voucher(make_delivery, {"voucher_no": "V3", "amount": "3"}))
    assert caught.value.retryable
    assert [r[0] for r in Database("postgresql", pg_tls_url).rows()] == ["V1", "V2"]


# ---------------------------------------------------------------------- the table


async def test_create_table_from_the_first_record(database: Database, sinks, make_delivery) -> None:
    sink = SqlSink(config(database.url, create_table=True, idempotency_column="idem"))
    sinks.append(sink)
    await sink.start()  # nothing to create yet: the columns come with the first record
    record = voucher(make_delivery, {"voucher_no": "V1", "amount": "1.50", "line": 1})
    await sink.send(record)
    await sink.send(record)
    assert database.rows() == [("V1", "1.50", "1", "erp-posting-to-finance:4900001:7")]
    inspector = sa.inspect(database.engine)
    columns = inspector.get_columns("vouchers")
    assert [c["name"] for c in columns] == ["voucher_no", "amount", "line", "idem"]
    assert all(isinstance(c["type"], sa.Text) for c in columns)
    assert inspector.get_pk_constraint("vouchers")["constrained_columns"] == ["voucher_no"]


async def test_sqlite_target_gets_wal(sqlite_database: Database, sinks, make_delivery) -> None:
    sink = SqlSink(config(sqlite_database.url, create_table=True))
    sinks.append(sink)
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    assert sqlite_database.rows("PRAGMA journal_mode") == [("wal",)]


async def test_create_table_with_columns_happens_at_start(database: Database) -> None:
    sink = SqlSink(config(database.url, create_table=True, columns=["voucher_no", "amount"]))
    await sink.start()
    await sink.close()
    assert [c["name"] for c in sa.inspect(database.engine).get_columns("vouchers")] == ["voucher_no", "amount"]


async def test_start_reports_a_missing_table(database: Database) -> None:
    sink = SqlSink(config(database.url, table="vouchrs"))
    with pytest.raises(ConfigError, match=r"table vouchrs does not exist in (sqlite|postgresql)"):
        await sink.start()
    await sink.close()


async def test_start_reports_config_columns_missing_from_the_table(db: Database) -> None:
    sink = SqlSink(config(db.url, columns=["voucher_no", "amnt"]))
    with pytest.raises(ConfigError, match="column 'amnt' does not exist in table vouchers"):
        await sink.start()
    await sink.close()


async def test_upsert_needs_a_unique_key(db: Database) -> None:
    sink = SqlSink(config(db.url, key_columns=["date"]))
    with pytest.raises(ConfigError, match=r"upsert needs a primary key or unique constraint on \(date\)"):
        await sink.start()
    await sink.close()


async def test_unique_index_is_enough_for_upsert(database: Database, sinks, make_delivery) -> None:
    serial = "INTEGER PRIMARY KEY" if database.kind == "sqlite" else "SERIAL PRIMARY KEY"
    database.execute(f"CREATE TABLE vouchers (id {serial}, company TEXT, no TEXT, amount TEXT)",
                     "CREATE UNIQUE INDEX vouchers_key ON vouchers (company, no)")
    sink = SqlSink(config(database.url, key_columns=["company", "no"]))
    sinks.append(sink)
    await sink.start()
    for amount in ("1", "2"):
        await sink.send(voucher(make_delivery, {"company": "1000", "no": "A", "amount": amount}))
    assert database.rows("SELECT * FROM vouchers") == [(1, "1000", "A", "2")]


async def test_other_schema(database: Database, sinks, make_delivery) -> None:
    if database.kind == "sqlite":
        path = database.url.removeprefix("sqlite:///")
        database.execute(f"ATTACH DATABASE '{path}' AS fin")  # a schema in SQLite terms: the same file here
        table = "main.vouchers"
    else:
        database.execute("CREATE SCHEMA fin")
        table = "fin.vouchers"
    database.execute(VOUCHERS.replace("TABLE vouchers", f"TABLE {table}"))
    sink = SqlSink(config(database.url, table=table))
    sinks.append(sink)
    await sink.send(voucher(make_delivery, {"voucher_no": "V1", "amount": "1"}))
    assert database.rows(f"SELECT voucher_no FROM {table}") == [("V1",)]


# ---------------------------------------------------------------------- config


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
    batched = SqlSinkConfig.model_validate({"name": "s", "url": "sqlite://", "table": "t", "mode": "insert",
                                            "batch_size": 100, "batch_linger": "20ms"})
    assert (batched.batch_size, batched.batch_linger) == (100, 0.02)
    with pytest.raises(ValidationError, match="batch_size"):
        SqlSinkConfig.model_validate({"name": "s", "url": "sqlite://", "table": "t", "mode": "insert",
                                      "batch_size": 0})


def test_spec_marks_the_url_secret_and_describes_every_option() -> None:
    schema = SqlSinkConfig.model_json_schema()
    assert schema["properties"]["url"]["secret"] is True
    assert all(field.description for field in SqlSinkConfig.model_fields.values())
    for example in SqlSink.examples:
        resolved = {k.removesuffix("_env"): "sqlite://" if k.endswith("_env") else v for k, v in example.items()}
        SqlSinkConfig.model_validate(resolved)


def test_redact_url_hides_passwords_even_in_bad_urls() -> None:
    assert redact_url("postgresql+psycopg://fin:s3cret@db:5432/fin") == "postgresql+psycopg://fin:***@db:5432/fin"
    assert "s3cret" not in redact_url("weird://fin:s3cret@")
