"""The one way records enter the bus, for push and poll sources alike.

Everything that must be true of every accepted record is done here, once:
the ``syncbus-id``, ``syncbus-received-at``, ``syncbus-source`` and
``content-type`` headers, the durable publish (a batch is published
concurrently and counts as accepted only when the bus acknowledged every
record of it), ``syncbus_records_received_total{source}``, and the
``received`` trace event that starts ``syncbus trace``. A source that
bypassed this would produce records the ledger, the trace and the metrics
cannot account for.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..bus.base import Bus
from ..errors import BusError
from ..metrics import Metrics
from ..record import H_CONTENT_TYPE, H_ID, H_RECEIVED_AT, H_SOURCE, Record
from .base import NewRecord

STAMPED = frozenset({H_ID, H_RECEIVED_AT, H_SOURCE, H_CONTENT_TYPE})
_ids = random.Random(int.from_bytes(os.urandom(16), "big"))  # seeded per process from the OS
os.register_at_fork(after_in_child=lambda: _ids.seed(int.from_bytes(os.urandom(16), "big")))


def record_id() -> str:
    """A record id shaped like :func:`syncbus.record.new_id` (time first, then 64 random bits), cheaply.

    ``new_id`` draws from ``uuid4`` (a ``getrandom`` system call and a UUID
    object per id): 1.5 % of the ingress CPU under load. An id must be unique,
    not secret (it is shown in every answer and trace), so the random half
    comes from a Mersenne Twister seeded from the OS at start -- every
    process (``--workers``, re-exec'd) seeds its own.
    """
    return f"{time.time_ns():016x}{_ids.getrandbits(64):016x}"


class TraceSink(Protocol):
    """What the publisher needs of :class:`syncbus.tracing.TraceRecorder`."""

    def add(self, record_id: str, stage: str, route: str | None = None, **detail: Any) -> None: ...


class PublishError(BusError):
    """Not every record of a batch reached the bus. Some may have: a retry can duplicate, never lose."""

    def __init__(self, source: str, failed: int, total: int, cause: BaseException) -> None:
        self.source = source
        self.failed = failed
        self.total = total
        self.cause = cause
        super().__init__(f"source {source}: {failed} of {total} records not acknowledged by the bus: "
                         f"{type(cause).__name__}: {cause}")


class Publisher:
    """Stamps, publishes, counts and traces records for every source of a node."""

    def __init__(self, bus: Bus, metrics: Metrics, trace: TraceSink) -> None:
        self.bus = bus
        self.metrics = metrics
        self.trace = trace

    def stamp(self, source: str, record: NewRecord, received_at: float) -> dict[str, str]:
        """The headers a record goes out with; the syncbus ones win over the source's own."""
        headers = {k: v for k, v in record.headers.items() if k.lower() not in STAMPED}
        headers[H_ID] = record.id or record_id()
        headers[H_RECEIVED_AT] = f"{received_at:.6f}"
        headers[H_SOURCE] = source
        headers[H_CONTENT_TYPE] = record.content_type
        return headers

    async def publish(self, source: str, topic: str, records: Sequence[NewRecord]) -> list[Record]:
        """Publish a batch durably; returns the published records (with partition and offset).

        All records are sent at once and awaited together; if any fails,
        :class:`PublishError` is raised after every send settled, so the
        caller (the poll runner) knows the batch as a whole is not accepted.
        Only accepted batches are counted and traced.
        """
        if not records:
            return []
        now = time.time()
        if len(records) == 1:  # the HTTP ingress: no gather (a task and a future per record)
            record = records[0]
            try:
                one = await self.bus.publish(topic, record.value, record.key, self.stamp(source, record, now))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise PublishError(source, 1, 1, exc) from exc
            self.accepted(source, [one])
            return [one]
        stamped = [(r, self.stamp(source, r, now)) for r in records]
        results = await asyncio.gather(
            *(self.bus.publish(topic, r.value, r.key, headers) for r, headers in stamped), return_exceptions=True)
        errors = [res for res in results if isinstance(res, BaseException)]
        if errors:
            cancelled = next((e for e in errors if isinstance(e, asyncio.CancelledError)), None)
            if cancelled is not None:
                raise cancelled
            raise PublishError(source, len(errors), len(records), errors[0])
        published: list[Record] = [res for res in results if isinstance(res, Record)]
        self.accepted(source, published)
        return published

    def accepted(self, source: str, published: Sequence[Record]) -> None:
        """Count and trace records that are on the bus (also for publishes made elsewhere, e.g. idempotent)."""
        if not published:
            return
        self.metrics.received_for(source).inc(len(published))
        for rec in published:
            self.trace.add(rec.id, "received", None, source=source, topic=rec.topic, partition=rec.partition,
                           offset=rec.offset, key=rec.key)

    async def publish_one(self, source: str, topic: str, value: bytes, *, key: str | None = None,
                          content_type: str = "application/json", headers: Mapping[str, str] | None = None,
                          record_id: str | None = None) -> Record:
        """One record (the HTTP ingress path): the same stamps, metric and trace as a batch.

        ``record_id`` lets the caller fix the id first (ingress claims its
        Idempotency-Key with it before publishing). Raises :class:`PublishError`.
        """
        record = NewRecord(value=value, key=key, content_type=content_type, headers=dict(headers or {}),
                           id=record_id)
        [published] = await self.publish(source, topic, [record])
        return published
