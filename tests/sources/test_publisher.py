"""The one publish path (sources/publisher.py): stamps, durable batches, metrics, trace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.errors import BusError
from syncbus.metrics import Metrics
from syncbus.record import H_CONTENT_TYPE, H_ID, H_RECEIVED_AT, H_SOURCE, Record
from syncbus.sources.base import NewRecord
from syncbus.sources.publisher import Publisher, PublishError
from syncbus.tracing import TraceRecorder

from .helpers import State, topic_records


class RefusingBus:
    """The real bus, except that it refuses records whose key is in ``refuse``."""

    def __init__(self, bus: EmbeddedBus, refuse: set[str]) -> None:
        self.bus = bus
        self.refuse = refuse
        self.url = bus.url

    async def publish(self, topic: str, value: bytes, key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Record:
        if key in self.refuse:
            raise BusError(f"refused {key}")
        return await self.bus.publish(topic, value, key, headers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


async def test_a_batch_is_stamped_published_counted_and_traced(bus: EmbeddedBus, state: State,
                                                               metrics: Metrics) -> None:
    trace = TraceRecorder(state)
    publisher = Publisher(bus, metrics, trace)
    batch = [NewRecord(b'{"emp_id": 1}', key="1", headers={"syncbus-file": "employees.csv", "syncbus-line": "2"}),
             NewRecord(b"<a/>", key="2", content_type="application/xml",
                       headers={H_ID: "forged", H_SOURCE: "someone-else"})]
    published = await publisher.publish("oa-employees", "oa.employees", batch)
    await trace.flush()

    on_bus = await topic_records(bus, "oa.employees")
    assert [r.value for r in on_bus] == [b'{"emp_id": 1}', b"<a/>"]
    assert [r.id for r in on_bus] == [r.id for r in published]
    first, second = on_bus
    assert first.headers["syncbus-file"] == "employees.csv" and first.headers["syncbus-line"] == "2"
    assert first.headers[H_SOURCE] == second.headers[H_SOURCE] == "oa-employees"  # stamps win
    assert second.headers[H_ID] != "forged" and len({first.id, second.id}) == 2
    assert (first.headers[H_CONTENT_TYPE], second.headers[H_CONTENT_TYPE]) == ("application/json", "application/xml")
    assert float(first.headers[H_RECEIVED_AT]) > 0
    assert metrics.value("syncbus_records_received_total", {"source": "oa-employees"}) == 2
    [event] = state.trace(first.id)
    assert event.stage == "received"
    assert event.detail["source"] == "oa-employees" and event.detail["offset"] == first.offset


async def test_a_batch_with_an_unacknowledged_record_is_not_accepted(bus: EmbeddedBus, metrics: Metrics) -> None:
    events: list[tuple[str, str]] = []

    class Trace:
        def add(self, record_id: str, stage: str, route: str | None = None, **detail: Any) -> None:
            events.append((record_id, stage))

    publisher = Publisher(RefusingBus(bus, {"2"}), metrics, Trace())  # type: ignore[arg-type]
    records = [NewRecord(b"{}", key=str(i)) for i in range(1, 4)]
    with pytest.raises(PublishError) as info:
        await publisher.publish("crm", "crm.orders", records)
    assert (info.value.failed, info.value.total, info.value.source) == (1, 3, "crm")
    assert "refused 2" in str(info.value)
    assert metrics.value("syncbus_records_received_total", {"source": "crm"}) == 0
    assert events == []  # nothing is counted or traced as received


async def test_publish_one_keeps_the_given_id(bus: EmbeddedBus, metrics: Metrics, state: State) -> None:
    publisher = Publisher(bus, metrics, TraceRecorder(state))
    record = await publisher.publish_one("crm", "crm.orders", b'{"order_id": 7}', key="7",
                                         headers={"traceparent": "00-abc"}, record_id="rid-1")
    assert record.id == "rid-1" and record.key == "7" and record.headers["traceparent"] == "00-abc"
    assert await publisher.publish("crm", "crm.orders", []) == []
