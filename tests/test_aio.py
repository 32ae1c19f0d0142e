"""cancel_and_wait: a task that loses a cancellation still ends (the Python 3.11 wait_for race, gh-86296)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from syncbus.aio import cancel_all, cancel_and_wait


async def _swallows_first_cancel(log: list[str]) -> None:
    """What a loop around ``wait_for`` does on 3.11 when the cancel lands as the inner future completes."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        log.append("lost")  # carries on, as if the awaited call had simply returned
    await asyncio.sleep(3600)  # the loop's next sleep


async def test_a_task_that_swallows_one_cancel_still_ends() -> None:
    log: list[str] = []
    task = asyncio.create_task(_swallows_first_cancel(log))
    await asyncio.sleep(0)
    started = time.monotonic()
    await cancel_and_wait(task, retry=0.05)
    assert task.cancelled() and log == ["lost"]
    assert time.monotonic() - started < 2


async def test_plain_cancel_then_await_would_hang_on_the_same_task() -> None:
    """The failure cancel_and_wait exists for, shown: one cancel() leaves the task running."""
    task = asyncio.create_task(_swallows_first_cancel([]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 0.3)
    assert not task.done()
    await cancel_and_wait(task, retry=0.05)


async def test_the_callers_own_cancellation_is_not_eaten() -> None:
    give_up = asyncio.Event()

    async def stubborn() -> None:
        while not give_up.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # swallows every cancel until told to stop
                await asyncio.sleep(3600)

    inner = asyncio.create_task(stubborn())
    outer = asyncio.create_task(cancel_and_wait(inner, retry=10))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    give_up.set()
    await cancel_and_wait(inner, retry=0.05)
    assert inner.done()


async def test_failures_and_none_are_fine() -> None:
    async def boom() -> None:
        raise RuntimeError("x")

    failed = asyncio.create_task(boom())
    await asyncio.sleep(0)
    await cancel_all([failed, asyncio.create_task(asyncio.sleep(3600))])
    await cancel_and_wait(None)
