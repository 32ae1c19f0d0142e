"""What the dead-letter store keeps: dead letters, their audit trail, trace events.

Plain dataclasses so the router, the CLI and the HTTP API share one shape;
``to_json`` is the machine-readable form ``dlq list --json``, ``GET /dlq`` and
``syncbus trace --json`` print. Times are always timezone-aware UTC.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..record import H_DEAD_LETTER, H_MAPPING_VERSION, H_REPLAY_ROUTE, H_REPLAY_SINK, Record, new_id

Reason = Literal["schema", "mapping", "delivery", "decode"]
Status = Literal["pending", "replaying", "replayed", "discarded", "delivered"]
Stage = Literal["received", "mapped", "skipped", "attempt", "delivered", "dead_lettered", "replayed", "duplicate"]
Action = Literal["edit", "replay", "replayed", "discard", "resolve", "revert"]

REASONS: frozenset[str] = frozenset({"schema", "mapping", "delivery", "decode"})
STATUSES: frozenset[str] = frozenset({"pending", "replaying", "replayed", "discarded", "delivered"})
# A dead letter is "open" while its record has no final fate: a later delivery of the
# same record (after a crash, or the replay itself) resolves every open one.
OPEN_STATUSES: frozenset[str] = frozenset({"pending", "replaying", "replayed"})
# The dead-letter state machine: every status change is one of these, compare-and-set.
TRANSITIONS: frozenset[tuple[str, str]] = frozenset({
    ("pending", "replaying"), ("replaying", "replayed"), ("replaying", "pending"),
    ("pending", "discarded"),
    ("pending", "delivered"), ("replaying", "delivered"), ("replayed", "delivered"),
})
STAGES: frozenset[str] = frozenset(
    {"received", "mapped", "skipped", "attempt", "delivered", "dead_lettered", "replayed", "duplicate"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def storable(text: str | None) -> str | None:
    """Text as every store can keep it: PostgreSQL refuses NUL in text columns, so a NUL (from a record's key,
    a target's error body, a typed reason) is kept as the four characters ``\\x00`` -- on SQLite too, so
    the same letter reads and filters the same on both."""
    return text.replace("\x00", "\\x00") if text is not None and "\x00" in text else text


def as_utc(dt: datetime) -> datetime:
    """Naive datetimes are taken as UTC (that is how the store writes them)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def new_dead_letter_id() -> str:
    # Prefixed so a dead-letter id is never mistaken for a record id (both are
    # time-sortable hex).
    return "dl-" + new_id()


def encode_value(value: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 text when it is, else base64 -- JSON cannot carry raw bytes."""
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def decode_value(text: str, encoding: str = "utf-8") -> bytes:
    """The inverse of ``encode_value`` (e.g. for an edited value sent as JSON)."""
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"value is not valid base64: {e}") from e
    if encoding == "utf-8":
        return text.encode("utf-8")
    raise ValueError(f"unknown value encoding {encoding!r} (expected utf-8 or base64)")


@dataclass(kw_only=True, slots=True)
class DeadLetter:
    """A record a route could not deliver, with everything needed to fix and replay it."""

    route: str
    reason: str                      # Reason
    error: str
    value: bytes
    attempts: int = 1
    first_failed_at: datetime = field(default_factory=utcnow)
    last_failed_at: datetime = field(default_factory=utcnow)
    status: str = "pending"          # Status
    mapping_version: int = 0
    sink: str | None = None
    record_id: str = ""
    topic: str = ""
    partition: int = 0
    offset: int = -1
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    replay_of: str | None = None     # the dead letter whose replay failed again into this one
    status_at: datetime | None = field(default=None, compare=False)
    id: str = field(default_factory=new_dead_letter_id)
    # its value was edited: the error (and the trace) may quote values the current one no longer holds
    edited: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        self.first_failed_at = as_utc(self.first_failed_at)
        self.last_failed_at = max(as_utc(self.last_failed_at), self.first_failed_at)

    @classmethod
    def from_record(cls, record: Record, *, route: str, reason: str, error: str, attempts: int = 1,
                    mapping_version: int = 0, sink: str | None = None,
                    at: datetime | None = None) -> DeadLetter:
        when = as_utc(at) if at else utcnow()
        headers = dict(record.headers)
        replay_of = headers.pop(H_DEAD_LETTER, None)
        # the replay markers belong to one replay, not to the record
        headers.pop(H_REPLAY_ROUTE, None)
        headers.pop(H_REPLAY_SINK, None)
        headers.pop(H_MAPPING_VERSION, None)   # a versioned replay chose that version once, not for good
        return cls(route=route, reason=reason, error=error, value=record.value, attempts=attempts,
                   first_failed_at=when, last_failed_at=when, mapping_version=mapping_version, sink=sink,
                   record_id=record.id, topic=record.topic, partition=record.partition,
                   offset=record.offset, key=record.key, headers=headers, replay_of=replay_of)

    def to_record(self) -> Record:
        """The original record as it came off the bus (with the current, possibly edited, value)."""
        return Record(value=self.value, key=self.key, headers=dict(self.headers), topic=self.topic,
                      partition=self.partition, offset=self.offset)

    def to_json(self) -> dict[str, Any]:
        text, encoding = encode_value(self.value)
        return {
            "id": self.id,
            "route": self.route,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at.isoformat(),
            "last_failed_at": self.last_failed_at.isoformat(),
            "status": self.status,
            "status_at": self.status_at.isoformat() if self.status_at else None,
            "replay_of": self.replay_of,
            "edited": self.edited,
            "key": self.key,
            "mapping_version": self.mapping_version,
            "sink": self.sink,
            "record_id": self.record_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "record": {
                "id": self.record_id,
                "key": self.key,
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "headers": dict(self.headers),
                "value": text,
                "value_encoding": encoding,
            },
        }


@dataclass(kw_only=True, slots=True)
class AuditEntry:
    """Who did what to a dead letter, and why."""

    id: int
    dead_letter_id: str
    action: str                      # Action
    actor: str
    reason: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "dead_letter_id": self.dead_letter_id, "action": self.action,
                "actor": self.actor, "reason": self.reason, "at": self.at.isoformat(),
                "details": self.details}


@dataclass(kw_only=True, slots=True)
class TraceEvent:
    """One step in the life of a record (``syncbus trace ID``)."""

    record_id: str
    stage: str                       # Stage
    route: str | None = None
    at: datetime = field(default_factory=utcnow)
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.at = as_utc(self.at)

    def to_json(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "route": self.route, "stage": self.stage,
                "at": self.at.isoformat(), "detail": self.detail}
