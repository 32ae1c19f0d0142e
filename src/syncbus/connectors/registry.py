"""Connector type registry: built-ins plus the ``syncbus.connectors`` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from .base import Source


@cache
def source_types() -> dict[str, type[Source]]:
    from .http_ingress import HttpIngressSource

    types: dict[str, type[Source]] = {"http_ingress": HttpIngressSource}
    for ep in entry_points(group="syncbus.connectors"):
        if ep.name not in types:
            types[ep.name] = ep.load()
    return types
