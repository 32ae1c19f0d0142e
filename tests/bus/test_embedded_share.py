"""The embedded bus shared by the workers of `syncbus run --workers N`, and its in-memory tail (issue 11)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from syncbus.bus.embedded import EmbeddedBus, share_of
from syncbus.bus.tail import Tail
from syncbus.record import Record


async def _drain(consumer: object, want: int, timeout: float = 5.0) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        got = await consumer.fetch(500, 0.2)  # type: ignore[attr-defined]
        for r in got:
            consumer.done(r)  # type: ignore[attr-defined]
        out += got
    return out


def _offsets(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {g: o for g, o in conn.execute('SELECT "group", next_offset FROM offsets')}


def test_shares_are_stable_and_keyless_records_go_to_worker_0() -> None:
    assert share_of(None, 4) == 0 and share_of("anything", 1) == 0
    keys = [f"SO-{i}" for i in range(400)]
    assert [share_of(k, 3) for k in keys] == [share_of(k, 3) for k in keys]
    assert {share_of(k, 3) for k in keys} == {0, 1, 2}


async def test_two_workers_split_a_group_by_key_and_the_group_row_follows_the_slower(tmp_path: Path) -> None:
    path = str(tmp_path / "bus.db")
    writer = EmbeddedBus(path)
    await writer.start()
    keys = [f"K{i % 37}" for i in range(300)] + [None] * 20
    for i, key in enumerate(keys):
        await writer.publish("t", f"{i}".encode(), key)
    workers = [EmbeddedBus(path) for _ in range(2)]
    consumers = []
    for index, bus in enumerate(workers):
        bus.share(index, 2)
        consumer = bus.consumer("g", ["t"])
        await consumer.start()
        consumers.append(consumer)
    got = [await _drain(c, sum(1 for k in keys if share_of(k, 2) == i)) for i, c in enumerate(consumers)]
    for index, records in enumerate(got):
        assert all(share_of(r.key, 2) == index for r in records)
        by_key: dict[str | None, list[int]] = {}
        for r in records:
            by_key.setdefault(r.key, []).append(r.offset)
        assert all(offs == sorted(offs) for offs in by_key.values())  # per-key order
    assert sorted(r.offset for records in got for r in records) == list(range(len(keys)))  # each once
    await consumers[0].commit()
    rows = _offsets(path)
    assert rows["g@0/2"] == len(keys) and "g" not in rows  # not every worker committed yet: no group row
    await consumers[1].commit()
    assert _offsets(path)["g"] == len(keys)
    for c in consumers:
        await c.stop()
    for bus in [*workers, writer]:
        await bus.stop()


async def test_a_restart_with_another_worker_count_starts_where_every_worker_was(tmp_path: Path) -> None:
    path = str(tmp_path / "bus.db")
    bus = EmbeddedBus(path)
    await bus.start()
    for i in range(100):
        await bus.publish("t", b"x", f"K{i}")
    fast, slow = EmbeddedBus(path), EmbeddedBus(path)
    fast.share(0, 2)
    slow.share(1, 2)
    c_fast, c_slow = fast.consumer("g", ["t"]), slow.consumer("g", ["t"])
    await c_fast.start()
    await c_slow.start()
    await _drain(c_fast, sum(1 for i in range(100) if share_of(f"K{i}", 2) == 0))
    first_slow = (await c_slow.fetch(1, 1.0))[0]
    c_slow.done(first_slow)  # the slow worker finished only its first record
    await c_fast.stop()
    await c_slow.stop()
    group_row = _offsets(path)["g"]
    assert group_row == first_slow.offset + 1  # the lowest worker position
    # one process again: it resumes at the group row, so the slow worker's unfinished records come again
    single = bus.consumer("g", ["t"])
    await single.start()
    again = await _drain(single, 100 - group_row)
    assert [r.offset for r in again] == list(range(group_row, 100))
    await single.stop()
    for b in (fast, slow, bus):
        await b.stop()


async def test_the_tail_serves_what_this_process_wrote_and_equals_sqlite(tmp_path: Path) -> None:
    path = str(tmp_path / "bus.db")
    bus = EmbeddedBus(path)
    await bus.start()
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    for i in range(50):
        await bus.publish("t", f"v{i}".encode(), f"k{i}", {"syncbus-id": f"id{i}"})
    from_memory = await _drain(consumer, 50)
    assert [r.offset for r in from_memory] == list(range(50))
    await consumer.stop()
    reader = EmbeddedBus(path)  # another process's view: SQLite only
    other = reader.consumer("h", ["t"])
    await other.start()
    from_disk = await _drain(other, 50)
    await other.stop()
    assert [(r.value, r.key, r.headers, r.offset, r.timestamp) for r in from_memory] == [
        (r.value, r.key, r.headers, r.offset, r.timestamp) for r in from_disk]
    await reader.stop()
    await bus.stop()


def test_a_gap_starts_the_tail_over_and_it_stays_bounded() -> None:
    tail = Tail(capacity=3)
    for off in (0, 1, 2, 3):
        tail.append(Record(b"x", None, {}, "t", 0, off))
    assert (tail.first, tail.next) == (1, 4)
    assert tail.read(0, 10) is None  # evicted: read SQLite
    got = tail.read(2, 10)
    assert got is not None and [r.offset for r in got[0]] == [2, 3] and got[1] == 4
    tail.append(Record(b"x", None, {}, "t", 0, 7))  # another writer appended 4..6
    assert (tail.first, tail.next) == (7, 8)
    mine = tail.read(7, 10, lambda key: key == "mine")
    assert mine == ([], 8)  # looked at, not taken: the position still moves


def test_share_needs_a_real_worker(tmp_path: Path) -> None:
    from syncbus.errors import BusError

    with pytest.raises(BusError):
        EmbeddedBus(str(tmp_path / "b.db")).share(2, 2)
