"""Test systems for poll source types: how the conformance checks get records to poll.

Every poll source type registers ONE async factory here, keyed by its type
name. Given a fresh folder, the factory sets up the outside system the type
reads (a SQLite database for ``sql_poll``, a folder for ``file_drop``, an
HTTP server for ``http_poll``, a topic for ``kafka``...) holding at least
three records, and returns a :class:`PollCase`: a valid options block for
the type, and ``add(n)``, which makes ``n`` more records appear in that
system. The checks in ``test_sources.py`` then run unchanged for every
type; a poll type without a fixture fails them, on purpose.

    @poll_fixture("sql_poll")
    async def sql_poll(tmp: Path) -> PollCase:
        ...  # create the table with 3 rows
        async def add(n: int) -> None:
            ...  # insert n rows with a newer watermark
        return PollCase(config={"name": "conf", "type": "sql_poll", "topic": "conf", ...}, add=add)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncbus.sources.base import NewRecord


def record_identity(record: NewRecord) -> str:
    """Default identity of a polled record: its key, else its bytes."""
    return record.key if record.key is not None else record.value.decode("utf-8", "replace")


@dataclass
class PollCase:
    """A poll source type's test system.

    ``add(n)`` makes ``n`` new records appear; it may return a new options
    block when the type can only see them with other options (the checks
    then build a new instance -- a restart -- and poll from the old cursor).
    ``close`` tears the system down.
    """

    config: dict[str, Any]
    add: Callable[[int], Awaitable[dict[str, Any] | None]]
    identity: Callable[[NewRecord], str] = record_identity
    close: Callable[[], Awaitable[None]] | None = None
    env: dict[str, str] = field(default_factory=dict)  # variables the config's x_env names


PollFactory = Callable[[Path], Awaitable[PollCase]]
POLL_FIXTURES: dict[str, PollFactory] = {}


def poll_fixture(type_name: str) -> Callable[[PollFactory], PollFactory]:
    def register(factory: PollFactory) -> PollFactory:
        if type_name in POLL_FIXTURES:
            raise ValueError(f"a conformance fixture for {type_name!r} is already registered")
        POLL_FIXTURES[type_name] = factory
        return factory

    return register


@poll_fixture("generate")
async def generate(tmp: Path) -> PollCase:
    config: dict[str, Any] = {"name": "conf-generate", "type": "generate", "topic": "conformance", "count": 3}

    async def add(n: int) -> dict[str, Any]:
        config["count"] += n
        return dict(config)

    return PollCase(config=dict(config), add=add)


@poll_fixture("file_drop")
async def file_drop(tmp: Path) -> PollCase:
    """A drop folder (given by path_env) holding one GBK CSV of 3 rows; ``add(n)`` drops a new file of n rows."""
    folder = tmp / "drop"
    folder.mkdir()
    files = iter(range(1, 1000))
    ids = iter(range(1, 100_000))

    def drop(n: int) -> None:
        rows = "".join(f"{next(ids)},员工,销售部\r\n" for _ in range(n))
        (folder / f"employees-{next(files):03d}.csv").write_bytes(("emp_id,name,dept_name\r\n" + rows).encode("gbk"))

    drop(3)

    async def add(n: int) -> None:
        drop(n)

    config = {"name": "conf-file-drop", "type": "file_drop", "topic": "conformance", "path_env": "CONF_DROP_DIR",
              "encoding": "gbk", "key": "emp_id", "settle": 0}
    return PollCase(config=config, add=add, env={"CONF_DROP_DIR": str(folder)})


@poll_fixture("sql_poll")
async def sql_poll(tmp: Path) -> PollCase:
    """A SQLite file (dsn_env) with 3 postings; ``add(n)`` inserts n rows, some sharing the last watermark."""
    import sqlite3

    db = tmp / "erp.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE postings (id INTEGER PRIMARY KEY, changed_at TEXT NOT NULL, dmbtr TEXT)")
        conn.executemany("INSERT INTO postings VALUES (?, ?, ?)",
                         [(i, f"2026-11-20 22:00:0{i}", "1.50") for i in (1, 2, 3)])
    conn.close()
    ids = iter(range(4, 100_000))

    async def add(n: int) -> None:
        with sqlite3.connect(db) as conn:  # equal watermarks: only (watermark, key) tells them apart
            conn.executemany("INSERT INTO postings VALUES (?, ?, ?)",
                             [(next(ids), "2026-11-20 22:00:09", "2.50") for _ in range(n)])
        conn.close()

    config = {"name": "conf-sql-poll", "type": "sql_poll", "topic": "conformance", "dsn_env": "CONF_ERP_DSN",
              "query": "SELECT * FROM postings", "watermark": "changed_at", "key": "id"}
    return PollCase(config=config, add=add, env={"CONF_ERP_DSN": f"sqlite:///{db}"})


# Test systems that are session services (a Kafka broker) are not started per check: a factory names
# the pytest fixtures it needs here and calls SERVICES["fixture"](name) for their values. The bridge
# (SERVICES, the markers) is tests/conformance/conftest.py.
NEEDS: dict[str, tuple[str, ...]] = {"kafka": ("kafka_bootstrap",)}
SERVICES: dict[str, Callable[[str], Any]] = {}


@poll_fixture("http_poll")
async def http_poll(tmp: Path) -> PollCase:
    """A real paged API (tests/sources/http_poll_api.py) with 3 records, cursor paging, a bearer from the env."""
    import asyncio

    from tests.sources.http_poll_api import PagedApi

    api = await asyncio.to_thread(PagedApi(count=3, page_size=2).start)
    api.require_bearer("conf-token")

    async def add(n: int) -> None:
        api.add(n)

    async def close() -> None:
        await asyncio.to_thread(api.stop)

    config = {"name": "conf-http-poll", "type": "http_poll", "topic": "conformance", "url_env": "CONF_API_URL",
              "items": "items", "key": "id", "cursor_param": "since", "cursor_path": "next_cursor",
              "has_more_path": "has_more", "headers": {"Authorization_env": "CONF_API_AUTH"}}
    return PollCase(config=config, add=add, close=close,
                    env={"CONF_API_URL": api.url_for("/cursor"), "CONF_API_AUTH": "Bearer conf-token"})


@poll_fixture("kafka")
async def kafka(tmp: Path) -> PollCase:
    """A fresh 2-partition topic on the session's broker with 3 keyed JSON messages; ``add(n)`` produces n more."""
    import json
    import uuid

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = SERVICES["fixture"]("kafka_bootstrap")
    topic = f"conf.kafka.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    ids = iter(range(1, 100_000))

    async def add(n: int) -> None:
        for _ in range(n):
            i = next(ids)
            await producer.send_and_wait(topic, json.dumps({"id": i}).encode(), key=str(i).encode())

    async def close() -> None:
        await producer.stop()

    await add(3)
    config = {"name": "conf-kafka", "type": "kafka", "topic": "conformance", "bootstrap_env": "CONF_KAFKA",
              "from_topic": topic, "group": f"conf-{topic}"}
    return PollCase(config=config, add=add, close=close, env={"CONF_KAFKA": bootstrap})
