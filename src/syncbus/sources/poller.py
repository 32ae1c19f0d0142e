"""The poll runner: schedule → claim the slot → poll pages → publish → store the cursor.

After Apache Camel's ScheduledPollConsumer, with the guarantees an ESB needs:

* **Cursor after the ack.** Each page is published as a batch; the cursor
  after it is stored only once the bus acknowledged every record of the
  page, then the source's ``committed`` hook runs. A crash anywhere re-polls
  from the last stored cursor: duplicates possible, losses not.
* **Backoff, not crash.** A failing poll (the ERP database is down) is
  retried with exponential backoff (``retry.initial`` doubling to
  ``retry.max``) until the next slot would start; the cursor does not move,
  ``syncbus_source_up{source}`` is 0, and ``status()`` says why (for
  ``/readyz`` and the console). The next slot starts afresh.
* **One run per slot across nodes.** The runner claims the slot in the
  shared store before running it, renews the claim while it runs, and gives
  it back if stopped mid-run; a node that sees a slot held by another waits
  for it to finish or for the claim to go stale (that node died).
* **Missed runs.** At start the latest due slot is claimed like any other:
  if it never ran (syncbus was down, or the source is new), it runs at once.
  A run that lasts past several slots is followed by one run, not a backlog.
  A slot older than one some node already claimed is never run: with clocks
  a little apart, a node must not run the slot before the one its peer just ran.
* **A lost claim stops the run.** If the renewal finds the claim taken over
  (this node stalled past the lease and another one took the slot), the run
  is cancelled: two nodes must not run one slot side by side.
* **Refused, not down.** A :class:`PollRefused` (the system answered "no":
  HTTP 4xx, an unknown topic) fails the slot at once instead of retrying
  until the next slot; the next slot tries again (a fixed config may have
  been reloaded meanwhile).
* **The loop survives.** An unexpected error in the loop itself is logged
  and the loop goes on with the next slot: a poll source never stops
  polling silently.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..aio import cancel_all, cancel_and_wait
from ..errors import SyncbusError
from ..metrics import Metrics
from .base import PollBatch, PollSource
from .publisher import Publisher
from .schedule import Schedule, schedule_for

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DEFAULT_LEASE = 120.0
LOOP_ERROR_PAUSE = 1.0  # seconds after an unexpected error in the schedule loop, so it cannot spin


class PollRefused(SyncbusError):
    """The polled system answered, and said no (HTTP 4xx, a missing topic): repeating will not help.

    Source types raise a subclass; the runner then fails the slot at once
    (cursor kept, error reported) rather than retrying until the next slot.
    """


class Checkpoints(Protocol):
    """What the runner needs of the state store (``syncbus.state.checkpoints.CheckpointStore``)."""

    def get_checkpoint(self, source: str) -> Any | None: ...

    def put_checkpoint(self, source: str, cursor: Any) -> None: ...

    def merge_checkpoint(self, source: str, cursor: Any, later: Callable[[Any | None, Any], Any]) -> Any: ...

    def claim_slot(self, source: str, slot: datetime, node: str, *, lease: float = ...) -> bool: ...

    def renew_slot(self, source: str, slot: datetime, node: str) -> bool: ...

    def release_slot(self, source: str, slot: datetime, node: str) -> bool: ...

    def finish_slot(self, source: str, slot: datetime, ok: bool, detail: str = "") -> None: ...

    def last_slot(self, source: str) -> datetime | None: ...

    def slots(self, source: str, limit: int = ...) -> list[Any]: ...


def default_node() -> str:
    """This process, as slot claims name it: unique per process, readable in ``status()``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RunResult:
    records: int
    pages: int
    cursor: Any


