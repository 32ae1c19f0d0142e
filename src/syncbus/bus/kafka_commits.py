"""The commit side of a Kafka consumer: only the contiguous finished prefix, bounded, in order, with backoff.

A mixin of ``KafkaConsumer`` (its state lives there); kept in its own module
because this is the part the delivery guarantee rests on: an offset is
committed only after the record's outcome is stored, never moves backwards,
and a commit rejected as from an old generation fences the member.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from ..errors import BusError
from .kafka_common import COMMIT_BACKOFF_FIRST, COMMIT_BACKOFF_MAX, log

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from .kafka_group import GroupWatch
    from .kafka_logging import Condition
    from .offsets import OffsetTracker


class CommitsMixin:
    """Commits and positions of a ``KafkaConsumer``; the attributes below are set by its ``__init__``."""

    bootstrap: str
    group: str
    _client: AIOKafkaConsumer
    _watch: GroupWatch | None
    _tracker: OffsetTracker
    _commit_task: asyncio.Task[None] | None
    _commit_lock: asyncio.Lock
    _commit_wait: float
    _fenced: bool
    _stalled_since: float | None
    _failures: int
    _retry_at: float
    _relookup: bool
    _member_seen: float
    coordinator_state: Condition

    def _check_membership(self) -> None:
        raise NotImplementedError

    def _fence(self, why: str) -> None:
        raise NotImplementedError

    # -- commits ----------------------------------------------------------------

    async def commit(self) -> None:
        """Commit what moved. Cheap when nothing did; waits at most ``commit_wait`` s; never raises.

        One commit attempt at a time, so commits land in order and a slow
        broker never makes callers pile up requests. After a failure the next
        attempt waits for a backoff and goes to a freshly looked-up coordinator.
        """
        task = self._commit_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._commit_wait)
            return
        self._check_membership()
        if not self._committable():
            if not self._fenced:
                self._stalled_since = None  # nothing finished is waiting
            return
        if time.monotonic() < self._retry_at:
            return
        task = self._commit_task = asyncio.create_task(self._commit_once(self._commit_wait))
        await asyncio.wait({task}, timeout=self._commit_wait)

    def _committable(self) -> dict[TopicPartition, int]:
        if self._fenced:
            return {}
        assignment = self._client.assignment()
        request: dict[TopicPartition, int] = {}
        for (topic, partition), offset in self._tracker.to_commit().items():
            tp = TopicPartition(topic, partition)
            if tp in assignment:
                request[tp] = offset
        return request

    async def _commit_once(self, timeout: float) -> None:
        """One bounded commit attempt of everything finished so far (also used on revoke and stop).

        The lock orders commits and the snapshot is taken inside it, so a
        committed offset never moves backwards.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._commit_lock.acquire(), timeout)
        except TimeoutError:
            return
        try:
            request = self._committable()
            if not request:
                return
            started = time.monotonic()
            client, watch = self._client, self._watch
            if self._relookup and watch is not None:
                watch.forget_coordinator()  # aiokafka's commit() looks it up again before sending
            try:
                await asyncio.wait_for(client.commit(request), max(0.0, deadline - loop.time()))
            except CommitFailedError as err:
                # The group moved on without us (expelled, or a newer generation).
                cause = type(err.__cause__).__name__ if err.__cause__ else "rebalanced"
                self._fence(f"commit rejected: {cause}")
                return
            except (TimeoutError, KafkaError) as err:
                self._commit_failed(started, err)
                return
            if client is self._client:
                self._commit_succeeded(request)
        finally:
            self._commit_lock.release()

    def _commit_failed(self, started: float, err: BaseException) -> None:
        if self._stalled_since is None:
            self._stalled_since = started
        self._failures += 1
        delay = min(COMMIT_BACKOFF_MAX, COMMIT_BACKOFF_FIRST * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        self._relookup = True
        reason = "no answer" if isinstance(err, TimeoutError) else type(err).__name__
        if self.coordinator_state.bad(f"commit failed: {reason}; retrying against a re-discovered coordinator"):
            return
        log.debug("consumer group %r: commit failed (%s), attempt %d; retry in %.1fs",
                  self.group, reason, self._failures, delay)

    def _commit_succeeded(self, request: dict[TopicPartition, int]) -> None:
        self._tracker.committed({(tp.topic, tp.partition): off for tp, off in request.items()})
        self._stalled_since = None
        self._failures = 0
        self._retry_at = 0.0
        self._relookup = False
        self._member_seen = time.monotonic()  # the coordinator checked our generation
        self.coordinator_state.good()

    # -- positions --------------------------------------------------------------

    async def _committed_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets of ``tps``; the log start where nothing is committed yet."""
        committed: dict[TopicPartition, int] = {}
        unknown: list[TopicPartition] = []
        for tp in tps:
            offset = await self._client.committed(tp)  # group-level errors raise (see GroupWatch)
            if offset is None:
                unknown.append(tp)
            else:
                committed[tp] = offset
        if unknown:
            starts = await self._client.beginning_offsets(unknown)
            for tp in unknown:
                committed[tp] = starts.get(tp, 0)
        return committed

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records not committed yet per owned partition; BusError if the broker does not answer in time.

        Bounded by ``commit_wait``: aiokafka retries a committed-offset read
        for as long as the coordinator is away, and the router polls lag of
        every route in one loop.
        """
        assignment = sorted(self._client.assignment())
        if not assignment or self._fenced:
            return {}
        try:
            missing = [tp for tp in assignment if (tp.topic, tp.partition) not in self._tracker.parts]
            known = await asyncio.wait_for(self._committed_offsets(missing), self._commit_wait) if missing else {}
            ends: dict[TopicPartition, int] = await asyncio.wait_for(self._client.end_offsets(assignment),
                                                                     self._commit_wait)
        except TimeoutError:
            raise BusError(f"{self}: reading offsets from {self.bootstrap} took over {self._commit_wait:g}s") from None
        except KafkaError as err:
            raise BusError(f"{self}: reading offsets from {self.bootstrap} failed: {err}") from err
        lag: dict[tuple[str, int], int] = {}
        for tp in assignment:
            key = (tp.topic, tp.partition)
            part = self._tracker.parts.get(key)
            committed = part.committed if part is not None else known.get(tp, 0)
            lag[key] = max(0, ends.get(tp, 0) - committed)
        return lag
