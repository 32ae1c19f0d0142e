"""The poll runner (sources/poller.py) on the embedded bus and a real SQLite state store.

The lifecycle end to end with the reference ``generate`` source: poll →
publish → cursor stored → a restart resumes after the cursor; then the
failure paths: a bus that does not acknowledge, a system that is down, two
nodes sharing a schedule, a slot missed while syncbus was down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.metrics import Metrics
from syncbus.sources.base import NewRecord, PollBatch, PollSource, PollSourceConfig, SourceConfig
from syncbus.sources.generate import GenerateSource
from syncbus.sources.poller import PollRunner
from syncbus.sources.publisher import Publisher, PublishError
from syncbus.sources.schedule import CronSchedule
from syncbus.tracing import TraceRecorder

from .helpers import State, numbers, topic_records
from .test_publisher import RefusingBus


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def runner(source: PollSource, bus: Any, state: State, metrics: Metrics, node: str = "node-a",
           **kw: Any) -> PollRunner:
    return PollRunner(source, Publisher(bus, metrics, TraceRecorder(state)), state, metrics, node=node, **kw)


def generate(count: int, **options: Any) -> GenerateSource:
    return GenerateSource({"name": "gen", "type": "generate", "topic": "gen.out", "count": count, **options})


class TickConfig(PollSourceConfig):
    type: Literal["tick"] = "tick"


class Tick(PollSource):
    """One new record per run: a run that happens twice shows up as a duplicate number."""

    Config: ClassVar[type[SourceConfig]] = TickConfig
    down = False
    polls = 0
    opened = closed = 0
    release: asyncio.Event | None = None

    async def start(self) -> None:
        self.opened += 1

    async def stop(self) -> None:
        self.closed += 1

    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        self.polls += 1
        if self.release is not None:
            await self.release.wait()
        if self.down:
            raise ConnectionError("database down")
        n = (cursor or 0) + 1
        return PollBatch([NewRecord(f'{{"n": {n}}}'.encode(), key=str(n))], cursor=n)


def tick(**options: Any) -> Tick:
    return Tick({"name": "tick", "type": "tick", "topic": "tick.out", **options})


# -- the lifecycle ---------------------------------------------------------------------------


async def test_poll_publish_cursor_and_restart_resumes(bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    first = runner(generate(25, batch_size=10), bus, state, metrics)
    result = await first.run()
    assert (result.records, result.pages, result.cursor) == (25, 3, 25)
    assert state.get_checkpoint("gen") == 25
    await first.stop()

    # "restart": a new process with a new source instance; five more records exist now
    second = runner(generate(30, batch_size=10), bus, state, metrics)
    again = await second.run()
    assert (again.records, again.cursor) == (5, 30)
    assert numbers(await topic_records(bus, "gen.out")) == list(range(1, 31))  # each once, in order
    assert (await second.run()).records == 0  # nothing new: nothing published, cursor kept
    assert state.get_checkpoint("gen") == 30
    assert metrics.value("syncbus_records_received_total", {"source": "gen"}) == 30


async def test_the_cursor_moves_only_after_the_bus_acknowledged(bus: EmbeddedBus, state: State,
                                                                metrics: Metrics) -> None:
    flaky = RefusingBus(bus, {"14"})  # the bus refuses one record of the second page
    r = runner(generate(25, batch_size=10), flaky, state, metrics)
    with pytest.raises(PublishError):
        await r.run()
    assert state.get_checkpoint("gen") == 10  # page 1 stored, page 2 not
    flaky.refuse.clear()
    assert (await r.run()).cursor == 25  # resumes after page 1
    got = numbers(await topic_records(bus, "gen.out"))
    assert sorted(set(got)) == list(range(1, 26))  # nothing lost (page 2 partly twice: at-least-once)


async def test_run_full_ignores_the_cursor_and_never_moves_it_back(bus: EmbeddedBus, state: State,
                                                                  metrics: Metrics) -> None:
    state.put_checkpoint("gen", 30)  # the running node is further than this snapshot
    result = await runner(generate(20), bus, state, metrics).run_full()
    assert (result.records, result.cursor) == (20, 30)
    assert state.get_checkpoint("gen") == 30
    state.put_checkpoint("gen", 5)
    assert (await runner(generate(20), bus, state, metrics).run_full()).cursor == 20
    assert state.get_checkpoint("gen") == 20


# -- the schedule ----------------------------------------------------------------------------


async def test_a_failing_poll_backs_off_keeps_the_cursor_and_reports(bus: EmbeddedBus, state: State,
                                                                     metrics: Metrics) -> None:
    source = tick(interval="600ms", retry={"initial": "50ms", "max": "100ms"})
    source.down = True
    r = runner(source, bus, state, metrics)
    await r.start()
    try:
        await until(lambda: source.polls >= 3)
        status = r.status()
        assert status["up"] is False and "database down" in status["last_error"] and status["failures"] >= 3
        assert metrics.value("syncbus_source_up", {"source": "tick"}) == 0
        assert state.get_checkpoint("tick") is None
        await until(lambda: any(s.ok is False for s in state.slots("tick")))  # gave up at the next slot
        [failed] = [s for s in state.slots("tick") if s.ok is False][:1]
        assert "database down" in failed.detail
        source.down = False  # the database is back: the next slot succeeds
        await until(lambda: state.get_checkpoint("tick") is not None)
        await until(lambda: r.status()["up"] is True)
        assert metrics.value("syncbus_source_up", {"source": "tick"}) == 1
        assert r.status()["failures"] == 0 and r.status()["last_error"] is None
    finally:
        await r.stop()
    assert source.opened == 1 and source.closed == 1
    await r.stop()  # idempotent
    assert source.closed == 1 and r.status()["state"] == "stopped"


async def test_two_nodes_run_each_slot_once(bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    a, b = tick(interval="300ms"), tick(interval="300ms")
    ra, rb = runner(a, bus, state, metrics, "node-a"), runner(b, bus, state, metrics, "node-b")
    await asyncio.gather(ra.start(), rb.start())
    try:
        await until(lambda: len([s for s in state.slots("tick") if s.ok]) >= 4)
    finally:
        await asyncio.gather(ra.stop(), rb.stop())
    slots = [s for s in state.slots("tick", limit=100) if s.ok]
    got = numbers(await topic_records(bus, "tick.out"))
    assert len(got) == len(set(got)) == len(slots)  # one record per slot: no slot ran twice
    assert len({s.slot for s in slots}) == len(slots)


async def test_a_slot_missed_while_down_runs_once_at_start(bus: EmbeddedBus, state: State,
                                                           metrics: Metrics) -> None:
    every_minute = CronSchedule("* * * * *")
    now = datetime.now(UTC)
    missed = every_minute.latest(now)
    earlier = missed - timedelta(minutes=5)
    state.claim_slot("tick", earlier, "old-node")
    state.finish_slot("tick", earlier, ok=True)
    source = tick(schedule="* * * * *")
    r = runner(source, bus, state, metrics)
    await r.start()
    try:
        await until(lambda: state.get_checkpoint("tick") == 1)
        await asyncio.sleep(0.3)
    finally:
        await r.stop()
    if every_minute.latest(datetime.now(UTC)) == missed:  # no new minute began meanwhile
        assert source.polls == 1
        assert state.last_slot("tick") == missed


async def test_a_slot_that_already_ran_does_not_run_again_at_start(bus: EmbeddedBus, state: State,
                                                                   metrics: Metrics) -> None:
    latest = CronSchedule("0 0 1 1 *").latest(datetime.now(UTC))  # once a year: no new slot during the test
    state.claim_slot("tick", latest, "other-node")
    state.finish_slot("tick", latest, ok=True)
    source = tick(schedule="0 0 1 1 *")
    r = runner(source, bus, state, metrics)
    await r.start()
    await asyncio.sleep(0.5)
    status = r.status()
    await r.stop()
    assert source.polls == 0
    assert status["next_run_at"] == CronSchedule("0 0 1 1 *").following(latest).isoformat()


async def test_stopping_mid_run_gives_the_slot_back(bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    source = tick(interval="1h")
    source.release = asyncio.Event()  # the poll hangs like a slow query
    r = runner(source, bus, state, metrics)
    await r.start()
    await until(lambda: source.polls == 1)
    assert r.status()["state"] == "running" and len(state.slots("tick")) == 1
    await r.stop()
    assert state.slots("tick") == []  # the next start runs this slot again
    assert state.get_checkpoint("tick") is None and source.closed == 1
