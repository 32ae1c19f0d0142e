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

Recovery from broker outages (kill -9, restart, network loss) is ours, not
aiokafka's, because aiokafka alone can stay wedged after one:

* ``publish`` waits at most ``publish_timeout`` (``kafka://h:p?publish_timeout=5s``)
  and then raises BusError, so ingress answers 503 instead of holding the
  request. The record is NOT withdrawn: the idempotent producer never expires
  a batch, so it is written once the broker is back. Such late writes are
  logged (one line per burst, with the record ids); the record keeps its id, so
  its delivery carries the same idempotency key wherever it is delivered again.
* every commit attempt is bounded; a failed one forces a fresh coordinator
  look-up before the retry (with backoff), and ``commit_stalled_since`` shows
  for how long finished records have been waiting for a commit;
* a member that cannot prove it is still in its group (no heartbeat accepted
  for a session timeout, a commit rejected as from an old generation) stops
  handing out records, forgets what it fetched before (another member may own
  those partitions now, so it must not commit them) and rejoins; if even the
  rejoin does not happen, the aiokafka client is replaced;
* OffsetFetch answers carrying a group-level error are treated as errors (aiokafka
  read them as "nothing committed", which rewinds a partition to its start);
* aiokafka's retry-per-100-ms ERROR lines are rate limited and replaced by one
  line per state change (``kafka_logging``).

TLS and SASL ride on the URL too (``?tls_ca_file=ca.pem&sasl_mechanism=SCRAM-SHA-512&sasl_username=syncbus``,
password from ``SYNCBUS_KAFKA_PASSWORD``): see ``kafka_security``. A refused password or an untrusted
certificate fails ``start`` with its own error class instead of "cannot connect".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.group import HeartbeatRequest

from ..errors import BusError
from ..record import H_ID, Record
from ..units import parse_duration
from . import kafka_logging
from .kafka_logging import Condition
from .kafka_security import PLAINTEXT, URL_OPTIONS, ClientSecurity, connect_error, from_url_options
from .offsets import OffsetTracker

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 4
TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

# Bounded client-side buffers: a consumer prefetches at most ~1 MiB per
# partition and ~8 MiB per fetch, whatever the caller's max_records is.
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_MAX_BYTES = 8 * 1024 * 1024
# issue 11: how long the broker may hold a fetch that found nothing new. aiokafka keeps one fetch in
# flight per broker, so a record arriving on a partition outside the held fetch waited for it to time out:
# the default 500 ms was the end-to-end p99 at 1,000 orders/s. 10 ms costs an idle consumer ~100 small
# requests per second.
FETCH_MAX_WAIT_MS = 10

DEFAULT_PUBLISH_TIMEOUT = 5.0
# Commit retries after a failure: 0.2 s, 0.4 s, ... at most every 5 s.
COMMIT_BACKOFF_FIRST = 0.2
COMMIT_BACKOFF_MAX = 5.0
# getmany() ignores its timeout while a rebalance is in progress; we give it this much extra.
FETCH_GRACE = 1.0
LATE_WRITE_REPORT_DELAY = 2.0  # late writes of one outage are reported together
RECOVERY_RETRY = 5.0  # seconds between broker probes while a consumer is not counted as a member
_URL_OPTIONS = {"publish_timeout", *URL_OPTIONS}
_REFUSED_HERE = {"sasl_password", "password"}  # known, and refused with a reason by kafka_security


class PublishUnconfirmed(BusError):
    """The broker did not acknowledge a record in time, but the record may still be written.

    Distinct from a plain BusError (the record was certainly not written), so
    a caller can keep an idempotency claim pending instead of releasing it:
    the late write carries the record's id, and a retry under the same id is
    then dropped by the targets.
    """

    def __init__(self, message: str, record_id: str | None) -> None:
        super().__init__(message)
        self.record_id = record_id


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


def split_bootstrap(target: str) -> tuple[str, dict[str, str]]:
    """``"h:p,h:p?publish_timeout=5s"`` -> ``("h:p,h:p", {"publish_timeout": "5s"})``.

    Options ride on the bus URL so one ``--bus`` setting configures every
    process; unknown ones are refused rather than silently ignored.
    """
    bootstrap, _, query = target.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    unknown = sorted(set(options) - _URL_OPTIONS - _REFUSED_HERE)
    if unknown:
        raise BusError(f"kafka bus URL: unknown option(s) {', '.join(unknown)}; "
                       f"known: {', '.join(sorted(_URL_OPTIONS))}")
    return bootstrap.strip("/"), options


def _timeout_option(options: Mapping[str, str], name: str, default: float) -> float:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = parse_duration(raw)
    except ValueError as err:
        raise BusError(f"kafka bus URL: {name}={raw!r}: {err}") from None
    if value <= 0:
        raise BusError(f"kafka bus URL: {name} must be more than 0, got {raw!r}")
    return value


def _is_connection_error(err: BaseException) -> bool:
    """The broker did not answer at all (as opposed to answering with an error)."""
    return isinstance(err, TimeoutError | OSError | kafka_errors.KafkaConnectionError
                      | kafka_errors.NodeNotReadyError | kafka_errors.RequestTimedOutError
                      | kafka_errors.KafkaTimeoutError)


class _LateWrites:
    """Publishes that timed out for the caller but may still be written (or fail) later.

    The idempotent producer keeps retrying a batch until the broker takes it,
    so a record whose ``publish`` raised (and whose client got a 503) usually
    lands once the broker is back. Nobody waits for it any more, so we report
    what became of it: one WARNING per burst, listing the record ids.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.pending = 0
        self.written = 0
        self.failed = 0
        self._report: list[str] = []
        self._failures: list[str] = []
        self._scheduled: asyncio.TimerHandle | None = None

    def watch(self, fut: asyncio.Future[Any], record_id: str, topic: str) -> None:
        self.pending += 1

        def settled(f: asyncio.Future[Any]) -> None:
            self.pending -= 1
            if f.cancelled() or f.exception() is not None:
                self.failed += 1
                err = "cancelled" if f.cancelled() else f"{type(f.exception()).__name__}"
                self._failures.append(f"{record_id} ({err})")
            else:
                meta = f.result()
                self.written += 1
                self._report.append(f"{record_id} -> {topic}[{meta.partition}]@{meta.offset}")
            self._schedule()

        fut.add_done_callback(settled)

    def _schedule(self) -> None:
        if self._scheduled is None:
            loop = asyncio.get_running_loop()
            self._scheduled = loop.call_later(LATE_WRITE_REPORT_DELAY, self.flush)

    def flush(self) -> None:
        self._scheduled = None
        written, self._report = self._report, []
        failed, self._failures = self._failures, []
        if written:
            log.warning("kafka bus %s: %d record(s) whose publish had timed out (the caller was told it "
                        "failed) were written after all; each keeps its id and idempotency key: %s",
                        self.bootstrap, len(written), _abbreviate(written))
        if failed:
            log.warning("kafka bus %s: %d record(s) whose publish had timed out were finally not written: %s",
                        self.bootstrap, len(failed), _abbreviate(failed))


def _abbreviate(items: Sequence[str], shown: int = 10) -> str:
    text = ", ".join(items[:shown])
    return text + (f" (+{len(items) - shown} more)" if len(items) > shown else "")


def _describe(client: AIOKafkaConsumer) -> str:
    """One line on where an aiokafka consumer's group machinery stands (for the log when it seems wedged).

    Reads private state on purpose and never raises: it exists to tell the
    next person what was stuck.
    """
    try:
        coord = client._coordinator
        parts = [f"coordinator={coord.coordinator_id}", f"member={coord.member_id or '-'}",
                 f"generation={coord.generation}", f"lookup_locked={coord._coordinator_lookup_lock.locked()}",
                 f"rejoin_needed={coord._rejoin_needed_fut.done()}",
                 f"reassigning={client._subscription.reassignment_in_progress}"]
        for name in ("_coordination_task", "_heartbeat_task", "_commit_refresh_task"):
            task = getattr(coord, name, None)
            if task is None:
                parts.append(f"{name.strip('_')}=none")
            elif task.done():
                exc = None if task.cancelled() else task.exception()
                parts.append(f"{name.strip('_')}=done({type(exc).__name__ if exc else 'ok'})")
            else:
                parts.append(f"{name.strip('_')}=waiting in {_awaiting(task)}")
        return ", ".join(parts)
    except Exception as exc:  # diagnostics only
        return f"unavailable ({type(exc).__name__})"


def _awaiting(task: asyncio.Task[Any]) -> str:
    """The innermost coroutines a task is suspended in (``get_stack()`` shows only the outermost)."""
    frames: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames[-4:]) or "?"


async def _broker_answers(bootstrap: str, client_id: str, timeout: float,
                          security: ClientSecurity = PLAINTEXT) -> bool:
    """A fresh client can fetch cluster metadata: the broker is up, whatever state our own clients are in."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id=f"{client_id}-probe",
                            request_timeout_ms=int(timeout * 1000), **security.kwargs)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return bool(client.cluster.brokers())
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


