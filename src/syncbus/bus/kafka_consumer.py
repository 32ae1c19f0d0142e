"""The Kafka bus's consumer: a group member that commits only what is finished, and recovers by itself.

See ``kafka`` for the guarantees; ``kafka_commits`` holds the commit side,
``kafka_group`` the hooks into aiokafka's group coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from ..aio import cancel_and_wait
from ..errors import BusError
from ..record import Record
from . import kafka_logging
from .kafka_commits import CommitsMixin
from .kafka_common import (
    FETCH_GRACE,
    FETCH_MAX_BYTES,
    FETCH_MAX_WAIT_MS,
    MAX_PARTITION_FETCH_BYTES,
    RECOVERY_RETRY,
    check_topic,
    log,
    to_record,
)
from .kafka_group import GroupWatch, broker_answers, describe_client
from .kafka_logging import Condition
from .kafka_security import PLAINTEXT, ClientSecurity, connect_error
from .offsets import OffsetTracker


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type information
    """Forwards rebalance callbacks of one aiokafka client; a replaced client's are ignored."""

    def __init__(self, owner: KafkaConsumer, client: AIOKafkaConsumer) -> None:
        self._owner = owner
        self._client = client

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._owner._client is self._client:
            self._owner._ensure_watch()
            await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._owner._client is self._client:
            self._owner._ensure_watch()
            await self._owner._on_assigned(assigned)


