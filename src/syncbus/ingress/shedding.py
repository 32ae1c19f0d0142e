"""Rate-limited warnings about what the HTTP server refused (issue 6: "nothing in the log").

A flood must be visible to an operator, but must not become a flood of log
lines itself: one line when the server starts shedding connections, one when
it is back under its limit (with 10 % hysteresis, so a server hovering at the
limit does not flap), and at most one summary of refusals per interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from .errors import code_for

log = logging.getLogger("syncbus.ingress.server")

# Below this share of the limit a shedding server is back to normal.
RECOVERY_SHARE = 0.9


class SheddingLog:
    def __init__(self, limit: int, interval: float = 10.0) -> None:
        self.limit = limit
        self.interval = interval
        self.shedding = False
        self.counts: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def shed(self, kind: str, open_count: int) -> None:
        """A connection was ``closed`` to make room or ``refused`` because none could be."""
        if not self.shedding:
            self.shedding = True
            log.warning("HTTP connection limit reached (%d open, limit %d): closing idle and slow connections "
                        "first, answering 503 while all are busy", open_count, self.limit)
        self._count(f"connections {kind}")

    def below_limit(self, open_count: int) -> None:
        if self.shedding and open_count < self.limit * RECOVERY_SHARE:
            self.shedding = False
            self.flush()
            log.warning("HTTP connections back under the limit (%d open, limit %d)", open_count, self.limit)

    def refused(self, status: int) -> None:
        """A request answered below the app (400, 408, 431)."""
        self._count(f"{status} {code_for(status)}")

    def _count(self, what: str) -> None:
        self.counts[what] += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self.counts:
            summary = ", ".join(f"{what} ×{n}" for what, n in sorted(self.counts.items()))
            log.warning("HTTP refusals in the last %gs at most: %s", self.interval, summary)
            self.counts.clear()
