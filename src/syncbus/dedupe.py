"""Dropping duplicate records within a window, per route (``dedupe:`` in a mapping).

Source systems re-send: a CRM retries a webhook, an export is dropped twice.
A record is a duplicate when a record with the same key *and the same
content* already went through the route within ``window`` -- an update of
the same key (other content) is never dropped, unless ``compare: key`` says
the key alone identifies a record. Dropped duplicates are counted in
``syncbus_duplicates_dropped_total{route}`` and are ``skipped`` in the ledger.

The window is kept in memory per node: after a restart it starts empty, and
duplicates that close to a crash are left to the target's idempotency key.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable


class Deduper:
    """Remembers (key → content fingerprint, time) for ``window`` seconds, at most ``max_keys`` keys."""

    def __init__(self, window: float, compare: str = "content", max_keys: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.by_content = compare == "content"
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def is_duplicate(self, key: str | None, value: bytes) -> bool:
        """True when this record repeats one seen within the window; otherwise remembers it."""
        if key is None:
            return False  # without a key there is nothing to compare by
        now = self._clock()
        self._expire(now)
        digest = hashlib.blake2b(value, digest_size=16).digest() if self.by_content else b""
        seen = self._seen.get(key)
        if seen is not None and seen[0] == digest:
            return True
        self._seen[key] = (digest, now)
        self._seen.move_to_end(key)
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            _key, (_digest, at) = next(iter(seen.items()))
            if now - at <= self.window:
                return
            seen.popitem(last=False)