class PollRunner:
    """Runs one poll source on its schedule until stopped; also does one-off and full runs."""

    def __init__(self, source: PollSource, publisher: Publisher, store: Checkpoints, metrics: Metrics, *,
                 node: str | None = None, clock: Clock = utcnow, lease: float = DEFAULT_LEASE) -> None:
        cfg = source.config
        self.source = source
        self.name = source.name
        self.publisher = publisher
        self.store = store
        self.metrics = metrics
        self.node = node or default_node()
        self.clock = clock
        self.lease = lease
        self.schedule: Schedule = schedule_for(cfg.schedule, cfg.timezone, cfg.interval)
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._running_slot: datetime | None = None
        # status
        self.state = "stopped"
        self.up: bool | None = None
        self.last_run_at: datetime | None = None
        self.last_ok_at: datetime | None = None
        self.last_error: str | None = None
        self.next_run_at: datetime | None = None
        self.last_slot: datetime | None = None
        self.failures = 0
        self.records = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the schedule loop (idempotent). The source opens on its first run: a system that is
        down at start is a failing poll (retried, reported), not a node that cannot start."""
        if self._task is not None:
            return
        self.state = "waiting"
        self._task = asyncio.create_task(self._loop(), name=f"syncbus-poll-{self.name}")

    async def stop(self) -> None:
        """Stop the loop (a run in progress is abandoned: its claim is given back), close the source."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        slot, self._running_slot = self._running_slot, None
        if slot is not None:
            try:
                await asyncio.to_thread(self.store.release_slot, self.name, slot, self.node)
            except Exception as exc:
                log.warning("source %s: could not give back slot %s: %s", self.name, slot.isoformat(), exc)
        if self._started:
            self._started = False
            await self.source.stop()
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """The runner's state for ``/readyz``, the console and ``syncbus sync``."""
        def iso(dt: datetime | None) -> str | None:
            return None if dt is None else dt.isoformat()

        return {"source": self.name, "type": self.source.config.type, "schedule": self.schedule.describe(),
                "state": self.state, "up": self.up, "failures": self.failures, "last_error": self.last_error,
                "last_run_at": iso(self.last_run_at), "last_ok_at": iso(self.last_ok_at),
                "last_slot": iso(self.last_slot), "next_run_at": iso(self.next_run_at), "records": self.records,
                "node": self.node}

    # -- runs ------------------------------------------------------------------------

    async def run(self, *, full: bool | None = None) -> RunResult:
        """One run from the stored cursor, every page; raises when a poll or a publish fails.

        ``full=None``: a full load when nothing is stored yet (a new source).
        """
        await self._open()
        cursor = await asyncio.to_thread(self.store.get_checkpoint, self.name)
        if full is None:
            full = cursor is None
        return await self._pages(None if full else cursor, full=full, save=True)

    async def run_full(self) -> RunResult:
        """A full load ignoring the cursor (``syncbus sync --full``); then the cursor becomes the furthest seen.

        Safe beside a running node: pages are not checkpointed one by one (the
        node's own cursor stays), and the final merge never moves the stored
        cursor back (``PollSource.later``).
        """
        await self._open()
        result = await self._pages(None, full=True, save=False)
        stored = await asyncio.to_thread(self.store.merge_checkpoint, self.name, result.cursor, self.source.later)
        return RunResult(result.records, result.pages, stored)

    async def _open(self) -> None:
        if not self._started:
            await self.source.start()
            self._started = True

    async def _pages(self, cursor: Any, *, full: bool, save: bool) -> RunResult:
        limit = self.source.config.batch_size
        records = pages = 0
        while True:
            batch: PollBatch = await self.source.poll(cursor, full=full, limit=limit)
            if not isinstance(batch, PollBatch):
                raise TypeError(f"source {self.name}: poll() returned {type(batch).__name__}, not a PollBatch")
            progressed = bool(batch.records) or batch.cursor != cursor
            if batch.records:
                await self.publisher.publish(self.name, self.source.topic, batch.records)
            if progressed:
                if save:
                    await asyncio.to_thread(self.store.put_checkpoint, self.name, batch.cursor)
                await self.source.committed(batch)
            records += len(batch.records)
            self.records += len(batch.records)
            pages += 1
            cursor = batch.cursor
            if not batch.more:
                return RunResult(records, pages, cursor)
            if not progressed:
                log.warning("source %s: poll says more but returned nothing new; ending this run", self.name)
                return RunResult(records, pages, cursor)

    # -- the schedule ------------------------------------------------------------------

    async def _loop(self) -> None:
        try:
            self.last_slot = await asyncio.to_thread(self.store.last_slot, self.name)
        except Exception as exc:
            log.warning("source %s: cannot read its last run: %s", self.name, exc)
        slot = self.schedule.latest(self.clock())  # due now unless it already ran: the claim decides
        while True:
            self.next_run_at = slot
            following = self.schedule.following(slot)
            try:
                await self._sleep_until(slot)
                if await self._claim(slot, following):
                    await self._run_slot(slot, following)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the polling for good
                log.exception("source %s: schedule loop error at slot %s; going on with the next slot",
                              self.name, slot.isoformat())
                self._failed(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(LOOP_ERROR_PAUSE)
            slot = max(following, self.schedule.latest(self.clock()))

    async def _sleep_until(self, when: datetime) -> None:
        delay = (when - self.clock()).total_seconds()
        if delay > 0:
            self.state = "waiting"
            await asyncio.sleep(delay)

    async def _claim(self, slot: datetime, deadline: datetime) -> bool:
        """Claim ``slot``; while another node holds it unfinished, check again until the deadline."""
        while True:
            try:
                newest = await asyncio.to_thread(self.store.last_slot, self.name)
                if newest is not None and newest > slot:
                    return False  # a later slot ran or runs (a peer whose clock is ahead): this one is moot
                if await asyncio.to_thread(self.store.claim_slot, self.name, slot, self.node, lease=self.lease):
                    return True
                held = [s for s in await asyncio.to_thread(self.store.slots, self.name, 5) if s.slot == slot]
            except Exception as exc:  # the store is down: the slot cannot be shared safely, try later
                self._failed(f"state store: {exc}")
                if (deadline - self.clock()).total_seconds() <= self.lease / 4:
                    return False
                await asyncio.sleep(min(self.lease / 4, self.source.config.retry.max))
                continue
            if not held:
                continue  # the holder gave it back (stopped mid-run) between our claim and our look: claim again
            if held[0].finished_at is not None:
                return False  # it ran (here or elsewhere)
            if (deadline - self.clock()).total_seconds() <= self.lease / 2:
                return False
            self.state = "standby"  # another node runs this slot; take over if it dies
            await asyncio.sleep(self.lease / 2)

    async def _run_slot(self, slot: datetime, deadline: datetime) -> None:
        """Run the claimed slot while the claim holds; a lost claim cancels the run (see the module doc)."""
        self._running_slot = slot
        self.last_slot = slot
        body = asyncio.create_task(self._attempts(slot, deadline), name=f"syncbus-poll-run-{self.name}")
        heartbeat = asyncio.create_task(self._renew(slot), name=f"syncbus-poll-lease-{self.name}")
        try:
            await asyncio.wait({body, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
            if not body.done():  # the heartbeat ended: another node owns the slot now
                await cancel_and_wait(body)
                self._running_slot = None
                self._failed(f"lost the claim of slot {slot.isoformat()} to another node; run cancelled")
                log.warning("source %s: lost the claim of slot %s to another node; run cancelled", self.name,
                            slot.isoformat())
                return
            body.result()
        finally:
            await cancel_all([body, heartbeat])

    async def _attempts(self, slot: datetime, deadline: datetime) -> None:
        """Run the slot, retrying a failing poll with backoff until the next slot would start."""
        delay = self.source.config.retry.initial
        while True:
            self.state = "running"
            self.last_run_at = self.clock()
            try:
                result = await self.run()
            except asyncio.CancelledError:
                raise
            except PollRefused as exc:
                self._failed(str(exc))
                log.warning("source %s: %s; cursor kept, the next slot tries again", self.name, exc)
                await self._finish(slot, False, self.last_error or "")
                return
            except Exception as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
                log.warning("source %s: poll failed (%s); cursor kept, retry in %.3gs", self.name, exc, delay)
                if (deadline - self.clock()).total_seconds() <= delay:
                    await self._finish(slot, False, self.last_error or "")
                    return
                self.state = "retrying"
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.source.config.retry.max)
                continue
            self._succeeded()
            await self._finish(slot, True, f"{result.records} records in {result.pages} pages")
            return

    async def _renew(self, slot: datetime) -> None:
        """Keep the claim fresh; return when the store says it is no longer ours (ends the run)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                if not await asyncio.to_thread(self.store.renew_slot, self.name, slot, self.node):
                    return
            except Exception as exc:  # cannot tell: keep running, the store may come back within the lease
                log.warning("source %s: cannot renew the claim of slot %s: %s", self.name, slot.isoformat(), exc)

    async def _finish(self, slot: datetime, ok: bool, detail: str) -> None:
        self._running_slot = None
        try:
            await asyncio.to_thread(self.store.finish_slot, self.name, slot, ok, detail)
        except Exception as exc:
            log.warning("source %s: cannot record the end of slot %s: %s", self.name, slot.isoformat(), exc)

    def _failed(self, error: str) -> None:
        self.up = False
        self.failures += 1
        self.last_error = error
        self.metrics.source_up.labels(self.name).set(0)

    def _succeeded(self) -> None:
        self.up = True
        self.failures = 0
        self.last_error = None
        self.last_ok_at = self.clock()
        self.metrics.source_up.labels(self.name).set(1)
