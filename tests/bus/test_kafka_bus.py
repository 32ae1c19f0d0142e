"""KafkaBus against a real broker (tests/support/kafka.py starts one per session)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from syncbus.bus.base import Bus, Consumer
from syncbus.bus.kafka import KafkaBus
from syncbus.errors import BusError
from syncbus.record import Record
from tests.support.consume import fetch_n
from tests.support.kafka import KafkaBroker

pytestmark = pytest.mark.kafka


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    b = KafkaBus(kafka_bootstrap)
    await b.start()
    yield b
    await b.stop()


async def test_protocols_and_url(bus: KafkaBus, kafka_bootstrap: str) -> None:
    assert isinstance(bus, Bus)
    assert isinstance(bus.consumer("g", ["t"]), Consumer)
    assert bus.url == f"kafka://{kafka_bootstrap}"
    assert await bus.ping()


async def test_ping_false_and_start_fails_when_unreachable() -> None:
    dead = KafkaBus("127.0.0.1:1")
    assert not await dead.ping()
    with pytest.raises(BusError, match=r"127\.0\.0\.1:1"):
        await dead.start()


async def test_invalid_topic_name_is_a_bus_error(bus: KafkaBus) -> None:
    with pytest.raises(BusError, match="invalid Kafka topic name 'a b'"):
        await bus.ensure_topics(["a b"])
    with pytest.raises(BusError, match="invalid Kafka topic name"):
        await bus.publish("x/y", b"v")


async def test_round_trip_with_key_and_headers(bus: KafkaBus) -> None:
    topic = topic_name("rt")
    await bus.ensure_topics([topic])
    await bus.ensure_topics([topic])  # existing topics are fine
    before = time.time()
    sent = await bus.publish(topic, b'{"id": 1}', key="cust-42",
                             headers={"content-type": "application/json", "syncbus-id": "abc"})
    assert (sent.topic, sent.offset) == (topic, 0)
    assert 0 <= sent.partition < 4
    assert before - 5 <= sent.timestamp <= time.time() + 5

    consumer = bus.consumer(topic_name("g"), [topic])
    await consumer.start()
    try:
        [got] = await fetch_n(consumer, 1)
    finally:
        await consumer.stop()
    assert got.value == b'{"id": 1}'
    assert got.key == "cust-42"
    assert got.headers == {"content-type": "application/json", "syncbus-id": "abc"}
    assert (got.topic, got.partition, got.offset) == (sent.topic, sent.partition, sent.offset)
    assert got.timestamp == pytest.approx(sent.timestamp, abs=0.001)
    assert got.id == "abc"


async def test_same_key_keeps_partition_and_order(bus: KafkaBus) -> None:
    topic = topic_name("order")
    await bus.ensure_topics([topic])
    keys = [f"k{i}" for i in range(6)]
    sent = [await bus.publish(topic, f"{k}:{n}".encode(), key=k) for n in range(8) for k in keys]
    partitions = {k: {r.partition for r in sent if r.key == k} for k in keys}
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # the keys really spread

    consumer = bus.consumer(topic_name("g"), [topic])
    await consumer.start()
    try:
        got = await fetch_n(consumer, len(sent))
    finally:
        await consumer.stop()
    for k in keys:
        seq = [int(r.value.split(b":")[1]) for r in got if r.key == k]
        assert seq == list(range(8)), k


async def test_commits_only_the_contiguous_done_prefix(bus: KafkaBus) -> None:
    topic, group = topic_name("prefix"), topic_name("g")
    await bus.ensure_topics([topic], partitions=1)
    for i in range(3):
        await bus.publish(topic, f"r{i}".encode(), key="same")

    first = bus.consumer(group, [topic])
    await first.start()
    r0, _r1, r2 = await fetch_n(first, 3)
    first.done(r0)
    first.done(r2)  # r1 still in flight
    await first.commit()
    assert await first.lag() == {(topic, 0): 2}
    await first.commit()  # nothing moved: no-op
    await first.stop()

    second = bus.consumer(group, [topic])
    await second.start()
    try:
        again = await fetch_n(second, 2)
        assert [r.offset for r in again] == [1, 2]
        assert [r.value for r in again] == [b"r1", b"r2"]
        assert await second.fetch(10, 0.3) == []
        for r in again:
            second.done(r)
        await second.commit()
        assert await second.lag() == {(topic, 0): 0}
    finally:
        await second.stop()


async def test_lag_counts_uncommitted_records(bus: KafkaBus) -> None:
    topic = topic_name("lag")
    await bus.ensure_topics([topic], partitions=2)
    for i in range(5):
        await bus.publish(topic, b"x", key=f"key-{i}")
    consumer = bus.consumer(topic_name("g"), [topic])
    await consumer.start()
    try:
        before = await consumer.lag()
        assert set(before) == {(topic, 0), (topic, 1)}
        assert sum(before.values()) == 5
        records = await fetch_n(consumer, 5)
        assert sum((await consumer.lag()).values()) == 5  # fetched is not done
        for r in records:
            consumer.done(r)
        await consumer.commit()
        assert await consumer.lag() == {(topic, 0): 0, (topic, 1): 0}
    finally:
        await consumer.stop()


async def test_one_group_splits_partitions_and_sees_each_record_once(bus: KafkaBus) -> None:
    topic, group = topic_name("split"), topic_name("g")
    await bus.ensure_topics([topic])  # 4 partitions
    sent = [await bus.publish(topic, str(i).encode(), key=f"key-{i}") for i in range(40)]

    a, b = bus.consumer(group, [topic]), bus.consumer(group, [topic])
    await a.start()
    await b.start()  # a rebalances: each ends up with two partitions
    try:
        deadline = time.monotonic() + 15
        # until a takes part in the rebalance b's joining started, it still holds all four partitions
        while not (a.assignment() and b.assignment() and a.assignment().isdisjoint(b.assignment())):
            assert time.monotonic() < deadline, f"the group never split: {a.assignment()} {b.assignment()}"
            await asyncio.sleep(0.1)
        assert a.assignment().isdisjoint(b.assignment())
        assert a.assignment() | b.assignment() == {(topic, p) for p in range(4)}

        seen: dict[str, list[Record]] = {"a": [], "b": []}
        while len(seen["a"]) + len(seen["b"]) < len(sent):
            assert time.monotonic() < deadline + 15, "not every record arrived"
            for name, c in (("a", a), ("b", b)):
                for r in await c.fetch(100, 0.2):
                    seen[name].append(r)
                    c.done(r)
                await c.commit()
        assert seen["a"] and seen["b"]
        positions = {name: {(r.partition, r.offset) for r in rs} for name, rs in seen.items()}
        assert positions["a"].isdisjoint(positions["b"])
        assert {r.partition for r in seen["a"]} <= {p for _, p in a.assignment()}
        assert sorted(int(r.value) for r in seen["a"] + seen["b"]) == list(range(40))
        assert await a.fetch(10, 0.2) == [] and await b.fetch(10, 0.2) == []
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_rebalance_commits_done_records_and_redelivers_in_flight(bus: KafkaBus) -> None:
    topic, group = topic_name("revoke"), topic_name("g")
    await bus.ensure_topics([topic], partitions=2)
    for i in range(12):
        await bus.publish(topic, str(i).encode(), key=f"key-{i}")

    a = bus.consumer(group, [topic])
    await a.start()
    first = await fetch_n(a, 12)
    in_flight = next(r for r in first if r.offset == 1)  # blocks its partition's prefix from offset 1 on
    for r in first:
        if r is not in_flight:
            a.done(r)
    # No commit() call: the revoke listener must commit the done prefix when b joins.
    b = bus.consumer(group, [topic])
    await b.start()
    try:
        expected = {(in_flight.partition, r.offset) for r in first
                    if r.partition == in_flight.partition and r.offset >= 1}
        redelivered: list[Record] = []
        deadline = time.monotonic() + 30
        while not expected <= {(r.partition, r.offset) for r in redelivered}:  # until the rebalance is through
            assert time.monotonic() < deadline, f"redelivered only {redelivered} of {expected}"
            for c in (a, b):
                redelivered += await c.fetch(100, 0.2)
        for c in (a, b):  # and then nothing else comes: the done prefix was committed on revoke
            redelivered += await c.fetch(100, 0.5)
        assert {(r.partition, r.offset) for r in redelivered} == expected
        assert len(redelivered) == len(expected)
        a.done(in_flight)  # finishing the stale copy late is harmless
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_new_group_reads_from_the_start(bus: KafkaBus) -> None:
    topic = topic_name("fresh")
    await bus.ensure_topics([topic], partitions=1)
    for i in range(4):
        await bus.publish(topic, f"{i}".encode())
    old = bus.consumer(topic_name("g"), [topic])
    await old.start()
    for r in await fetch_n(old, 4):
        old.done(r)
    await old.stop()

    new = bus.consumer(topic_name("g"), [topic])
    await new.start()
    try:
        got = await fetch_n(new, 4)
        assert [r.offset for r in got] == [0, 1, 2, 3]
    finally:
        await new.stop()


async def test_fetch_never_exceeds_max_records(bus: KafkaBus) -> None:
    topic = topic_name("max")
    await bus.ensure_topics([topic], partitions=1)
    await asyncio.gather(*(bus.publish(topic, b"x") for _ in range(30)))
    consumer = bus.consumer(topic_name("g"), [topic])
    await consumer.start()
    try:
        sizes = []
        total = 0
        deadline = time.monotonic() + 15
        while total < 30:
            assert time.monotonic() < deadline
            batch = await consumer.fetch(7, 0.5)
            sizes.append(len(batch))
            total += len(batch)
        assert max(sizes) <= 7 and total == 30
        assert await consumer.fetch(0, 0.1) == []
    finally:
        await consumer.stop()


async def test_survives_a_broker_restart_mid_stream(bus: KafkaBus, kafka_broker: KafkaBroker) -> None:
    topic, group = topic_name("restart"), topic_name("g")
    await bus.ensure_topics([topic], partitions=1)
    for i in range(5):
        await bus.publish(topic, f"{i}".encode())
    consumer = bus.consumer(group, [topic])
    await consumer.start()
    try:
        for r in await fetch_n(consumer, 5):
            consumer.done(r)
        await consumer.commit()

        await kafka_broker.astop()
        assert not await bus.ping()
        await kafka_broker.astart()  # data kept on disk: same topic, same committed offsets
        assert await bus.ping()

        after = [await bus.publish(topic, f"{i}".encode()) for i in range(5, 8)]
        assert [r.offset for r in after] == [5, 6, 7]
        got = await fetch_n(consumer, 3, timeout=30)
        assert [r.value for r in got] == [b"5", b"6", b"7"]
        for r in got:
            consumer.done(r)
        await consumer.commit()
        assert await consumer.lag() == {(topic, 0): 0}
    finally:
        await consumer.stop()
