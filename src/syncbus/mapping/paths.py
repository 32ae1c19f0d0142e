"""Source paths (``customer.code``, ``lines[0].sku``, ``$.order_id``) compiled to getters.

Paths are parsed once when a mapping is compiled. The getter returned for the
common one-segment case is a bound ``dict.get``-style closure with no loop, since
it runs for almost every field of every record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


class PathError(ValueError):
    """A source path is not well formed."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path. ``absolute`` paths (``$.x``) start at the record root inside ``each``."""

    text: str
    parts: tuple[str | int, ...]
    absolute: bool = False


def parse_path(text: str) -> Path:
    raw = text.strip()
    if not raw:
        raise PathError("empty source path")
    absolute = False
    if raw == "$":
        return Path(text, (), True)
    if raw.startswith("$."):
        absolute, raw = True, raw[2:]
    parts: list[str | int] = []
    pos = 0
    expect_dot = False
    while pos < len(raw):
        if expect_dot and raw[pos] == ".":
            pos += 1
            expect_dot = False
            continue
        m = _SEGMENT.match(raw, pos)
        if not m or (expect_dot and m.group(1)):
            raise PathError(f"bad source path {text!r} at character {pos + 1}")
        if m.group(1) is not None:
            seg: str = m.group(1)
            if seg.strip() != seg:
                raise PathError(f"bad source path {text!r}: spaces around {seg.strip()!r}")
            # `lines.0.sku` is accepted as well as `lines[0].sku`
            parts.append(int(seg) if seg.lstrip("-").isdigit() else seg)
        else:
            parts.append(int(m.group(2)))
        pos = m.end()
        expect_dot = True
    if raw.endswith("."):
        raise PathError(f"bad source path {text!r}: ends with '.'")
    return Path(text, tuple(parts), absolute)


Getter = Callable[[Any], Any]


def compile_getter(path: Path) -> Getter:
    """A function obj -> value or MISSING. Never raises for absent data."""
    parts = path.parts
    if not parts:
        return lambda obj: obj
    if len(parts) == 1 and isinstance(parts[0], str):
        key = parts[0]

        def get1(obj: Any) -> Any:
            if type(obj) is dict:
                return obj.get(key, MISSING)
            return _step(obj, key)

        return get1

    def get(obj: Any) -> Any:
        for part in parts:
            if type(obj) is dict and type(part) is str:
                obj = obj.get(part, MISSING)
            else:
                obj = _step(obj, part)
            if obj is MISSING:
                return MISSING
        return obj

    return get


def _step(obj: Any, part: str | int) -> Any:
    if isinstance(part, int):
        if isinstance(obj, list):
            try:
                return obj[part]
            except IndexError:
                return MISSING
        if isinstance(obj, dict):  # XML element named "0"? unlikely but harmless
            return obj.get(str(part), MISSING)
        return MISSING
    if isinstance(obj, dict):
        return obj.get(part, MISSING)
    return MISSING