class KafkaConsumer(CommitsMixin):
    """A group member that commits only the contiguous finished prefix per partition.

    Health, for the router's gauges and for people:

    * ``commit_stalled_since`` / ``stalled()``: finished records are waiting
      and commits keep failing (``syncbus_commit_stalled{route}``);
    * ``in_group``: this member may hand out records (False from a suspected
      expulsion until the group has taken it back).
    """

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str], *, client_id: str = "syncbus",
                 session_timeout: float = 10.0, heartbeat_interval: float = 1.0,
                 max_poll_interval: float = 300.0, commit_wait: float = 5.0,
                 join_timeout: float = 30.0, rejoin_timeout: float | None = None,
                 stop_timeout: float = 15.0, security: ClientSecurity = PLAINTEXT) -> None:
        for topic in topics:
            check_topic(topic)
        kafka_logging.install()
        self.bootstrap = bootstrap
        self.security = security
        self.group = group
        self.topics = list(topics)
        self.client_id = client_id
        self.session_timeout = session_timeout
        self._heartbeat_interval = heartbeat_interval
        self._max_poll_interval = max_poll_interval
        self._commit_wait = commit_wait
        self._join_timeout = join_timeout
        # Twice the session: long enough for any ordinary rejoin after the broker is back.
        self._rejoin_timeout = rejoin_timeout if rejoin_timeout is not None else max(20.0, 2 * session_timeout)
        self._stop_timeout = stop_timeout
        self._tracker = OffsetTracker()
        # Records handed out in the current membership, per partition: offset -> the Record object.
        # Only these may be marked done and committed; anything fetched before a rebalance or a
        # membership loss may belong to another member by now.
        self._pending: dict[tuple[str, int], dict[int, Record]] = {}
        self._joined = asyncio.Event()
        self._rejoined = asyncio.Event()
        self._commit_task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._started = False
        # Commit health
        self._stalled_since: float | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._relookup = False
        # Membership health
        self._member_seen = time.monotonic()
        self._ever_assigned = False
        self._fenced = False
        self._recovering: asyncio.Task[None] | None = None
        self._last_recovery = 0.0
        self._broker_back_at: float | None = None
        self._replace_logged = False
        subject = f"consumer group {group!r}"
        self.coordinator_state = Condition(log, subject, "group coordinator lost", "group coordinator found")
        self.membership = Condition(log, subject, "member presumed expelled, not consuming until it has rejoined",
                                    "member rejoined")
        self._client = self._new_client()
        self._watch: GroupWatch | None = None  # hooks its coordinator once it exists (see _ensure_watch)

    def __repr__(self) -> str:
        return f"KafkaConsumer(group={self.group!r}, topics={self.topics!r})"

    def _new_client(self) -> AIOKafkaConsumer:
        client = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.session_timeout * 1000),
            heartbeat_interval_ms=int(self._heartbeat_interval * 1000),
            max_poll_interval_ms=int(self._max_poll_interval * 1000),
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,  # issue 11
            **self.security.kwargs,
        )
        client.subscribe(self.topics, listener=_Rebalance(self, client))
        return client

    async def _start_client(self, client: AIOKafkaConsumer) -> None:
        """Start ``client`` (the current one); aiokafka returns after the first assignment."""
        kafka_logging.install()
        await client.start()
        self._ensure_watch()

    def _ensure_watch(self) -> None:
        """Hook the current client's coordinator, once, as early as it exists.

        The rebalance callbacks call this too: the first one runs before the
        first join completes, so even the first OffsetFetch goes through it.
        """
        coordinator = getattr(self._client, "_coordinator", None)
        if coordinator is None:
            return
        watch = getattr(coordinator, "_syncbus_watch", None)
        if watch is None:
            watch = GroupWatch(coordinator, self._saw_member, self._coordinator_unreachable)
        self._watch = watch

    # -- health -----------------------------------------------------------------

    @property
    def commit_stalled_since(self) -> float | None:
        """``time.monotonic()`` since when commits have been failing while finished records wait; else None.

        Set by the first failed commit attempt (at that attempt's start).
        Cleared by the next successful commit, or once nothing finished is
        left to commit while this member is in its group (e.g. a rebalance
        handed the partitions to another member). A member that lost its group
        stays stalled until it is back: what it had finished is redelivered.
        """
        return self._stalled_since

    def stalled(self, threshold: float = 10.0) -> bool:
        """Commits have been failing for at least ``threshold`` seconds (the gauge's condition)."""
        since = self._stalled_since
        return since is not None and time.monotonic() - since >= threshold

    @property
    def in_group(self) -> bool:
        """False from a suspected loss of group membership until the group has taken this member back."""
        return self._started and not self._fenced

    def _saw_member(self) -> None:
        self._member_seen = time.monotonic()
        self.coordinator_state.good()

    def _coordinator_unreachable(self, err: BaseException) -> None:
        self.coordinator_state.bad(f"{type(err).__name__}")

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Join the group; returns after the first assignment (possibly empty) or ``join_timeout``."""
        if self._started:
            return
        try:
            await self._start_client(self._client)
        except KafkaError as err:
            await self._client.stop()
            raise await connect_error(self.bootstrap, self.security, err, f"{self}: cannot connect") from err
        self._started = True
        self._member_seen = time.monotonic()
        try:
            await asyncio.wait_for(self._joined.wait(), timeout=self._join_timeout)
        except TimeoutError:
            log.warning("consumer group %r: no partition assignment after %.0fs; continuing",
                        self.group, self._join_timeout)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        recovering, self._recovering = self._recovering, None
        await cancel_and_wait(recovering)
        try:
            await self._commit_once(self._commit_wait)
        finally:
            await self._close_client(self._client)

    async def _close_client(self, client: AIOKafkaConsumer) -> None:
        """Stop an aiokafka client, but never wait longer than ``stop_timeout`` (a wedged one may not stop)."""
        try:
            await asyncio.wait_for(client.stop(), self._stop_timeout)
        except TimeoutError:
            log.warning("consumer group %r: the Kafka client did not stop within %.0fs; abandoning it",
                        self.group, self._stop_timeout)
        except KafkaError as err:
            log.warning("consumer group %r: error stopping the Kafka client: %s", self.group, err)

    # -- rebalance --------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Commit before the partitions move so the next owner starts after our finished prefix;
        # records still in flight here are redelivered to it (at-least-once). Bounded: the group
        # waits for us, and aiokafka runs this callback in its coordination task.
        await self._commit_once(self._commit_wait)
        for tp in revoked:
            self._forget((tp.topic, tp.partition))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        # No broker I/O here: aiokafka runs this without heartbeats, so a slow callback would get
        # the member expelled right after joining. Committed offsets are read lazily (see lag()).
        for tp in assigned:
            self._forget((tp.topic, tp.partition))
        self._ever_assigned = True
        self._member_seen = time.monotonic()
        self._replace_logged = False
        self.coordinator_state.good()
        if self._fenced:
            self._fenced = False
            self._client.resume(*self._client.assignment())
            self.membership.good(f"generation {self._watch.generation if self._watch else '?'}, "
                                 f"{len(assigned)} partition(s)")
        self._rejoined.set()
        self._rejoined = asyncio.Event()
        self._joined.set()

    def _forget(self, key: tuple[str, int]) -> None:
        self._tracker.revoke(key)
        self._pending.pop(key, None)

    # -- membership -------------------------------------------------------------

    def _check_membership(self) -> None:
        """Fence this member as soon as it cannot be sure the group still counts it."""
        watch = self._watch
        if self._fenced or not self._started or watch is None or not self._ever_assigned:
            return
        if self._client._subscription.reassignment_in_progress:
            return  # a rebalance is under way: aiokafka hands out nothing until it is done
        if watch.member_id == "":
            self._fence("the coordinator no longer knows this member")
            return
        silent = time.monotonic() - self._member_seen
        if silent > self.session_timeout:
            self._fence(f"no heartbeat accepted for {silent:.0f}s (session timeout {self.session_timeout:g}s)")

    def _fence(self, why: str) -> None:
        """Stop handing out records, drop what this membership fetched, and ask for a rejoin.

        Whatever was fetched but not committed is redelivered to whoever owns
        the partition after the rejoin (maybe us): at-least-once, never a
        commit on behalf of partitions that may have moved.
        """
        if self._fenced:
            return
        self._fenced = True
        self.membership.bad(why)
        for key in list(self._tracker.parts):
            self._forget(key)
        self._pending.clear()
        assignment = self._client.assignment()
        if assignment:
            self._client.pause(*assignment)
        if self._watch is not None:
            self._watch.request_rejoin()

    def _maybe_recover(self) -> None:
        """Replace the aiokafka client if the group has not counted us for long although the broker is up.

        The last resort against a wedged aiokafka client: in about 1 of 20
        broker kill -9s under load its coordination stopped (no heartbeat, no
        rejoin) although the broker was back. After ``rejoin_timeout`` without
        proof of membership we probe the broker every ``RECOVERY_RETRY``
        seconds; once it has answered for a session timeout and the client
        still has not rejoined by itself (which takes a second or two when it
        is healthy), a fresh client looks the coordinator up and joins like a
        new process would.
        """
        now = time.monotonic()
        if now - self._member_seen < self._rejoin_timeout:
            self._broker_back_at = None
            return
        if not self._started or self._recovering is not None or now - self._last_recovery < RECOVERY_RETRY:
            return
        self._last_recovery = now
        self._recovering = asyncio.create_task(self._probe_then_replace(), name=f"kafka-recover-{self.group}")

    async def _probe_then_replace(self) -> None:
        try:
            up = await broker_answers(self.bootstrap, self.client_id, RECOVERY_RETRY, self.security)
            now = time.monotonic()
            if not up:
                self._broker_back_at = None
                return
            if self._broker_back_at is None:
                self._broker_back_at = now  # give the old client its chance to rejoin first
            if now - self._broker_back_at >= self.session_timeout and now - self._member_seen >= self._rejoin_timeout:
                await self._replace_client(now - self._member_seen)
        finally:
            self._recovering = None

    async def _replace_client(self, silent: float) -> None:
        """Swap in a new aiokafka client; the old one comes back if the new one cannot start.

        Fenced throughout (fetch hands out nothing, nothing is committed), so
        nothing reads the new client before it has joined; its first assignment
        unfences us like any rejoin.
        """
        if not self._replace_logged:
            self._replace_logged = True
            log.warning("consumer group %r: not counted as a member for %.0fs; replacing its Kafka client "
                        "(state of the old one: %s)", self.group, silent, describe_client(self._client))
        old, old_watch = self._client, self._watch
        task, self._commit_task = self._commit_task, None
        if task is not None:
            task.cancel()
        self._fence("replacing the Kafka client")
        client = self._new_client()
        self._client, self._watch = client, None
        try:
            await asyncio.wait_for(self._start_client(client), self._rejoin_timeout)
        except (TimeoutError, KafkaError, OSError, asyncio.CancelledError) as err:
            if self._client is client:
                self._client, self._watch = old, old_watch
            await self._close_client(client)
            if isinstance(err, asyncio.CancelledError):
                raise
            log.debug("consumer group %r: the new Kafka client cannot join yet (%s); keeping the old one",
                      self.group, type(err).__name__)
            return
        self._member_seen = time.monotonic()
        log.warning("consumer group %r: the new Kafka client joined the group", self.group)
        await self._close_client(old)

    # -- records ----------------------------------------------------------------

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        if max_records <= 0:
            return []
        self._check_membership()
        self._maybe_recover()
        if self._fenced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rejoined.wait(), timeout)
            return []
        client = self._client
        try:
            # getmany() waits for a rebalance to finish whatever its timeout; bound that.
            batches = await asyncio.wait_for(
                client.getmany(timeout_ms=max(0, int(timeout * 1000)), max_records=max_records),
                timeout + FETCH_GRACE)
        except TimeoutError:
            return []
        except (KafkaError, kafka_errors.ConsumerStoppedError) as err:
            if client is not self._client:
                return []  # replaced while we waited
            raise BusError(f"{self}: fetch from {self.bootstrap} failed: {err}") from err
        if self._fenced or client is not self._client:
            # Lost the membership while waiting: aiokafka rewinds to the committed offsets on rejoin.
            return []
        records: list[Record] = []
        parts = self._tracker.parts
        for tp, msgs in batches.items():
            key = (tp.topic, tp.partition)
            if not msgs:
                continue
            if key not in parts:
                # First records of this assignment: aiokafka positioned us at the committed offset.
                self._tracker.assign(key, msgs[0].offset)
            pending = self._pending.setdefault(key, {})
            for msg in msgs:
                record = to_record(msg)
                self._tracker.fetched(key, msg.offset)
                pending[msg.offset] = record
                records.append(record)
        return records

    def done(self, record: Record) -> None:
        key = (record.topic, record.partition)
        pending = self._pending.get(key)
        # Only the very Record handed out in this membership counts: a copy fetched before a
        # rebalance or an expulsion may finish late, and its partition may be someone else's now.
        if pending is None or pending.get(record.offset) is not record:
            return
        del pending[record.offset]
        self._tracker.done(key, record.offset)

    def assignment(self) -> set[tuple[str, int]]:
        """Partitions this member owns right now (for logs, metrics and tests)."""
        return {(tp.topic, tp.partition) for tp in self._client.assignment()}


__all__ = ["KafkaConsumer"]
