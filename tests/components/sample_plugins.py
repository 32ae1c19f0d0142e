"""Plugin types as a third party would write them, for registry and loader tests.

Entry points name these by ``tests.components.sample_plugins:...``; the
conftest injects them as if an installed package declared them.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any, ClassVar, Literal

from pydantic import Field

from syncbus.plugin import (
    BaseSink,
    ComponentSpec,
    Delivery,
    NewRecord,
    PollBatch,
    PollSource,
    PollSourceConfig,
    SinkConfig,
    SourceConfig,
)

HERE = __name__


class LedgerPollConfig(PollSourceConfig):
    type: Literal["ledger_poll"] = "ledger_poll"
    dsn: str = Field(description="Database URL with its password.", json_schema_extra={"secret": True})
    table: str = Field(description="Table to read.")


class LedgerPoll(PollSource):
    """Poll a ledger table.

    Test plugin: rows come from ``rows`` (class attribute), the cursor is the last row id.
    """

    Config: ClassVar[type[SourceConfig]] = LedgerPollConfig
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "experimental"
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "ledger", "type": "ledger_poll", "topic": "ledger", "dsn_env": "LEDGER_DSN", "table": "postings"}]

    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        return PollBatch([NewRecord(b"{}")], cursor=(cursor or 0) + 1)


class NullSinkConfig(SinkConfig):
    type: Literal["null"] = "null"
    drop_rate: float = Field(0.0, ge=0, le=1, description="Share of records silently dropped.")


class NullSink(BaseSink):
    """Discard every record (test plugin)."""

    Config = NullSinkConfig
    examples: ClassVar[list[dict[str, Any]]] = [{"name": "void", "type": "null"}]

    async def send(self, delivery: Delivery) -> None:
        return None


class UpperCodec:
    """Text upper-cased on encode (test plugin codec)."""

    name = "upper"
    content_type = "text/plain"

    def __init__(self, *, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def decode(self, data: bytes) -> Any:
        return data.decode(self.encoding)

    def encode(self, obj: Any) -> bytes:
        return str(obj).upper().encode(self.encoding)


def reverse() -> Any:
    """Reverse a text (test plugin transform)."""
    return lambda value: value[::-1] if isinstance(value, str) else value


class NoConfig:
    """A sink without a Config model."""


ECHO_SPEC = ComponentSpec(kind="sink", name="echo", summary="A sink given as a ready spec.", config=NullSinkConfig,
                          factory=NullSink)


def entry_points() -> list[EntryPoint]:
    return [
        EntryPoint("ledger_poll", f"{HERE}:LedgerPoll", "syncbus.connectors"),
        EntryPoint("http_ingress", f"{HERE}:LedgerPoll", "syncbus.connectors"),  # may not replace a built-in
        EntryPoint("null", f"{HERE}:NullSink", "syncbus.sinks"),
        EntryPoint("echo", f"{HERE}:ECHO_SPEC", "syncbus.sinks"),
        EntryPoint("bare", f"{HERE}:NoConfig", "syncbus.sinks"),
        EntryPoint("gone", "syncbus_no_such_package.sinks:Sink", "syncbus.sinks"),
        EntryPoint("upper", f"{HERE}:UpperCodec", "syncbus.codecs"),
        EntryPoint("reverse", f"{HERE}:reverse", "syncbus.transforms"),
    ]
