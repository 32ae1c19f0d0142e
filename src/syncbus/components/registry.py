"""One registry for every pluggable kind: sources, sinks, codecs, transforms.

Types come from two places: the built-ins below and the entry-point groups

=========  ======================  ===============================================
kind       entry-point group       what the entry point names
=========  ======================  ===============================================
source     ``syncbus.connectors``  a ``PollSource``/``PushSource`` class
sink       ``syncbus.sinks``       a ``BaseSink``-like class with a ``Config``
codec      ``syncbus.codecs``      a codec class (``decode``/``encode``)
transform  ``syncbus.transforms``  a step factory (``register_transform`` style)
=========  ======================  ===============================================

(any of them may also name a ready :class:`ComponentSpec`). The source group
keeps the name DESIGN fixes, ``syncbus.connectors``.

Rules, the same for every kind:

* a built-in wins over a plugin of the same name, so installing a package can
  never silently change what ``type: http`` does (the plugin is reported);
* a plugin that cannot be imported or cannot describe itself is reported
  (``syncbus plugins`` lists it with the reason) and refused when used -- it
  never takes the other types down;
* an unknown name gets a did-you-mean.

The registry is loaded once per process; :func:`refresh` forgets it (after a
``pip install`` in a running test session, or to inject entry points).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import ConfigError
from .adapters import SpecError, codec_spec, spec_for, transform_docs, transform_spec, transforms_module
from .spec import KINDS, ComponentSpec, Kind

log = logging.getLogger(__name__)

GROUPS: dict[Kind, str] = {
    "source": "syncbus.connectors",
    "sink": "syncbus.sinks",
    "codec": "syncbus.codecs",
    "transform": "syncbus.transforms",
}

BUILTIN_SOURCES: dict[str, str] = {
    "http_ingress": "syncbus.sources.http_ingress:HttpIngressSource",
    "generate": "syncbus.sources.generate:GenerateSource",
    "file_drop": "syncbus.sources.file_drop:FileDropSource",
    "sql_poll": "syncbus.sources.sql_poll:SqlPollSource",
    "http_poll": "syncbus.sources.http_poll:HttpPollSource",
    "kafka": "syncbus.sources.kafka_source:KafkaSource",
}
BUILTIN_SINKS: dict[str, str] = {
    "http": "syncbus.sinks.http:HttpSink",
    "sql": "syncbus.sinks.sql:SqlSink",
    "file": "syncbus.sinks.file:FileSink",
    "kafka": "syncbus.sinks.kafka:KafkaSink",
}
BUILTIN_TARGETS: dict[Kind, dict[str, str]] = {"source": BUILTIN_SOURCES, "sink": BUILTIN_SINKS}

Discover = Callable[[str], Iterable[EntryPoint]]


def installed_entry_points(group: str) -> Iterable[EntryPoint]:
    """The entry points of the installed distributions (the default discovery)."""
    return entry_points(group=group)


class UnknownComponentError(ConfigError):
    """No type of this kind has this name. ``suggestion`` is the closest known name, if any."""

    def __init__(self, kind: Kind, name: object, known: list[str], suggestion: str | None) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        self.suggestion = suggestion
        hint = f"did you mean {suggestion!r}? " if suggestion else ""
        super().__init__(f"unknown {kind} type {name!r} ({hint}known types: {', '.join(known) or 'none'})")


class BrokenComponentError(ConfigError):
    """The type exists but its plugin could not be loaded or cannot describe itself."""

    def __init__(self, kind: Kind, name: str, reason: str, loaded: bool) -> None:
        self.kind = kind
        self.name = name
        self.reason = reason
        what = "is unusable" if loaded else "could not be loaded"
        super().__init__(f"{kind} type {name!r} {what}: {reason}")


@dataclass(frozen=True, slots=True)
class Broken:
    """A plugin that is installed but unusable; ``obj`` is set when it imported but cannot describe itself."""

    kind: Kind
    name: str
    origin: str
    reason: str
    obj: Any = None

    @property
    def loaded(self) -> bool:
        return self.obj is not None

    def error(self) -> BrokenComponentError:
        return BrokenComponentError(self.kind, self.name, self.reason, self.loaded)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "origin": self.origin, "error": self.reason}


class Registry:
    """Specs by kind and name, plus the plugins that failed; immutable once built."""

    def __init__(self, specs: Iterable[ComponentSpec], broken: Iterable[Broken] = ()) -> None:
        self._specs: dict[Kind, dict[str, ComponentSpec]] = {k: {} for k in KINDS}
        self._broken: dict[Kind, dict[str, Broken]] = {k: {} for k in KINDS}
        for spec in specs:
            self._specs[spec.kind].setdefault(spec.name, spec)
        for b in broken:
            if b.name not in self._specs[b.kind]:
                self._broken[b.kind].setdefault(b.name, b)

    def find(self, kind: Kind, name: str) -> ComponentSpec | None:
        return self._specs[kind].get(name)

    def get(self, kind: Kind, name: object) -> ComponentSpec:
        """The spec, or :class:`UnknownComponentError` / :class:`BrokenComponentError`."""
        if isinstance(name, str):
            spec = self._specs[kind].get(name)
            if spec is not None:
                return spec
            broken = self._broken[kind].get(name)
            if broken is not None:
                raise broken.error()
        raise UnknownComponentError(kind, name, self.known(kind), self.suggest(kind, name))

    def names(self, kind: Kind) -> list[str]:
        """Usable types of a kind, sorted."""
        return sorted(self._specs[kind])

    def known(self, kind: Kind) -> list[str]:
        """Usable types plus installed ones that imported but are unusable: what a user may have meant."""
        return sorted({*self._specs[kind], *(n for n, b in self._broken[kind].items() if b.loaded)})

    def specs(self, kind: Kind | None = None) -> list[ComponentSpec]:
        kinds = KINDS if kind is None else (kind,)
        return [self._specs[k][n] for k in kinds for n in sorted(self._specs[k])]

    def broken(self, kind: Kind | None = None) -> list[Broken]:
        kinds = KINDS if kind is None else (kind,)
        return [self._broken[k][n] for k in kinds for n in sorted(self._broken[k])]

    def find_broken(self, kind: Kind, name: str) -> Broken | None:
        return self._broken[kind].get(name)

    def suggest(self, kind: Kind, name: object) -> str | None:
        if not isinstance(name, str):
            return None
        close = difflib.get_close_matches(name, self.known(kind), n=1)
        return close[0] if close else None


# --------------------------------------------------------------------------- loading


def load_target(target: str) -> Any:
    """``"pkg.module:Attr.sub"`` -> the object (what an entry point value names)."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _builtin_specs() -> list[ComponentSpec]:
    specs: list[ComponentSpec] = []
    for kind, table in BUILTIN_TARGETS.items():
        for name, target in table.items():
            specs.append(spec_for(kind, name, load_target(target), "builtin"))  # our bug if it fails: raise
    from ..formats import FORMATS, get_codec

    specs.extend(codec_spec(name, type(get_codec(name)), "builtin") for name in FORMATS)
    tmod = transforms_module()
    if tmod is None:
        log.error("syncbus.mapping.transforms cannot be imported: no transform types are listed")
        return specs
    docs = transform_docs()
    for name, tdef in getattr(tmod, "TRANSFORMS", {}).items():
        specs.append(transform_spec(name, tdef, "builtin" if tdef.builtin else "registered", docs))
    return specs


