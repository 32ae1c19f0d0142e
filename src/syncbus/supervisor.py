"""The supervisor: starts, stops and re-configures everything a node runs, in order.

Start order is bus → store → sinks → routes → sources, stop order the
reverse: a record a source accepts always finds its route running, and a
route always finds its sink open. Hot reload is the same machinery:
:meth:`Supervisor.apply` diffs the running project against a new one into a
:class:`ChangeSet` (added, removed, changed sources, sinks and routes) and
applies only that, so an edit to one sink does not restart every route.

``apply`` is careful about a broken edit: new and changed sinks are built
and started *before* anything running is touched; if one of them fails, the
new ones are closed again and the old configuration keeps running
(:class:`ApplyError`). Then, in order: changed/removed sources stop, routes
that are removed, changed, or write to a changed sink drain and go (the
router's ``remove_route`` returns once the route committed), old sinks
close, new sinks take their place, routes come back, sources start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .bus.base import Bus
from .changes.history import record_loaded  # issue 10: every mapping version a node runs is kept
from .config import Component
from .errors import SyncbusError
from .mapping.compiler import CompiledMapping
from .metrics import Metrics
from .project import Project
from .router import Router, RouterOptions
from .sinks.base import Sink
from .sources.base import PollSource, Source
from .sources.poller import Checkpoints, PollRunner, default_node
from .sources.publisher import Publisher, TraceSink

log = logging.getLogger(__name__)


class ApplyError(SyncbusError):
    """A change set could not be applied; the configuration that was running keeps running."""


# --------------------------------------------------------------------------- change sets


@dataclass(frozen=True, slots=True)
class Changes:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def going(self) -> tuple[str, ...]:
        """What must stop: removed and changed."""
        return (*self.removed, *self.changed)

    @property
    def coming(self) -> tuple[str, ...]:
        """What must start: added and changed."""
        return (*self.added, *self.changed)

    def to_json(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed)}


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What differs between two projects, as the supervisor will apply it."""

    sources: Changes = field(default_factory=Changes)
    sinks: Changes = field(default_factory=Changes)
    routes: Changes = field(default_factory=Changes)

    @property
    def empty(self) -> bool:
        return not (self.sources or self.sinks or self.routes)

    def to_json(self) -> dict[str, dict[str, list[str]]]:
        return {"sources": self.sources.to_json(), "sinks": self.sinks.to_json(), "routes": self.routes.to_json()}

    def __str__(self) -> str:
        parts = []
        for what, ch in (("sources", self.sources), ("sinks", self.sinks), ("routes", self.routes)):
            for verb, names in (("+", ch.added), ("-", ch.removed), ("~", ch.changed)):
                if names:
                    parts.append(f"{what} {verb}{','.join(names)}")
        return "; ".join(parts) or "no changes"


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], same: typing.Callable[[Any, Any], bool]) -> Changes:
    return Changes(added=tuple(sorted(set(new) - set(old))), removed=tuple(sorted(set(old) - set(new))),
                   changed=tuple(sorted(n for n in set(old) & set(new) if not same(old[n], new[n]))))


def used_sinks(project: Project) -> dict[str, Component]:
    """The sinks some route writes to: only those are started (an unused sink may point nowhere yet)."""
    names = {t.sink for m in project.mappings.values() for t in m.targets}
    return {n: c for n, c in project.connectors.sinks.items() if n in names}


def mapping_fingerprint(mapping: CompiledMapping) -> Any:
    """What makes two compiled mappings the same route (a ``fingerprint`` attribute wins when present)."""
    given = getattr(mapping, "fingerprint", None)
    if given:  # issue 9: the compiler's content hash (mapping text, schemas, lookup tables); "" = not computed
        return given
    return mapping.path, mapping.spec.model_dump(mode="json")


