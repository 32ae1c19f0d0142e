"""The Kafka sink: produce each mapped record to a topic (another team's cluster, a data lake feed).

One idempotent producer (``acks=all``) per sink, shared by every route that
uses it, and ``send`` returns only once the broker acknowledged the record:
the router commits the source offset after that, so "delivered" means
"durably in the target topic". Many concurrent sends share the producer's
batches (linger ~5 ms), which is where the throughput comes from.

Classification for the retry policy: timeouts, lost connections, a missing
leader or too few in-sync replicas heal by themselves and are retried;
a record too large for the topic, an invalid topic name or a refused
authorization will fail the same way every time and go straight to the dead
letters. Anything else follows aiokafka's own ``retriable`` flag.

Secured clusters: ``tls`` and ``sasl`` (see :mod:`syncbus.bus.kafka_security`),
read once when the sink is built, so a missing CA file stops the load with
its path. A producer the cluster refuses -- wrong password, untrusted
certificate, missing client certificate -- is a permanent failure: the
records go to the dead letters with a message saying what to fix, and are
replayed from there once it is. An unreachable cluster stays retryable.

At-least-once caveat: an attempt that timed out may still be written later
(the idempotent producer keeps retrying its batch until the broker answers),
so a retried record can appear twice in the topic. Every record carries the
``Idempotency-Key`` header for consumers that must drop duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from pydantic import Field, field_validator

from syncbus.bus.kafka_security import (
    ClientSecurity,
    KafkaAuthFailed,
    KafkaSecurity,
    KafkaTlsFailed,
    diagnose,
    load_security,
)
from syncbus.errors import DeliveryError
from syncbus.sinks.base import BaseSink, Delivery, SinkConfig
from syncbus.units import Size, format_duration

log = logging.getLogger(__name__)

_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$")
_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
# Headers the sink sets itself; a config header of the same name (any case) cannot replace them.
_OWN_HEADERS = ("content-type", "idempotency-key", "x-syncbus-route", "x-syncbus-mapping-version",
                "x-syncbus-record-id", "traceparent")
# A producer batch must stay below the broker's message.max.bytes (1 MiB by default): aiokafka does
# not split a batch the broker refused, so an oversized batch would fail every record in it.
_MAX_BATCH_BYTES = 64 * 1024
# After the cluster refused us, deliveries within this many seconds get the same answer without a new
# connection each: a busy route would otherwise dead-letter one record per connect-and-diagnose round.
_REFUSAL_HOLD = 5.0
_DIAGNOSE_TIMEOUT = 5.0  # seconds the diagnosing connection of a failed connect may take, at most

RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.KafkaTimeoutError, kafka_errors.RequestTimedOutError, kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError, kafka_errors.NoBrokersAvailable, kafka_errors.NotEnoughReplicasError,
    kafka_errors.NotEnoughReplicasAfterAppendError, kafka_errors.LeaderNotAvailableError,
    kafka_errors.NotLeaderForPartitionError, kafka_errors.BrokerNotAvailableError,
    kafka_errors.KafkaStorageError, kafka_errors.UnknownTopicOrPartitionError,
)
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError, kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed, kafka_errors.AuthenticationFailedError,
    kafka_errors.SaslAuthenticationFailed, kafka_errors.InvalidRequiredAcksError,
    kafka_errors.CorruptRecordException, kafka_errors.UnsupportedVersionError,
    kafka_errors.PolicyViolationError,
)


class KafkaSinkConfig(SinkConfig, KafkaSecurity):
    """``type: kafka`` — produce each mapped record to a Kafka topic and wait for the broker's ack."""

    type: Literal["kafka"] = "kafka"
    bootstrap: str = Field(description="Brokers to bootstrap from: host:port[,host:port] (or bootstrap_env: VAR).")
    topic: str = Field(description="The topic to write to (1-249 of a-z A-Z 0-9 . _ -).")
    key: Literal["record", "none"] = Field(
        "record",
        description="record: the mapped record's key is the message key (same key, same partition, in order); "
                    "none: no key (records are spread over the partitions).")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra message headers. They cannot replace the syncbus headers (Idempotency-Key, "
                    "X-Syncbus-*, traceparent, content-type).")
    max_message_bytes: Size = Field(
        1024 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Largest record the producer sends (size, e.g. 1MiB); larger records are dead-lettered "
                    "at once. Keep it at or below the topic's max.message.bytes.")

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",")]
        if not value.strip() or any(not _HOST_PORT.match(h) for h in hosts):
            raise ValueError(f"invalid bootstrap {value!r}: expected host:port[,host:port]")
        for h in hosts:
            port = int(h.rsplit(":", 1)[1])
            if not 0 < port < 65536:
                raise ValueError(f"invalid bootstrap {value!r}: port {port} out of range")
        return ",".join(hosts)

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC.match(value) or value in (".", ".."):
            raise ValueError(f"invalid Kafka topic name {value!r}: use 1-249 of the characters a-z A-Z 0-9 . _ -")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or not name.strip():
                raise ValueError("header names must not be empty")
        return value


