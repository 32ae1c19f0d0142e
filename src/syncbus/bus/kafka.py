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
import os
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from ..errors import BusError
from ..record import H_ID, Record
from . import kafka_logging
from .kafka_common import (
    DEFAULT_PARTITIONS,
    DEFAULT_PUBLISH_TIMEOUT,
    LATE_WRITE_REPORT_DELAY,
    TOPIC_ALREADY_EXISTS,
    PublishUnconfirmed,
    check_topic,
    encode_headers,
    is_connection_error,
    log,
    split_bootstrap,
    timeout_option,
    to_record,
)
from .kafka_consumer import KafkaConsumer
from .kafka_logging import Condition
from .kafka_security import connect_error, from_url_options


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
        self.publish_timeout = publish_timeout or timeout_option(options, "publish_timeout",
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
            check_topic(topic)
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
        check_topic(topic)
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
                                           headers=encode_headers(hdrs))
        except TimeoutError:
            self.broker.bad(f"publish to {topic!r} timed out")
            raise BusError(f"kafka bus {self.bootstrap}: publish to {topic!r} not accepted within {limit:g}s "
                           f"(no topic metadata, or the producer buffer is full); the record was not written") from None
        except KafkaError as err:
            if is_connection_error(err):
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
            if is_connection_error(err):
                self.broker.bad(type(err).__name__)
            raise BusError(f"kafka bus {self.bootstrap}: publish to {topic!r} failed: {err}") from err
        self.broker.good()
        return Record(value=value, key=key, headers=hdrs, topic=meta.topic, partition=meta.partition,
                      offset=meta.offset, timestamp=meta.timestamp / 1000.0 if meta.timestamp > 0 else 0.0)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self.bootstrap, group, topics, client_id=self.client_id, security=self.security)


__all__ = ["KafkaBus", "KafkaConsumer", "PublishUnconfirmed", "split_bootstrap", "to_record"]
