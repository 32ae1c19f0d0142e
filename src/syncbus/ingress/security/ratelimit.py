"""Request rate limits: a token bucket per source (``rate_limit: 100/s``) and per admin key or token.

A limited request is refused at once (429 with ``Retry-After``), never queued: a
client that sends too much should slow down, and a server that holds requests
open under load only runs out of connections sooner. The bucket holds one
second's worth of requests (at least one), so a short burst at the start of a
second passes and a sustained flood does not.

Per-key buckets are kept for the most recently seen keys only (``MAX_KEYS``), so
tokens with ever new subjects cannot grow memory without bound.

With workers (``syncbus run --workers N``) the buckets are the node's: given
``shared`` (``shared_buckets.py``), a bucket lives in memory every worker maps,
so a limit holds for the node whichever worker a connection lands on.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ...dlq.ratelimit import RateError, parse_rate
from .shared_buckets import SharedBuckets

MAX_KEYS = 10_000

__all__ = ["MAX_KEYS", "KeyedLimiter", "RateBucket", "RateError", "check_rate", "parse_rate"]


def check_rate(text: str) -> str:
    """Pydantic validator for ``rate_limit``: ``100/s``, ``600/m``, ``10/h`` or a number per second."""
    try:
        parse_rate(text)
    except RateError as exc:
        raise ValueError(str(exc)) from None  # pydantic reports ValueErrors with the file position
    return text.strip()


class RateBucket:
    """A token bucket that answers at once: 0 when a token was taken, else the seconds until one is free."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 shared: SharedBuckets | None = None, key: str = "") -> None:
        if rate <= 0:
            raise RateError("a rate limit must be above 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._shared = shared  # the node's bucket ``key`` instead of this object's tokens
        self._key = key
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()  # the console and the API may run handlers on threads

    def take(self) -> float:
        if self._shared is not None:
            return self._shared.take(self._key, self.rate, self.burst, self._clock())
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


def retry_after(wait: float) -> str:
    """The ``Retry-After`` value: whole seconds, at least 1 (clients round 0 down to "now")."""
    return str(max(1, math.ceil(wait)))


class KeyedLimiter:
    """One bucket per key (an admin key's name, a token's subject), the least recently used forgotten first."""

    def __init__(self, rate: float, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic,
                 shared: SharedBuckets | None = None, prefix: str = "") -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._clock = clock
        self._shared = shared  # the node's buckets ``prefix + key`` (which forget the least recently used too)
        self._prefix = prefix
        self._buckets: OrderedDict[str, RateBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        if self._shared is not None:
            return self._shared.take(self._prefix + key, self.rate, max(1.0, self.rate), self._clock())
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = RateBucket(self.rate, clock=self._clock)
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
        return bucket.take()
