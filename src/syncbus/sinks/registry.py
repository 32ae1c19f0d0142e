"""Sink types by name: the built-ins plus plugins from the ``syncbus.sinks`` entry point group.

A plugin is a class with a ``Config`` pydantic model (a :class:`SinkConfig`
subclass) and a constructor taking that model; installing a package that
declares ``[project.entry-points."syncbus.sinks"] mytype = "pkg.mod:MySink"``
makes ``type: mytype`` available in connector files.

Built-ins win over a plugin of the same name, so installing a package can
never silently replace how ``type: http`` behaves.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from syncbus.errors import ConfigError
from syncbus.sinks.base import Sink, SinkConfig

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "syncbus.sinks"
BUILTIN_SINKS: dict[str, str] = {
    "http": "syncbus.sinks.http:HttpSink",
    "sql": "syncbus.sinks.sql:SqlSink",
    "file": "syncbus.sinks.file:FileSink",
    "kafka": "syncbus.sinks.kafka:KafkaSink",
}

Loc = tuple[str | int, ...]


class SinkConfigError(ConfigError):
    """A sink block is invalid. ``problems`` keeps each (loc, message), loc relative to the block.

    The config loader maps a loc such as ``("retry", "attempts")`` back to the
    YAML line; ``str()`` is a readable one-liner for everything else.
    """

    def __init__(self, sink: str | None, problems: list[tuple[Loc, str]]) -> None:
        self.sink = sink
        self.problems = problems
        text = "; ".join(f"{format_loc(loc)}: {msg}" if loc else msg for loc, msg in problems)
        super().__init__(f"sink {sink!r}: {text}" if sink else text)


def format_loc(loc: Loc) -> str:
    """("retry", "attempts") -> "retry.attempts"; ("headers", 0) -> "headers[0]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True, slots=True)
class _Types:
    loaded: dict[str, type]
    broken: dict[str, str]  # type name -> why it could not be loaded


def _load(target: str) -> type:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return typing.cast(type, obj)


@functools.cache
def _types() -> _Types:
    loaded: dict[str, type] = {}
    broken: dict[str, str] = {}
    for name, target in BUILTIN_SINKS.items():
        loaded[name] = _load(target)  # a broken built-in is our bug: let it raise
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_SINKS:
            if ep.value != BUILTIN_SINKS[ep.name]:
                log.warning("sink plugin %s=%s ignored: %r is a built-in sink type",
                            ep.name, ep.value, ep.name)
            continue
        try:
            loaded[ep.name] = ep.load()
        except Exception as exc:  # one broken plugin must not take every sink down
            broken[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
            log.warning("sink plugin %s=%s cannot be loaded: %s", ep.name, ep.value, exc)
    return _Types(loaded, broken)


def sink_types() -> dict[str, type]:
    """Every usable sink type by name (a copy; loaded once per process, see :func:`refresh`)."""
    return dict(_types().loaded)


def refresh() -> None:
    """Forget the loaded types, e.g. after installing a plugin in a running test session."""
    _types.cache_clear()


def sink_config(config: Mapping[str, Any]) -> SinkConfig:
    """Validate a sink block (``*_env`` already resolved) into its type's config model."""
    if not isinstance(config, Mapping):
        raise SinkConfigError(
            None, [((), f"a sink must be a mapping of options, not {type(config).__name__}")])
    name = config.get("name")
    label = name if isinstance(name, str) else None
    cls = _sink_class(config.get("type"), label)
    model: type[SinkConfig] = cls.Config  # type: ignore[attr-defined]
    try:
        return model.model_validate(dict(config))
    except ValidationError as exc:
        raise SinkConfigError(label, _problems(model, exc)) from exc


def build_sink(config: Mapping[str, Any]) -> Sink:
    """A ready-to-start sink from its config block; raises :class:`SinkConfigError` if invalid."""
    model = sink_config(config)
    cls = sink_types()[model.type]
    return typing.cast(Sink, cls(model))


def _sink_class(type_name: Any, label: str | None) -> type:
    found = _types()
    known = ", ".join(sorted(found.loaded)) or "none"
    if type_name is None:
        raise SinkConfigError(label, [(("type",), f"missing sink type (known types: {known})")])
    if not isinstance(type_name, str):
        raise SinkConfigError(label, [(("type",), f"sink type must be text (known types: {known})")])
    if type_name in found.broken:
        raise SinkConfigError(
            label, [(("type",), f"sink type {type_name!r} could not be loaded: {found.broken[type_name]}")])
    cls = found.loaded.get(type_name)
    if cls is None:
        close = difflib.get_close_matches(type_name, list(found.loaded), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SinkConfigError(
            label, [(("type",), f"unknown sink type {type_name!r} ({hint}known types: {known})")])
    config_model = getattr(cls, "Config", None)
    if not (isinstance(config_model, type) and issubclass(config_model, SinkConfig)):
        raise SinkConfigError(
            label, [(("type",), f"sink type {type_name!r} ({cls.__module__}.{cls.__qualname__}) "
                                "has no Config model derived from SinkConfig")])
    return cls


def _problems(model: type[BaseModel], exc: ValidationError) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            known = f" (known options: {', '.join(owner.model_fields)})" if owner is not None else ""
            msg = f"unknown option {loc[-1]!r}{known}"
        elif kind == "missing":
            msg = "required option missing"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        problems.append((loc, msg))
    return problems


def _model_at(model: type[BaseModel], path: Loc) -> type[BaseModel] | None:
    """The nested model a loc points into, through ``X | None``; None when it cannot tell."""
    current: type[BaseModel] = model
    for part in path:
        if not isinstance(part, str) or part not in current.model_fields:
            return None
        nested = _model_in(current.model_fields[part].annotation)
        if nested is None:
            return None
        current = nested
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None