def diff_projects(old: Project, new: Project) -> ChangeSet:
    """The change set turning ``old`` into ``new``; a route whose sink changed counts as changed."""
    sources = _diff(old.connectors.sources, new.connectors.sources, lambda a, b: a.same_as(b))
    sinks = _diff(used_sinks(old), used_sinks(new), lambda a, b: a.same_as(b))
    touched = set(sinks.changed)
    routes = _diff(old.mappings, new.mappings,
                   lambda a, b: mapping_fingerprint(a) == mapping_fingerprint(b)
                   and not touched & {t.sink for t in b.targets})
    return ChangeSet(sources, sinks, routes)


# --------------------------------------------------------------------------- the supervisor


def build_sink(component: Component) -> Sink:
    spec = component.spec
    if spec is None or spec.factory is None:
        from .components.registry import registry

        spec = registry().get("sink", component.type)
    assert spec.factory is not None
    return typing.cast(Sink, spec.factory(component.config))


def build_source(component: Component) -> Source:
    spec = component.spec
    if spec is None or spec.factory is None:
        from .components.registry import registry

        spec = registry().get("source", component.type)
    assert spec.factory is not None
    return typing.cast(Source, spec.factory(component.config))


class Supervisor:
    """Owns the bus, the store, the sinks, the router and the sources of one node."""

    def __init__(self, project: Project, *, bus: Bus, store: Any, metrics: Metrics, trace: TraceSink,
                 dead_letters: Any, options: RouterOptions | None = None, node: str | None = None) -> None:
        self.project = project
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.trace = trace
        self.dead_letters = dead_letters
        self.options = options or RouterOptions()
        self.node = node or default_node()
        self.publisher = Publisher(bus, metrics, trace)
        self.sinks: dict[str, Sink] = {}  # the router reads this dict: swapping an entry swaps the sink
        self.router: Router | None = None
        self.pollers: dict[str, PollRunner] = {}
        self.push_sources: dict[str, Source] = {}
        self.started = False
        self._lock = asyncio.Lock()

    # -- start / stop ------------------------------------------------------------------

    async def start(self) -> None:
        """Bus → store → sinks → routes → sources. A failure stops what already started, then raises."""
        async with self._lock:
            try:
                await self.bus.start()
                await self.bus.ensure_topics(self.project.topics)
                await self._call(self.trace, "start")
                for name, component in sorted(used_sinks(self.project).items()):
                    self.sinks[name] = await self._open_sink(component)
                self.router = Router(self.bus, self.project.mappings, self.sinks, self.metrics,
                                     self.trace, self.dead_letters, self.options)  # type: ignore[arg-type]
                await self.router.start()
                await record_loaded(self.store, self.project.mappings.values())  # issue 10: version history
                await self._start_sources(self.project.connectors.sources.values())
            except BaseException:
                await self._stop_all()
                raise
            self.started = True

    async def stop(self) -> None:
        """Sources → routes (drain, commit) → sinks → trace → bus → store."""
        async with self._lock:
            self.started = False
            await self._stop_all()

    async def _stop_all(self) -> None:
        await self._stop_sources(list(self.pollers) + list(self.push_sources))
        if self.router is not None:
            await self.router.stop()
            self.router = None
        for name in list(self.sinks):
            await self._close_sink(name, self.sinks.pop(name))
        await self._call(self.trace, "stop")
        with contextlib.suppress(Exception):
            await self.bus.stop()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    @staticmethod
    async def _call(obj: Any, method: str) -> None:
        fn = getattr(obj, method, None)
        if fn is not None:
            await fn()

    # -- sinks -------------------------------------------------------------------------

    async def _open_sink(self, component: Component) -> Sink:
        sink = build_sink(component)
        await sink.start()
        return sink

    async def _close_sink(self, name: str, sink: Sink) -> None:
        try:
            await sink.close()
        except Exception as exc:
            log.warning("sink %s did not close cleanly: %s", name, exc)

    # -- sources -----------------------------------------------------------------------

    def _runner(self, component: Component) -> PollRunner | Source:
        source = build_source(component)
        if isinstance(source, PollSource):
            if not callable(getattr(self.store, "claim_slot", None)):
                raise ApplyError(f"source {component.name}: the state store keeps no checkpoints "
                                 "(CheckpointStore is not part of it)")
            return PollRunner(source, self.publisher, typing.cast(Checkpoints, self.store), self.metrics,
                              node=self.node)
        return source

    async def _start_sources(self, components: Iterable[Component], prepared: Mapping[str, Any] | None = None
                             ) -> None:
        for component in components:
            runner = (prepared or {}).get(component.name) or self._runner(component)
            if isinstance(runner, PollRunner):
                self.pollers[component.name] = runner
                await runner.start()  # never fails for an unreachable system: the runner retries
            else:
                self.push_sources[component.name] = runner
                await runner.start()

    async def _stop_sources(self, names: Iterable[str]) -> None:
        for name in names:
            runner: PollRunner | Source | None = self.pollers.pop(name, None) or self.push_sources.pop(name, None)
            if runner is None:
                continue
            try:
                await runner.stop()
            except Exception as exc:
                log.warning("source %s did not stop cleanly: %s", name, exc)

    # -- hot reload --------------------------------------------------------------------

    async def apply(self, new: Project) -> ChangeSet:
        """Make the running node match ``new``; returns what changed. :class:`ApplyError`: nothing changed."""
        async with self._lock:
            changes = diff_projects(self.project, new)
            if changes.empty or not self.started or self.router is None:
                self.project = new
                return changes
            router = self.router
            new_sinks = used_sinks(new)
            opened: dict[str, Sink] = {}
            runners: dict[str, Any] = {}
            try:  # build everything new before touching what runs
                for name in changes.sinks.coming:
                    opened[name] = await self._open_sink(new_sinks[name])
                for name in changes.sources.coming:
                    runners[name] = self._runner(new.connectors.sources[name])
            except Exception as exc:
                for name, sink in opened.items():
                    await self._close_sink(name, sink)
                raise ApplyError(f"reload refused, the running configuration stays: {exc}") from exc
            await self._stop_sources(changes.sources.going)
            in_place = [n for n in changes.routes.changed if self._swappable(n, new, changes)]
            for name in changes.routes.going:
                if name not in in_place:
                    await router.remove_route(name)  # returns once drained and committed
            for name in changes.sinks.going:
                old = self.sinks.pop(name, None)
                if old is not None:
                    await self._close_sink(name, old)
            self.sinks.update(opened)
            await self.bus.ensure_topics(new.topics)
            for name in changes.routes.coming:
                if name not in in_place or not router.swap_route(new.mappings[name]):
                    if name in in_place:
                        await router.remove_route(name)
                    await router.add_route(new.mappings[name])
            await record_loaded(self.store, (new.mappings[n] for n in changes.routes.coming))  # issue 10
            await self._start_sources((new.connectors.sources[n] for n in changes.sources.coming), runners)
            self.project = new
            log.info("configuration applied: %s", changes)
            return changes

    def _swappable(self, name: str, new: Project, changes: Any) -> bool:
        """A changed route that only needs its mapping replaced: same topic, no shadow, its sinks untouched."""
        old_m, new_m = self.project.mappings.get(name), new.mappings.get(name)
        if old_m is None or new_m is None or old_m.topic != new_m.topic:
            return False
        if getattr(old_m.spec, "shadow_of", None) or getattr(new_m.spec, "shadow_of", None):
            return False
        touched = set(changes.sinks.going)
        return not touched & {t.sink for t in (*old_m.targets, *new_m.targets)}

    # -- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Sources (poll runners' state), sinks and routes, for ``/readyz`` and the console."""
        sources: dict[str, Any] = {name: r.status() for name, r in self.pollers.items()}
        sources.update({name: {"source": name, "type": s.config.type, "mode": "push", "state": "running"}
                        for name, s in self.push_sources.items()})
        return {"node": self.node, "started": self.started, "sources": dict(sorted(sources.items())),
                "sinks": sorted(self.sinks), "routes": sorted(self.router.routes) if self.router else []}
