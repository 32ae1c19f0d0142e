"""The public API for people writing syncbus plugins: import from here, nothing else.

Like httpx's top-level package, this is a small facade with a pinned
``__all__`` (a test fails when it changes): plugin authors code against
these names, and everything behind them may be reorganised freely.

A source type is a :class:`PollSource` (implement ``poll``) or a
:class:`PushSource` subclass with a ``Config`` model derived from
:class:`SourceConfig` / :class:`PollSourceConfig`; a sink type is a
:class:`BaseSink` subclass with a ``Config`` derived from
:class:`SinkConfig` and an ``async send(delivery)`` that raises
:class:`DeliveryError`. Each class's docstring (first paragraph: the
summary), its ``Config`` field descriptions, its ``examples`` ClassVar (a
list of option mappings) and its ``status`` ClassVar make its
:class:`ComponentSpec`. Mark secret options with
``Field(..., json_schema_extra={"secret": True})`` (or type them
``SecretStr``): files must then give them as ``x_env: VAR``. Register with
an entry point::

    [project.entry-points."syncbus.connectors"]   # sources
    my_source = "my_pkg.source:MySource"
    [project.entry-points."syncbus.sinks"]
    my_sink = "my_pkg.sink:MySink"

``syncbus plugins`` then lists the types, ``syncbus validate`` checks them
and ``syncbus docs`` documents them.
"""

from __future__ import annotations

from .components.spec import ComponentSpec, OptionDoc
from .errors import ConfigError, DeliveryError
from .sinks.base import BaseSink, Delivery, Sink, SinkConfig
from .sources.base import NewRecord, PollBatch, PollSource, PollSourceConfig, PushSource, Source, SourceConfig
from .units import Duration, Size

__all__ = [
    "BaseSink",
    "ComponentSpec",
    "ConfigError",
    "Delivery",
    "DeliveryError",
    "Duration",
    "NewRecord",
    "OptionDoc",
    "PollBatch",
    "PollSource",
    "PollSourceConfig",
    "PushSource",
    "Sink",
    "SinkConfig",
    "Size",
    "Source",
    "SourceConfig",
]
