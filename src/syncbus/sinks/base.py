"""What every sink type shares: the Delivery handed to it, the Sink protocol, the config base.

Sinks are plugins (entry point group ``syncbus.sinks``). Following Redpanda
Connect, a sink type's pydantic config model IS its spec: the field
descriptions become the reference docs, and validation errors keep pydantic's
``loc`` so the config loader can point at ``file:line``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from syncbus.sinks.retry import RetryPolicy, RetrySpec
from syncbus.units import Duration


@dataclass(slots=True)
class Delivery:
    """One mapped record on its way to one sink.

    ``body`` is already encoded (the sink sends bytes as they are, so what
    ``syncbus map`` prints is exactly what goes out); ``payload`` keeps the
    mapped object for sinks that need fields rather than bytes (SQL, CSV).
    """

    route: str
    mapping_version: int
    sink: str
    record_id: str
    key: str | None
    idempotency_key: str  # "<route>:<key>:<record id>", built by the router
    body: bytes
    content_type: str
    payload: Any
    traceparent: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Sink(Protocol):
    """A delivery target. ``send`` makes ONE attempt; ``retry`` decides about the rest.

    ``send`` raises :class:`syncbus.errors.DeliveryError` with ``retryable``
    (and ``retry_after``/``status`` when known) on failure. It must be safe to
    call concurrently from many tasks.
    """

    name: str
    retry: RetryPolicy

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, delivery: Delivery) -> None: ...


class SinkConfig(BaseModel):
    """Options every sink takes. Sink types subclass this and narrow ``type`` to a Literal."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Unique sink name; routes refer to it and metrics label with it.")
    type: str = Field(description="The sink type (an entry point in the `syncbus.sinks` group).")
    retry: RetrySpec = Field(default_factory=RetrySpec, description="Retry policy for failed attempts.")
    timeout: Duration = Field(10.0, gt=0, description="Time limit for one attempt (duration, e.g. 10s).")


class BaseSink:
    """Convenience base for sink classes: keeps the config, the name and the retry policy."""

    Config: ClassVar[type[SinkConfig]] = SinkConfig

    def __init__(self, config: SinkConfig | Mapping[str, Any]) -> None:
        # a dict (tests, plugins building sinks by hand) is validated by the type's own model
        if not isinstance(config, self.Config):
            config = self.Config.model_validate(config)
        self.config = config
        self.name = config.name
        self.retry = RetryPolicy(config.retry)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
