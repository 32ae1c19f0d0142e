"""Durations and sizes as people write them in YAML ("500ms", "2m", "1MiB").

Config files are read by humans, so ``timeout: 10s`` beats ``timeout: 10``
with a unit in a comment. Bare numbers stay allowed (seconds, bytes) because
YAML authors and the Python API both produce them. ``Duration`` and ``Size``
are pydantic field types that run the parsers, so every config model accepts
the same spellings.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# One "<number><unit>" part; a duration is one or more parts ("1h30m", "1m30s").
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)")
_NUMBER = re.compile(r"[+]?(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

# Decimal (SI) and binary (IEC) multipliers; also the Kubernetes spellings "Ki", "Mi", "K", "M".
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000, "kb": 1000,
    "m": 1000**2, "mb": 1000**2,
    "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024,
    "mi": 1024**2, "mib": 1024**2,
    "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")


def _check_number(value: float, what: str, raw: object) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"invalid {what} {raw!r}: must be a finite number")
    if value < 0:
        raise ValueError(f"invalid {what} {raw!r}: must not be negative")
    return float(value)


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"0.5s"``, ``"500ms"``, ``"2m"``, ``"1h"``, ``"1h30m"``, ``"1d"`` or a bare number.

    A bare number (or numeric text) is seconds. ``bool`` is refused: YAML turns
    ``yes``/``on`` into True, which is never a duration someone meant.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 10s, 2m, 1h")
    if isinstance(value, int | float):
        return _check_number(value, "duration", value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected text like 10s or a number of seconds")
    text = value.strip().lower()
    if text.startswith("-"):
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    if _NUMBER.fullmatch(text):
        return _check_number(float(text), "duration", value)
    pos, total, parts = 0, 0.0, 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            raise ValueError(
                f"invalid duration {value!r}: expected a number with a unit "
                f"(ms, s, m, h, d), e.g. 500ms, 10s, 2m, 1h30m")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
        parts += 1
    if parts == 0:
        raise ValueError(f"invalid duration {value!r}: empty")
    return total


def format_duration(seconds: float) -> str:
    """The short human form used in messages: 0.5 -> "500ms", 10.0 -> "10s", 90 -> "90s"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3g}s"


def parse_size(value: str | int | float) -> int:
    """Bytes from ``"1MiB"``, ``"512KiB"``, ``"10MB"``, ``"1.5GiB"``, ``"100"`` or a bare number.

    SI units are powers of 1000 and IEC units powers of 1024, as their
    standards say; units are case-insensitive so ``1mib`` works too.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: expected e.g. 1MiB, 512KiB, 10MB or a number of bytes")
    if isinstance(value, int | float):
        return int(_check_number(value, "size", value))
    if not isinstance(value, str):
        raise ValueError(f"invalid size {value!r}: expected text like 1MiB or a number of bytes")
    match = _SIZE.fullmatch(value.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {value!r}: expected a number with an optional unit "
            f"(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 1MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A pydantic field type: accepts "10s"/"500ms"/numbers, holds float seconds."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""A pydantic field type: accepts "1MiB"/"10MB"/numbers, holds int bytes."""
