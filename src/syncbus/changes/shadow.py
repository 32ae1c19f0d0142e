"""A shadow route: a candidate mapping run beside the live route on the same records, never delivering.

A mapping file with ``shadow_of: <route>`` becomes a :class:`ShadowRoute`
(the router's ``add_route`` picks the class). It consumes the live route's
topic in its own consumer group, ``syncbus.shadow.<name>``, so it neither
steals records from the live route nor moves its offsets. Each record is
mapped twice -- with the shadow's mapping and with the live route's *current*
compiled mapping (mapping is deterministic, so this is exactly what the live
route produced, without storing live outputs) -- and the two results are
compared as trees (``tree.py``).

A shadow never delivers and never dead-letters: a mapping error on either
side is a "different" with the error as the difference. Results are stored
per record (``VersionStore.add_shadow_results``) before the shadow commits its
offsets, so a crash re-compares records instead of losing them and the upsert
does not count them twice. Replays (records carrying ``syncbus-replay-route``)
are second copies of records already compared and are passed over.

It offers what the router uses of a route -- ``name``, ``mapping``,
``consumer``, ``in_flight``, ``start``, ``stop``, ``lag`` -- and nothing of a
route's delivery machinery, so the live route's hot path is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..aio import cancel_and_wait
from ..mapping.compiler import CompiledMapping
from ..record import H_REPLAY_ROUTE, Record
from ..state.versions import ShadowResult
from .tree import Side, compare, run_side

log = logging.getLogger(__name__)

SAMPLES_KEPT = 100          # differing records kept with their values, per shadow
YIELD_EVERY = 50            # records mapped between yields to the event loop (mapping twice is CPU)
MAX_INPUT_SAMPLE = 16_384   # bytes of the input record kept in a sample
WAIT_WARNING = 10.0         # seconds without a live route before it is worth a warning (start order is by name)


def shadow_group(name: str) -> str:
    return f"syncbus.shadow.{name}"


class ShadowRoute:
    """Map every record of the live route's topic with both mappings, compare, count, sample."""

    def __init__(self, mapping: CompiledMapping, consumer: Any, router: Any) -> None:
        self.mapping = mapping
        self.name = mapping.name
        self.live_name = str(mapping.spec.shadow_of)
        self.consumer = consumer
        self.router = router
        self.in_flight = 0
        self._results: list[ShadowResult] = []
        self._done: list[Record] = []
        self._live: CompiledMapping | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._waiting_since: float | None = None

    # -- loop ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"shadow-{self.name}")

    def live_mapping(self) -> CompiledMapping | None:
        """The live route's mapping now (it changes on reload); the last one seen while it is being swapped."""
        route = self.router.routes.get(self.live_name)
        mapping = getattr(route, "mapping", None)
        if mapping is not None and not isinstance(route, ShadowRoute):
            self._live = mapping
        return self._live

    async def _run(self) -> None:
        opts = self.router.options
        last_commit = time.monotonic()
        while not self._stopping:
            live = self.live_mapping()
            if live is None:  # nothing to compare with yet: do not consume
                waited = time.monotonic() - (self._waiting_since or time.monotonic())
                if self._waiting_since is None:
                    self._waiting_since = time.monotonic()
                elif waited >= WAIT_WARNING:
                    log.warning("shadow %s: live route %s is not running here; waiting for it", self.name,
                                self.live_name)
                    self._waiting_since = time.monotonic()
                await asyncio.sleep(opts.commit_interval)
                continue
            self._waiting_since = None
            try:
                records = await self.consumer.fetch(opts.fetch_batch, opts.commit_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("shadow %s: fetch failed: %s; retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            for i, record in enumerate(records):
                self.in_flight += 1
                self._compare(record, self.live_mapping() or live)
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
            now = time.monotonic()
            if now - last_commit >= opts.commit_interval:
                last_commit = now
                await self._commit()

    def _compare(self, record: Record, live: CompiledMapping) -> None:
        if record.headers.get(H_REPLAY_ROUTE) is not None:
            self._done.append(record)  # a replay: the original was compared already
            return
        mine = run_side(self.mapping, record)
        theirs = run_side(live, record)
        diff = compare(theirs, mine)
        outcome = "same" if diff.same else "different"
        self.router.metrics.shadow_results.labels(self.live_name, outcome).inc()
        detail = None
        if not diff.same:
            detail = {"values": diff.values, "truncated": diff.truncated,
                      "input": record.value[:MAX_INPUT_SAMPLE].decode("utf-8", "replace"),
                      "content_type": record.headers.get("content-type")}
        self._results.append(ShadowResult(
            shadow=self.name, live_route=self.live_name, shadow_version=self.mapping.version,
            live_version=live.version, record_id=record.id, key=_key(theirs, mine, record), outcome=outcome,
            paths=tuple(diff.paths), detail=detail))
        self._done.append(record)

    async def _commit(self) -> None:
        """Store the results, then (only then) mark their records done and commit the offsets."""
        if self._results or self._done:
            results, done = self._results, self._done
            self._results, self._done = [], []
            store = self.router.dead_letters.store
            try:
                if results:
                    await asyncio.to_thread(store.add_shadow_results, results, SAMPLES_KEPT)
            except asyncio.CancelledError:
                self._results[:0], self._done[:0] = results, done
                raise
            except Exception as exc:  # the store is away: keep the results, commit nothing of them
                self._results[:0], self._done[:0] = results, done
                log.warning("shadow %s: cannot store %d results (%s); offsets wait", self.name, len(results), exc)
                return
            for record in done:
                self.consumer.done(record)
            self.in_flight = max(0, self.in_flight - len(done))
        try:
            await self.consumer.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # uncommitted offsets are compared again: safe, just noisy
            log.warning("shadow %s: commit failed: %s", self.name, exc)

    # -- stop ----------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Stop intake, store what was compared, commit; ``timeout`` is unused (nothing is delivered)."""
        self._stopping = True
        await cancel_and_wait(self._task)
        with contextlib.suppress(Exception):
            await self._commit()
        await self.consumer.stop()

    async def lag(self) -> dict[str, int]:
        from ..route import lag_per_topic

        return await lag_per_topic(self.consumer)


def _key(live: Side, shadow: Side, record: Record) -> str | None:
    return live.key if live.key is not None else shadow.key if shadow.key is not None else record.key
