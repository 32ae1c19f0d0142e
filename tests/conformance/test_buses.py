"""The bus contract (``bus/base.py``), checked the same way on every bus and every way of reaching it.

The embedded log; Kafka in plain text; Kafka over SASL_SSL (SCRAM-SHA-512, the
session's CA) and over mutual TLS -- the same broker's secured listeners, so a
setting that a secured client forgets (the admin client, a consumer, a second
connection) shows up here as a broken contract, not only as a failed handshake.
Only the protocol is used: what a route, the ingress and the ledger rely on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from syncbus.bus.base import Bus, Consumer
from syncbus.bus.embedded import EmbeddedBus
from syncbus.bus.kafka import KafkaBus
from syncbus.record import Record
from tests.support.consume import fetch_n
from tests.support.kafka import SecureListeners


@dataclass
class BusCase:
    """How to open (again) one bus: every call is a new client of the same log."""

    name: str
    open: Callable[[], Bus]


def _embedded(request: pytest.FixtureRequest, tmp: Path) -> Callable[[], Bus]:
    return lambda: EmbeddedBus(str(tmp / "bus.db"))


def _kafka(request: pytest.FixtureRequest, tmp: Path) -> Callable[[], Bus]:
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return lambda: KafkaBus(bootstrap, publish_timeout=15.0)


def _kafka_scram(request: pytest.FixtureRequest, tmp: Path) -> Callable[[], Bus]:
    secure: SecureListeners = request.getfixturevalue("kafka_secure")
    target = secure.bootstrap("SASL_SSL") + "?" + urlencode({
        "tls_ca_file": str(secure.pki.ca), "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": secure.user})
    return lambda: KafkaBus(target, env={"SYNCBUS_KAFKA_PASSWORD": secure.password}, publish_timeout=15.0)


def _kafka_mtls(request: pytest.FixtureRequest, tmp: Path) -> Callable[[], Bus]:
    secure: SecureListeners = request.getfixturevalue("kafka_secure")
    pki = secure.pki
    target = secure.bootstrap("SSL") + "?" + urlencode({
        "tls_ca_file": str(pki.ca), "tls_client_cert": str(pki.client_cert), "tls_client_key": str(pki.client_key)})
    return lambda: KafkaBus(target, env={}, publish_timeout=15.0)


CASES = {"embedded": _embedded, "kafka": _kafka, "kafka-sasl-ssl": _kafka_scram, "kafka-mtls": _kafka_mtls}


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.kafka] if name.startswith("kafka") else [])
                        for name in CASES])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> BusCase:
    return BusCase(request.param, CASES[request.param](request, tmp_path))


@pytest.fixture
async def bus(case: BusCase) -> AsyncIterator[Bus]:
    b = case.open()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def topic(bus: Bus) -> str:
    name = f"conf-{uuid.uuid4().hex[:10]}"
    await bus.ensure_topics([name])
    return name


def group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


async def consume(bus: Bus, group_name: str, topic: str, n: int, *, done: bool = True) -> list[Record]:
    """``n`` records as one member of ``group_name`` sees them; marked done and committed unless told not to."""
    consumer = bus.consumer(group_name, [topic])
    await consumer.start()
    try:
        got = await fetch_n(consumer, n, timeout=20.0)
        assert await consumer.fetch(10, 0.3) == []
        if done:
            for r in got:
                consumer.done(r)
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def test_the_protocols_and_ping(bus: Bus) -> None:
    assert isinstance(bus, Bus)
    assert isinstance(bus.consumer(group(), ["t"]), Consumer)
    assert await bus.ping()


async def test_publish_says_where_and_a_consumer_reads_it_back(bus: Bus, topic: str) -> None:
    before = time.time()
    sent = await bus.publish(topic, b'{"id": 1}', key="cust-42",
                             headers={"content-type": "application/json", "syncbus-id": "rid-1"})
    assert sent.topic == topic and sent.partition >= 0 and sent.offset >= 0
    assert before - 5 <= sent.timestamp <= time.time() + 5
    [got] = await consume(bus, group(), topic, 1)
    assert (got.value, got.key, got.id) == (b'{"id": 1}', "cust-42", "rid-1")
    assert got.headers == {"content-type": "application/json", "syncbus-id": "rid-1"}
    assert (got.topic, got.partition, got.offset) == (sent.topic, sent.partition, sent.offset)


async def test_records_of_one_key_arrive_in_order(bus: Bus, topic: str) -> None:
    keys = [f"k{i}" for i in range(5)]
    sent = [await bus.publish(topic, f"{k}:{n}".encode(), key=k) for n in range(6) for k in keys]
    assert all(len({r.partition for r in sent if r.key == k}) == 1 for k in keys)
    got = await consume(bus, group(), topic, len(sent))
    for k in keys:
        assert [int(r.value.split(b":")[1]) for r in got if r.key == k] == list(range(6)), k


async def test_every_group_sees_every_record(bus: Bus, topic: str) -> None:
    for i in range(7):
        await bus.publish(topic, str(i).encode(), key=f"key-{i}")
    for name in (group(), group()):
        got = await consume(bus, name, topic, 7)
        assert sorted(int(r.value) for r in got) == list(range(7))


async def test_only_the_contiguous_done_prefix_is_committed(bus: Bus, topic: str) -> None:
    """A record not done holds back the offsets after it: a crash redelivers it and everything after."""
    for i in range(4):
        await bus.publish(topic, f"r{i}".encode(), key="one-partition")
    name = group()
    first = bus.consumer(name, [topic])
    await first.start()
    try:
        r0, _r1, r2, _r3 = await fetch_n(first, 4)
        first.done(r0)
        first.done(r2)  # r1 is still in flight
        await first.commit()
        assert sum((await first.lag()).values()) == 3
    finally:
        await first.stop()
    again = await consume(bus, name, topic, 3)
    assert [r.value for r in again] == [b"r1", b"r2", b"r3"]
    await consume(bus, name, topic, 0)  # all committed now: nothing comes back


async def test_stop_commits_what_is_finished(bus: Bus, topic: str) -> None:
    for i in range(3):
        await bus.publish(topic, f"s{i}".encode(), key="one-partition")
    name = group()
    consumer = bus.consumer(name, [topic])
    await consumer.start()
    try:
        for r in await fetch_n(consumer, 3):
            consumer.done(r)
    finally:
        await consumer.stop()  # no commit() before: stop commits
    await consume(bus, name, topic, 0)


async def test_fetch_never_returns_more_than_asked(bus: Bus, topic: str) -> None:
    for i in range(12):
        await bus.publish(topic, str(i).encode(), key=f"key-{i % 3}")
    consumer = bus.consumer(group(), [topic])
    await consumer.start()
    try:
        got: list[Record] = []
        deadline = time.monotonic() + 20
        while len(got) < 12:
            assert time.monotonic() < deadline
            batch = await consumer.fetch(5, 0.5)
            assert len(batch) <= 5
            got += batch
        assert sorted(int(r.value) for r in got) == list(range(12))
    finally:
        await consumer.stop()


async def test_lag_counts_until_done_and_committed(bus: Bus, topic: str) -> None:
    for i in range(5):
        await bus.publish(topic, b"x", key=f"key-{i}")
    consumer = bus.consumer(group(), [topic])
    await consumer.start()
    try:
        records = await fetch_n(consumer, 5)
        assert sum((await consumer.lag()).values()) == 5  # fetched is not done
        for r in records:
            consumer.done(r)
        await consumer.commit()
        assert sum((await consumer.lag()).values()) == 0
    finally:
        await consumer.stop()


async def test_a_published_record_is_there_for_a_new_client(case: BusCase) -> None:
    """``publish`` returns once the record is durable: another client of the same log, opened after the
    first one stopped, reads it."""
    name = f"conf-{uuid.uuid4().hex[:10]}"
    first = case.open()
    await first.start()
    try:
        await first.ensure_topics([name])
        sent = await first.publish(name, b"kept", key="k")
    finally:
        await first.stop()
    other = case.open()
    await other.start()
    try:
        [got] = await consume(other, group(), name, 1)
        assert (got.value, got.offset) == (b"kept", sent.offset)
    finally:
        await other.stop()
