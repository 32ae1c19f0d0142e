"""All routes of a project: one consumer group each, shared sinks, metrics, trace and dead letters.

One consumer group per route (``syncbus.<route>``), so each route sees every
record of its topic and keeps its own position. What a route does with each
record is ``route.py``'s; here routes are started, swapped in place by a
reload, stopped, and watched (consumer lag, bus health, commit stalls,
pending dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .aio import cancel_and_wait
from .bus.base import Bus
from .dlq.writer import DeadLetterWriter
from .mapping.compiler import CompiledMapping
from .metrics import Metrics
from .route import Route
from .sinks.base import Sink
from .state.models import utcnow
from .tracing import TraceRecorder

__all__ = ["Router", "RouterOptions", "group_for"]

log = logging.getLogger(__name__)

STALL_AFTER = 10.0  # seconds of failing commits before a route counts as stalled

def group_for(route: str) -> str:
    return f"syncbus.{route}"


@dataclass
class RouterOptions:
    max_in_flight: int = 1000     # records fetched but not done, per route
    fetch_batch: int = 500
    commit_interval: float = 0.2  # seconds between offset commits
    lag_interval: float = 5.0
    shutdown_timeout: float = 10.0
    replay_timeout: float = 600.0  # a replay still "replaying" after this never reached the bus


class Router:
    """All routes of a project, sharing the bus, the sinks, metrics, trace and dead letters."""

    def __init__(self, bus: Bus, mappings: Mapping[str, CompiledMapping], sinks: Mapping[str, Sink],
                 metrics: Metrics, trace: TraceRecorder, dead_letters: DeadLetterWriter,
                 options: RouterOptions | None = None) -> None:
        self.bus = bus
        self.mappings = dict(mappings)
        self.sinks = sinks
        self.metrics = metrics
        self.trace = trace
        self.dead_letters = dead_letters
        self.options = options or RouterOptions()
        self.routes: dict[str, Route] = {}
        self._lag_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.bus.ensure_topics(sorted({m.topic for m in self.mappings.values()}))
        for m in self.mappings.values():
            await self.add_route(m)
        self._lag_task = asyncio.create_task(self._watch(), name="syncbus-lag")

    def swap_route(self, mapping: CompiledMapping) -> bool:
        """Run a new version of a route on its running consumer: records from the next one on use it.

        A reload that changed only the mapping (same topic, same sinks) needs no
        drain: each record is mapped and stamped with one version, and keeping the
        consumer keeps its partitions -- leaving and rejoining the group would hand
        records in flight to another member, which would deliver them again.
        False when the route cannot be swapped in place (the caller replaces it).
        """
        route = self.routes.get(mapping.name)
        if (type(route) is not Route or route.mapping.topic != mapping.topic
                or getattr(mapping.spec, "shadow_of", None)):
            return False
        route.replace_mapping(mapping)
        self.metrics.set_route(mapping.name, mapping.version, mapping.owner)
        return True

    async def add_route(self, mapping: CompiledMapping) -> Route:
        if getattr(mapping.spec, "shadow_of", None):  # issue 10: a shadow compares with the live route, never delivers
            from .changes.shadow import ShadowRoute, shadow_group

            shadow = ShadowRoute(mapping, self.bus.consumer(shadow_group(mapping.name), [mapping.topic]), self)
            await shadow.start()
            self.routes[mapping.name] = shadow  # type: ignore[assignment]
            return shadow  # type: ignore[return-value]
        consumer = self.bus.consumer(group_for(mapping.name), [mapping.topic])
        route = Route(mapping, self.sinks, consumer, self)
        await route.start()
        self.routes[mapping.name] = route
        self.metrics.set_route(mapping.name, mapping.version, mapping.owner)
        return route

    async def remove_route(self, name: str) -> None:
        """Stop one route: intake stops, in-flight deliveries finish, finished work is committed.

        What was not finished is redelivered to whoever consumes the route's group
        next (a reloaded version of the route, or a restart): nothing is lost.
        """
        route = self.routes.pop(name, None)
        if route is None:
            return
        await route.stop(self.options.shutdown_timeout)
        self.metrics.remove_route(name)

    async def _watch(self) -> None:
        """Consumer lag, bus health, commit stalls and pending dead letters, refreshed periodically."""
        with contextlib.suppress(Exception):
            last = await asyncio.to_thread(self.dead_letters.store.last_delivered)
            for name, at in last.items():   # a restart must not make a nightly flow look silent
                if name in self.routes:
                    self.metrics.last_success_for(name).set(at)
        while True:
            try:
                up = await asyncio.wait_for(self.bus.ping(), 5.0)
            except Exception:
                up = False
            self.metrics.bus_up.set(1 if up else 0)
            for route in list(self.routes.values()):
                try:
                    lag = await route.lag()
                    # a topic whose partitions all moved to another node reports 0 here, not a stale value
                    topic = route.mapping.topic
                    self.metrics.consumer_lag.labels(route.name, topic).set(lag.get(topic, 0))
                except Exception as exc:
                    log.debug("lag of %s unavailable: %s", route.name, exc)
                stalled_since = getattr(route.consumer, "commit_stalled_since", None)
                self.metrics.commit_stalled.labels(route.name).set(
                    1 if stalled_since is not None and time.monotonic() - stalled_since > STALL_AFTER else 0)
            with contextlib.suppress(Exception):
                await self.dead_letters.refresh_pending()
            try:
                stale = await asyncio.to_thread(self.dead_letters.store.revert_stale_replays,
                                                utcnow() - timedelta(seconds=self.options.replay_timeout))
                if stale:
                    log.warning("%d replays never reached the bus; their dead letters are pending again: %s",
                                len(stale), ", ".join(stale[:10]))
            except Exception as exc:
                log.debug("stale replay check failed: %s", exc)
            await asyncio.sleep(self.options.lag_interval)

    async def stop(self) -> None:
        await cancel_and_wait(self._lag_task)  # one cancel() may be lost in the ping's wait_for (aio.py)
        await asyncio.gather(*(r.stop(self.options.shutdown_timeout) for r in self.routes.values()),
                             return_exceptions=True)
        self.routes.clear()

    def status(self) -> dict[str, Any]:
        return {name: {"in_flight": r.in_flight, "version": r.mapping.version}
                for name, r in self.routes.items()}
