"""Turning a failure into a dead letter: the store, the dead-letter topic, metrics and trace.

The store is the system of record (what ``dlq list`` and the API read); the
dead-letter topic ``syncbus.dlq.<route>`` carries the same record on the bus
so other tools (Kafka consumers, Connect sinks) can watch failures too.
"""

from __future__ import annotations

import asyncio
import logging

from ..bus.base import Bus
from ..metrics import Metrics
from ..record import Record
from ..state.models import DeadLetter
from ..state.store import Store
from ..tracing import TraceRecorder

log = logging.getLogger(__name__)

# DESIGN §8 labels dead letters by schema, mapping or delivery; a payload that
# cannot even be decoded is a schema problem for the person fixing it.
METRIC_REASON = {"decode": "schema", "schema": "schema", "mapping": "mapping", "delivery": "delivery"}


def dlq_topic(route: str) -> str:
    return f"syncbus.dlq.{route}"


class DeadLetterWriter:
    def __init__(self, store: Store, bus: Bus, metrics: Metrics, trace: TraceRecorder,
                 publish_topic: bool = True) -> None:
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.trace = trace
        self.publish_topic = publish_topic
        self._gauged: set[str] = set()  # routes the pending gauge has a series for
        self._refresh: asyncio.Task[None] | None = None

    async def write(self, record: Record, *, route: str, version: int, reason: str, error: str,
                    attempts: int = 1, sink: str | None = None) -> str:
        """Persist the dead letter; returns its id. Raises if the store cannot take it.

        The caller commits the record's offset only after this returns, so a
        store outage stalls the route instead of losing the record.
        """
        dl = DeadLetter.from_record(record, route=route, reason=reason, error=error, attempts=attempts,
                                    mapping_version=version, sink=sink)
        dl_id = await asyncio.to_thread(self.store.add, dl)
        self.metrics.dead_for(route, METRIC_REASON.get(reason, reason)).inc()
        # one line per dead letter for the log pipeline; never the payload (personal data)
        log.warning("dead letter %s: route=%s reason=%s record=%s key=%s sink=%s attempts=%d%s", dl_id, route,
                    reason, record.id, record.key, sink or "-", attempts,
                    f" replay_of={dl.replay_of}" if dl.replay_of else "")
        self.pending_changed()
        self.trace.add(record.id, "dead_lettered", route, reason=reason, error=error, attempts=attempts,
                       sink=sink, dead_letter=dl_id)
        if self.publish_topic:
            headers = {**record.headers, "syncbus-dlq-id": dl_id, "syncbus-dlq-reason": reason,
                       "syncbus-dlq-error": error[:1000], "syncbus-dlq-source-topic": record.topic,
                       "syncbus-dlq-source-offset": f"{record.partition}:{record.offset}"}
            try:
                await self.bus.publish(dlq_topic(route), record.value, record.key, headers)
            except Exception as exc:  # the store has it; the topic copy is a convenience
                log.warning("dead letter %s stored but not published to %s: %s", dl_id, dlq_topic(route), exc)
        return dl_id

    def pending_changed(self) -> None:
        """Recount pending letters soon (one query however many changes arrive meanwhile)."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_soon())

    async def _refresh_soon(self) -> None:
        await asyncio.sleep(0.05)
        try:
            await self.refresh_pending()
        except Exception as exc:
            log.debug("pending dead letters not recounted: %s", exc)

    async def refresh_pending(self) -> None:
        counts, oldest = await asyncio.to_thread(self.store.pending_summary)
        gauge = self.metrics.dead_letters_pending
        for route in self._gauged - counts.keys():  # every letter replayed, discarded or resolved
            gauge.labels(route).set(0)
            self.metrics.oldest_pending.labels(route).set(0)
        for route, n in counts.items():
            gauge.labels(route).set(n)
            self.metrics.oldest_pending.labels(route).set(oldest[route])
        self._gauged |= counts.keys()
