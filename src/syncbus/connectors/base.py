"""Source connectors: what puts records onto the bus.

A connector type is a class with a ``Config`` pydantic model (its spec: the
fields and their descriptions are the documentation) registered under the
entry-point group ``syncbus.connectors``. Push connectors (HTTP ingress) are
served by the HTTP app; pull connectors (polls, file drops) run as tasks.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique source name; the `source` label of metrics.")
    type: str
    topic: str = Field(min_length=1, description="Bus topic the records are published to.")


class Source:
    """Base of connector types. ``push`` sources are driven by the HTTP app, not by a task."""

    Config: ClassVar[type[SourceConfig]] = SourceConfig
    push: ClassVar[bool] = False

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
