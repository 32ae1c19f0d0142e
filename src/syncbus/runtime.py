"""Everything ``syncbus run`` starts, wired together: bus, store, sinks, router, HTTP server.

Start order is bus → store → sinks → routes → sources (``supervisor.py``,
which also applies reloads) → HTTP (ready); stop order is the reverse, after
the HTTP server stopped accepting records. Stopping gives
in-flight deliveries time to finish and commits what is done; anything not
finished is redelivered after a restart (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping

from .bus import open_bus
from .bus.base import Bus
from .config import Settings
from .dlq.writer import DeadLetterWriter
from .ingress.auth import parse_admin_keys
from .ingress.publish import IngressSource
from .metrics import Metrics
from .project import Project
from .reload import Reloader  # issue 9: hot reload
from .router import Router, RouterOptions
from .sinks.base import Sink
from .sources.publisher import Publisher
from .state.store import Store
from .supervisor import ChangeSet, Supervisor
from .tracing import TraceRecorder

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, project: Project, *, env: Mapping[str, str] | None = None,
                 options: RouterOptions | None = None, bus: Bus | None = None, trace: bool = True) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.project = project
        self.options = options or RouterOptions()
        self.bus: Bus = bus or open_bus(settings.bus_url)
        self.store = Store(settings.resolved_store_url())
        self.metrics = Metrics()
        self.trace = TraceRecorder(self.store, enabled=trace)
        self.dead_letters = DeadLetterWriter(self.store, self.bus, self.metrics, self.trace)
        self.admin_keys: dict[str, str] = parse_admin_keys(env.get("SYNCBUS_ADMIN_KEYS", ""))  # name -> key
        # starting, stopping and reloading bus, store, sinks, routes and sources: see supervisor.py
        self.supervisor = Supervisor(project, bus=self.bus, store=self.store, metrics=self.metrics,
                                     trace=self.trace, dead_letters=self.dead_letters, options=self.options)
        self.ingress_sources = {
            name: IngressSource(c) for name, c in project.connectors.sources.items() if c.type == "http_ingress"
        }
        self.started = False
        # issue 9: file watcher, SIGHUP and POST /admin/reload all reload through this (reload.py)
        self.reloader = Reloader(self, settings.config_dir, env=env)

    @property
    def sinks(self) -> dict[str, Sink]:
        return self.supervisor.sinks

    @property
    def router(self) -> Router | None:
        return self.supervisor.router

    @property
    def publisher(self) -> Publisher:
        """The one publish path of every source (the HTTP ingress included)."""
        return self.supervisor.publisher

    async def start(self) -> None:
        await self.supervisor.start()
        with contextlib.suppress(Exception):
            await self.dead_letters.refresh_pending()
        self.started = True
        log.info("syncbus running: %d routes on %s", len(self.project.mappings), self.bus.url)

    async def stop(self) -> None:
        self.started = False
        await self.supervisor.stop()

    async def apply(self, project: Project) -> ChangeSet:
        """Hot reload: run ``project`` instead, changing only what differs (raises ApplyError, keeping the old)."""
        changes = await self.supervisor.apply(project)
        self.project = project
        self.ingress_sources = {
            name: IngressSource(c) for name, c in project.connectors.sources.items() if c.type == "http_ingress"
        }
        return changes

    async def readiness(self) -> dict[str, bool]:
        try:
            bus_ok = await asyncio.wait_for(self.bus.ping(), 2.0)
        except Exception:
            bus_ok = False
        try:
            store_ok = await asyncio.to_thread(self.store.ping)
        except Exception:
            store_ok = False
        return {"bus": bool(bus_ok), "store": bool(store_ok),
                "mappings": self.started and bool(self.project.mappings)}

