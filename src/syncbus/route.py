"""One route at work: consume → map → deliver → commit, record by record.

Per record:

    decode → input schema → when → map → output schema → encode   (sync, CPU)
    deliver to each target's sink with its retry policy             (async, I/O)
    delivered or dead-lettered → done → outcome stored → offset committed

Records with the same key are delivered in order (``_KeyChain``); different
keys are delivered concurrently, bounded by ``max_in_flight`` per route
(backpressure: no fetch while the route is full). Retry policy and sink
behaviour live in ``sinks/``, dead-lettering in ``dlq/``; the routes of a
project together, their sinks and their watch loop are ``router.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .aio import cancel_all, cancel_and_wait
from .bus.base import Consumer
from .changes.versioned import mapping_for_record
from .dedupe import Deduper
from .errors import DecodeError, EncodeError, MappingError, SchemaError, SyncbusError
from .mapping.compiler import CompiledMapping, Output
from .record import H_DEAD_LETTER, H_MALFORMED, H_MAPPING_VERSION, H_REPLAY_ROUTE, H_REPLAY_SINK, Record
from .sinks.base import Delivery, Sink
from .sinks.retry import DeliveryFailed
from .state.outcomes import Outcome

if TYPE_CHECKING:
    from .router import Router

log = logging.getLogger("syncbus.router")  # one logger for the routes and the router, as before the split


async def lag_per_topic(consumer: Consumer) -> dict[str, int]:
    """A consumer's lag summed over the partitions it owns, per topic (the `syncbus_consumer_lag` gauge)."""
    per_topic: dict[str, int] = {}
    for (topic, _p), n in (await consumer.lag()).items():
        per_topic[topic] = per_topic.get(topic, 0) + n
    return per_topic


def idempotency_key(route: str, key: str | None, record: Record) -> str:
    return f"{route}:{key if key is not None else ''}:{record.id}"


def classify(exc: SyncbusError) -> str:
    """Dead-letter reason of a processing error (DESIGN §8: schema, mapping, delivery)."""
    if isinstance(exc, DecodeError | SchemaError):  # a payload that does not even decode is a schema problem
        return "schema"
    return "mapping"


@dataclass
class _KeyChain:
    """Delivery order per key: each record waits for the previous record of its key.

    ``held`` maps a key whose record is being delivered to the records waiting
    behind it, in order (None while nobody waits). A record whose key is free
    takes it without creating a future -- the common case, since keys rarely
    repeat within the records in flight (issue 11: a future per record cost
    more than the bookkeeping it did).
    """

    held: dict[str, deque[asyncio.Future[None]] | None] = field(default_factory=dict)

    def claim(self, key: str) -> asyncio.Future[None] | None:
        """None: the key is ours now. A future: await it, then the key is ours."""
        held = self.held
        if key not in held:
            held[key] = None
            return None
        waiting = held[key]
        if waiting is None:
            waiting = held[key] = deque()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        return turn

    def release(self, key: str) -> None:
        """Hand the key to the next waiting record (skipping any whose wait was cancelled), else free it."""
        waiting = self.held.get(key)
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.held.pop(key, None)


