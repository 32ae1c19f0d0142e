"""The Kafka implementation of the Bus protocol (aiokafka).

Delivery guarantees come from three choices:

* the producer is idempotent with ``acks=all`` and ``publish`` awaits the
  broker's acknowledgement, so a returned Record is durable and retries never
  duplicate it;
* consumers never auto-commit: only the contiguous prefix of records the
  caller marked ``done`` is committed (``OffsetTracker``), so a crash or a
  rebalance redelivers every unfinished record (at-least-once);
* on a rebalance the revoked partitions' finished prefix is committed before
  the partitions move, so the next owner starts right after it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError

from ..errors import BusError
from ..record import Record
from .offsets import OffsetTracker

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 4
TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

# Bounded client-side buffers: a consumer prefetches at most ~1 MiB per
# partition and ~8 MiB per fetch, whatever the caller's max_records is.
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_MAX_BYTES = 8 * 1024 * 1024


def _check_topic(topic: str) -> None:
    if not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise BusError(f"invalid Kafka topic name {topic!r}: use 1-249 of the characters a-z A-Z 0-9 . _ -")


def _encode_headers(headers: Mapping[str, str] | None) -> list[tuple[str, bytes]]:
    return [(k, v.encode("utf-8")) for k, v in (headers or {}).items()]


def _decode_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", errors="replace") for k, v in (headers or ())}


def to_record(msg: ConsumerRecord[bytes, bytes]) -> Record:
    """A syncbus Record from what aiokafka fetched (bytes in, str keys/headers out)."""
    return Record(
        value=msg.value if msg.value is not None else b"",
        key=msg.key.decode("utf-8", errors="replace") if msg.key is not None else None,
        headers=_decode_headers(msg.headers),
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp=msg.timestamp / 1000.0 if msg.timestamp and msg.timestamp > 0 else 0.0,
    )


class KafkaBus:
    """A Bus on a Kafka cluster. ``bootstrap`` is ``host:port[,host:port]``."""

    def __init__(self, bootstrap: str, *, client_id: str = "syncbus",
                 default_partitions: int = DEFAULT_PARTITIONS, replication_factor: int = 1,
                 request_timeout: float = 40.0) -> None:
        self.bootstrap = bootstrap
        self.url = f"kafka://{bootstrap}"
        self.client_id = client_id
        self.default_partitions = default_partitions
        self.replication_factor = replication_factor
        self.request_timeout = request_timeout
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._start_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"KafkaBus({self.bootstrap!r})"

    async def start(self) -> None:
        async with self._start_lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_batch_size=64 * 1024,
                request_timeout_ms=int(self.request_timeout * 1000),
            )
            try:
                await producer.start()
            except KafkaError as err:
                await producer.stop()
                raise BusError(f"kafka bus {self.bootstrap}: cannot connect: {err}") from err
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    async def ping(self) -> bool:
        """Metadata answered within 3 s; False (never raises) when the cluster is away."""
        producer = self._producer
        if producer is None:
            return False
        try:
            cluster = await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=3.0)
        except (TimeoutError, KafkaError, OSError):
            return False
        return bool(cluster.brokers())

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin",
                                        request_timeout_ms=int(self.request_timeout * 1000))
            try:
                await admin.start()
            except KafkaError as err:
                await admin.close()
                raise BusError(f"kafka bus {self.bootstrap}: admin client cannot connect: {err}") from err
            self._admin = admin
        return self._admin

    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        """Create missing topics; topics that exist (or appear concurrently) are left as they are."""
        wanted = list(dict.fromkeys(topics))
        for topic in wanted:
            _check_topic(topic)
        if not wanted:
            return
        admin = await self._admin_client()
        try:
            existing = set(await admin.list_topics())
        except KafkaError as err:
            raise BusError(f"kafka bus {self.bootstrap}: cannot list topics: {err}") from err
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return
        try:
            count, replicas = partitions or self.default_partitions, self.replication_factor
            response = await admin.create_topics([NewTopic(t, count, replicas) for t in missing])
        except KafkaError as err:
            raise BusError(f"kafka bus {self.bootstrap}: cannot create topics {missing}: {err}") from err
        failed = []
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            if code not in (0, TOPIC_ALREADY_EXISTS):
                message = topic_error[2] if len(topic_error) > 2 else None
                failed.append(f"{name}: error {code}" + (f" ({message})" if message else ""))
        if failed:
            raise BusError(f"kafka bus {self.bootstrap}: creating topics failed: {'; '.join(failed)}")

    async def publish(self, topic: str, value: bytes, key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Record:
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        _check_topic(topic)
        hdrs = dict(headers or {})
        try:
            sent = await producer.send(topic, value=value,
                                       key=key.encode("utf-8") if key is not None else None,
                                       headers=_encode_headers(hdrs))
            meta = await sent
        except KafkaError as err:
            raise BusError(f"kafka bus {self.bootstrap}: publish to {topic!r} failed: {err}") from err
        return Record(value=value, key=key, headers=hdrs, topic=meta.topic, partition=meta.partition,
                      offset=meta.offset, timestamp=meta.timestamp / 1000.0 if meta.timestamp > 0 else 0.0)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self.bootstrap, group, topics, client_id=self.client_id)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: KafkaConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner._on_assigned(assigned)


class KafkaConsumer:
    """A group member that commits only the contiguous finished prefix per partition."""

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str], *, client_id: str = "syncbus",
                 session_timeout: float = 10.0, heartbeat_interval: float = 1.0,
                 max_poll_interval: float = 300.0, commit_wait: float = 5.0,
                 join_timeout: float = 30.0) -> None:
        for topic in topics:
            _check_topic(topic)
        self.bootstrap = bootstrap
        self.group = group
        self.topics = list(topics)
        self.client_id = client_id
        self._commit_wait = commit_wait
        self._join_timeout = join_timeout
        self._tracker = OffsetTracker()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(session_timeout * 1000),
            heartbeat_interval_ms=int(heartbeat_interval * 1000),
            max_poll_interval_ms=int(max_poll_interval * 1000),
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
        )
        self._joined = asyncio.Event()
        self._commit_task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._started = False

    def __repr__(self) -> str:
        return f"KafkaConsumer(group={self.group!r}, topics={self.topics!r})"

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Join the group; returns after the first assignment (possibly empty) or ``join_timeout``."""
        if self._started:
            return
        self._consumer.subscribe(self.topics, listener=_Rebalance(self))
        try:
            await self._consumer.start()
        except KafkaError as err:
            await self._consumer.stop()
            raise BusError(f"{self}: cannot connect to {self.bootstrap}: {err}") from err
        self._started = True
        try:
            await asyncio.wait_for(self._joined.wait(), timeout=self._join_timeout)
        except TimeoutError:
            log.warning("consumer group %r: no partition assignment after %.0fs; continuing",
                        self.group, self._join_timeout)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            await self._commit_now()
        finally:
            await self._consumer.stop()

    # -- rebalance --------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Commit before the partitions move so the next owner starts after our finished prefix;
        # records still in flight here are redelivered to it (at-least-once).
        await self._commit_now()
        for tp in revoked:
            self._tracker.revoke((tp.topic, tp.partition))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            if assigned:
                unknown = []
                for tp in assigned:
                    committed = await self._consumer.committed(tp)
                    if committed is None:
                        unknown.append(tp)
                    else:
                        self._tracker.assign((tp.topic, tp.partition), committed)
                if unknown:
                    # Nothing committed yet: the group starts at the log start (auto_offset_reset=earliest).
                    starts = await self._consumer.beginning_offsets(unknown)
                    for tp in unknown:
                        self._tracker.assign((tp.topic, tp.partition), starts.get(tp, 0))
        finally:
            self._joined.set()

    # -- records ----------------------------------------------------------------

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        if max_records <= 0:
            return []
        try:
            batches = await self._consumer.getmany(timeout_ms=max(0, int(timeout * 1000)),
                                                   max_records=max_records)
        except KafkaError as err:
            raise BusError(f"{self}: fetch from {self.bootstrap} failed: {err}") from err
        records: list[Record] = []
        parts = self._tracker.parts
        for tp, msgs in batches.items():
            key = (tp.topic, tp.partition)
            if key not in parts and msgs:
                # Fetched before the assignment callback registered it: start at the first record.
                self._tracker.assign(key, msgs[0].offset)
            for msg in msgs:
                self._tracker.fetched(key, msg.offset)
                records.append(to_record(msg))
        return records

    def done(self, record: Record) -> None:
        key = (record.topic, record.partition)
        part = self._tracker.parts.get(key)
        # A record from before a rebalance whose offset is already committed (by us or the
        # previous owner) must not linger in the tracker; it will never be fetched again.
        if part is not None and record.offset >= part.committed:
            self._tracker.done(key, record.offset)

    async def commit(self) -> None:
        """Commit what moved. Cheap when nothing did; waits at most ``commit_wait`` s for the broker.

        Only one commit is in flight at a time, so commits land in order and a
        slow broker never makes callers pile up requests.
        """
        task = self._commit_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._commit_wait)
            if not task.done():
                return
        if not self._tracker.to_commit():
            return
        task = self._commit_task = asyncio.create_task(self._commit_now())
        await asyncio.wait({task}, timeout=self._commit_wait)

    async def _commit_now(self) -> None:
        """Commit everything finished so far (also used on revoke and stop).

        The lock orders commits and the snapshot is taken inside it, so a
        committed offset never moves backwards.
        """
        async with self._commit_lock:
            offsets = self._tracker.to_commit()
            if offsets:
                await self._commit(offsets)

    async def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        assignment = self._consumer.assignment()
        request: dict[TopicPartition, int] = {}
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assignment:
                request[tp] = offset
        if not request:
            return
        try:
            await self._consumer.commit(request)
        except CommitFailedError as err:
            # The group rebalanced under us; the new owners re-read from the last commit.
            log.warning("consumer group %r: commit skipped, group rebalanced: %s", self.group, err)
            return
        except KafkaError as err:
            log.warning("consumer group %r: commit failed, will retry: %s", self.group, err)
            return
        self._tracker.committed({(tp.topic, tp.partition): off for tp, off in request.items()})

    async def lag(self) -> dict[tuple[str, int], int]:
        parts = dict(self._tracker.parts)
        if not parts:
            return {}
        tps = [TopicPartition(t, p) for t, p in parts]
        try:
            ends: dict[TopicPartition, int] = await self._consumer.end_offsets(tps)
        except KafkaError as err:
            raise BusError(f"{self}: reading end offsets from {self.bootstrap} failed: {err}") from err
        return {(tp.topic, tp.partition): max(0, ends.get(tp, 0) - parts[(tp.topic, tp.partition)].committed)
                for tp in tps}

    def assignment(self) -> set[tuple[str, int]]:
        """Partitions this member owns right now (for logs, metrics and tests)."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}


__all__ = ["KafkaBus", "KafkaConsumer", "to_record"]
