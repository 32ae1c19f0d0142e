"""Size and depth limits shared by the codecs, and the helpers that enforce them.

Payloads come from systems we do not control (ingress, polled APIs, dropped
files). Every codec checks the size *before* it parses, so a 100 MB body costs
one ``len()`` and never becomes a Python object tree, and caps nesting so a
hostile document cannot exhaust the stack or make later recursive code fail.
"""

from __future__ import annotations

from typing import Final

from syncbus.errors import ConfigError, DecodeError

MIB: Final = 1024 * 1024

# One record rarely exceeds a few KiB; 16 MiB leaves room for batches while
# keeping the worst-case parse well under a second.
DEFAULT_MAX_BYTES: Final = 16 * MIB

# A CSV payload is a whole file of records, so it gets more room.
DEFAULT_CSV_MAX_BYTES: Final = 64 * MIB

# JSON: like System.Text.Json. Real CRM/ERP records are < 10 levels deep; 64
# keeps every decoded object printable and walkable by recursive code (repr,
# jsonschema, the mapping compiler) far below Python's recursion limit.
DEFAULT_JSON_MAX_DEPTH: Final = 64

# XML: element levels. Lists add no level in XML but do in JSON, so XML gets
# more headroom; SAP IDocs and SOAP envelopes stay under ~15.
DEFAULT_XML_MAX_DEPTH: Final = 200

BytesLike = bytes | bytearray | memoryview | str


def as_bytes(fmt: str, data: BytesLike) -> bytes:
    """Accept the byte-ish types callers actually have; ``str`` is taken as UTF-8 text."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DecodeError(fmt, f"text contains an unpaired surrogate at character {exc.start}") from None
    raise DecodeError(fmt, f"expected bytes, got {type(data).__name__}")


def check_size(fmt: str, data: bytes | bytearray | memoryview, max_bytes: int) -> None:
    """Refuse oversized input before any parsing work is done."""
    size = len(data)
    if size > max_bytes:
        raise DecodeError(fmt, f"input is {size} bytes, larger than the limit of {max_bytes} bytes")


def line_col(data: bytes, offset: int, encoding: str = "utf-8") -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset; only used on error paths."""
    head = data[:offset]
    line = head.count(b"\n") + 1
    last_nl = head.rfind(b"\n")
    col_bytes = head[last_nl + 1:]
    col = len(col_bytes.decode(encoding, errors="replace")) + 1
    return line, col


def check_limit_options(fmt: str, max_bytes: int, max_depth: int | None = None) -> None:
    """Limits are configuration: a nonsense value is refused when the codec is built, not per record."""
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
        raise ConfigError(f"{fmt} codec: max_bytes must be a positive integer, got {max_bytes!r}")
    if max_depth is not None and (
        not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth <= 0
    ):
        raise ConfigError(f"{fmt} codec: max_depth must be a positive integer, got {max_depth!r}")
