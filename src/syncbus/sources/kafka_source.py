"""``kafka``: read an existing topic of any Kafka cluster onto the syncbus bus, at least once.

The hand-over between two clusters (theirs, and our bus -- Kafka or the
embedded log) is where records get lost or doubled, so the rules are:

* **Our position is the cursor.** The cursor is the next offset of every
  partition of ``from_topic`` (``{"topic": ..., "offsets": {"0": 42, ...}}``),
  stored by the poll runner only after our bus acknowledged every record
  before it. A crash re-reads from the stored cursor: duplicates possible,
  losses not. Re-read messages keep their record ids (derived from topic,
  partition and offset), so their deliveries carry the same idempotency key.
* **The group mirrors it.** In :meth:`KafkaSource.committed` -- only after the
  ack and the stored cursor -- the same offsets are committed to ``group`` in
  the foreign cluster, so its operators see our lag with their own tools
  (``kafka-consumer-groups --describe``), and a source whose cursor was never
  stored (new, or moved to a new state store) starts from the group's
  committed offsets, else from ``start``. A failed commit is logged, not
  fatal: the cursor is what counts, and the next commit carries the newer offsets.
* **No group membership.** The consumer assigns itself every partition and
  never joins the group: each slot runs on one node (the runner claims it),
  so there is nothing to balance, and no rebalance can take partitions away
  mid-page. The group must therefore be syncbus's own -- not one a running
  consumer application is a member of, or its commits are refused.
* **Only committed data.** ``read_committed``: records of aborted
  transactions never reach our bus.
* **The topic must exist.** It is looked up in the cluster's full metadata;
  asking for the topic by name would create it on clusters with
  ``auto.create.topics.enable``.

* **A refusal is not an outage.** ``tls`` and ``sasl`` reach secured
  clusters (:mod:`syncbus.bus.kafka_security`; the files are read when the
  source is built). A consumer the cluster refuses -- wrong password,
  untrusted certificate -- raises :class:`KafkaSourceRefused` (fix, then
  the next slot runs); only an unreachable cluster is
  :class:`KafkaSourceUnavailable` and retried with backoff.

A run reads up to the end offsets the partitions had when its page was
asked for, in pages of ``batch_size`` records; what arrives meanwhile is the
next run's. A topic has no snapshot, so a full load (``syncbus sync --full``)
reads from the group's committed offsets (else ``start``), like a first run:
to read the whole topic again, give the source a new ``group`` with
``start: earliest`` for that load. Payloads: see :mod:`.kafka_source_decode`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from pydantic import Field, field_validator, model_validator

from ..bus.kafka_security import ClientSecurity, KafkaAuthFailed, KafkaSecurity, KafkaTlsFailed, diagnose, load_security
from ..errors import SyncbusError
from ..units import Duration
from .base import NewRecord, PollBatch, PollSource, PollSourceConfig, SourceConfig
from .kafka_source_decode import Decoder, Message
from .poller import PollRefused

log = logging.getLogger(__name__)

_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$")
METADATA_MAX_AGE = 10.0  # seconds before the partitions of the topic are looked up again (new partitions)
COMMIT_TIMEOUT = 10.0    # seconds one commit to the foreign group may take; aiokafka alone retries forever
REQUEST_TIMEOUT = 30.0
DIAGNOSE_TIMEOUT = 5.0  # seconds the diagnosing connection of a failed start may take, at most
# Kafka's answers that waiting will not change: fix the config or the cluster's ACLs.
REFUSALS: tuple[type[BaseException], ...] = (
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError, kafka_errors.AuthenticationFailedError,
    kafka_errors.SaslAuthenticationFailed, kafka_errors.InvalidTopicError, kafka_errors.UnsupportedVersionError,
)


class KafkaSourceError(SyncbusError):
    """Base of what the ``kafka`` source raises."""


class KafkaSourceUnavailable(KafkaSourceError):
    """The foreign cluster cannot be reached or answered with a passing error: retried with backoff."""


class KafkaSourceRefused(KafkaSourceError, PollRefused):
    """The topic does not exist, or the cluster refuses us (ACLs, authentication): fix, then the next slot runs."""


class KafkaSourceConfig(PollSourceConfig, KafkaSecurity):
    """``type: kafka`` -- which cluster and topic to read, as which group, in which payload format."""

    type: Literal["kafka"] = "kafka"
    bootstrap: str = Field(description="Brokers of the cluster to read: host:port[,host:port] (or bootstrap_env: "
                                       "VAR). May be the cluster of the syncbus bus or any other.")
    from_topic: str = Field(description="The existing topic to read (theirs); `topic` is the bus topic the "
                                        "records go to (ours).")
    group: str | None = Field(None, description="Consumer group the read offsets are committed to in that cluster "
                                                "(default `syncbus.source.<name>`); syncbus's own, never joined.")
    format: Literal["json", "xml", "csv"] = Field(
        "json", description="Message payload: json or xml (one record per message, published as is), csv (lines "
                            "without a header named by `columns`, one record per line, published as JSON objects).")
    columns: list[str] | None = Field(None, description="csv: the column names, in order (required for csv).")
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv: the cell delimiter, one character.")
    encoding: str = Field("utf-8", description="csv: the text encoding of the messages (utf-8, gbk, gb18030, ...).")
    start: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a source with no stored cursor and no committed group offsets begins: "
                                "earliest (everything the topic still holds) or latest (only what comes next).")
    fetch_wait: Duration = Field(2.0, gt=0, le=60, description="Longest wait for the messages of one page that the "
                                                                "end offsets say exist (duration).")

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",")]
        if not value.strip() or any(not _HOST_PORT.match(h) or not 0 < int(h.rsplit(":", 1)[1]) < 65536
                                    for h in hosts):
            raise ValueError(f"invalid bootstrap {value!r}: expected host:port[,host:port]")
        return ",".join(hosts)

    @field_validator("from_topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC.match(value) or value in (".", ".."):
            raise ValueError(f"invalid Kafka topic name {value!r}: use 1-249 of the characters a-z A-Z 0-9 . _ -")
        return value

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @model_validator(mode="after")
    def _csv_columns(self) -> KafkaSourceConfig:
        if self.format == "csv" and not self.columns:
            raise ValueError("format csv needs `columns`: the messages carry no header line")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns names a column twice: {self.columns}")
        return self

    @property
    def group_id(self) -> str:
        return self.group or f"syncbus.source.{self.name}"


def _cursor_offsets(cursor: Any, topic: str) -> dict[int, int] | None:
    """The offsets of a stored cursor, if it is one of ours for ``topic``."""
    if not isinstance(cursor, Mapping) or cursor.get("topic") != topic or not isinstance(cursor.get("offsets"),
                                                                                          Mapping):
        return None
    try:
        return {int(p): int(o) for p, o in cursor["offsets"].items()}
    except (TypeError, ValueError):
        return None


class KafkaSource(PollSource):
    """Read an existing topic of any Kafka cluster (JSON, XML or CSV messages) onto the bus, at least once.

    Offsets are the cursor: stored once our bus acknowledged the records,
    then committed to the source's own `group` in that cluster (for its
    operators, and as the starting point of a source without a stored
    cursor). The record key is the message key; the record id is derived
    from topic, partition and offset, so a message read twice is delivered
    with the same idempotency key. Works with the embedded bus (a foreign
    topic into the embedded log) and with a Kafka bus. A message that cannot
    be read as `format` is dead-lettered by the routes, naming topic,
    partition and offset.
    """

    Config: ClassVar[type[SourceConfig]] = KafkaSourceConfig
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "beta"
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "sap-idocs", "type": "kafka", "bootstrap_env": "SAP_KAFKA", "from_topic": "sap.idoc.orders",
         "topic": "erp.idocs", "format": "xml", "interval": "1s"},
        {"name": "shop-orders", "type": "kafka", "bootstrap": "kafka-shop-1:9092,kafka-shop-2:9092",
         "from_topic": "orders", "topic": "shop.orders", "group": "syncbus-shop-orders", "interval": "2s",
         "batch_size": 1000},
        {"name": "legacy-stock", "type": "kafka", "bootstrap_env": "LEGACY_KAFKA", "from_topic": "stock.csv",
         "topic": "wms.stock", "format": "csv", "columns": ["sku", "warehouse", "qty"], "encoding": "gbk",
         "schedule": "*/5 * * * *", "timezone": "Asia/Shanghai", "start": "latest"},
        {"name": "sap-deliveries", "type": "kafka", "bootstrap": "sap-kafka-1.corp:9094,sap-kafka-2.corp:9094",
         "from_topic": "sap.delivery.outbound", "topic": "erp.deliveries", "group": "syncbus-sap-deliveries",
         "tls": {"ca_file": "/etc/syncbus/sap-kafka-ca.pem"},
         "sasl": {"mechanism": "SCRAM-SHA-512", "username": "syncbus", "password_env": "SAP_KAFKA_PASSWORD"},
         "interval": "2s"},
    ]
    config: KafkaSourceConfig

    def __init__(self, config: SourceConfig | Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        self.security: ClientSecurity = load_security(cfg, f"kafka source {cfg.name!r}")
        self.decoder = Decoder(source=cfg.name, format=cfg.format, columns=tuple(cfg.columns or ()),
                               delimiter=cfg.delimiter, encoding=cfg.encoding)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._looked_up = 0.0
        self._at: dict[int, int] = {}  # where the consumer stands, per partition (next offset it hands out)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        cfg = self.config
        consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap, group_id=cfg.group_id, client_id=f"syncbus-source-{cfg.name}",
            enable_auto_commit=False, auto_offset_reset="earliest",  # a position gone by retention: the oldest kept
            isolation_level="read_committed", request_timeout_ms=int(REQUEST_TIMEOUT * 1000),
            max_partition_fetch_bytes=1024 * 1024, fetch_max_bytes=8 * 1024 * 1024, **self.security.kwargs)
        try:
            await consumer.start()
        except KafkaError as exc:
            await _stop_quietly(consumer)
            # aiokafka says "Unable to bootstrap" whatever the cause: ask diagnose, and go by the class it returns.
            cause = await diagnose(cfg.bootstrap, self.security, timeout=DIAGNOSE_TIMEOUT)
            if isinstance(cause, KafkaAuthFailed | KafkaTlsFailed):
                hint = ("; check the source's sasl options (mechanism, username, the password in its variable)"
                        if isinstance(cause, KafkaAuthFailed) else "")
                raise KafkaSourceRefused(f"source {self.name!r} (topic {cfg.from_topic!r}): {cause}{hint}") from exc
            raise KafkaSourceUnavailable(f"{self._where()}: cannot connect: {exc}") from exc
        except BaseException:
            await _stop_quietly(consumer)
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._partitions = []
        self._at = {}
        self._looked_up = 0.0
        if consumer is not None:
            await _stop_quietly(consumer)

    async def check(self) -> bool:
        return self._consumer is not None

    # -- polling -----------------------------------------------------------------------

    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        await self.start()
        try:
            return await self._poll(cursor, limit)
        except KafkaSourceError:
            raise
        except REFUSALS as exc:
            raise KafkaSourceRefused(f"{self._where()}: {type(exc).__name__}: {exc}") from exc
        except (KafkaError, OSError) as exc:
            raise KafkaSourceUnavailable(f"{self._where()}: {type(exc).__name__}: {exc}") from exc

    async def _poll(self, cursor: Any | None, limit: int) -> PollBatch:
        consumer = self._consumer
        assert consumer is not None
        tps = await self._assigned(consumer)
        await self._position(consumer, tps, cursor)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        records: list[NewRecord] = []
        pending = [tp for tp in tps if self._at[tp.partition] < ends[tp]]
        deadline = time.monotonic() + self.config.fetch_wait
        while pending and len(records) < limit and (left := deadline - time.monotonic()) > 0:
            fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await consumer.getmany(
                *pending, timeout_ms=max(1, int(left * 1000)), max_records=limit - len(records))
            for tp, messages in fetched.items():
                for msg in messages:
                    rows = self.decoder.records(Message(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                                        msg.timestamp))
                    if len(records) >= limit or (records and len(records) + len(rows) > limit):
                        consumer.seek(tp, msg.offset)  # the page is full: the next poll starts here
                        break
                    records.extend(rows)
            for tp in pending:  # the consumer's position also steps over transaction markers
                self._at[tp.partition] = await consumer.position(tp)
            pending = [tp for tp in pending if self._at[tp.partition] < ends[tp]]
        out: Any = {"topic": self.config.from_topic,
                    "offsets": {str(tp.partition): self._at[tp.partition] for tp in tps}}
        if not records and out == cursor:
            out = cursor
        more = any(self._at[tp.partition] < ends[tp] for tp in tps)
        return PollBatch(records=records, cursor=out, more=more)

    async def _assigned(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Every partition of the topic, assigned to us; looked up again now and then (new partitions)."""
        if self._partitions and time.monotonic() - self._looked_up < METADATA_MAX_AGE:
            return self._partitions
        topic = self.config.from_topic
        # All topics, on purpose: a metadata request naming the topic creates it where auto-creation is on.
        cluster = await consumer._client.fetch_all_metadata()
        if topic in cluster.unauthorized_topics:
            raise KafkaSourceRefused(f"{self._where()}: not authorized to read topic {topic!r}")
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise KafkaSourceRefused(f"{self._where()}: topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if tps != self._partitions:
            consumer.assign(tps)  # forgets every position: all are set again below
            self._at = {}
            self._partitions = tps
        self._looked_up = time.monotonic()
        return tps

    async def _position(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], cursor: Any | None) -> None:
        """Seek every partition whose position is not the cursor's (a new run, another node ran meanwhile)."""
        offsets = _cursor_offsets(cursor, self.config.from_topic)
        if offsets is None and cursor is not None:
            log.warning("%s: the stored cursor is not for this topic (the options changed?); starting from the "
                        "group's committed offsets, else %s", self._where(), self.config.start)
        for tp in tps:
            wanted = (offsets or {}).get(tp.partition)
            if wanted is None:  # no cursor yet, or a partition added since
                wanted = await self._initial(consumer, tp)
            if self._at.get(tp.partition) != wanted:
                consumer.seek(tp, wanted)
                self._at[tp.partition] = wanted

    async def _initial(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        committed = await consumer.committed(tp)
        if committed is not None and committed >= 0:
            return int(committed)
        if self.config.start == "latest":
            return int((await consumer.end_offsets([tp]))[tp])
        return int((await consumer.beginning_offsets([tp]))[tp])

    async def committed(self, batch: PollBatch) -> None:
        """The batch is on our bus and its cursor stored: mirror the offsets in the foreign group."""
        consumer = self._consumer
        offsets = _cursor_offsets(batch.cursor, self.config.from_topic)
        if consumer is None or not offsets:
            return
        assigned = set(self._partitions)
        topic = self.config.from_topic
        commit = {tp: off for p, off in offsets.items() if (tp := TopicPartition(topic, p)) in assigned}
        try:
            await asyncio.wait_for(consumer.commit(commit), COMMIT_TIMEOUT)
        except (KafkaError, TimeoutError) as exc:
            log.warning("%s: offsets not committed to group %s (the stored cursor stands; the next commit carries "
                        "them): %s: %s", self._where(), self.config.group_id, type(exc).__name__, exc)

    def later(self, stored: Any | None, seen: Any | None) -> Any | None:
        """Partition by partition, the further offset (a full load ending beside a running node)."""
        topic = self.config.from_topic
        a, b = _cursor_offsets(stored, topic), _cursor_offsets(seen, topic)
        if a is None or b is None:
            return seen if b is not None or a is None else stored
        merged = {p: max(a.get(p, 0), b.get(p, 0)) for p in sorted(a.keys() | b.keys())}
        return {"topic": topic, "offsets": {str(p): o for p, o in merged.items()}}

    def _where(self) -> str:
        return f"source {self.name!r}: kafka {self.config.bootstrap} topic {self.config.from_topic!r}"


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer; aiokafka may re-raise the CancelledError of its own helper task on stop."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception as exc:
        log.debug("kafka source consumer did not stop cleanly: %s", exc)
