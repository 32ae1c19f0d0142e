"""A consumer of the embedded bus: ownership of a (group, topic), fetching, committing, lag.

Split out of :mod:`syncbus.bus.embedded`, whose docstring describes the
design this class implements (one owner per group and topic in a process,
worker shares of ``syncbus run --workers N``). It reads through its bus
(memory first, then the ``embedded_read`` functions on the reader thread) and
commits through the bus's group commit. It only needs :class:`EmbeddedBus`
for annotations, so it imports it for type checking only: at runtime the
imports go one way, ``embedded`` → ``embedded_consumer``.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from ..errors import BusError
from ..record import Record
from .embedded_read import _read_committed, _read_records, _read_share_records
from .embedded_sqlite import PARTITION
from .offsets import OffsetTracker

if TYPE_CHECKING:
    from .embedded import EmbeddedBus


class EmbeddedConsumer:
    """A consumer of one group; see the module docstring for ownership inside one process."""

    def __init__(self, bus: EmbeddedBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._tracker = OffsetTracker()
        self._positions: dict[str, int] = {}   # owned topic -> next offset to fetch
        self._wakeup = asyncio.Event()
        self._started = False
        self._stopped = False
        self._rotate = 0
        # A worker of `syncbus run --workers N` (EmbeddedBus.share): (its share's group, every share's group).
        self._shared: tuple[str, tuple[str, ...]] | None = None
        if bus._share is not None:
            index, count = bus._share
            shares = tuple(f"{group}@{i}/{count}" for i in range(count))
            self._shared = (shares[index], shares)

    def _where(self) -> str:
        return f"embedded bus {self.bus.path}: consumer group {self.group!r}"

    async def start(self) -> None:
        if self._stopped:
            raise BusError(f"{self._where()}: stopped consumers cannot restart; create a new one")
        if self._started:
            return
        await self.bus._ready()
        self.bus._consumers.add(self)
        self._started = True
        await self._claim()

    async def _claim(self) -> None:
        """Take over topics no consumer of this group in this process owns."""
        for topic in self.topics:
            if topic in self._positions or (self.group, topic) in self.bus._owners:
                continue
            self.bus._owners[(self.group, topic)] = self   # before awaiting: no double claims
            try:
                committed = await self.bus._read(partial(_read_committed, group=self.group, topic=topic))
                if self._shared is not None:  # a worker: its share's own position, if it is further
                    own = await self.bus._read(partial(_read_committed, group=self._shared[0], topic=topic))
                    committed = max(committed, own)
            except BaseException:
                self.bus._owners.pop((self.group, topic), None)
                raise
            self._tracker.assign((topic, PARTITION), committed)
            self._positions[topic] = committed

    def _behind(self, marks: dict[str, int]) -> bool:
        return any(marks.get(t, 0) > pos for t, pos in self._positions.items())

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        if not self._started or self._stopped:
            raise BusError(f"{self._where()}: fetch before start() or after stop()")
        limit = max(1, max_records)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            self._wakeup.clear()     # before reading: a publish during the read sets it again
            await self._claim()
            if self._positions:
                topics = list(self._positions)
                self._rotate = (self._rotate + 1) % len(topics)
                order = topics[self._rotate:] + topics[:self._rotate]   # fairness between topics
                records, ends = await self._read_from(order, limit)
                self._advance(records, ends)
                if records:
                    return records
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopped:
                return []
            self.bus._wait_for_data(self)
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return []
            finally:
                self.bus._waiting.discard(self)

    async def _read_from(self, topics: list[str], limit: int) -> tuple[list[Record], dict[str, int]]:
        """Records from each topic's position on -- from memory where it holds them, else from SQLite --
        and per topic the position after what was looked at (past other workers' records, when shared)."""
        bus = self.bus
        out: list[Record] = []
        ends: dict[str, int] = {}
        unread: list[tuple[str, int]] = []
        for topic in topics:
            if len(out) >= limit:
                break
            position = self._positions[topic]
            got = bus._from_memory(topic, position, limit - len(out))
            if got is None:
                unread.append((topic, position))
            else:
                out.extend(got[0])
                ends[topic] = got[1]
        if unread and len(out) < limit:
            room = limit - len(out)
            share = bus._share
            if share is None:
                read = await bus._read(partial(_read_records, positions=unread, limit=room))
                scanned = {t: p for t, p in unread}
                for r in read:
                    scanned[r.topic] = r.offset + 1
                at_end = set(scanned) if len(read) < room else set()  # every topic read to its end
            else:
                read, scanned, at_end = await bus._read(partial(
                    _read_share_records, positions=unread, limit=room, index=share[0], count=share[1]))
            for topic in at_end:
                bus._learned_end(topic, scanned[topic])
            out.extend(read)
            ends.update(scanned)
        owned = self._positions  # ownership may have been lost meanwhile
        return [r for r in out if r.topic in owned], {t: e for t, e in ends.items() if t in owned}

    def _advance(self, records: list[Record], ends: dict[str, int]) -> None:
        """Track fetched records; move positions past what was looked at.

        A worker's share skips other workers' records. When the scan went past
        its last own record, the last offset looked at is recorded as fetched
        and done, so commits move past those records too (their own worker
        tracks them) instead of stopping at this worker's last record.
        """
        last: dict[str, int] = {}
        tracker = self._tracker
        for r in records:
            tracker.fetched((r.topic, r.partition), r.offset)
            last[r.topic] = r.offset + 1
        for topic, end in ends.items():
            if end > last.get(topic, self._positions[topic]) and self._shared is not None:
                tracker.fetched((topic, PARTITION), end - 1)
                tracker.done((topic, PARTITION), end - 1)
            if end > self._positions[topic]:
                self._positions[topic] = end

    def done(self, record: Record) -> None:
        self._tracker.done((record.topic, record.partition), record.offset)

    async def commit(self) -> None:
        offsets = self._tracker.to_commit()
        if not offsets:
            return
        if self._shared is None:
            await self.bus._commit_offsets(self.group, offsets)
        else:  # the share's own row; the group's row follows the lowest share (module docstring)
            await self.bus._commit_offsets(self._shared[0], offsets, derive=(self.group, self._shared[1]))
        self._tracker.committed(offsets)

    async def lag(self) -> dict[tuple[str, int], int]:
        if not self._positions:
            return {}
        if self._shared is not None and self._shared[0] != self._shared[1][0]:
            return {}  # workers share a group: worker 0 reports the group's lag (summed over workers)
        marks = await self.bus.high_water(list(self._positions))
        out: dict[tuple[str, int], int] = {}
        for topic in self._positions:
            part = self._tracker.parts.get((topic, PARTITION))
            committed = part.committed if part else 0
            if self._shared is not None:  # the group's row: the lowest of the workers' positions
                committed = await self.bus._read(partial(_read_committed, group=self.group, topic=topic))
            out[(topic, PARTITION)] = max(0, marks.get(topic, 0) - committed)
        return out

    async def stop(self) -> None:
        if self._stopped:
            return
        try:
            if self._started:
                await self.commit()
        finally:
            self._stopped = True
            self._positions.clear()
            self.bus._release(self)
            self._wakeup.set()