def load_registry(discover: Discover = installed_entry_points) -> Registry:
    """Built-ins, then every entry-point group; broken plugins are logged and kept as :class:`Broken`."""
    specs = _builtin_specs()
    taken = {(s.kind, s.name) for s in specs}
    broken: list[Broken] = []
    docs: dict[str, Any] | None = None
    for kind in KINDS:
        builtin_targets = BUILTIN_TARGETS.get(kind, {})
        for ep in discover(GROUPS[kind]):
            if (kind, ep.name) in taken:
                if builtin_targets.get(ep.name) != ep.value:  # our own pyproject declares the built-ins too
                    log.warning("%s plugin %s=%s ignored: %r is already a %s type", kind, ep.name, ep.value,
                                ep.name, kind)
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # one broken plugin must not take every type down
                broken.append(Broken(kind, ep.name, ep.value, f"{ep.value}: {type(exc).__name__}: {exc}"))
                log.warning("%s plugin %s=%s cannot be loaded: %s", kind, ep.name, ep.value, exc)
                continue
            try:
                if kind == "transform":
                    docs = transform_docs() if docs is None else docs
                    spec = transform_spec(ep.name, obj, ep.value, docs)
                else:
                    spec = spec_for(kind, ep.name, obj, ep.value)
            except (SpecError, ValueError, TypeError) as exc:
                broken.append(Broken(kind, ep.name, ep.value, str(exc), obj))
                log.warning("%s plugin %s=%s is unusable: %s", kind, ep.name, ep.value, exc)
                continue
            specs.append(spec)
            taken.add((kind, ep.name))
    return Registry(specs, broken)


_lock = threading.Lock()
_current: Registry | None = None
_discover: Discover = installed_entry_points


def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _current
    current = _current
    if current is None:
        with _lock:
            if _current is None:
                _current = load_registry(_discover)
            current = _current
    return current


def refresh(discover: Discover | None = None) -> None:
    """Forget the loaded registry; the next use loads it again, through ``discover`` when given."""
    global _current, _discover
    with _lock:
        _current = None
        _discover = discover or installed_entry_points