class KafkaBus:
    """A Bus on a Kafka cluster. ``bootstrap`` is ``host:port[,host:port][?publish_timeout=5s&tls=true...]``."""

    def __init__(self, bootstrap: str, *, client_id: str = "syncbus",
                 default_partitions: int = DEFAULT_PARTITIONS, replication_factor: int = 1,
                 request_timeout: float = 40.0, publish_timeout: float | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        kafka_logging.install()
        target, options = split_bootstrap(bootstrap)
        self.bootstrap = target
        self.security = from_url_options(options, os.environ if env is None else env)
        self.security.kwargs  # noqa: B018 -- read the CA and certificate files now: a bad path fails here
        self.url = f"kafka://{bootstrap.strip('/')}"
        self.client_id = client_id
        self.default_partitions = default_partitions
        self.replication_factor = replication_factor
        self.request_timeout = request_timeout
        if publish_timeout is not None and publish_timeout <= 0:
            raise BusError(f"kafka bus: publish_timeout must be more than 0, got {publish_timeout}")
        self.publish_timeout = publish_timeout or _timeout_option(options, "publish_timeout",
                                                                   DEFAULT_PUBLISH_TIMEOUT)
        self.broker = Condition(log, f"kafka bus {self.bootstrap}", "broker unreachable", "broker reachable again")
        self.late_writes = _LateWrites(self.bootstrap)
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
                **self.security.kwargs,
            )
            kafka_logging.install()  # aiokafka imports some modules (and their loggers) lazily
            try:
                await producer.start()
            except KafkaError as err:
                await producer.stop()
                raise await connect_error(self.bootstrap, self.security, err, "cannot connect") from err
            except asyncio.CancelledError:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()
        self.late_writes.flush()

    async def ping(self) -> bool:
        """Metadata answered within 3 s; False (never raises) when the cluster is away."""
        producer = self._producer
        if producer is None:
            return False
        try:
            cluster = await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=3.0)
        except (TimeoutError, KafkaError, OSError) as err:
            self.broker.bad(f"metadata request failed: {type(err).__name__}")
            return False
        ok = bool(cluster.brokers())
        if ok:
            self.broker.good()
        return ok

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin",
                                        request_timeout_ms=int(self.request_timeout * 1000), **self.security.kwargs)
            try:
                await admin.start()
            except KafkaError as err:
                await admin.close()
                raise await connect_error(self.bootstrap, self.security, err, "admin client cannot connect") from err
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
                      headers: Mapping[str, str] | None = None, *, timeout: float | None = None) -> Record:
        """Append durably, or raise BusError within ``timeout`` (default ``publish_timeout``) seconds.

        A timeout does not withdraw the record: see ``_LateWrites``.
        """
        _check_topic(topic)
        limit = self.publish_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        if self._producer is None:
            try:
                await asyncio.wait_for(self.start(), limit)
            except TimeoutError:
                self.broker.bad("cannot connect")
                raise BusError(f"kafka bus {self.bootstrap}: cannot connect within {limit:g}s") from None
        producer = self._producer
        assert producer is not None
        hdrs = dict(headers or {})
        try:
            # Cancelling send() before it returns is safe: the record was not appended yet.
            # (timeout_at, not wait_for: in Python 3.11 wait_for made a task per record -- issue 11)
            async with asyncio.timeout_at(deadline):
                sent = await producer.send(topic, value=value, key=key.encode("utf-8") if key is not None else None,
                                           headers=_encode_headers(hdrs))
        except TimeoutError:
            self.broker.bad(f"publish to {topic!r} timed out")
            raise BusError(f"kafka bus {self.bootstrap}: publish to {topic!r} not accepted within {limit:g}s "
                           f"(no topic metadata, or the producer buffer is full); the record was not written") from None
        except KafkaError as err:
            if _is_connection_error(err):
                self.broker.bad(type(err).__name__)
            raise BusError(f"kafka bus {self.bootstrap}: publish to {topic!r} failed: {err}") from err
        try:
            async with asyncio.timeout_at(deadline):
                meta = await asyncio.shield(sent)  # a timeout leaves `sent` to _LateWrites
        except TimeoutError:
            self.late_writes.watch(sent, hdrs.get(H_ID, "?"), topic)
            self.broker.bad(f"publish to {topic!r} not acknowledged within {limit:g}s")
            raise PublishUnconfirmed(f"kafka bus {self.bootstrap}: publish to {topic!r} not acknowledged within "
                                     f"{limit:g}s; the record may still be written when the broker is back",
                                     hdrs.get(H_ID)) from None
        except KafkaError as err:
            if _is_connection_error(err):
                self.broker.bad(type(err).__name__)
            raise BusError(f"kafka bus {self.bootstrap}: publish to {topic!r} failed: {err}") from err
        self.broker.good()
        return Record(value=value, key=key, headers=hdrs, topic=meta.topic, partition=meta.partition,
                      offset=meta.offset, timestamp=meta.timestamp / 1000.0 if meta.timestamp > 0 else 0.0)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self.bootstrap, group, topics, client_id=self.client_id, security=self.security)


