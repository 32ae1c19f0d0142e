"""Trace events: the life of one record, written in batches.

Every record produces a handful of events (received, mapped, attempts,
delivered or dead-lettered). Writing each one in its own transaction would
cost more than the delivery itself, so they are buffered and flushed by one
background task; a crash can lose the last fraction of a second of *trace*,
never a record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .aio import cancel_and_wait
from .state.store import Store

log = logging.getLogger(__name__)


class TraceRecorder:
    def __init__(self, store: Store, interval: float = 0.1, max_buffer: int = 20_000,
                 enabled: bool = True) -> None:
        self.store = store
        self.interval = interval
        self.max_buffer = max_buffer
        self.enabled = enabled
        self._buffer: list[tuple[str, str | None, str, float, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def add(self, record_id: str, stage: str, route: str | None = None, **detail: Any) -> None:
        if not self.enabled:
            return
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1  # trace is best effort; records are never dropped
            return
        self._buffer.append((record_id, route, stage, time.time(), detail))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="syncbus-trace")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        if self.dropped:
            log.warning("trace buffer full: %d trace events were not recorded (records are unaffected)",
                        self.dropped)
            self.dropped = 0
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            await asyncio.to_thread(self.store.add_trace_rows, batch)
        except Exception as exc:  # the store being busy must not stop delivery
            log.warning("could not write %d trace events: %s", len(batch), exc)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.flush()
