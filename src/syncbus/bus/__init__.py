"""The bus: where records wait between connectors and routes.

``open_bus(url)`` picks the implementation from the URL scheme:
``embedded:///path/to/syncbus.db`` (SQLite, the default) or
``kafka://host:port[,host:port]``.
"""

from __future__ import annotations

from .base import Bus, Consumer, parse_bus_url

__all__ = ["Bus", "Consumer", "open_bus", "parse_bus_url"]


def open_bus(url: str) -> Bus:
    scheme, target = parse_bus_url(url)
    if scheme == "kafka":
        from .kafka import KafkaBus

        return KafkaBus(target)
    from .embedded import EmbeddedBus

    return EmbeddedBus(target)
