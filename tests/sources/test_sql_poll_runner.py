"""``sql_poll`` under the poll runner: stored cursors, restarts, a PostgreSQL that goes down, TLS.

The runner, the embedded bus and the SQLite state store are the real ones
(sources/poller.py); the source database is a real PostgreSQL server that
these tests stop and start (``postgres_server``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson
import pytest
import sqlalchemy as sa

from syncbus.bus.embedded import EmbeddedBus
from syncbus.metrics import Metrics
from syncbus.sources.poller import PollRunner
from syncbus.sources.publisher import Publisher
from syncbus.sources.sql_poll import SourceUnavailable, SqlPollSource
from syncbus.tracing import TraceRecorder
from tests.support.postgres import PostgresServer

from .helpers import State, topic_records
from .test_sql_poll import Erp


def poll_source(url: str, **options: Any) -> SqlPollSource:
    return SqlPollSource({"name": "erp", "type": "sql_poll", "topic": "erp.postings", "dsn": url,
                          "query": "SELECT * FROM postings", "watermark": "changed_at", "key": ["doc", "line"],
                          "batch_size": 2, **options})


def runner(source: SqlPollSource, bus: EmbeddedBus, state: State, metrics: Metrics) -> PollRunner:
    return PollRunner(source, Publisher(bus, metrics, TraceRecorder(state)), state, metrics, node="node-a")


async def docs_on(bus: EmbeddedBus) -> list[str]:
    values = [orjson.loads(r.value) for r in await topic_records(bus, "erp.postings")]
    return [f"{v['doc']}/{v['line']}" for v in values]


async def until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_first_run_loads_everything_and_a_restart_resumes(pg_url: str, bus: EmbeddedBus, state: State,
                                                                metrics: Metrics) -> None:
    erp = Erp(pg_url)
    erp.add(("A", 1, 1), ("B", 1, 1), ("C", 1, 2))
    first = runner(poll_source(pg_url), bus, state, metrics)
    result = await first.run()  # nothing stored: a full load
    assert (result.records, result.pages) == (3, 2)
    assert state.get_checkpoint("erp")["key"] == ["C", 1]
    await first.stop()

    erp.add(("D", 1, 2), ("E", 1, 3))  # "restart": a new process, a new source instance
    second = runner(poll_source(pg_url), bus, state, metrics)
    assert (await second.run()).records == 2
    assert (await second.run()).records == 0
    await second.stop()
    assert await docs_on(bus) == ["A/1", "B/1", "C/1", "D/1", "E/1"]
    erp.close()


async def test_a_database_that_goes_down_is_retried_and_the_cursor_waits(
        pg_url: str, postgres_server: PostgresServer, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    erp = Erp(pg_url)
    erp.add(("A", 1, 1), ("B", 1, 2), ("C", 1, 3))
    r = runner(poll_source(pg_url, interval="1s", retry={"initial": "100ms", "max": "300ms"}, timeout=3),
               bus, state, metrics)
    await r.start()
    try:
        await until(lambda: (state.get_checkpoint("erp") or {}).get("key") == ["C", 1], what="the first load")
        stored = state.get_checkpoint("erp")
        erp.engine.dispose()
        await asyncio.to_thread(postgres_server.stop)
        await until(lambda: r.status()["up"] is False, what="the runner to notice")
        status = r.status()
        assert "SourceUnavailable" in status["last_error"] and "cannot connect" in status["last_error"]
        assert status["state"] in ("retrying", "waiting", "running") and status["failures"] >= 1
        assert metrics.value("syncbus_source_up", {"source": "erp"}) == 0
        await asyncio.sleep(1.5)  # a few failed tries later ...
        assert state.get_checkpoint("erp") == stored  # ... the cursor has not moved
        await asyncio.to_thread(postgres_server.start)
        erp.add(("D", 1, 4), ("E", 1, 4))
        await until(lambda: (state.get_checkpoint("erp") or {}).get("key") == ["E", 1], what="the resumed poll")
        await until(lambda: r.status()["up"] is True, what="up again")
        assert r.status()["last_error"] is None
        assert metrics.value("syncbus_source_up", {"source": "erp"}) == 1
    finally:
        await r.stop()
        erp.close()
    assert await docs_on(bus) == ["A/1", "B/1", "C/1", "D/1", "E/1"]  # none lost, none twice


def split_tls(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its query, and the query (sslmode, sslrootcert) as connect_args."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query))


async def test_tls_options_go_to_the_driver(pg_tls_url: str) -> None:
    dsn, tls = split_tls(pg_tls_url)
    assert tls["sslmode"] == "verify-full" and tls["sslrootcert"]
    engine = sa.create_engine(pg_tls_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE postings (doc text, line int, changed_at timestamptz)"))
        conn.execute(sa.text("INSERT INTO postings VALUES ('A', 1, now())"))
    engine.dispose()
    query = ("SELECT p.*, s.ssl AS encrypted FROM postings p "
             "JOIN pg_stat_ssl s ON s.pid = pg_backend_pid()")
    source = poll_source(dsn, query=query, connect_args=tls)
    try:
        [record] = (await source.poll(None, full=True, limit=10)).records
        assert orjson.loads(record.value)["encrypted"] is True
    finally:
        await source.stop()
    plain = poll_source(dsn, connect_args={"sslmode": "disable"})  # the server takes TLS only
    try:
        # libpq reports a refused connection without a SQLSTATE: it counts as "cannot connect" (retried)
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            await plain.poll(None, full=True, limit=10)
    finally:
        await plain.stop()
