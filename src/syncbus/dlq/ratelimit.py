"""``--rate 50/s``: a token bucket, so a bulk replay does not flood a target that just came back.

After an outage there may be thousands of dead letters for one target; replaying
them as fast as the bus takes them recreates the overload that caused them. A
token bucket spaces the publishes evenly with a small burst.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from ..errors import SyncbusError

MAX_RATE = 100_000.0
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class RateError(SyncbusError):
    """A rate that is not ``N/s``, ``N/m`` or ``N/h`` with N > 0."""


def parse_rate(text: str) -> float:
    """``50/s`` → 50.0 per second; ``120/m`` → 2.0; a bare number is per second."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h))?\s*", text)
    if m is None:
        raise RateError(f"rate {text!r}: expected a number per second, minute or hour such as 50/s or 600/m")
    per_second = float(m.group(1)) / _UNITS[m.group(2) or "s"]
    if not 0 < per_second <= MAX_RATE:
        raise RateError(f"rate {text!r}: must be above 0 and at most {MAX_RATE:g}/s")
    return per_second


class TokenBucket:
    """``acquire()`` waits until a token is free; tokens refill at ``rate`` per second up to ``burst``.

    The burst defaults to a tenth of a second's worth (at least one): enough
    to absorb scheduling jitter, too little to hit a target in a wave.
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if rate <= 0:
            raise RateError("a token bucket needs a rate above 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def acquire(self) -> None:
        self._refill()
        while self._tokens < 1.0:
            await self._sleep((1.0 - self._tokens) / self.rate)
            self._refill()
        self._tokens -= 1.0
