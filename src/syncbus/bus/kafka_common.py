"""What the Kafka bus's modules share: limits, URL options, record and header conversion.

Kept apart so the bus (``kafka``), its consumers (``kafka_consumer``) and the
aiokafka hooks (``kafka_group``) import one set of names, without cycles.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl

from aiokafka import ConsumerRecord
from aiokafka import errors as kafka_errors

from ..errors import BusError
from ..record import Record
from ..units import parse_duration
from .kafka_security import URL_OPTIONS

# One logger for the whole Kafka bus (the bus, its consumers, their hooks): operators filter on it.
log = logging.getLogger("syncbus.bus.kafka")

DEFAULT_PARTITIONS = 4
TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

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
URL_OPTIONS_ALL = frozenset({"publish_timeout", *URL_OPTIONS})
REFUSED_OPTIONS = frozenset({"sasl_password", "password"})  # known, and refused with a reason by kafka_security


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


def check_topic(topic: str) -> None:
    if not TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise BusError(f"invalid Kafka topic name {topic!r}: use 1-249 of the characters a-z A-Z 0-9 . _ -")


def encode_headers(headers: Mapping[str, str] | None) -> list[tuple[str, bytes]]:
    return [(k, v.encode("utf-8")) for k, v in (headers or {}).items()]


def decode_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", errors="replace") for k, v in (headers or ())}


def to_record(msg: ConsumerRecord[bytes, bytes]) -> Record:
    """A syncbus Record from what aiokafka fetched (bytes in, str keys/headers out)."""
    return Record(
        value=msg.value if msg.value is not None else b"",
        key=msg.key.decode("utf-8", errors="replace") if msg.key is not None else None,
        headers=decode_headers(msg.headers),
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
    unknown = sorted(set(options) - URL_OPTIONS_ALL - REFUSED_OPTIONS)
    if unknown:
        raise BusError(f"kafka bus URL: unknown option(s) {', '.join(unknown)}; "
                       f"known: {', '.join(sorted(URL_OPTIONS_ALL))}")
    return bootstrap.strip("/"), options


def timeout_option(options: Mapping[str, str], name: str, default: float) -> float:
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


def is_connection_error(err: BaseException) -> bool:
    """The broker did not answer at all (as opposed to answering with an error)."""
    return isinstance(err, TimeoutError | OSError | kafka_errors.KafkaConnectionError
                      | kafka_errors.NodeNotReadyError | kafka_errors.RequestTimedOutError
                      | kafka_errors.KafkaTimeoutError)
