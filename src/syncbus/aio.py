"""Small asyncio helpers the whole node relies on.

``cancel_and_wait`` exists because one ``task.cancel()`` does not always end
a task on Python 3.11: ``asyncio.wait_for`` loses a cancellation that arrives
just as the awaited future completes (CPython gh-86296, fixed in 3.12 where
``wait_for`` is built on ``asyncio.timeout``). A loop that awaits a
``wait_for`` -- the lag watcher pinging the bus, a consumer's fetch -- then
carries on to its next sleep, and whoever awaited the cancelled task waits
for that sleep (a minute for the lag watcher): a node that takes a minute
to stop, or a reload that hangs. Cancelling until the task is done ends it
whatever it swallowed, and the caller's own cancellation is never eaten
(``contextlib.suppress(CancelledError)`` around ``await task`` would eat it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RETRY = 0.5  # seconds between cancellations of a task that has not ended yet


async def cancel_and_wait(task: asyncio.Future[Any] | None, retry: float = RETRY) -> None:
    """Cancel ``task`` and return once it has ended; its result or exception is dropped (retrieved)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry)
    if not task.cancelled():
        task.exception()  # retrieved: a task that failed while stopping must not warn at garbage collection


async def cancel_all(tasks: Iterable[asyncio.Future[Any]], retry: float = RETRY) -> None:
    """``cancel_and_wait`` for several tasks at once."""
    await asyncio.gather(*(cancel_and_wait(t, retry) for t in tasks))


__all__ = ["cancel_all", "cancel_and_wait"]
