"""Kafka that recovers by itself (issue 6 item 10), on a real broker that is killed with SIGKILL.

The broker is the session's private one (tests/support/kafka.py): ``kill9()``
and ``start()`` bring it back on the same ports with the same data, as a
crashed and restarted broker would be.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from syncbus.bus import open_bus
from syncbus.bus.kafka import KafkaBus, KafkaConsumer, PublishUnconfirmed
from syncbus.bus.kafka_logging import Condition, RateLimitFilter, install
from syncbus.errors import BusError
from syncbus.record import H_ID, Record
from tests.support.kafka import KafkaBroker, acommitted, aend_offsets

AIOKAFKA = "aiokafka"


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str,
                     interval: float = 0.2) -> float:
    """Seconds until ``predicate()`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what}")


def aiokafka_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == AIOKAFKA or r.name.startswith(AIOKAFKA + ".")]


def ours(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncbus.bus.kafka" and text in r.getMessage()]


# -- logging (no broker needed) ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_rate_limit_passes_the_first_then_one_summary_per_interval() -> None:
    clock = FakeClock()
    flt = RateLimitFilter(interval=30.0, clock=clock)
    passed = []
    for i in range(1000):  # 100 s of one retry every 100 ms, alternating between two nodes
        clock.now += 0.1
        rec = make_record("aiokafka", "Unable connect to node with id %s: %s", i % 2, "refused")
        if flt.filter(rec):
            passed.append(rec.getMessage())
    assert len(passed) == 4  # t=0, then one per 30 s
    clock.now += 30  # the next one after a quiet spell reports the rest
    last = make_record("aiokafka", "Unable connect to node with id %s: %s", 0, "refused")
    assert flt.filter(last)
    passed.append(last.getMessage())
    assert passed[0] == "Unable connect to node with id 0: refused"
    held_back = [re.search(r"\[(\d+) more like this in the last \d+s were not logged\]$", m) for m in passed[1:]]
    assert all(held_back), passed
    assert len(passed) + sum(int(m.group(1)) for m in held_back if m) == 1001  # every record accounted for
    other = make_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", 1, "x")
    assert flt.filter(other)  # another kind is not held back by the first one


def test_rate_limit_never_touches_debug_and_info() -> None:
    flt = RateLimitFilter(interval=30.0, clock=FakeClock())
    assert all(flt.filter(make_record("aiokafka", "Sending request %s", i, level=logging.DEBUG)) for i in range(50))
    assert all(flt.filter(make_record("aiokafka", "Joined group %s", i, level=logging.INFO)) for i in range(50))


def test_rate_limit_memory_is_bounded() -> None:
    flt = RateLimitFilter(interval=30.0, clock=FakeClock(), max_kinds=10)
    for i in range(100):
        assert flt.filter(make_record("aiokafka", f"eagerly formatted {i}"))
    assert len(flt._seen) == 10


def test_install_covers_every_aiokafka_logger(caplog: pytest.LogCaptureFixture) -> None:
    import aiokafka.consumer.group_coordinator  # noqa: F401  (its logger must exist)

    install()
    names = [n for n in logging.Logger.manager.loggerDict if n == AIOKAFKA or n.startswith(AIOKAFKA + ".")]
    assert "aiokafka.consumer.group_coordinator" in names and "aiokafka" in names
    for name in names:
        assert any(isinstance(f, RateLimitFilter) for f in logging.getLogger(name).filters), name
    caplog.set_level(logging.WARNING)
    kind = f"test burst {uuid.uuid4().hex} %s"
    for i in range(500):
        logging.getLogger("aiokafka.consumer.group_coordinator").error(kind, i)
    assert len([r for r in caplog.records if r.msg == kind]) == 1


def test_condition_logs_only_changes(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    cond = Condition(logging.getLogger("syncbus.bus.kafka"), "kafka bus x:1", "broker unreachable",
                     "broker reachable again", clock=clock)
    caplog.set_level(logging.WARNING)
    assert cond.ok and not cond.good()
    assert cond.bad("refused") and not cond.bad("refused") and not cond.bad("timeout")
    clock.now += 17.25
    assert cond.good() and not cond.good()
    assert [r.getMessage() for r in caplog.records] == [
        "kafka bus x:1: broker unreachable (refused)",
        "kafka bus x:1: broker reachable again after 17.2s",
    ]


def test_publish_timeout_from_url_or_argument() -> None:
    assert KafkaBus("h:1").publish_timeout == 5.0
    bus = KafkaBus("h:1,h:2?publish_timeout=250ms")
    assert (bus.bootstrap, bus.publish_timeout, bus.url) == ("h:1,h:2", 0.25, "kafka://h:1,h:2?publish_timeout=250ms")
    assert KafkaBus("h:1?publish_timeout=9s", publish_timeout=2.0).publish_timeout == 2.0
    opened = open_bus("kafka://h:1?publish_timeout=3s")
    assert isinstance(opened, KafkaBus) and opened.publish_timeout == 3.0 and opened.bootstrap == "h:1"
    with pytest.raises(BusError, match=r"unknown option.*publish_timout"):
        KafkaBus("h:1?publish_timout=5s")
    with pytest.raises(BusError, match="publish_timeout='soon'"):
        KafkaBus("h:1?publish_timeout=soon")
    with pytest.raises(BusError, match="more than 0"):
        KafkaBus("h:1?publish_timeout=0s")


def test_the_aiokafka_internals_we_hook_still_exist() -> None:
    """kafka.py reaches into aiokafka where it has no public API; an upgrade that renames them must fail here."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.protocol.commit import OffsetFetchRequest
    from aiokafka.protocol.group import HeartbeatRequest

    for name in ("_send_req", "coordinator_dead", "request_rejoin", "ensure_coordinator_known"):
        assert callable(getattr(GroupCoordinator, name, None)), name
    assert isinstance(getattr(SubscriptionState, "reassignment_in_progress", None), property)
    assert OffsetFetchRequest.API_KEY == 9 and HeartbeatRequest.API_KEY == 12


# -- on a real broker -----------------------------------------------------------------------------


@pytest.fixture
async def bus(kafka_broker: KafkaBroker) -> AsyncIterator[KafkaBus]:
    b = KafkaBus(kafka_broker.bootstrap, publish_timeout=2.0)
    await b.start()
    yield b
    await b.stop()


async def read_all(bus: KafkaBus, topic: str, n: int, timeout: float = 30.0) -> list[Record]:
    consumer = bus.consumer(topic_name("reader"), [topic])
    await consumer.start()
    got: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            got += await consumer.fetch(n - len(got), 0.5)
    finally:
        await consumer.stop()
    return got


@pytest.mark.kafka
async def test_publish_gives_up_within_its_timeout_and_reports_the_late_write(
        bus: KafkaBus, kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    topic = topic_name("late")
    await bus.ensure_topics([topic], partitions=1)
    await bus.publish(topic, b"before", headers={H_ID: "rec-before"})
    caplog.set_level(logging.WARNING)

    await kafka_broker.akill9()
    started = time.monotonic()
    with pytest.raises(PublishUnconfirmed, match="not acknowledged within 2s") as unconfirmed:
        await bus.publish(topic, b"during", headers={H_ID: "rec-during"})
    assert unconfirmed.value.record_id == "rec-during"
    took = time.monotonic() - started
    assert 1.9 <= took <= 3.0, took
    with pytest.raises(BusError):  # a second caller is refused just as fast, and no new line is logged
        await bus.publish(topic, b"during-2", headers={H_ID: "rec-during-2"}, timeout=0.5)
    assert len(ours(caplog, "broker unreachable")) == 1

    await kafka_broker.astart()
    # The idempotent producer kept both records and writes them now: the callers were told it failed,
    # so the bus says what became of them.
    await eventually(lambda: _true(ours(caplog, "were written after all")), 30, "the late writes reported")
    [report] = ours(caplog, "were written after all")
    assert "rec-during ->" in report and "rec-during-2 ->" in report
    after = await bus.publish(topic, b"after", headers={H_ID: "rec-after"})
    assert after.offset == 3
    assert len(ours(caplog, "broker reachable again")) == 1
    values = [r.value for r in await read_all(bus, topic, 4)]
    assert values == [b"before", b"during", b"during-2", b"after"]


async def _true(value: object) -> bool:
    return bool(value)


async def consume_loop(consumer: KafkaConsumer, seen: list[Record], stop: asyncio.Event,
                       hold: set[int] | None = None) -> None:
    """What a route does: fetch, finish, commit every 0.2 s (records whose offset is in ``hold`` wait)."""
    last = time.monotonic()
    held: list[Record] = []
    while not stop.is_set():
        try:
            records = await consumer.fetch(100, 0.2)
        except BusError:
            await asyncio.sleep(0.5)
            continue
        for r in records:
            seen.append(r)
            if hold is not None and r.offset in hold:
                held.append(r)
            else:
                consumer.done(r)
        if hold is not None and not hold:  # released: finish what was held
            for r in held:
                consumer.done(r)
            held.clear()
        if time.monotonic() - last >= 0.2:
            last = time.monotonic()
            await consumer.commit()


async def produce_loop(bus: KafkaBus, topic: str, stop: asyncio.Event, sent: list[int]) -> None:
    i = 0
    while not stop.is_set():
        try:
            await bus.publish(topic, str(i).encode(), key=f"k{i % 20}", timeout=1.0)
            sent.append(i)
        except BusError:
            await asyncio.sleep(0.2)
        i += 1
        await asyncio.sleep(0.01)


async def drain(consumer_seen: list[Record], sent: list[int], bootstrap: str, group: str, topic: str,
                partitions: int, timeout: float = 30.0) -> None:
    """Wait until every acknowledged record was consumed and the group committed the whole log."""
    await eventually(lambda: _true(set(sent) <= {int(r.value) for r in consumer_seen}), timeout, "all consumed")
    ends = await aend_offsets(bootstrap, topic, partitions)
    assert ends is not None
    await eventually(lambda: _committed_is(bootstrap, group, topic, ends), timeout, "the whole log committed")


async def _committed_is(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    return await acommitted(bootstrap, group, topic, len(ends)) == ends


@pytest.mark.kafka
async def test_commit_stall_is_visible_and_commits_resume_right_after_a_kill9(
        bus: KafkaBus, kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """An outage shorter than the session: the member stays in its group and commits the same records."""
    topic, group = topic_name("stall"), topic_name("g")
    await bus.ensure_topics([topic], partitions=2)
    consumer = KafkaConsumer(kafka_broker.bootstrap, group, [topic], session_timeout=45.0, commit_wait=2.0)
    await consumer.start()
    stop_producing, stop_consuming = asyncio.Event(), asyncio.Event()
    seen: list[Record] = []
    sent: list[int] = []
    hold = set(range(1000))  # nothing is finished until the broker is gone
    producer = asyncio.create_task(produce_loop(bus, topic, stop_producing, sent))
    loop = asyncio.create_task(consume_loop(consumer, seen, stop_consuming, hold))
    try:
        await eventually(lambda: _true(len(seen) >= 40), 30, "records flowing")
        assert consumer.commit_stalled_since is None
        caplog.set_level(logging.WARNING)
        await kafka_broker.akill9()
        killed = time.monotonic()
        hold.clear()  # now the records are finished, but nothing can commit them
        await eventually(lambda: _true(consumer.commit_stalled_since is not None), 15, "the stall is seen")
        assert consumer.commit_stalled_since is not None and consumer.commit_stalled_since >= killed
        await eventually(lambda: _true(consumer.stalled(threshold=3.0)), 15, "stalled() after 3s")
        assert not consumer.stalled(threshold=600)

        await kafka_broker.astart()
        back = await eventually(lambda: _true(consumer.commit_stalled_since is None), 20, "commits resumed")
        assert consumer.in_group  # the outage was shorter than the session: no rejoin was needed
        stop_producing.set()
        await producer
        await drain(seen, sent, kafka_broker.bootstrap, group, topic, 2)
        print(f"\n[kill -9] commits resumed {back:.1f}s after the broker was back")
        lost, found = ours(caplog, "group coordinator lost"), ours(caplog, "group coordinator found")
        assert 1 <= len(lost) <= 2 and len(found) >= 1, (lost, found)
        assert len(aiokafka_lines(caplog)) < 50, [r.getMessage() for r in aiokafka_lines(caplog)]
    finally:
        stop_producing.set()
        stop_consuming.set()
        await asyncio.gather(producer, loop, return_exceptions=True)
        await consumer.stop()


@pytest.mark.kafka
async def test_an_outage_longer_than_the_session_fences_then_rejoins(
        bus: KafkaBus, kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """The group may have expelled the member: it stops consuming, rejoins, and commits resume."""
    topic, group = topic_name("fence"), topic_name("g")
    await bus.ensure_topics([topic], partitions=2)
    consumer = KafkaConsumer(kafka_broker.bootstrap, group, [topic], session_timeout=3.0,
                             heartbeat_interval=0.5, commit_wait=2.0)
    await consumer.start()
    stop_producing, stop_consuming = asyncio.Event(), asyncio.Event()
    seen: list[Record] = []
    sent: list[int] = []
    producer = asyncio.create_task(produce_loop(bus, topic, stop_producing, sent))
    loop = asyncio.create_task(consume_loop(consumer, seen, stop_consuming))
    try:
        await eventually(lambda: _true(len(seen) >= 40), 30, "records flowing")
        caplog.set_level(logging.WARNING)
        await kafka_broker.akill9()
        await eventually(lambda: _true(not consumer.in_group), 15, "fenced once the session is over")
        assert await consumer.fetch(100, 0.1) == []
        assert await consumer.lag() == {}
        await kafka_broker.astart()
        back = await eventually(lambda: _true(consumer.in_group), 30, "rejoined")
        stop_producing.set()
        await producer
        await drain(seen, sent, kafka_broker.bootstrap, group, topic, 2)
        print(f"\n[kill -9, session 3s] member rejoined {back:.1f}s after the broker was back")
        assert len(ours(caplog, "member presumed expelled")) == 1
        assert len(ours(caplog, "member rejoined")) == 1
    finally:
        stop_producing.set()
        stop_consuming.set()
        await asyncio.gather(producer, loop, return_exceptions=True)
        await consumer.stop()


@pytest.mark.kafka
async def test_committed_offsets_read_during_a_restart_are_never_taken_for_none(
        bus: KafkaBus, kafka_broker: KafkaBroker) -> None:
    """Right after a restart the coordinator answers OffsetFetch with a group-level error and no partitions.

    aiokafka took that for "nothing committed" (and rewound the partitions to
    their start); the consumer must wait for the real answer instead.
    """
    topic, group = topic_name("offsets"), topic_name("g")
    await bus.ensure_topics([topic], partitions=4)
    for i in range(40):
        await bus.publish(topic, str(i).encode(), key=f"k{i}")
    consumer = bus.consumer(group, [topic])
    await consumer.start()
    try:
        got = 0
        deadline = time.monotonic() + 20
        while got < 40 and time.monotonic() < deadline:
            for r in await consumer.fetch(100, 0.5):
                consumer.done(r)
                got += 1
        await consumer.commit()
        expected = await acommitted(kafka_broker.bootstrap, group, topic, 4)
        assert expected is not None and sum(expected.values()) == 40

        from aiokafka import TopicPartition

        for _restart in range(2):  # the loading window is short: aiokafka alone misread it in ~1 of 3 restarts
            await kafka_broker.akill9()
            # Asked while the broker is down, answered as soon as it is back (many at once, to meet the window).
            reads = [asyncio.create_task(consumer._client.committed(TopicPartition(topic, p)))
                     for p in range(4) for _ in range(5)]
            await kafka_broker.astart()
            answers = await asyncio.wait_for(asyncio.gather(*reads), 60)
            assert answers == [expected[p] for p in range(4) for _ in range(5)]
    finally:
        await consumer.stop()


# -- a member that was frozen past its session (GC pause, VM freeze, SIGSTOP) ----------------------


@pytest.mark.kafka
async def test_a_member_frozen_past_its_session_stops_consuming_and_commits_nothing_it_fetched(
        bus: KafkaBus, kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """The broker expels a member that stopped heartbeating; when it wakes up it must know before it acts.

    Its prefetch buffer still holds records of partitions the group may have
    given to another runner, and its aiokafka client may commit as a group-less
    "simple consumer" once the coordinator has forgotten it.
    """
    topic, group = topic_name("zombie"), topic_name("g")
    await bus.ensure_topics([topic], partitions=2)
    for i in range(60):
        await bus.publish(topic, str(i).encode(), key=f"key-{i}")
    bootstrap = kafka_broker.bootstrap
    a = KafkaConsumer(bootstrap, group, [topic], session_timeout=3.0, heartbeat_interval=0.5)
    await a.start()
    try:
        stale = await a.fetch(5, 5.0)  # more records wait in the client's prefetch buffer
        assert stale
        caplog.set_level(logging.WARNING)

        time.sleep(6.0)  # freeze this whole event loop: no heartbeat for twice the session timeout
        assert await a.fetch(100, 0) == []  # before the loop ran once: it knows already
        assert not a.in_group
        for r in stale:  # finishing what it fetched before commits nothing ...
            a.done(r)
        await a.commit()
        await eventually(lambda: _true(a.in_group), 30, "rejoined")
        # ... not even once it is a member again: the records come back to be done in this membership.
        again: list[Record] = []
        deadline = time.monotonic() + 20
        while len(again) < 60 and time.monotonic() < deadline:
            again += await a.fetch(100, 0.5)
            await a.commit()
        assert {(r.partition, r.offset) for r in stale} <= {(r.partition, r.offset) for r in again}
        assert await acommitted(bootstrap, group, topic, 2) == {0: -1, 1: -1}
        assert len(ours(caplog, "member presumed expelled")) == 1
    finally:
        await a.stop()


@pytest.mark.kafka
async def test_a_client_whose_group_machinery_wedges_is_replaced(
        bus: KafkaBus, kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """The last resort: aiokafka stops talking to the coordinator for good (seen in ~1 of 20 chaos rounds).

    Simulated by making every coordinator request of the client hang forever:
    no heartbeat, no commit, no rejoin. The consumer must fence, replace the
    client, and carry on with commits.
    """
    topic, group = topic_name("wedge"), topic_name("g")
    await bus.ensure_topics([topic], partitions=2)
    consumer = KafkaConsumer(kafka_broker.bootstrap, group, [topic], session_timeout=3.0,
                             heartbeat_interval=0.5, commit_wait=2.0, rejoin_timeout=6.0)
    await consumer.start()
    stop_producing, stop_consuming = asyncio.Event(), asyncio.Event()
    seen: list[Record] = []
    sent: list[int] = []
    producer = asyncio.create_task(produce_loop(bus, topic, stop_producing, sent))
    loop = asyncio.create_task(consume_loop(consumer, seen, stop_consuming))
    try:
        await eventually(lambda: _true(len(seen) >= 40), 30, "records flowing")
        caplog.set_level(logging.WARNING)
        wedged = consumer._client

        async def never(_request: object) -> object:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        wedged._coordinator._send_req = never
        await eventually(lambda: _true(not consumer.in_group), 15, "fenced")
        await eventually(lambda: _true(consumer._client is not wedged and consumer.in_group), 40, "replaced")
        stop_producing.set()
        await producer
        await drain(seen, sent, kafka_broker.bootstrap, group, topic, 2)
        [replacing] = ours(caplog, "replacing its Kafka client")
        assert "coordination_task=waiting in" in replacing and "heartbeat_task=" in replacing, replacing
        assert len(ours(caplog, "the new Kafka client joined the group")) == 1
    finally:
        stop_producing.set()
        stop_consuming.set()
        await asyncio.gather(producer, loop, return_exceptions=True)
        await consumer.stop()
