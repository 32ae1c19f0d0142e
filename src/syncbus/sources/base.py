"""What every source type builds on: its config model, the records it produces, its lifecycle.

Two shapes, because systems hand over data in two ways:

* :class:`PushSource` -- the system calls us (HTTP ingress). The HTTP app
  drives it; the type is mostly its spec.
* :class:`PollSource` -- we ask the system (a database, a folder, an API, a
  Kafka topic). The type implements one method, :meth:`PollSource.poll`,
  and the poll runner (``sources/poller.py``, after Camel's
  ScheduledPollConsumer) does everything else: the schedule, paging, retries
  with backoff, publishing, and the durable cursor.

The cursor contract is what makes polling at-least-once without losing or
re-reading data: ``poll(cursor)`` returns the records *after* ``cursor`` and
the cursor *after those records*; the runner stores that cursor only once
the bus has acknowledged every record of the batch, and then calls
:meth:`PollSource.committed` (where a file source moves its files and a
Kafka source commits its offsets). A crash between publish and store
re-polls the same page: duplicates are possible, losses are not.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..units import Duration
from .schedule import DEFAULT_INTERVAL, check_cron, check_timezone

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class SourceConfig(BaseModel):
    """Options every source takes. Source types subclass it and narrow ``type`` to a Literal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN,
                      description="Unique source name: the `source` label of metrics, the checkpoint's key.")
    type: str = Field(description="The source type (an entry point in the `syncbus.connectors` group).")
    topic: str = Field(min_length=1, description="Bus topic the records are published to.")


class PollRetry(BaseModel):
    """Backoff for a failing poll (the database is down): doubles from ``initial`` up to ``max``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial: Duration = Field(1.0, gt=0, description="First wait after a failed poll (duration).")
    max: Duration = Field(300.0, gt=0, description="Longest wait between tries; never past the next slot.")


class PollSourceConfig(SourceConfig):
    """Options every poll source takes: when to poll, how much per page, how to back off."""

    schedule: str | None = Field(
        None, description="Cron expression of the runs (5 fields, e.g. `0 22 * * *`); instead of `interval`.")
    timezone: str = Field("UTC", description="Time zone of `schedule` (IANA name, e.g. Asia/Shanghai).")
    interval: Duration | None = Field(
        None, gt=0, description=f"Time between runs when there is no `schedule` (default {DEFAULT_INTERVAL:g}s).")
    batch_size: int = Field(500, ge=1, le=100_000,
                            description="Most records asked for per poll (one page; pages repeat while more).")
    retry: PollRetry = Field(PollRetry.model_validate({}), description="Backoff of a failing poll.")  # frozen

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _one_schedule(self) -> PollSourceConfig:
        if self.schedule is not None and self.interval is not None:
            raise ValueError("give schedule (cron) or interval, not both")
        return self


@dataclass(slots=True)
class NewRecord:
    """A record a source wants on the bus; the publisher stamps id, time, source and content type.

    ``headers`` carry what a later stage needs to explain the record (a file
    source's ``syncbus-file``/``syncbus-line``); they cannot override the
    ``syncbus-*`` headers the publisher sets. ``id`` is for sources that have
    a stable id of their own; by default a fresh one is assigned.
    """

    value: bytes
    key: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    id: str | None = None


@dataclass(slots=True)
class PollBatch:
    """One page of a poll: its records, the cursor after them (JSON-serialisable), whether more wait."""

    records: list[NewRecord]
    cursor: Any
    more: bool = False


class Source:
    """Base of every source type: the spec (``Config``, docstring, ``examples``, ``status``) and the hooks.

    ``start``/``stop`` open and close connections and must be idempotent (a
    reload may stop a source that never started); ``check`` answers "can I
    reach my system?" for status pages, cheaply.
    """

    Config: ClassVar[type[SourceConfig]] = SourceConfig
    examples: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "stable"
    mode: ClassVar[Literal["push", "poll"]]

    def __init__(self, config: SourceConfig | Mapping[str, Any]) -> None:
        # a dict (tests, plugins building sources by hand) is validated by the type's own model
        if not isinstance(config, self.Config):
            config = self.Config.model_validate(dict(config) if isinstance(config, Mapping) else config)
        self.config = config
        self.name: str = config.name
        self.topic: str = config.topic

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def check(self) -> bool:
        return True


class PushSource(Source):
    """A source the outside system calls (HTTP ingress): records arrive through the HTTP app."""

    mode: ClassVar[Literal["push", "poll"]] = "push"


class PollSource(Source, abc.ABC):
    """A source syncbus asks for records on a schedule; implement :meth:`poll`."""

    Config: ClassVar[type[SourceConfig]] = PollSourceConfig
    mode: ClassVar[Literal["push", "poll"]] = "poll"
    config: PollSourceConfig

    @abc.abstractmethod
    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        """At most ``limit`` records after ``cursor``, the cursor after them, and whether more wait.

        ``cursor`` is None on the first page of a full load and when nothing
        was ever stored; ``full`` is True for a full load (the first run of a
        source, ``syncbus sync --full``), for types whose snapshot differs from
        their increment. Raise any exception for "cannot reach the system":
        the runner retries with backoff and keeps the cursor where it was.
        Return the given cursor unchanged when there is nothing new.
        """

    async def committed(self, batch: PollBatch) -> None:
        """Called once ``batch`` is on the bus and its cursor is stored (move files, commit offsets)."""
        return None

    def later(self, stored: Any | None, seen: Any | None) -> Any | None:
        """Which of two cursors is further along, for a full load that ends beside a running node.

        The default compares numbers with numbers and text with text (ISO
        timestamps, zero-padded ids) and otherwise trusts ``seen``; types with
        structured cursors override it.
        """
        if stored is None:
            return seen
        if seen is None:
            return stored
        numbers = (int, float)
        if isinstance(stored, bool) or isinstance(seen, bool):
            return seen
        if (isinstance(stored, numbers) and isinstance(seen, numbers)) or (
                isinstance(stored, str) and isinstance(seen, str)):
            return max(stored, seen)
        return seen
