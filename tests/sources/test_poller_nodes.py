"""The poll runner's schedule across nodes and clocks: missed runs in a time zone, skewed clocks, lost claims,
refusals, and a loop that survives its own bugs. Real SQLite state store, embedded bus."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from syncbus.bus.embedded import EmbeddedBus
from syncbus.metrics import Metrics
from syncbus.sources.base import PollBatch
from syncbus.sources.poller import PollRefused
from syncbus.sources.schedule import IntervalSchedule

from .helpers import State, numbers, topic_records
from .test_poller import Tick, runner, tick, until


def fixed(instant: datetime) -> Callable[[], datetime]:
    """A node clock that shows ``instant`` plus the real time elapsed since the test began."""
    offset = instant - datetime.now(UTC)
    return lambda: datetime.now(UTC) + offset


async def test_a_nightly_run_missed_while_down_runs_once_at_start_and_then_waits_for_tomorrow(
        bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    yesterday = datetime(2026, 11, 19, 14, tzinfo=UTC)  # 22:00 in Shanghai
    state.claim_slot("tick", yesterday, "old-node")
    state.finish_slot("tick", yesterday, ok=True)
    clock = fixed(datetime(2026, 11, 20, 15, 30, tzinfo=UTC))  # 23:30 in Shanghai: tonight's 22:00 was missed
    first = tick(schedule="0 22 * * *", timezone="Asia/Shanghai")
    second = tick(schedule="0 22 * * *", timezone="Asia/Shanghai")
    a = runner(first, bus, state, metrics, "node-a", clock=clock)
    await a.start()
    try:
        await until(lambda: state.get_checkpoint("tick") == 1)
        await until(lambda: a.status()["state"] == "waiting")
        b = runner(second, bus, state, metrics, "node-b", clock=clock)  # a second node started later
        await b.start()
        await asyncio.sleep(0.5)
        await b.stop()
    finally:
        await a.stop()
    assert (first.polls, second.polls) == (1, 0)
    assert [(s.slot, s.ok) for s in state.slots("tick")] == [(datetime(2026, 11, 20, 14, tzinfo=UTC), True),
                                                             (yesterday, True)]
    assert a.status()["next_run_at"] == "2026-11-21T14:00:00+00:00"
    assert numbers(await topic_records(bus, "tick.out")) == [1]


async def test_a_node_whose_clock_is_behind_never_runs_a_slot_older_than_one_that_ran(
        bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    every = IntervalSchedule(10)
    current = every.latest(datetime.now(UTC))
    state.claim_slot("tick", current, "node-ahead")  # the peer, clock ahead, already ran the current slot
    state.finish_slot("tick", current, ok=True)
    behind = fixed(datetime.now(UTC) - timedelta(seconds=10))  # this node still sees the slot before it
    source = tick(interval="10s")
    r = runner(source, bus, state, metrics, "node-behind", clock=behind)
    await r.start()
    await asyncio.sleep(0.5)
    await r.stop()
    assert source.polls == 0
    assert [s.slot for s in state.slots("tick")] == [current]


async def test_a_run_whose_claim_another_node_took_over_is_cancelled(bus: EmbeddedBus, state: State,
                                                                     metrics: Metrics) -> None:
    source = tick(interval="1h")
    source.release = asyncio.Event()  # the poll hangs, like a query on a stalled node
    r = runner(source, bus, state, metrics, "node-slow", lease=0.3)
    await r.start()
    try:
        await until(lambda: source.polls == 1)
        [slot] = state.slots("tick")
        assert state.release_slot("tick", slot.slot, "node-slow")  # as if the lease ran out and ...
        assert state.claim_slot("tick", slot.slot, "node-fast")    # ... another node took the slot over
        await until(lambda: "lost the claim" in (r.status()["last_error"] or ""))
        source.release.set()  # had the run gone on, it would publish now
        await asyncio.sleep(0.3)
    finally:
        await r.stop()
    [slot] = state.slots("tick")
    assert slot.node == "node-fast" and slot.finished_at is None  # ours to finish, not the cancelled run's
    assert await topic_records(bus, "tick.out") == [] and state.get_checkpoint("tick") is None


class Refused(PollRefused):
    """What a source raises when its system says no (HTTP 4xx)."""


class Refusing(Tick):
    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        self.polls += 1
        raise Refused("GET http://crm/api: HTTP 403 Forbidden: token lacks scope contacts.read")


async def test_a_refusal_fails_the_slot_at_once(bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    source = Refusing({"name": "tick", "type": "tick", "topic": "tick.out", "interval": "1h",
                       "retry": {"initial": "20ms", "max": "20ms"}})
    r = runner(source, bus, state, metrics)
    await r.start()
    try:
        await until(lambda: any(s.finished_at is not None for s in state.slots("tick")))
        await asyncio.sleep(0.2)  # a retryable failure would have been tried ~10 times by now
    finally:
        await r.stop()
    assert source.polls == 1
    [slot] = state.slots("tick")
    assert slot.ok is False and "HTTP 403 Forbidden" in slot.detail
    assert r.status()["up"] is False and "HTTP 403" in r.status()["last_error"]


async def test_an_unexpected_error_in_the_loop_does_not_end_the_polling(bus: EmbeddedBus, state: State,
                                                                        metrics: Metrics) -> None:
    source = tick(interval="200ms")
    r = runner(source, bus, state, metrics)
    original = r._claim
    calls = 0

    async def buggy(slot: datetime, deadline: datetime) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the schedule loop")
        return await original(slot, deadline)

    r._claim = buggy  # type: ignore[method-assign]
    await r.start()
    try:
        await until(lambda: source.polls >= 2)
    finally:
        await r.stop()
    assert calls >= 3
    assert numbers(await topic_records(bus, "tick.out"))[:2] == [1, 2]

