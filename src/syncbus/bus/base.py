"""The Bus protocol both implementations follow.

Semantics (the same on Kafka and on the embedded log):

* ``publish`` returns only once the record is durable (Kafka ``acks=all``;
  SQLite transaction committed), with topic/partition/offset filled in.
* A consumer belongs to a group; each group sees every record of its topics.
  Offsets are committed only for records the caller marked ``done`` and only
  up to the first record that is not done yet (contiguous per partition), so
  a crash redelivers everything not finished: at-least-once.
* Records with the same key land in the same partition and are fetched in
  order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import BusError
from ..record import Record


@runtime_checkable
class Consumer(Protocol):
    async def start(self) -> None:
        """Join the group and get partitions assigned."""

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds; [] if none."""

    def done(self, record: Record) -> None:
        """Mark a fetched record finished (delivered, skipped or dead-lettered)."""

    async def commit(self) -> None:
        """Commit, per partition, the offsets of the contiguous finished records."""

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet committed per (topic, partition) this consumer owns."""

    async def stop(self) -> None:
        """Commit what is finished and leave the group. Unfinished records are redelivered later."""


@dataclass(frozen=True, slots=True)
class Published:
    """Where an idempotent publish put the record -- or where the first one with the same key did."""

    record_id: str
    topic: str
    partition: int
    offset: int
    duplicate: bool
    fingerprint: str = ""


@runtime_checkable
class AtomicIdempotency(Protocol):
    """A bus that can claim an idempotency key and append the record in one transaction."""

    async def publish_once(self, topic: str, value: bytes, key: str | None, headers: Mapping[str, str], *,
                           scope: str, idem_key: str, fingerprint: str) -> Published:
        """Raises :class:`syncbus.errors.IdempotencyConflict` for the same key with another fingerprint."""


@runtime_checkable
class Bus(Protocol):
    url: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ping(self) -> bool:
        """True when the bus is reachable (readiness)."""

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics if they do not exist (no-op where topics are implicit)."""

    async def publish(self, topic: str, value: bytes, key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Record:
        """Append durably; returns the record with partition and offset set."""

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        """A consumer in ``group`` for ``topics`` (not started yet)."""


def parse_bus_url(url: str) -> tuple[str, str]:
    """Split ``embedded:///path`` or ``kafka://h:p,h:p`` into (scheme, target).

    Relative embedded paths (``embedded://./var/syncbus.db``) are kept relative
    to the working directory, as a user would expect.
    """
    if url.startswith("kafka://"):
        target = url[len("kafka://"):].strip("/")
        if not target:
            raise BusError(f"bus URL {url!r}: kafka:// needs host:port[,host:port]")
        return "kafka", target
    if url.startswith("embedded://"):
        target = url[len("embedded://"):]
        if not target:
            raise BusError(f"bus URL {url!r}: embedded:// needs a database path")
        return "embedded", target
    raise BusError(f"bus URL {url!r}: expected embedded:///path/to/syncbus.db or kafka://host:port")
