"""The ``kafka`` source against the session's real broker (tests/support/kafka.py), through the real poll runner.

The "foreign" topics live on the same broker as the Kafka bus of the last
tests, under their own names: what matters is that the source reads a topic
it does not own, mirrors its offsets in its own group only after our bus
acknowledged, and never loses a message between the two.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from syncbus.bus.embedded import EmbeddedBus
from syncbus.bus.kafka import KafkaBus
from syncbus.metrics import Metrics
from syncbus.record import Record
from syncbus.sources.kafka_source import KafkaSource, KafkaSourceRefused, KafkaSourceUnavailable
from syncbus.sources.poller import PollRunner
from syncbus.sources.publisher import Publisher, PublishError
from syncbus.tracing import TraceRecorder
from tests.support.kafka import acommitted

from .helpers import State, topic_records
from .test_publisher import RefusingBus

pytestmark = pytest.mark.kafka


class Foreign:
    """A topic of "their" cluster: created with ``partitions``, written with keyed messages."""

    def __init__(self, bootstrap: str, partitions: int = 2) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.name = f"their.orders.{uuid.uuid4().hex[:10]}"
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def start(self) -> Foreign:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.name, self.partitions, 1)])
        finally:
            await admin.close()
        await self.producer.start()
        return self

    async def send(self, value: bytes | None, key: str | None = None, partition: int | None = None) -> int:
        meta = await self.producer.send_and_wait(self.name, value, key=None if key is None else key.encode(),
                                                 partition=partition)
        return int(meta.offset)

    async def orders(self, first: int, last: int) -> None:
        for i in range(first, last + 1):
            await self.send(json.dumps({"order_id": i}).encode(), key=f"SO-{i}")

    async def stop(self) -> None:
        await self.producer.stop()


@pytest.fixture
async def foreign(kafka_bootstrap: str) -> AsyncIterator[Foreign]:
    topic = await Foreign(kafka_bootstrap).start()
    yield topic
    await topic.stop()


def kafka_source(foreign: Foreign, **options: Any) -> KafkaSource:
    return KafkaSource({"name": "their-orders", "type": "kafka", "topic": "orders.in", "bootstrap": foreign.bootstrap,
                        "from_topic": foreign.name, "group": f"g-{foreign.name}", **options})


def runner(src: KafkaSource, bus: Any, state: State, metrics: Metrics, node: str = "node-a") -> PollRunner:
    return PollRunner(src, Publisher(bus, metrics, TraceRecorder(state)), state, metrics, node=node)


def order_ids(records: list[Record]) -> list[int]:
    return [orjson.loads(r.value)["order_id"] for r in records]


async def group_offsets(foreign: Foreign, group: str | None = None) -> dict[int, int] | None:
    return await acommitted(foreign.bootstrap, group or f"g-{foreign.name}", foreign.name, foreign.partitions)


# -- at least once across the two clusters -------------------------------------------------------


async def test_messages_reach_the_bus_and_the_offsets_are_committed_after_the_ack(
        foreign: Foreign, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    await foreign.orders(1, 7)
    r = runner(kafka_source(foreign, batch_size=3), bus, state, metrics)
    try:
        result = await r.run()
    finally:
        await r.stop()
    assert result.records == 7 and result.pages >= 3
    ends = await group_offsets(foreign)
    assert ends is not None and sum(ends.values()) == 7
    assert state.get_checkpoint("their-orders") == {"topic": foreign.name,
                                                   "offsets": {str(p): o for p, o in ends.items()}}
    published = await topic_records(bus, "orders.in")
    assert sorted(order_ids(published)) == list(range(1, 8))
    for rec in published:
        assert rec.key == f"SO-{orjson.loads(rec.value)['order_id']}"  # the message key
        assert rec.headers["content-type"] == "application/json"
        assert rec.headers["syncbus-kafka-origin"].startswith(f"{foreign.name}[")


async def test_a_batch_the_bus_refused_is_neither_committed_nor_lost(
        foreign: Foreign, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    for i in range(1, 9):  # one partition, so the pages are exactly 1-3, 4-6, 7-8
        await foreign.send(json.dumps({"order_id": i}).encode(), key=f"SO-{i}", partition=0)
    flaky = RefusingBus(bus, {"SO-5"})
    r = runner(kafka_source(foreign, batch_size=3), flaky, state, metrics)
    try:
        with pytest.raises(PublishError):
            await r.run()
        assert await group_offsets(foreign) == {0: 3, 1: 0}  # page 1 only: page 2 was not acknowledged
        assert state.get_checkpoint("their-orders")["offsets"] == {"0": 3, "1": 0}
        first_ids = {orjson.loads(x.value)["order_id"]: x.id for x in await topic_records(bus, "orders.in")}
        flaky.refuse.clear()
        await r.run()
    finally:
        await r.stop()
    assert await group_offsets(foreign) == {0: 8, 1: 0}
    published = await topic_records(bus, "orders.in", group="reader-2")
    assert sorted(set(order_ids(published))) == list(range(1, 9))  # nothing lost
    again = [x for x in published if orjson.loads(x.value)["order_id"] in (4, 6)]
    assert len(again) == 4  # 4 and 6 went out with the refused page and again: at-least-once...
    assert {x.id for x in again} == {first_ids[4], first_ids[6]}  # ...as the same records (same idempotency key)


async def test_a_restart_resumes_after_the_stored_cursor_and_a_new_store_after_the_group(
        foreign: Foreign, bus: EmbeddedBus, state: State, metrics: Metrics, tmp_path: Any) -> None:
    await foreign.orders(1, 4)
    first = runner(kafka_source(foreign), bus, state, metrics)
    assert (await first.run()).records == 4
    await first.stop()
    await foreign.orders(5, 6)
    second = runner(kafka_source(foreign), bus, state, metrics)  # a restart: new process, same store
    assert (await second.run()).records == 2
    await second.stop()
    await foreign.orders(7, 7)
    fresh = State(f"sqlite:///{tmp_path / 'other-state.db'}")  # the cursor is gone; the group still knows
    try:
        third = runner(kafka_source(foreign), bus, fresh, metrics)
        assert (await third.run()).records == 1
        await third.stop()
    finally:
        fresh.close()
    assert sorted(order_ids(await topic_records(bus, "orders.in"))) == list(range(1, 8))  # each once


async def test_start_latest_skips_what_was_there_before(foreign: Foreign, bus: EmbeddedBus, state: State,
                                                        metrics: Metrics) -> None:
    await foreign.orders(1, 3)
    r = runner(kafka_source(foreign, start="latest"), bus, state, metrics)
    try:
        assert (await r.run()).records == 0
        await foreign.orders(4, 5)
        assert (await r.run()).records == 2
    finally:
        await r.stop()
    assert sorted(order_ids(await topic_records(bus, "orders.in"))) == [4, 5]


async def test_nodes_taking_turns_continue_from_each_others_cursor(
        foreign: Foreign, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    a = runner(kafka_source(foreign, batch_size=2), bus, state, metrics, "node-a")
    b = runner(kafka_source(foreign, batch_size=2), bus, state, metrics, "node-b")
    try:
        await foreign.orders(1, 3)
        assert (await a.run()).records == 3
        await foreign.orders(4, 5)
        assert (await b.run()).records == 2
        await foreign.orders(6, 9)
        assert (await a.run()).records == 4  # a's consumer stood at 3: it must follow the stored cursor
        assert (await b.run()).records == 0
    finally:
        await asyncio.gather(a.stop(), b.stop())
    assert sorted(order_ids(await topic_records(bus, "orders.in"))) == list(range(1, 10))  # each once


# -- payloads ------------------------------------------------------------------------------------


async def test_csv_lines_become_json_records_and_a_bad_message_is_marked_for_the_dead_letters(
        foreign: Foreign, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    await foreign.send("A-1,WH1,5".encode("gbk"), key="A-1", partition=0)
    await foreign.send("B-1,仓库二,7\r\nB-2,仓库二\r\n".encode("gbk"), key="B", partition=0)  # two lines, one short
    bad = await foreign.send(b"C-1,WH1,3,extra", key="C-1", partition=0)
    await foreign.send(None, key="A-1", partition=0)  # a tombstone
    r = runner(kafka_source(foreign, format="csv", columns=["sku", "warehouse", "qty"], encoding="gbk"),
               bus, state, metrics)
    try:
        assert (await r.run()).records == 4
    finally:
        await r.stop()
    published = await topic_records(bus, "orders.in")
    assert [(x.key, x.headers["content-type"]) for x in published] == [
        ("A-1", "application/json"), ("B", "application/json"), ("B", "application/json"), ("C-1", "text/csv")]
    assert [orjson.loads(x.value) for x in published[:3]] == [
        {"sku": "A-1", "warehouse": "WH1", "qty": "5"}, {"sku": "B-1", "warehouse": "仓库二", "qty": "7"},
        {"sku": "B-2", "warehouse": "仓库二", "qty": ""}]
    assert published[2].headers["syncbus-kafka-origin"] == f"{foreign.name}[0]@1:2"
    malformed = published[3]
    assert malformed.value == b"C-1,WH1,3,extra"  # the message as it was, for the dead letter
    assert malformed.headers["syncbus-malformed"] == f"{foreign.name}[0]@{bad}:1: 4 cells but 3 columns"
    assert await group_offsets(foreign) == {0: 4, 1: 0}  # the tombstone is read past too


async def test_xml_messages_are_published_as_they_are(foreign: Foreign, bus: EmbeddedBus, state: State,
                                                      metrics: Metrics) -> None:
    doc = b'<?xml version="1.0" encoding="UTF-8"?><ORDERS05><VBELN>4711</VBELN></ORDERS05>'
    await foreign.send(doc, key="4711")
    r = runner(kafka_source(foreign, format="xml"), bus, state, metrics)
    try:
        await r.run()
    finally:
        await r.stop()
    [rec] = await topic_records(bus, "orders.in")
    assert (rec.value, rec.key, rec.headers["content-type"]) == (doc, "4711", "application/xml")


# -- the cluster says no, or is away -------------------------------------------------------------


async def test_a_missing_topic_is_refused_and_not_created(kafka_bootstrap: str) -> None:
    missing = f"does.not.exist.{uuid.uuid4().hex[:8]}"
    src = KafkaSource({"name": "k", "type": "kafka", "topic": "t", "bootstrap": kafka_bootstrap,
                       "from_topic": missing})
    try:
        with pytest.raises(KafkaSourceRefused, match=rf"source 'k': kafka .* topic '{missing}' does not exist"):
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()  # the broker auto-creates topics a client asks for
    finally:
        await admin.close()


async def test_an_unreachable_cluster_is_unavailable() -> None:
    src = KafkaSource({"name": "k", "type": "kafka", "topic": "t", "bootstrap": "127.0.0.1:1", "from_topic": "x"})
    with pytest.raises(KafkaSourceUnavailable, match=r"source 'k': kafka 127\.0\.0\.1:1 .*cannot connect"):
        await src.poll(None, full=True, limit=10)
    await src.stop()


# -- a Kafka bus ------------------------------------------------------------------------------------


async def test_a_foreign_topic_onto_a_kafka_bus(foreign: Foreign, kafka_bootstrap: str, state: State,
                                                metrics: Metrics) -> None:
    kbus = KafkaBus(kafka_bootstrap)
    await kbus.start()
    ours = f"orders.in.{uuid.uuid4().hex[:8]}"
    try:
        await kbus.ensure_topics([ours])
        await foreign.orders(1, 5)
        src = KafkaSource({"name": "their-orders", "type": "kafka", "topic": ours, "bootstrap": kafka_bootstrap,
                           "from_topic": foreign.name})
        r = runner(src, kbus, state, metrics)
        try:
            assert (await r.run()).records == 5
        finally:
            await r.stop()
        committed = await group_offsets(foreign, "syncbus.source.their-orders")  # the default group name
        assert committed is not None and sum(committed.values()) == 5
        consumer = kbus.consumer(f"reader-{ours}", [ours])
        await consumer.start()
        got: list[Record] = []
        try:
            for _ in range(60):
                got += await consumer.fetch(100, 0.5)
                if len(got) >= 5:
                    break
        finally:
            await consumer.stop()
        assert sorted(order_ids(got)) == [1, 2, 3, 4, 5]
    finally:
        await kbus.stop()
