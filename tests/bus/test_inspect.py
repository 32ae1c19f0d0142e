"""Reading a bus from outside (what `syncbus ledger` relies on), on both buses."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from syncbus.bus import open_bus
from syncbus.bus.inspect import read_entries, read_group_offsets
from syncbus.errors import BusError
from syncbus.record import H_ID, H_RECEIVED_AT, H_REPLAY_ROUTE, H_SOURCE


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "kafka":
        return "kafka://" + request.getfixturevalue("kafka_bootstrap")
    return f"embedded://{tmp_path}/bus.db"


async def test_entries_in_a_window_and_group_offsets(bus_url: str) -> None:
    topic = f"inspect.{uuid.uuid4().hex[:8]}"
    bus = open_bus(bus_url)
    await bus.start()
    try:
        await bus.ensure_topics([topic])
        start = time.time()
        for i in range(5):
            headers = {H_ID: f"r{i}", H_SOURCE: "crm", H_RECEIVED_AT: f"{time.time():.6f}"}
            if i == 4:
                headers[H_REPLAY_ROUTE] = "route-a"
            await bus.publish(topic, b"{}", f"k{i}", headers)
        consumer = bus.consumer("syncbus.route-a", [topic])
        await consumer.start()
        fetched: list = []
        deadline = time.monotonic() + 20
        while len(fetched) < 5 and time.monotonic() < deadline:
            fetched += await consumer.fetch(10, 1.0)
        for rec in fetched[:3]:
            consumer.done(rec)
        await consumer.commit()
        committed_partition = fetched[0].partition
        await consumer.stop()
    finally:
        await bus.stop()
    entries = await read_entries(bus_url, [topic], start - 1, time.time() + 1)
    assert sorted(e.record_id for e in entries) == ["r0", "r1", "r2", "r3", "r4"]
    assert {e.source for e in entries} == {"crm"}
    assert [e.replay_route for e in entries if e.record_id == "r4"] == ["route-a"]
    assert await read_entries(bus_url, [topic], time.time() + 60, time.time() + 120) == []
    offsets = await read_group_offsets(bus_url, {"syncbus.route-a": [topic], "syncbus.never": [topic]})
    assert sum(offsets.values()) >= 1
    assert all(g == "syncbus.route-a" for g, _t, _p in offsets)
    assert ("syncbus.route-a", topic, committed_partition) in offsets


async def test_a_missing_embedded_file_is_an_error_not_an_empty_bus(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="no such file"):
        await read_entries(f"embedded://{tmp_path}/nope.db", ["t"], 0, time.time())