class Route:
    """One mapping running against the bus."""

    def __init__(self, mapping: CompiledMapping, sinks: Mapping[str, Sink], consumer: Consumer,
                 router: Router) -> None:
        self.mapping = mapping
        self.name = mapping.name
        self.sinks = sinks
        self.consumer = consumer
        self.router = router
        self.in_flight = 0
        self._slot = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._chain = _KeyChain()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._outcomes: list[tuple[Record, Outcome]] = []
        self._committing: asyncio.Task[None] | None = None
        spec = mapping.spec.dedupe
        self._dedupe = Deduper(spec.window, spec.compare) if spec is not None else None

    def replace_mapping(self, mapping: CompiledMapping) -> None:
        """The next records use ``mapping`` (see ``Router.swap_route``)."""
        if mapping.spec.dedupe != self.mapping.spec.dedupe:
            spec = mapping.spec.dedupe
            self._dedupe = Deduper(spec.window, spec.compare) if spec is not None else None
        self.mapping = mapping

    # -- loop -------------------------------------------------------------------

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"route-{self.name}")

    async def _run(self) -> None:
        opts = self.router.options
        last_commit = time.monotonic()
        while not self._stopping:
            room = opts.max_in_flight - self.in_flight
            if room <= 0:
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), opts.commit_interval)
            else:
                try:
                    records = await self.consumer.fetch(min(room, opts.fetch_batch), opts.commit_interval)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("route %s: fetch failed: %s; retrying", self.name, exc)
                    await asyncio.sleep(1.0)
                    continue
                for record in records:
                    await self._dispatch(record)
            now = time.monotonic()
            if now - last_commit >= opts.commit_interval:
                last_commit = now
                # In the background (issue 11): storing outcomes and committing take a round trip to
                # the store and the bus; awaiting them here held every new record back for as long.
                # One at a time, and the order stays: outcomes stored, then offsets committed.
                if self._committing is None or self._committing.done():
                    self._committing = asyncio.create_task(self._commit(), name=f"commit-{self.name}")

    def _finished(self, record: Record, outcome: str, delivered_sinks: tuple[str, ...] = ()) -> None:
        """The record has its fate on this route; its offset may be committed once the fate is stored."""
        self._outcomes.append((record, Outcome(record.id, outcome, record.topic, record.partition, record.offset,
                                               delivered_sinks)))

    async def _commit(self) -> None:
        """Store the outcomes of finished records, then (only then) let their offsets be committed.

        Offsets a consumer commits are always a subset of the records whose
        outcome is stored, so ``syncbus ledger`` can tell a record that is
        still in flight from one that was lost.
        """
        if self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                resolved = await asyncio.to_thread(self.router.dead_letters.store.record_outcomes, self.name,
                                                   [o for _r, o in batch])
            except asyncio.CancelledError:
                self._outcomes[:0] = batch
                raise
            except Exception as exc:  # the store is away: keep the batch, commit nothing of it
                self._outcomes[:0] = batch
                log.warning("route %s: cannot store %d record outcomes (%s); offsets wait", self.name,
                            len(batch), exc)
                return
            for record, _o in batch:
                self.consumer.done(record)
            if resolved:
                log.info("route %s: %d dead letters resolved: their records were delivered", self.name,
                         len(resolved))
                self.router.dead_letters.pending_changed()
        try:
            await self.consumer.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # uncommitted offsets are redelivered: safe, just noisy
            log.warning("route %s: commit failed: %s", self.name, exc)

    # -- one record -------------------------------------------------------------

    async def _dispatch(self, record: Record) -> None:
        router = self.router
        replay_route = record.headers.get(H_REPLAY_ROUTE)
        if replay_route is not None and replay_route != self.name:
            self.consumer.done(record)  # a replay for another route of this topic
            return
        # A row its source could not parse (file_drop, kafka) arrives marked "<file>:<line>: <why>": a schema
        # dead letter naming the place. A replay of it (edited into a JSON object first) is mapped as usual.
        malformed = record.headers.get(H_MALFORMED)
        if malformed is not None and H_DEAD_LETTER not in record.headers:
            await self._dead_letter(record, "schema", malformed)
            return
        m = self.mapping
        try:
            if replay_route == self.name and H_MAPPING_VERSION in record.headers:  # issue 10: replay --version
                m = await mapping_for_record(m, record.headers, router.dead_letters.store)
            result = m.map_bytes(record.value, record.headers.get("content-type"), record.key)
        except (DecodeError, SchemaError, MappingError, EncodeError) as exc:
            await self._dead_letter(record, classify(exc), str(exc))
            return
        except SyncbusError as exc:
            await self._dead_letter(record, "mapping", str(exc))
            return
        except Exception as exc:  # a bug in a transform must not stop the route
            log.exception("route %s: unexpected error mapping record %s", self.name, record.id)
            await self._dead_letter(record, "mapping", f"internal error: {type(exc).__name__}: {exc}")
            return
        if result.skipped:
            router.metrics.skipped_for(self.name).inc()
            router.trace.add(record.id, "skipped", self.name)
            self._finished(record, "skipped")
            return
        if (self._dedupe is not None and replay_route is None
                and self._dedupe.is_duplicate(result.key if result.key is not None else record.key, record.value)):
            router.metrics.duplicates_dropped_for(self.name).inc()
            router.trace.add(record.id, "duplicate", self.name)
            self._finished(record, "skipped")
            return
        outputs = result.outputs
        replay_sink = record.headers.get(H_REPLAY_SINK) if replay_route is not None else None
        if replay_sink is not None:
            outputs = [o for o in outputs if o.target.sink == replay_sink] or outputs
        router.trace.add(record.id, "mapped", self.name, key=result.key, version=m.version,
                         targets=[o.target.sink for o in outputs])
        order_key = record.key if record.key is not None else result.key
        self.in_flight += 1
        task = asyncio.create_task(self._deliver(record, result.key, order_key, outputs, m.version))  # issue 10
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: Record, key: str | None, order_key: str | None,
                       outputs: list[Output], version: int | None = None) -> None:  # issue 10: version
        held = False
        try:
            if order_key is not None:
                turn = self._chain.claim(order_key)
                if turn is not None:
                    try:
                        await turn
                    except asyncio.CancelledError:
                        held = turn.done() and not turn.cancelled()  # handed over just before the cancel
                        raise
                held = True
            if len(outputs) == 1:
                oks = [await self._deliver_one(record, key, outputs[0], version)]
            else:
                oks = list(await asyncio.gather(*(self._deliver_one(record, key, o, version) for o in outputs)))
            if all(oks):
                self._finished(record, "delivered")
            else:
                self._finished(record, "dead_lettered",
                               tuple(o.target.sink for o, ok in zip(outputs, oks, strict=True) if ok))
        finally:
            if held and order_key is not None:
                self._chain.release(order_key)
            self.in_flight -= 1
            self._slot.set()

    async def _deliver_one(self, record: Record, key: str | None, output: Output,
                           version: int | None = None) -> bool:  # issue 10: the version that mapped it
        """One target: True when delivered, False when dead-lettered."""
        router, m = self.router, self.mapping
        sink_name = output.target.sink
        sink = self.sinks[sink_name]
        delivery = Delivery(route=self.name, mapping_version=m.version if version is None else version,
                            sink=sink_name, record_id=record.id,
                            key=key, idempotency_key=idempotency_key(self.name, key, record),
                            body=output.body, content_type=output.target.content_type,
                            # issue 11: a sink that sends only the body never builds the mapped dict
                            payload=output.payload if getattr(sink, "uses_payload", True) else None,
                            traceparent=record.headers.get("traceparent"))
        metrics = router.metrics
        duration = metrics.duration_for(self.name, sink_name)
        trace = router.trace
        rid = record.id
        name = self.name

        def on_attempt(outcome: str, seconds: float, error: BaseException | None) -> None:
            metrics.attempts_for(name, sink_name, outcome).inc()
            duration.observe(seconds)
            if error is None:
                trace.add(rid, "attempt", name, sink=sink_name, outcome=outcome, seconds=round(seconds, 6))
            else:
                trace.add(rid, "attempt", name, sink=sink_name, outcome=outcome, seconds=round(seconds, 6),
                          error=str(error)[:500])

        try:
            attempts = await sink.retry.run(lambda: sink.send(delivery), on_attempt)
        except DeliveryFailed as exc:
            await self._dead_letter(record, "delivery", exc.reason, attempts=exc.attempts, sink=sink_name,
                                    done=False)
            return False
        metrics.delivered_for(name, sink_name).inc()
        now = time.time()
        metrics.last_success_for(name).set(now)
        received = record.received_at
        # A replay's age is the time it waited for a person, not processing time: it would
        # poison the latency baseline the alerts compare against.
        if received and H_DEAD_LETTER not in record.headers:
            metrics.e2e_for(name).observe(max(0.0, now - received))
        trace.add(rid, "delivered", name, sink=sink_name, attempts=attempts)
        return True

    async def _dead_letter(self, record: Record, reason: str, error: str, *, attempts: int = 1,
                           sink: str | None = None, done: bool = True) -> None:
        """Store the dead letter, retrying while the store is unavailable: never lose the record."""
        delay = 0.5
        while True:
            try:
                await self.router.dead_letters.write(record, route=self.name, version=self.mapping.version,
                                                     reason=reason, error=error, attempts=attempts, sink=sink)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("route %s: cannot store dead letter for %s (%s); retrying", self.name, record.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if done:
            self._finished(record, "dead_lettered")

    # -- stop -------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Stop intake, give in-flight deliveries ``timeout`` seconds, commit what is done."""
        self._stopping = True
        await cancel_and_wait(self._task)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            await cancel_all(pending)  # not done = not committed = redelivered after restart
        if self._committing is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._committing
        with contextlib.suppress(Exception):
            await self._commit()
        await self.consumer.stop()

    async def lag(self) -> dict[str, int]:
        return await lag_per_topic(self.consumer)
