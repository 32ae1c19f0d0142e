"""Mapping with a version from the history: ``syncbus map --version`` and replays with a chosen version.

A replayed record may carry ``syncbus-mapping-version: V``; the route it is
replayed for then maps it with version V of its own history instead of the
version it runs (the router's hook calls :func:`mapping_for_record`). The
header is honoured only on a replay for that route, so a source cannot smuggle
it in. Historical contents are compiled against the live file's folder
(schemas and lookups as they are now) and cached, because a bulk replay maps
thousands of records with the same version.

``syncbus dlq replay --version V`` publishes through :class:`VersionHeaderBus`,
which sets the header -- or removes one a letter inherited from an earlier
versioned replay, so a plain replay always maps with the live version.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SyncbusError
from ..mapping.compiler import CompiledMapping
from ..record import H_MAPPING_VERSION
from ..state.versions import VersionNotFound
from .history import compile_text

CACHE_SIZE = 32

_cache: OrderedDict[tuple[str, str, str], CompiledMapping] = OrderedDict()


class VersionUnavailable(SyncbusError):
    """A record asks for a mapping version that is not in the route's history (or does not compile)."""


def compile_version(store: Any, route: str, ref: str, base: Path) -> CompiledMapping:
    """Version ``ref`` (number or hash prefix) of ``route`` from the history, compiled against ``base``."""
    try:
        version = store.version_of(route, ref)
    except VersionNotFound as exc:
        raise VersionUnavailable(str(exc)) from None
    label = f"{route}@v{version.version}({version.hash[:12]})"
    return compile_text(version.content, label, base)


def cached_version(store: Any, route: str, ref: str, base: Path) -> CompiledMapping:
    key = (route, ref, str(base))
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    compiled = compile_version(store, route, ref, base)
    _cache[key] = compiled
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return compiled


async def mapping_for_record(live: CompiledMapping, headers: Mapping[str, str], store: Any) -> CompiledMapping:
    """The mapping a replayed record asks for, or ``live`` when it asks for none (or for the live one).

    Raises :class:`VersionUnavailable` (the router dead-letters the record as a
    mapping failure, so it is kept and can be replayed again).
    """
    ref = (headers.get(H_MAPPING_VERSION) or "").strip()
    if not ref or ref == str(live.version):
        return live
    key = (live.name, ref, str(Path(live.path).parent))
    hit = _cache.get(key)
    if hit is not None:
        return hit
    try:
        return await asyncio.to_thread(cached_version, store, live.name, ref, Path(live.path).parent)
    except VersionUnavailable:
        raise
    except SyncbusError as exc:
        raise VersionUnavailable(f"version {ref} of route {live.name} does not compile here: {exc}") from None


class VersionHeaderBus:
    """A bus whose ``publish`` sets (or, with ``version=None``, removes) the mapping-version header.

    Everything else is the wrapped bus: the replay code publishes through it
    unchanged, so replays keep every guarantee they have (at most once per
    letter, audited, reverted when the publish fails).
    """

    def __init__(self, bus: Any, version: str | None) -> None:
        self._bus = bus
        self.version = version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(self, topic: str, value: bytes, key: str | None = None,
                      headers: Mapping[str, str] | None = None, *args: Any, **kwargs: Any) -> Any:
        out = {k: v for k, v in (headers or {}).items() if k != H_MAPPING_VERSION}
        if self.version is not None:
            out[H_MAPPING_VERSION] = self.version
        return await self._bus.publish(topic, value, key, out, *args, **kwargs)


def mapping_from_history(store: Any, mapping: Path, ref: str, config_dir: Path) -> CompiledMapping:
    """``syncbus map MAPPING --version V``: MAPPING is a mapping file (its route's history) or a route name."""
    from ..yamlfile import load_yaml_file

    if mapping.is_file():
        data = load_yaml_file(mapping).data
        route = data.get("mapping") if isinstance(data, dict) else None
        if not isinstance(route, str):
            raise VersionUnavailable(f"{mapping} has no 'mapping:' name to look its history up by")
        base = mapping.parent
    else:
        route, base = str(mapping), config_dir / "mappings"
    return compile_version(store, route, ref, base)


def check_history(store: Any, selection: Any, ref: str) -> None:
    """Every route of the selected dead letters has version ``ref`` in its history (else nothing is replayed)."""
    from ..dlq.operations import select_letters

    letters, _missing = select_letters(store, selection)
    for route in sorted({d.route for d in letters}):
        try:
            store.version_of(route, ref)
        except VersionNotFound as exc:
            raise VersionUnavailable(f"{exc}; nothing was replayed") from None
