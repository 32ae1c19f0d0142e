"""The embedded SQLite bus: durability, at-least-once offsets, wake-ups, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncbus.bus import open_bus
from syncbus.bus.base import Bus, Consumer
from syncbus.bus.embedded import EmbeddedBus
from syncbus.errors import BusError


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "var" / "syncbus.db")


@pytest.fixture
async def bus(db_path: str) -> AsyncIterator[EmbeddedBus]:
    b = EmbeddedBus(db_path)
    await b.start()
    yield b
    await b.stop()


async def _fetch_n(consumer: Consumer, n: int, timeout: float = 5.0) -> list:
    """Fetch until n records arrived (a fetch may return fewer than asked)."""
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += await consumer.fetch(n - len(out), timeout=0.5)
    return out


async def test_protocols_url_and_folder(db_path: str, bus: EmbeddedBus) -> None:
    assert isinstance(bus, Bus)
    assert isinstance(bus.consumer("g", ["t"]), Consumer)
    assert bus.url == "embedded://" + db_path
    assert Path(db_path).is_file()            # parent folder "var" was created
    assert await bus.ping()
    await bus.ensure_topics(["a", "b"])       # no-op, must not fail
    mode = sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_open_bus_picks_embedded(tmp_path: Path) -> None:
    b = open_bus(f"embedded://{tmp_path}/x.db")
    assert isinstance(b, EmbeddedBus)
    assert b.path == f"{tmp_path}/x.db"


async def test_publish_then_fetch_keeps_value_key_headers(bus: EmbeddedBus) -> None:
    r0 = await bus.publish("crm.orders", b'{"order_id": 1}', key="A-1",
                           headers={"content-type": "application/json"})
    r1 = await bus.publish("crm.orders", b"\x00\xffbinary", key=None)
    r2 = await bus.publish("other", b"x")
    assert (r0.topic, r0.partition, r0.offset) == ("crm.orders", 0, 0)
    assert r1.offset == 1
    assert r2.offset == 0                     # offsets count per topic
    assert r0.timestamp > 0

    c = bus.consumer("route-a", ["crm.orders"])
    await c.start()
    got = await c.fetch(10, timeout=1)
    assert [(r.offset, r.key, r.value) for r in got] == [(0, "A-1", b'{"order_id": 1}'),
                                                       (1, None, b"\x00\xffbinary")]
    assert got[0].headers == {"content-type": "application/json"}
    assert got[1].headers == {}
    assert all(r.topic == "crm.orders" for r in got)
    # Nothing more: the consumer does not refetch what it already has.
    assert await c.fetch(10, timeout=0.05) == []
    await c.stop()


async def test_fetch_respects_max_records_and_order(bus: EmbeddedBus) -> None:
    for i in range(7):
        await bus.publish("t", str(i).encode(), key="same")
    c = bus.consumer("g", ["t"])
    await c.start()
    first = await c.fetch(3, timeout=1)
    second = await c.fetch(10, timeout=1)
    assert [r.value for r in first] == [b"0", b"1", b"2"]
    assert [r.value for r in second] == [b"3", b"4", b"5", b"6"]
    await c.stop()


async def test_publish_is_on_disk_when_it_returns(db_path: str, bus: EmbeddedBus) -> None:
    rec = await bus.publish("t", b"durable", key="k")
    # Another connection (as another process would) sees the committed row at once.
    row = sqlite3.connect(db_path).execute(
        'SELECT value, key FROM log WHERE topic=? AND "offset"=?', ("t", rec.offset)).fetchone()
    assert row == (b"durable", "k")


async def test_records_survive_reopen(db_path: str) -> None:
    b1 = EmbeddedBus(db_path)
    await b1.start()
    for i in range(3):
        await b1.publish("t", f"v{i}".encode(), headers={"syncbus-id": f"id{i}"})
    await b1.stop()

    b2 = EmbeddedBus(db_path)
    c = b2.consumer("g", ["t"])
    await c.start()
    got = await c.fetch(10, timeout=1)
    assert [(r.offset, r.value, r.id) for r in got] == [(0, b"v0", "id0"), (1, b"v1", "id1"),
                                                       (2, b"v2", "id2")]
    # Offsets continue after the reopen, they are not reused.
    assert (await b2.publish("t", b"v3")).offset == 3
    await c.stop()
    await b2.stop()


async def test_at_least_once_resumes_at_first_unfinished(db_path: str) -> None:
    b1 = EmbeddedBus(db_path)
    await b1.start()
    for i in range(5):
        await b1.publish("t", str(i).encode())
    c1 = b1.consumer("g", ["t"])
    await c1.start()
    got = await c1.fetch(5, timeout=1)
    assert [r.offset for r in got] == [0, 1, 2, 3, 4]
    for r in got:
        if r.offset in (0, 1, 3):
            c1.done(r)
    assert await c1.lag() == {("t", 0): 5}    # nothing committed yet
    await c1.stop()                            # commits the contiguous prefix 0, 1
    await b1.stop()

    b2 = EmbeddedBus(db_path)
    c2 = b2.consumer("g", ["t"])
    await c2.start()
    assert await c2.lag() == {("t", 0): 3}
    again = await c2.fetch(10, timeout=1)
    assert [r.offset for r in again] == [2, 3, 4]   # 3 comes again: at-least-once
    for r in again:
        c2.done(r)
    await c2.commit()
    assert await c2.lag() == {("t", 0): 0}
    await c2.stop()
    await b2.stop()


async def test_two_groups_each_see_every_record(bus: EmbeddedBus) -> None:
    for i in range(4):
        await bus.publish("t", str(i).encode())
    a, b = bus.consumer("route-a", ["t"]), bus.consumer("route-b", ["t"])
    await a.start()
    await b.start()
    got_a = await a.fetch(10, timeout=1)
    for r in got_a:
        a.done(r)
    await a.commit()
    got_b = await b.fetch(10, timeout=1)
    assert [r.value for r in got_a] == [r.value for r in got_b] == [b"0", b"1", b"2", b"3"]
    assert await a.lag() == {("t", 0): 0}
    assert await b.lag() == {("t", 0): 4}
    await a.stop()
    await b.stop()


async def test_consumer_of_several_topics(bus: EmbeddedBus) -> None:
    await bus.publish("x", b"x0")
    await bus.publish("y", b"y0")
    await bus.publish("x", b"x1")
    c = bus.consumer("g", ["x", "y"])
    await c.start()
    got = await _fetch_n(c, 3)
    assert sorted(r.value for r in got) == [b"x0", b"x1", b"y0"]
    assert [r.value for r in got if r.topic == "x"] == [b"x0", b"x1"]
    assert set(await c.lag()) == {("x", 0), ("y", 0)}
    await c.stop()


async def test_waiting_consumer_wakes_on_publish_in_this_process(bus: EmbeddedBus) -> None:
    c = bus.consumer("g", ["t"])
    await c.start()
    task = asyncio.create_task(c.fetch(10, timeout=5))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    await bus.publish("t", b"hello")
    got = await task
    assert [r.value for r in got] == [b"hello"]
    assert time.monotonic() - t0 < 0.2
    await c.stop()


async def test_fetch_times_out_empty(bus: EmbeddedBus) -> None:
    c = bus.consumer("g", ["t"])
    await c.start()
    t0 = time.monotonic()
    assert await c.fetch(10, timeout=0.2) == []
    assert 0.15 < time.monotonic() - t0 < 1.0
    await c.stop()


async def test_publish_from_second_instance_is_seen_by_waiting_consumer(db_path: str,
                                                                       bus: EmbeddedBus) -> None:
    other = EmbeddedBus(db_path)              # as the CLI would open it
    await other.start()
    c = bus.consumer("g", ["t"])
    await c.start()
    task = asyncio.create_task(c.fetch(10, timeout=5))
    await asyncio.sleep(0.2)                  # the consumer is waiting now
    t0 = time.monotonic()
    await other.publish("t", b"from-cli")
    got = await task
    elapsed = time.monotonic() - t0
    assert [r.value for r in got] == [b"from-cli"]
    assert elapsed < 0.5, elapsed
    await other.stop()
    await c.stop()


async def test_publish_from_another_process(db_path: str, bus: EmbeddedBus) -> None:
    c = bus.consumer("g", ["t"])
    await c.start()
    script = (
        "import asyncio, sys\n"
        "from syncbus.bus.embedded import EmbeddedBus\n"
        "async def main():\n"
        "    b = EmbeddedBus(sys.argv[1])\n"
        "    r = await b.publish('t', b'other-process', key='k')\n"
        "    await b.stop()\n"
        "    print(r.offset)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, db_path,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = await c.fetch(10, timeout=10)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "0"
    assert [(r.value, r.key) for r in got] == [(b"other-process", "k")]
    await c.stop()


async def test_interleaved_writers_never_reuse_offsets(db_path: str, bus: EmbeddedBus) -> None:
    other = EmbeddedBus(db_path)
    offsets = []
    for i in range(6):
        b = bus if i % 2 == 0 else other
        offsets.append((await b.publish("t", str(i).encode())).offset)
    await other.stop()
    assert offsets == [0, 1, 2, 3, 4, 5]


async def test_same_group_in_one_process_hands_over_on_stop(bus: EmbeddedBus) -> None:
    for i in range(3):
        await bus.publish("t", str(i).encode())
    first, second = bus.consumer("g", ["t"]), bus.consumer("g", ["t"])
    await first.start()
    await second.start()
    got = await first.fetch(10, timeout=1)
    assert len(got) == 3
    assert await second.fetch(10, timeout=0.1) == []   # the topic is owned by `first`
    assert await second.lag() == {}
    first.done(got[0])
    waiting = asyncio.create_task(second.fetch(10, timeout=5))
    await asyncio.sleep(0.05)
    await first.stop()                                   # commits offset 1, hands over
    taken = await waiting
    assert [r.offset for r in taken] == [1, 2]
    await second.stop()


async def test_group_commit_batches_concurrent_publishes(bus: EmbeddedBus) -> None:
    before = bus.transactions
    records = await asyncio.gather(*(bus.publish("t", str(i).encode()) for i in range(200)))
    assert sorted(r.offset for r in records) == list(range(200))
    # The first publish starts a transaction; everything that queued meanwhile
    # shares the next one.
    assert bus.transactions - before <= 5, bus.transactions - before


async def test_publish_throughput_with_8_publishers(bus: EmbeddedBus) -> None:
    stop_at = time.monotonic() + 1.5
    counts = [0] * 8

    async def publisher(n: int) -> None:
        while time.monotonic() < stop_at:
            await bus.publish("load", b'{"order_id": 12345, "amount": 99.5}', key=f"k{n}")
            counts[n] += 1

    t0 = time.monotonic()
    tx0 = bus.transactions
    await asyncio.gather(*(publisher(n) for n in range(8)))
    elapsed = time.monotonic() - t0
    total = sum(counts)
    tx = bus.transactions - tx0
    print(f"\nembedded bus: {total} publishes in {elapsed:.2f}s = {total / elapsed:.0f}/s "
          f"with 8 publishers, {tx} transactions ({total / max(tx, 1):.1f} per commit)")
    assert total / elapsed > 300            # generous floor for a loaded 2-core box
    assert total / tx > 2                   # commits were grouped
    hw = await bus.high_water(["load"])
    assert hw == {"load": total}            # offsets contiguous, none lost


async def test_bad_input_and_lifecycle_errors(db_path: str) -> None:
    b = EmbeddedBus(db_path)
    with pytest.raises(BusError, match="value must be bytes"):
        await b.publish("t", "text")  # type: ignore[arg-type]
    with pytest.raises(BusError, match="topic"):
        await b.publish("", b"x")
    with pytest.raises(BusError, match="at least one topic"):
        b.consumer("g", [])
    c = b.consumer("g", ["t"])
    with pytest.raises(BusError, match="before start"):
        await c.fetch(1, timeout=0)
    await b.publish("t", b"x")               # starts lazily
    await b.stop()
    assert not await b.ping()
    with pytest.raises(BusError, match="stopped"):
        await b.publish("t", b"x")


async def test_unusable_path_is_a_bus_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    b = EmbeddedBus(str(blocker / "sub" / "syncbus.db"))
    with pytest.raises(BusError, match="embedded bus"):
        await b.start()
    assert not await b.ping()
