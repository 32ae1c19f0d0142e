"""Sink types by name: a thin view of the component registry (``syncbus.components``), kind "sink".

A plugin is a class with a ``Config`` pydantic model (a :class:`SinkConfig`
subclass) and a constructor taking that model; installing a package that
declares ``[project.entry-points."syncbus.sinks"] mytype = "pkg.mod:MySink"``
makes ``type: mytype`` available in connector files. Built-ins win over a
plugin of the same name; a broken plugin is reported, not fatal (see
:mod:`syncbus.components.registry`, which holds the rules for every kind).

This module keeps the sink-specific API older callers use: ``sink_types()``,
``sink_config()``, ``build_sink()`` and ``refresh()``.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from syncbus.components import registry as components
from syncbus.components.registry import BUILTIN_SINKS, BrokenComponentError, UnknownComponentError
from syncbus.components.validation import Loc, format_loc, problems
from syncbus.errors import ConfigError
from syncbus.sinks.base import Sink, SinkConfig

__all__ = ["BUILTIN_SINKS", "ENTRY_POINT_GROUP", "SinkConfigError", "build_sink", "format_loc", "refresh",
           "sink_config", "sink_types"]

ENTRY_POINT_GROUP = components.GROUPS["sink"]


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


def _discover(group: str) -> list[EntryPoint]:
    # Looked up at call time, so patching this module's ``entry_points`` (tests) still works.
    return list(entry_points(group=group))


def sink_types() -> dict[str, type]:
    """Every sink type that loaded, by name -- usable ones and ones whose spec is broken (a copy)."""
    reg = components.registry()
    types: dict[str, type] = {s.name: typing.cast(type, s.factory) for s in reg.specs("sink")}
    for broken in reg.broken("sink"):
        if broken.loaded:
            types[broken.name] = broken.obj
    return types


def refresh() -> None:
    """Forget the loaded types, e.g. after installing a plugin in a running test session."""
    components.refresh(_discover)


def sink_config(config: Mapping[str, Any]) -> SinkConfig:
    """Validate a sink block (``*_env`` already resolved) into its type's config model."""
    if not isinstance(config, Mapping):
        raise SinkConfigError(
            None, [((), f"a sink must be a mapping of options, not {type(config).__name__}")])
    name = config.get("name")
    label = name if isinstance(name, str) else None
    type_name = config.get("type")
    if type_name is None:
        known = ", ".join(components.registry().known("sink")) or "none"
        raise SinkConfigError(label, [(("type",), f"missing sink type (known types: {known})")])
    if not isinstance(type_name, str):
        known = ", ".join(components.registry().known("sink")) or "none"
        raise SinkConfigError(label, [(("type",), f"sink type must be text (known types: {known})")])
    try:
        spec = components.registry().get("sink", type_name)
    except (UnknownComponentError, BrokenComponentError) as exc:
        raise SinkConfigError(label, [(("type",), exc.message)]) from None
    model = typing.cast(type[SinkConfig], spec.config)
    try:
        return model.model_validate(dict(config))
    except ValidationError as exc:
        raise SinkConfigError(label, problems(model, exc)) from exc


def build_sink(config: Mapping[str, Any]) -> Sink:
    """A ready-to-start sink from its config block; raises :class:`SinkConfigError` if invalid."""
    model = sink_config(config)
    spec = components.registry().get("sink", model.type)
    assert spec.factory is not None
    return typing.cast(Sink, spec.factory(model))
