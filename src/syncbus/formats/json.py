"""JSON codec on orjson, hardened for payloads from systems we do not control.

What orjson already refuses and we only re-word: invalid UTF-8 (we add the real
byte position), truncated documents, NaN/Infinity, trailing garbage, nesting
beyond its fixed 1024 levels (it fails fast, no RecursionError). What we add: a
size limit checked before parsing, a configurable depth limit (default 64), and
tolerance for a leading UTF-8 BOM (RFC 8259 allows ignoring it; Windows tools
write it).

Number semantics are orjson's, on purpose (fast, and what every Python JSON user
expects): ``1.10`` decodes to the float ``1.1``; integers beyond 64 bits decode
to floats (precision is lost); duplicate keys keep the last value. Money should
travel as strings or be normalised with the mapping's ``decimal()`` transform.
On encode, ``Decimal`` is written as an exact JSON number (``12.30`` stays
``12.30``); non-ASCII is kept as UTF-8; dict keys must be ``str``; float NaN and
infinities are written as ``null`` (orjson's behaviour).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Final

import orjson

from syncbus.errors import DecodeError, EncodeError
from syncbus.formats.limits import (
    DEFAULT_JSON_MAX_DEPTH,
    DEFAULT_MAX_BYTES,
    BytesLike,
    as_bytes,
    check_limit_options,
    check_size,
    line_col,
)

_FMT: Final = "json"
_BOM: Final = b"\xef\xbb\xbf"
# Tokens that matter for nesting: strings (skipped whole, so brackets inside them
# do not count) and the four brackets. Used only to locate a depth error.
_DEPTH_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonCodec:
    """Decode/encode one JSON document per call. Safe to share between tasks and threads."""

    name: str = "json"
    content_type: str = "application/json"

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_depth: int = DEFAULT_JSON_MAX_DEPTH) -> None:
        check_limit_options(_FMT, max_bytes, max_depth)
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def __repr__(self) -> str:
        return f"JsonCodec(max_bytes={self.max_bytes}, max_depth={self.max_depth})"

    def decode(self, data: BytesLike) -> Any:
        raw = data if type(data) is bytes else as_bytes(_FMT, data)
        if len(raw) > self.max_bytes:
            check_size(_FMT, raw, self.max_bytes)
        if raw[:3] == _BOM:
            raw = raw[3:]
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _decode_error(raw, exc, self.max_depth) from None
        # Cheap upper bound first: a document cannot nest deeper than it has
        # opening brackets, so a typical record never pays for the walk.
        limit = self.max_depth
        if raw.count(b"[") + raw.count(b"{") > limit and _too_deep(obj, limit):
            raise _depth_error(raw, limit) from None
        return obj

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=_default)
        except orjson.JSONEncodeError as exc:
            cause = exc.__cause__  # our own reason from _default, when it was us
            raise EncodeError(_FMT, str(cause) if isinstance(cause, _Unsupported) else str(exc)) from None


class _Unsupported(TypeError):
    """Raised by _default; orjson keeps it as the cause of its JSONEncodeError."""


def _default(obj: Any) -> Any:
    """Types orjson does not know natively; anything else is an EncodeError, not silent str()."""
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise _Unsupported(f"Decimal {obj} is not a JSON number")
        return orjson.Fragment(str(obj).encode("ascii"))
    if isinstance(obj, (set, frozenset)):
        raise _Unsupported("a set has no order; convert it to a list")
    raise _Unsupported(f"Type is not JSON serializable: {type(obj).__name__}")


def _too_deep(obj: Any, limit: int) -> bool:
    """Iterative (never recursive) walk over containers only."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        node, depth = pop()
        if type(node) is dict:
            node = node.values()
        elif type(node) is not list:
            continue
        if depth > limit:
            return True
        child_depth = depth + 1
        for value in node:
            t = type(value)
            if t is dict or t is list:
                push((value, child_depth))
    return False


def _depth_offset(raw: bytes, limit: int) -> int:
    """Byte offset of the first bracket that opens level ``limit + 1`` (error path only)."""
    depth = 0
    for m in _DEPTH_TOKEN.finditer(raw):
        ch = raw[m.start()]
        if ch == 0x22:  # a string token
            continue
        if ch in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return m.start()
        else:
            depth -= 1
    return 0


def _depth_error(raw: bytes, limit: int) -> DecodeError:
    offset = _depth_offset(raw, limit)
    line, col = line_col(raw, offset)
    return DecodeError(_FMT, f"line {line}, column {col} (byte {offset}): nesting deeper than {limit} levels")


def _decode_error(raw: bytes, exc: orjson.JSONDecodeError, limit: int) -> DecodeError:
    msg = exc.msg
    if msg.startswith("str is not valid UTF-8"):
        # orjson reports position 0 here; find the real byte.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            line, col = line_col(raw, uexc.start)
            bad = raw[uexc.start:uexc.end]
            return DecodeError(_FMT, f"line {line}, column {col} (byte {uexc.start}): "
                                     f"invalid UTF-8 byte sequence {bad!r}")
        return DecodeError(_FMT, "invalid UTF-8")
    if msg == "depth limit exceeded":
        # orjson's own fixed limit (1024) was hit first; report ours, which is lower.
        return _depth_error(raw, limit) if limit < 1024 else DecodeError(
            _FMT, f"line {exc.lineno}, column {exc.colno}: nesting deeper than 1024 levels")
    if msg == "unexpected end of data":
        msg = "unexpected end of data (truncated document?)"
    return DecodeError(_FMT, f"line {exc.lineno}, column {exc.colno}: {msg}")
