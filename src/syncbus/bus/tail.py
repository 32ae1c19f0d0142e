"""The newest records of each topic this process appended to the embedded bus, kept in memory.

A route on the embedded bus usually consumes what the same process just
published (HTTP ingress → bus → route). Reading those records back from
SQLite cost a round trip to the reader thread, a query, and decoding every
row's headers and value again -- under load about a third of the consume
side's CPU, for bytes this process had in hand a millisecond earlier. The
writer therefore hands every record it committed to a :class:`Tail`, and a
consumer whose position lies inside the tail takes its records from there.

The tail holds exactly what the log holds for its offsets: records enter
only after their transaction committed, in offset order, and only while
contiguous -- if another process appended in between (a gap in the
offsets), the tail starts over from the new offset. A consumer outside the
tail (behind it, after a restart, or records written by another process)
reads SQLite as before. Memory is bounded by ``capacity`` records per topic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..record import Record

DEFAULT_CAPACITY = 2048  # records per topic: enough for a route with max_in_flight 1000 to keep up


class Tail:
    """Contiguous newest records of one topic (see the module docstring)."""

    __slots__ = ("capacity", "records")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.records: deque[Record] = deque()

    @property
    def first(self) -> int:
        """The oldest offset held (the next one when empty)."""
        return self.records[0].offset if self.records else self.next

    @property
    def next(self) -> int:
        """The offset after the newest held (-1 when empty: nothing is known)."""
        return self.records[-1].offset + 1 if self.records else -1

    def append(self, record: Record) -> None:
        """A committed record; a gap (another writer appended in between) starts the tail over."""
        records = self.records
        if records and record.offset != records[-1].offset + 1:
            records.clear()
        records.append(record)
        if len(records) > self.capacity:
            records.popleft()

    def read(self, position: int, limit: int, mine: Callable[[str | None], bool] | None = None,
             ) -> tuple[list[Record], int] | None:
        """Copies of up to ``limit`` records from ``position`` on, and the position after what was looked at.

        ``mine``: only records whose key it accepts (a worker's share, see
        ``EmbeddedBus.share``); the others are passed over. None when the tail
        does not hold ``position``.
        """
        records = self.records
        if not records:
            return None
        first = records[0].offset
        if position < first or position > records[-1].offset:
            return None
        out: list[Record] = []
        end = position
        for i in range(position - first, len(records)):
            r = records[i]
            end = r.offset + 1
            if mine is not None and not mine(r.key):
                continue
            # Each consumer gets its own Record (and headers dict), as a read from SQLite gives it.
            out.append(Record(r.value, r.key, dict(r.headers), r.topic, r.partition, r.offset, r.timestamp))
            if len(out) >= limit:
                break
        return out, end
