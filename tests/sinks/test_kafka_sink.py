"""The Kafka sink against the real test broker (tests/support/kafka.py): produce, read back, classify."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import ValidationError

from syncbus.errors import DeliveryError
from syncbus.sinks.base import Delivery, Sink
from syncbus.sinks.kafka import KafkaSink, KafkaSinkConfig, classify_error
from syncbus.sinks.retry import DeliveryFailed

MakeDelivery = Callable[..., Delivery]
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


def new_topic() -> str:
    return f"sink-test-{uuid.uuid4().hex[:12]}"


def kafka_sink(bootstrap: str, topic: str, **options: Any) -> KafkaSink:
    config: dict[str, Any] = {"name": "lake", "type": "kafka", "bootstrap": bootstrap, "topic": topic,
                              "retry": {"attempts": 3, "initial": "10ms", "max": "50ms"}, "timeout": "10s"}
    config.update(options)
    return KafkaSink(config)


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 20.0,
                     **client: Any) -> list[ConsumerRecord[Any, Any]]:
    """Every record of ``topic`` from the start, until ``count`` arrived (fails on timeout).

    ``client``: more aiokafka options, e.g. the TLS/SASL settings of a secured listener.
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, **client)
    await consumer.start()
    got: list[ConsumerRecord[Any, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(msgs)
    finally:
        await consumer.stop()
    assert len(got) >= count, f"expected {count} records in {topic}, got {len(got)}"
    return got


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung broker)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
async def topic_sink(kafka_bootstrap: str) -> AsyncIterator[tuple[KafkaSink, str]]:
    topic = new_topic()
    sink = kafka_sink(kafka_bootstrap, topic, headers={"X-Tenant": "acme", "Idempotency-Key": "spoofed"})
    await sink.start()
    yield sink, topic
    await sink.close()


# --------------------------------------------------------------------------- config (no broker)

def test_is_a_sink() -> None:
    assert isinstance(kafka_sink("127.0.0.1:9092", "t"), Sink)


@pytest.mark.parametrize("bootstrap", ["", "localhost", "host:port", "a:1,", "h:70000", "http://h:9092"])
def test_bad_bootstrap_is_refused(bootstrap: str) -> None:
    with pytest.raises(ValidationError, match="bootstrap"):
        KafkaSinkConfig(name="k", bootstrap=bootstrap, topic="t")


@pytest.mark.parametrize("topic", ["", "has space", "a/b", "..", "x" * 250])
def test_bad_topic_is_refused(topic: str) -> None:
    with pytest.raises(ValidationError, match="topic"):
        KafkaSinkConfig(name="k", bootstrap="127.0.0.1:9092", topic=topic)


def test_config_defaults_and_spellings() -> None:
    cfg = KafkaSinkConfig(name="k", bootstrap=" a:1 , b:2", topic="erp.orders", max_message_bytes="2MiB",
                          timeout="500ms")
    assert (cfg.type, cfg.key, cfg.bootstrap, cfg.max_message_bytes, cfg.timeout) == (
        "kafka", "record", "a:1,b:2", 2 * 1024 * 1024, 0.5)
    with pytest.raises(ValidationError, match="key"):
        KafkaSinkConfig(name="k", bootstrap="a:1", topic="t", key="random")
    with pytest.raises(ValidationError, match="extra"):
        KafkaSinkConfig.model_validate({"name": "k", "bootstrap": "a:1", "topic": "t", "acks": 1})


@pytest.mark.parametrize(("error", "retryable"), [
    (kafka_errors.KafkaTimeoutError(), True),
    (kafka_errors.RequestTimedOutError(), True),
    (kafka_errors.KafkaConnectionError("connection reset"), True),
    (kafka_errors.NotEnoughReplicasError(), True),
    (kafka_errors.NotEnoughReplicasAfterAppendError(), True),
    (kafka_errors.LeaderNotAvailableError(), True),
    (kafka_errors.NotLeaderForPartitionError(), True),
    (TimeoutError(), True),
    (ConnectionResetError(), True),
    (kafka_errors.MessageSizeTooLargeError(), False),
    (kafka_errors.InvalidTopicError(), False),
    (kafka_errors.TopicAuthorizationFailedError("t"), False),
    (kafka_errors.ClusterAuthorizationFailedError(), False),
    (kafka_errors.CoordinatorNotAvailableError(), True),   # not listed: aiokafka's retriable flag decides
    (kafka_errors.UnsupportedCodecError(), False),
])
def test_classification(error: BaseException, retryable: bool) -> None:
    result = classify_error(error, "kafka://h:1/t")
    assert isinstance(result, DeliveryError)
    assert result.retryable is retryable
    assert "kafka://h:1/t" in str(result)


# --------------------------------------------------------------------------- against the broker

@pytest.mark.kafka
async def test_produces_body_key_and_headers(kafka_bootstrap: str, topic_sink: tuple[KafkaSink, str],
                                             make_delivery: MakeDelivery) -> None:
    sink, topic = topic_sink
    given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await sink.send(make_delivery(record_id="rec-9", idempotency_key="crm-to-erp:order-42:rec-9",
                                  traceparent=given, headers={"X-Syncbus-Route": "spoofed", "X-Extra": "é"}))
    await sink.send(make_delivery(key="Müller", body=b"<a/>", content_type="application/xml", traceparent="junk"))
    records = await read_topic(kafka_bootstrap, topic, 2)
    # two keys may land on two partitions: no order between them
    first, second = sorted(records, key=lambda r: r.key != b"order-42")
    assert (first.value, first.key) == (b'{"VBELN": "42"}', b"order-42")
    h = dict(first.headers)
    assert h["Idempotency-Key"] == b"crm-to-erp:order-42:rec-9"
    assert h["X-Syncbus-Route"] == b"crm-to-erp"
    assert h["X-Syncbus-Mapping-Version"] == b"3"
    assert h["X-Syncbus-Record-Id"] == b"rec-9"
    assert h["traceparent"] == given.encode()
    assert h["content-type"] == b"application/json"
    assert h["X-Tenant"] == b"acme"
    assert h["X-Extra"] == "é".encode()
    names = [name.lower() for name, _ in first.headers]
    assert names.count("idempotency-key") == 1 and names.count("x-syncbus-route") == 1
    assert (second.value, second.key) == (b"<a/>", "Müller".encode())
    h2 = dict(second.headers)
    assert h2["content-type"] == b"application/xml"
    assert TRACEPARENT.match(h2["traceparent"].decode()) and h2["traceparent"] != b"junk"


@pytest.mark.kafka
async def test_same_key_same_partition_and_key_none(kafka_bootstrap: str, make_delivery: MakeDelivery) -> None:
    keyed, unkeyed = new_topic(), new_topic()
    a = kafka_sink(kafka_bootstrap, keyed)
    b = kafka_sink(kafka_bootstrap, unkeyed, key="none")
    try:
        await asyncio.gather(*(a.send(make_delivery(key=f"k{i % 3}", body=str(i).encode())) for i in range(30)))
        await b.send(make_delivery(key="order-42"))
    finally:
        await a.close()
        await b.close()
    got = await read_topic(kafka_bootstrap, keyed, 30)
    partitions: dict[bytes, set[int]] = {}
    for msg in got:
        partitions.setdefault(msg.key, set()).add(msg.partition)
    assert set(partitions) == {b"k0", b"k1", b"k2"}
    assert all(len(p) == 1 for p in partitions.values())
    (plain,) = await read_topic(kafka_bootstrap, unkeyed, 1)
    assert plain.key is None


@pytest.mark.kafka
async def test_many_concurrent_sends_are_all_acknowledged(kafka_bootstrap: str, topic_sink: tuple[KafkaSink, str],
                                                          make_delivery: MakeDelivery) -> None:
    sink, topic = topic_sink
    n = 2000
    started = time.monotonic()
    await asyncio.gather(*(sink.send(make_delivery(record_id=f"r{i}", key=f"k{i}", body=b"x" * 200))
                           for i in range(n)))
    elapsed = time.monotonic() - started
    got = await read_topic(kafka_bootstrap, topic, n)
    assert sorted(dict(m.headers)["X-Syncbus-Record-Id"] for m in got) == sorted(f"r{i}".encode() for i in range(n))
    assert elapsed < 20, f"{n} acknowledged sends took {elapsed:.1f}s: batching is not working"


@pytest.mark.kafka
async def test_record_larger_than_the_limit_is_permanent(kafka_bootstrap: str,
                                                         make_delivery: MakeDelivery) -> None:
    sink = kafka_sink(kafka_bootstrap, new_topic(), max_message_bytes="64KiB")
    try:
        with pytest.raises(DeliveryError) as info:
            await sink.send(make_delivery(body=b"x" * 100_000))
        assert info.value.retryable is False
        assert "MessageSizeTooLarge" in str(info.value)
        with pytest.raises(DeliveryFailed) as failed:  # through the retry policy: one attempt only
            await sink.retry.run(lambda: sink.send(make_delivery(body=b"x" * 100_000)))
        assert failed.value.permanent and failed.value.attempts == 1
        await sink.send(make_delivery(body=b"x" * 1000))  # the producer is still fine
    finally:
        await sink.close()


@pytest.mark.kafka
async def test_broker_refusing_a_large_record_is_permanent(kafka_bootstrap: str,
                                                           make_delivery: MakeDelivery) -> None:
    """The topic's own max.message.bytes (smaller than ours) is enforced by the broker."""
    topic = new_topic()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2048"})])
    finally:
        await admin.close()
    sink = kafka_sink(kafka_bootstrap, topic)
    try:
        with pytest.raises(DeliveryError) as info:
            await sink.send(make_delivery(body=b"y" * 10_000))
        assert info.value.retryable is False
        assert "TooLarge" in str(info.value), info.value
        await sink.send(make_delivery(body=b"small"))
    finally:
        await sink.close()
    (msg,) = await read_topic(kafka_bootstrap, topic, 1)
    assert msg.value == b"small"


@pytest.mark.kafka
async def test_topic_is_created_on_first_send(kafka_bootstrap: str, make_delivery: MakeDelivery) -> None:
    """The broker auto-creates topics; the first send waits for the metadata instead of failing."""
    topic = new_topic()
    sink = kafka_sink(kafka_bootstrap, topic)
    try:
        await sink.send(make_delivery())
    finally:
        await sink.close()
    assert len(await read_topic(kafka_bootstrap, topic, 1)) == 1


async def test_unreachable_broker_is_retryable(closed_port: int, make_delivery: MakeDelivery) -> None:
    sink = kafka_sink(f"127.0.0.1:{closed_port}", "t", timeout="3s")
    await sink.start()  # does not raise: a target that is down must not stop the node
    try:
        with pytest.raises(DeliveryError) as info:
            await sink.send(make_delivery())
        assert info.value.retryable is True
        assert f"kafka://127.0.0.1:{closed_port}/t" in str(info.value)
        with pytest.raises(DeliveryFailed) as failed:
            await sink.retry.run(lambda: sink.send(make_delivery()))
        assert not failed.value.permanent and failed.value.attempts == 3
    finally:
        await sink.close()


async def test_hung_broker_times_out_as_retryable(silent_port: int, make_delivery: MakeDelivery) -> None:
    sink = kafka_sink(f"127.0.0.1:{silent_port}", "t", timeout="300ms")
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError) as info:
            await sink.send(make_delivery())
    finally:
        await sink.close()
    assert info.value.retryable is True
    assert time.monotonic() - started < 3.0
