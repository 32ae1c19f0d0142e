"""The component model: one registry and one spec format for every pluggable kind.

A *kind* is source, sink, codec or transform; a *type* is one entry of a
kind (``http_ingress``, ``sql``, ``xml``, ``decimal``). Each type declares a
:class:`~syncbus.components.spec.ComponentSpec` -- options, summary, examples,
status, secrets -- and everything else is derived from it: validation of
``connectors/*.yaml`` (``syncbus.config``), ``syncbus plugins`` and ``syncbus
docs`` (``docs.py``), the editor JSON Schema (``schema.py``). See
``registry.py`` for where types come from (built-ins, entry points);
``syncbus.components.registry.registry()`` is the process-wide registry
(not re-exported here, where the name would hide the module).
"""

from __future__ import annotations

from .registry import (
    GROUPS,
    Broken,
    BrokenComponentError,
    Registry,
    UnknownComponentError,
    load_registry,
    refresh,
)
from .spec import KINDS, ComponentSpec, Kind, OptionDoc

__all__ = ["GROUPS", "KINDS", "Broken", "BrokenComponentError", "ComponentSpec", "Kind", "OptionDoc", "Registry",
           "UnknownComponentError", "load_registry", "refresh"]
