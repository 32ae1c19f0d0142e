"""Logging for Kafka outages: one line per state change instead of thousands.

While a broker is down, aiokafka retries every ~100 ms and logs an ERROR for
each attempt ("Unable connect to node", "Failed fetch messages", "Got error
produce response", ...): about 4,400 lines in a 16 s outage, which buries the
one line a person needs and fills disks. Two tools fix that:

* ``RateLimitFilter`` on every ``aiokafka`` logger lets the first record of a
  kind through, then at most one per ``interval`` carrying the count of what
  it held back. A record's kind is its logger, level and message template
  (``record.msg`` before ``%`` formatting), so "Unable connect to node 1" and
  "... node 2" are one kind. Records below WARNING pass untouched: someone who
  turned on DEBUG wants everything.
* ``Condition`` is a yes/no state of our own (broker reachable, coordinator
  known, member of the group) that logs only when it flips, with how long the
  bad spell lasted. These are the lines an operator reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_INTERVAL = 30.0
MAX_KINDS = 1000  # bounded memory even if a library formats messages eagerly (one kind per text)

_Kind = tuple[str, int, str]


class RateLimitFilter(logging.Filter):
    """First record of a kind passes, then one per ``interval`` with a count of the suppressed ones."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 max_kinds: int = MAX_KINDS) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._max_kinds = max_kinds
        # kind -> (time of the last record let through, records suppressed since)
        self._seen: OrderedDict[_Kind, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()  # aiokafka logs from the event loop, but handlers may run anywhere

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                self._seen[kind] = (seen[0], seen[1] + 1)
                return False
            last, suppressed = seen if seen is not None else (now, 0)
            self._seen[kind] = (now, 0)
            self._seen.move_to_end(kind)
            while len(self._seen) > self._max_kinds:
                self._seen.popitem(last=False)
        if suppressed:
            # Appended to the template, so no "%" may appear in the suffix.
            record.msg = f"{record.msg} [{suppressed} more like this in the last {now - last:.0f}s were not logged]"
        return True


_FILTER = RateLimitFilter()
_install_lock = threading.Lock()


def install(prefix: str = "aiokafka", flt: RateLimitFilter | None = None) -> RateLimitFilter:
    """Attach the rate limit to ``prefix`` and every logger below it that exists now.

    A filter on a logger does not apply to its children's records, so each
    module logger gets it. Idempotent; call it again after importing more
    aiokafka modules (the Kafka bus does, whenever it builds a client).
    """
    flt = flt or _FILTER
    with _install_lock:
        names = [prefix] + [n for n in list(logging.Logger.manager.loggerDict) if n.startswith(prefix + ".")]
        for name in names:
            logger = logging.getLogger(name)
            if flt not in logger.filters:
                logger.addFilter(flt)
    return flt


class Condition:
    """A state that is either fine or not; logs one WARNING line each time it flips.

    ``bad()`` and ``good()`` are cheap to call on every attempt: only a change
    of state is logged, and the recovery line says how long the trouble lasted.
    """

    def __init__(self, logger: logging.Logger, subject: str, bad_text: str, good_text: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self.subject = subject
        self._bad_text = bad_text
        self._good_text = good_text
        self._clock = clock
        self.bad_since: float | None = None

    @property
    def ok(self) -> bool:
        return self.bad_since is None

    def bad(self, detail: str = "") -> bool:
        """Enter the bad state; True (and one log line) only if it was fine until now."""
        if self.bad_since is not None:
            return False
        self.bad_since = self._clock()
        self._log.warning("%s: %s%s", self.subject, self._bad_text, f" ({detail})" if detail else "")
        return True

    def good(self, detail: str = "") -> bool:
        """Leave the bad state; True (and one log line) only if it was bad until now."""
        since = self.bad_since
        if since is None:
            return False
        self.bad_since = None
        extra = f"; {detail}" if detail else ""
        self._log.warning("%s: %s after %.1fs%s", self.subject, self._good_text, self._clock() - since, extra)
        return True


__all__ = ["Condition", "RateLimitFilter", "install"]
