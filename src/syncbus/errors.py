"""Error classes shared by every stage.

Each error carries enough context to print one useful line for a person:
where (file:line:col, field, source path) and what was expected. The command
line and the HTTP layer print ``str(err)``; nobody should ever see a traceback
for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass


class SyncbusError(Exception):
    """Base of every error syncbus raises on purpose."""


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a configuration file (1-based line and column)."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col or 1}"
        return self.file


class ConfigError(SyncbusError):
    """A mapping, connector, lookup or test file is invalid.

    Printed as ``file:line:col: message`` so editors can jump to it.
    """

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class ConfigErrors(SyncbusError):
    """Several configuration errors found in one pass (validate reports them all)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class DecodeError(SyncbusError):
    """A payload could not be decoded (bad JSON/XML/CSV, bad encoding, too deep, too big, unsafe XML)."""

    def __init__(self, fmt: str, message: str) -> None:
        self.fmt = fmt
        self.message = message
        super().__init__(f"invalid {fmt}: {message}")


class EncodeError(SyncbusError):
    """A mapped object cannot be written in the target format."""

    def __init__(self, fmt: str, message: str) -> None:
        self.fmt = fmt
        self.message = message
        super().__init__(f"cannot encode {fmt}: {message}")


class MappingError(SyncbusError):
    """A record could not be mapped; names the target field and the source path."""

    def __init__(self, field: str, reason: str, source: str | None = None) -> None:
        self.field = field
        self.source = source
        self.reason = reason
        where = f"field {field!r}" + (f" (from {source!r})" if source else "")
        super().__init__(f"{where}: {reason}")


class TransformError(SyncbusError):
    """A transform could not handle a value; the compiler wraps it into a MappingError with the field."""


class SchemaError(SyncbusError):
    """A record or a mapped object does not match its JSON Schema."""

    def __init__(self, which: str, path: str, reason: str) -> None:
        self.which = which  # "input" or "output"
        self.path = path
        self.reason = reason
        super().__init__(f"{which} schema: at {path or '/'}: {reason}")


class DeliveryError(SyncbusError):
    """A sink could not deliver. ``retryable`` tells the retry policy whether to try again."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(message)


class BusError(SyncbusError):
    """The bus is unreachable or refused an operation."""


class IdempotencyConflict(SyncbusError):
    """An Idempotency-Key was used before with a different body (IETF Idempotency-Key draft: 422)."""

    def __init__(self, source: str, key: str) -> None:
        self.source = source
        self.key = key
        super().__init__(f"Idempotency-Key {key!r} was already used for a different body on source {source!r}")


class IdempotencyInProgress(SyncbusError):
    """Another request with this Idempotency-Key is being published right now (409)."""

    def __init__(self, source: str, key: str) -> None:
        self.source = source
        self.key = key
        super().__init__(f"a request with Idempotency-Key {key!r} is still in progress; retry shortly")
