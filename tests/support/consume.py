"""Reading a bus in tests: exactly ``n`` records through the Consumer protocol, or a clear failure."""

from __future__ import annotations

import time

from syncbus.bus.base import Consumer
from syncbus.record import Record


async def fetch_n(consumer: Consumer, n: int, timeout: float = 15.0) -> list[Record]:
    """Fetch until ``n`` records arrived (a fetch may return fewer than asked); fails after ``timeout``."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records within {timeout}s"
        got += await consumer.fetch(n - len(got), 0.5)
    return got
