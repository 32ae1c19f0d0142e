"""Offset bookkeeping for at-least-once commits with concurrent processing.

Records of one partition may finish out of order (different keys are
delivered concurrently). Only the contiguous prefix of finished offsets may be
committed; this tracker keeps that prefix per partition.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    __slots__ = ("_finished", "_order", "committed", "next_commit")

    def __init__(self, committed: int) -> None:
        self.committed = committed      # next offset to read, as last committed
        self.next_commit = committed    # what a commit would write now
        self._order: deque[int] = deque()  # fetched offsets in fetch (= offset) order
        self._finished: set[int] = set()   # done, but something before them is not

    def fetched(self, offset: int) -> None:
        self._order.append(offset)

    def done(self, offset: int) -> None:
        self._finished.add(offset)
        order, finished = self._order, self._finished
        # Gaps in offsets (Kafka transaction markers, compaction) are never fetched,
        # so they never block the prefix.
        while order and order[0] in finished:
            off = order.popleft()
            finished.discard(off)
            self.next_commit = off + 1

    @property
    def in_flight(self) -> int:
        return len(self._order) - len(self._finished)


class OffsetTracker:
    """Per (topic, partition) tracking; the bus consumer owns one."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, int], PartitionOffsets] = {}

    def assign(self, tp: tuple[str, int], committed: int) -> None:
        self.parts[tp] = PartitionOffsets(committed)

    def revoke(self, tp: tuple[str, int]) -> None:
        self.parts.pop(tp, None)

    def fetched(self, tp: tuple[str, int], offset: int) -> None:
        part = self.parts.get(tp)
        if part is not None:
            part.fetched(offset)

    def done(self, tp: tuple[str, int], offset: int) -> None:
        part = self.parts.get(tp)
        if part is not None:
            part.done(offset)

    def to_commit(self) -> dict[tuple[str, int], int]:
        """Partitions whose committable offset moved since the last commit."""
        return {tp: p.next_commit for tp, p in self.parts.items() if p.next_commit > p.committed}

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        for tp, off in offsets.items():
            part = self.parts.get(tp)
            if part is not None:
                part.committed = max(part.committed, off)
