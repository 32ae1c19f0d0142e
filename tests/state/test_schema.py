"""The store's schema: 64-bit ``seq`` keys, upgrading stores made with 32-bit ones, looking without creating."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, Integer, MetaData, create_engine, inspect, text

from syncbus.state import DeadLetter, Store, TraceEvent, sqlite_url
from syncbus.state.db import Database
from syncbus.state.tables import metadata
from syncbus.state.versions import ChangeAuditEntry, ShadowResult

SEQ_TABLES = ("change_audit", "dlq_audit", "shadow_samples", "trace_events")
PAST_INT32 = 2**31 + 10


def old_metadata() -> MetaData:
    """The schema as stores were created before: every ``seq`` a 32-bit integer (SERIAL on PostgreSQL)."""
    old = MetaData()
    for table in metadata.sorted_tables:
        copy = table.to_metadata(old)
        if "seq" in copy.c:
            copy.c.seq.type = Integer()
    return old


def pg_types(engine: Engine) -> dict[str, tuple[str, str]]:
    """Per table: the type of its ``seq`` column and of the sequence behind it."""
    query = text("""
        SELECT c.table_name, c.data_type, format_type(s.seqtypid, NULL)
        FROM information_schema.columns c
        JOIN pg_sequence s ON s.seqrelid = pg_get_serial_sequence(c.table_name, c.column_name)::regclass
        WHERE c.table_schema = current_schema() AND c.column_name = 'seq'""")
    with engine.connect() as conn:
        return {name: (column, seq) for name, column, seq in conn.execute(query)}


def letter(i: int = 0) -> DeadLetter:
    return DeadLetter(route="orders", reason="delivery", error="boom", value=b'{"order_id": "SO-1"}',
                      record_id=f"rec-{i}", topic="crm.orders", sink="erp")


def sample(record_id: str) -> ShadowResult:
    return ShadowResult(shadow="orders-v2", live_route="orders", shadow_version=2, live_version=1,
                        record_id=record_id, key="SO-1", outcome="different", paths=("ID",),
                        detail={"values": {"ID": ["1", "2"]}})


def write_one_of_each(store: Store, i: int = 0) -> dict[str, int]:
    """A row in every table with a ``seq``, through the store's own API; the newest ``seq`` of each."""
    store.add_trace([TraceEvent(record_id=f"rec-{i}", route="orders", stage="received", detail={"n": i})])
    dl_id = store.add(letter(i))
    store.edit(dl_id, b'{"order_id": "SO-1b"}', "alice", "fix")    # an audited dead-letter operation
    change = store.add_change_audit(ChangeAuditEntry(route="orders", action="promote", actor="alice", reason="r"))
    store.add_shadow_results([sample(f"rec-{i}")])
    assert store.shadow_samples("orders-v2", limit=1)[0].record_id == f"rec-{i}"
    return {"trace_events": max_seq(store, "trace_events"), "dlq_audit": store.audit(dl_id)[-1].id,
            "change_audit": change, "shadow_samples": max_seq(store, "shadow_samples")}


def max_seq(store: Store, table: str) -> int:
    with store._tx() as conn:
        return int(conn.execute(text(f"SELECT max(seq) FROM {table}")).scalar_one())


@pytest.fixture
def pg(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


def writes_past_int32(pg: Engine, store: Store) -> None:
    """Every seq sequence set past 2^31, then one row of each table written: each gets a number past it."""
    with pg.begin() as conn:
        for table in SEQ_TABLES:
            conn.execute(text("SELECT setval(pg_get_serial_sequence(:t, 'seq'), :v)"), {"t": table, "v": PAST_INT32})
    seqs = write_one_of_each(store)
    assert all(seq > PAST_INT32 for seq in seqs.values()), seqs


def test_new_postgresql_store_has_64_bit_keys_past_2_31(pg_url: str, pg: Engine) -> None:
    store = Store(pg_url)
    try:
        assert pg_types(pg) == {t: ("bigint", "bigint") for t in SEQ_TABLES}
        writes_past_int32(pg, store)
    finally:
        store.close()


def test_old_postgresql_store_is_widened_once_when_opened(pg_url: str, pg: Engine,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    old_metadata().create_all(pg)
    assert pg_types(pg) == {t: ("integer", "integer") for t in SEQ_TABLES}
    with pg.begin() as conn:      # rows written before the upgrade keep their numbers
        conn.execute(text("INSERT INTO trace_events (record_id, stage, at, detail) "
                          "VALUES ('old', 'received', now(), '{}')"))
    caplog.set_level(logging.WARNING, logger="syncbus.state.db")
    store = Store(pg_url)
    try:
        assert pg_types(pg) == {t: ("bigint", "bigint") for t in SEQ_TABLES}
        widened = [r.getMessage() for r in caplog.records if "widening" in r.getMessage()]
        assert len(widened) == len(SEQ_TABLES)                      # one line per column
        assert all(any(f"widening {t}.seq " in m for m in widened) for t in SEQ_TABLES)
        assert max_seq(store, "trace_events") == 1 and len(store.trace("old")) == 1
        writes_past_int32(pg, store)  # an integer sequence refuses this value ("out of bounds")
    finally:
        store.close()
    caplog.clear()
    Store(pg_url).close()                                           # once: nothing left to do, nothing logged
    assert not [r for r in caplog.records if "widening" in r.getMessage()]


def test_nodes_opening_an_old_store_together_upgrade_it_once(pg_url: str, pg: Engine,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    old_metadata().create_all(pg)
    caplog.set_level(logging.WARNING, logger="syncbus.state.db")

    def open_store(_: int) -> None:
        Store(pg_url).close()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(open_store, range(6)))
    assert pg_types(pg) == {t: ("bigint", "bigint") for t in SEQ_TABLES}
    assert len([r for r in caplog.records if "widening" in r.getMessage()]) == len(SEQ_TABLES)


def test_sqlite_seq_stays_the_rowid_alias(tmp_path: Path) -> None:
    """BIGINT would not number itself on SQLite: the key must stay ``INTEGER PRIMARY KEY``."""
    db = tmp_path / "store.db"
    store = Store(sqlite_url(db))
    try:
        first = write_one_of_each(store, 0)
        with sqlite3.connect(db) as conn:
            for table in SEQ_TABLES:
                columns = {row[1]: row for row in conn.execute(f"PRAGMA table_info({table})")}
                assert columns["seq"][2] == "INTEGER" and columns["seq"][5] == 1, table
            conn.execute("UPDATE trace_events SET seq = ? WHERE seq = ?", (PAST_INT32, first["trace_events"]))
        second = write_one_of_each(store, 1)
        assert all(seq > 0 for seq in first.values())
        assert second["trace_events"] == PAST_INT32 + 1
    finally:
        store.close()


def test_database_without_create_touches_nothing(pg_url: str, pg: Engine) -> None:
    db = Database(pg_url, create=False)
    try:
        assert not db.has_state()
    finally:
        db.close()
    assert inspect(pg).get_table_names() == []
    Store(pg_url).close()
    db = Database(pg_url, create=False)
    try:
        assert db.has_state()
    finally:
        db.close()


def test_has_state_on_sqlite(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")
    empty = Database(url, create=False)
    try:
        assert not empty.has_state()
    finally:
        empty.close()
    Store(url).close()
    db = Database(url, create=False)
    try:
        assert db.has_state()
    finally:
        db.close()