class _GroupWatch:
    """Our hooks into one aiokafka GroupCoordinator (private API, written against aiokafka 0.14).

    If aiokafka renames what we touch, ``start()`` fails with AttributeError
    (and tests/bus/test_kafka_recovery.py says which name), never silently.

    All requests to the group coordinator go through ``GroupCoordinator._send_req``;
    wrapping it on the instance gives us two things aiokafka does not:

    * proof of membership: a heartbeat the coordinator accepted means the group
      still counts this member (``on_member``); a request the coordinator did not
      answer means it is unreachable (``on_unreachable``);
    * OffsetFetch v2+ answers with a group-level error (NOT_COORDINATOR,
      COORDINATOR_LOAD_IN_PROGRESS right after a broker restart) come with an
      empty topic list, which aiokafka reads as "nothing committed" and then
      resets the partitions to their start. We raise the error instead, so
      aiokafka retries against a re-discovered coordinator.
    """

    def __init__(self, coordinator: Any, on_member: Callable[[], None],
                 on_unreachable: Callable[[BaseException], None]) -> None:
        self.coordinator = coordinator
        original: Callable[[Any], Awaitable[Any]] = coordinator._send_req
        coordinator._syncbus_watch = self

        async def send_req(request: Any) -> Any:
            try:
                response = await original(request)
            except KafkaError as err:
                on_unreachable(err)
                raise
            if isinstance(request, HeartbeatRequest):
                if kafka_errors.for_code(response.error_code) in (kafka_errors.NoError,
                                                                  kafka_errors.RebalanceInProgressError):
                    on_member()
            elif isinstance(request, OffsetFetchRequest):
                self._check_offset_fetch(response)
            return response

        coordinator._send_req = send_req

    def _check_offset_fetch(self, response: Any) -> None:
        code = getattr(response, "error_code", 0)
        if not code:
            return
        error_type = kafka_errors.for_code(code)
        if error_type in (kafka_errors.NotCoordinatorForGroupError, kafka_errors.GroupCoordinatorNotAvailableError):
            self.coordinator.coordinator_dead()
        raise error_type()

    @property
    def member_id(self) -> str:
        return str(self.coordinator.member_id)

    @property
    def generation(self) -> int:
        return int(self.coordinator.generation)

    def forget_coordinator(self) -> None:
        """Make the next request look the coordinator up again (a no-op if already unknown)."""
        self.coordinator.coordinator_dead()

    def request_rejoin(self) -> None:
        self.coordinator.request_rejoin()


class _Rebalance(ConsumerRebalanceListener):
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


class KafkaConsumer:
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
            _check_topic(topic)
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
        self._watch: _GroupWatch | None = None  # hooks its coordinator once it exists (see _ensure_watch)

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
            watch = _GroupWatch(coordinator, self._saw_member, self._coordinator_unreachable)
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
        if recovering is not None:
            recovering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recovering
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
            up = await _broker_answers(self.bootstrap, self.client_id, RECOVERY_RETRY, self.security)
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
                        "(state of the old one: %s)", self.group, silent, _describe(self._client))
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
            offset = await self._client.committed(tp)  # group-level errors raise (see _GroupWatch)
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

    def assignment(self) -> set[tuple[str, int]]:
        """Partitions this member owns right now (for logs, metrics and tests)."""
        return {(tp.topic, tp.partition) for tp in self._client.assignment()}


__all__ = ["KafkaBus", "KafkaConsumer", "PublishUnconfirmed", "split_bootstrap", "to_record"]