def new_traceparent() -> str:
    """A fresh W3C trace context (sampled), for deliveries that arrive without one."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def classify_error(exc: BaseException, where: str) -> DeliveryError:
    """The DeliveryError for what the producer raised: retryable when waiting can fix it."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"timeout waiting for the broker's acknowledgement: {where}", retryable=True)
    if isinstance(exc, PERMANENT_ERRORS):
        return DeliveryError(f"{type(exc).__name__}: {detail}: {where}", retryable=False)
    if isinstance(exc, (*RETRYABLE_ERRORS, OSError)):
        return DeliveryError(f"{type(exc).__name__}: {detail}: {where}", retryable=True)
    if isinstance(exc, kafka_errors.KafkaError):
        return DeliveryError(f"{type(exc).__name__}: {detail}: {where}", retryable=bool(exc.retriable))
    return DeliveryError(f"{type(exc).__name__}: {detail}: {where}", retryable=False)


class KafkaSink(BaseSink):
    """Produces to a Kafka topic; see :class:`KafkaSinkConfig`."""

    Config: ClassVar[type[KafkaSinkConfig]] = KafkaSinkConfig
    config: KafkaSinkConfig
    uses_payload: ClassVar[bool] = False  # sends delivery.body only: the router need not build the mapped dict
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "finance-review", "type": "kafka", "bootstrap_env": "KAFKA_BOOTSTRAP", "topic": "finance.review",
         "key": "record", "retry": {"attempts": 4, "initial": "500ms", "max": "30s"}},
        {"name": "datalake-orders", "type": "kafka", "bootstrap": "kafka-lake-1:9093,kafka-lake-2:9093",
         "topic": "lake.orders", "tls": {"ca_file": "/etc/syncbus/lake-ca.pem"},
         "sasl": {"mechanism": "SCRAM-SHA-512", "username": "syncbus", "password_env": "LAKE_KAFKA_PASSWORD"}},
    ]

    def __init__(self, config: KafkaSinkConfig | Mapping[str, Any]) -> None:
        super().__init__(config)
        config = self.config  # validated
        self.security: ClientSecurity = load_security(config, f"kafka sink {config.name!r}")
        self._refused: tuple[float, str] | None = None  # (when, message) of the cluster's last refusal
        self._producer: AIOKafkaProducer | None = None
        self._start_lock = asyncio.Lock()
        # Enqueueing one at a time: when a partition's batch is full, aiokafka parks every sender
        # in asyncio.wait until it drains, and wakes them ALL each time (with a thousand records
        # in flight, a sixth of the CPU went there). Behind a lock only one waits; the rest queue
        # cheaply, in order.
        self._enqueue = asyncio.Lock()
        self._where = f"kafka://{config.bootstrap}/{config.topic}"
        own = set(_OWN_HEADERS)
        self._base_headers: list[tuple[str, bytes]] = [
            (name, value.encode("utf-8")) for name, value in config.headers.items() if name.lower() not in own]

    async def start(self) -> None:
        """Connect now if the cluster is there; if not, ``send`` retries (a sink must not stop the node)."""
        try:
            await self._ensure_producer()
        except DeliveryError as exc:
            if exc.retryable:
                log.warning("kafka sink %s: %s; will retry on the first delivery", self.name, exc)
            else:
                log.error("kafka sink %s: %s; its records go to the dead letters until this is fixed",
                          self.name, exc)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        async with self._start_lock:
            if self._producer is not None:
                return self._producer
            refused = self._refused
            if refused is not None and time.monotonic() - refused[0] < _REFUSAL_HOLD:
                raise DeliveryError(refused[1], retryable=False)
            cfg = self.config
            producer = AIOKafkaProducer(
                bootstrap_servers=cfg.bootstrap,
                client_id=f"syncbus-sink-{cfg.name}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_batch_size=min(_MAX_BATCH_BYTES, cfg.max_message_bytes),
                max_request_size=cfg.max_message_bytes,
                request_timeout_ms=max(1000, int(cfg.timeout * 1000)),
                **self.security.kwargs,
            )
            try:
                async with asyncio.timeout(cfg.timeout):
                    await producer.start()
            except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
                await producer.stop()
                if isinstance(exc, TimeoutError):
                    raise DeliveryError(f"cannot connect within {format_duration(cfg.timeout)}: {self._where}",
                                        retryable=True) from exc
                raise await self._connect_error(exc) from exc
            self._refused = None
            self._producer = producer
            return producer

    async def _connect_error(self, exc: BaseException) -> DeliveryError:
        """Why the producer could not start: permanent when the cluster refused our credentials or TLS.

        Decided by the class :func:`diagnose` returns, never by aiokafka's
        message ("Unable to bootstrap" says nothing about the cause).
        """
        cause = await diagnose(self.config.bootstrap, self.security,
                               timeout=min(self.config.timeout, _DIAGNOSE_TIMEOUT))
        if isinstance(cause, KafkaAuthFailed):
            message = (f"{cause}; check the sink's sasl options (mechanism, username, the password in its "
                       f"variable), then replay its dead letters: {self._where}")
        elif isinstance(cause, KafkaTlsFailed):
            message = f"{cause}; fix the sink's tls options, then replay its dead letters: {self._where}"
        else:
            return DeliveryError(f"cannot connect ({exc}): {self._where}", retryable=True)
        self._refused = (time.monotonic(), message)
        return DeliveryError(message, retryable=False)

    async def close(self) -> None:
        """Flush what is batched and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def _headers(self, delivery: Delivery) -> list[tuple[str, bytes]]:
        own = set(_OWN_HEADERS)
        headers = list(self._base_headers)
        headers.extend((name, value.encode("utf-8")) for name, value in delivery.headers.items()
                       if name.lower() not in own)
        traceparent = delivery.traceparent
        if not traceparent or not _TRACEPARENT.match(traceparent):
            traceparent = new_traceparent()
        headers += [
            ("content-type", delivery.content_type.encode("utf-8")),
            ("Idempotency-Key", delivery.idempotency_key.encode("utf-8")),
            ("X-Syncbus-Route", delivery.route.encode("utf-8")),
            ("X-Syncbus-Mapping-Version", str(delivery.mapping_version).encode("ascii")),
            ("X-Syncbus-Record-Id", delivery.record_id.encode("utf-8")),
            ("traceparent", traceparent.encode("ascii")),
        ]
        return headers

    async def send(self, delivery: Delivery) -> None:
        """One attempt: produce and wait (at most ``timeout``) for the broker's acknowledgement."""
        cfg = self.config
        producer = await self._ensure_producer()
        key = delivery.key.encode("utf-8") if cfg.key == "record" and delivery.key is not None else None
        try:
            async with asyncio.timeout(cfg.timeout):
                async with self._enqueue:
                    ack = await producer.send(cfg.topic, value=delivery.body, key=key,
                                              headers=self._headers(delivery))
                await ack
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise classify_error(exc, self._where) from exc


__all__ = ["KafkaSink", "KafkaSinkConfig", "classify_error"]
