"""File names for the file sink: the ``filename`` template, rendered safely.

Fields: ``{route}`` ``{sink}`` ``{record_id}`` ``{key}`` (record values,
sanitised: never a path, never hidden), ``{ext}`` (csv, jsonl, json, xml),
``{date}`` / ``{time}`` (when the file was started, local time; ``{date}`` is
``2026-11-20`` and ``{time}`` ``120509`` unless a strftime format is given:
``{date:%Y%m%d-%H%M%S}``) and ``{seq}`` (1, 2, 3... — the first number whose
name is free, so a file never replaces one the partner has not picked up;
``{seq:04d}`` pads it).

Without ``{seq}``, a name that is taken gets ``-1``, ``-2``... before its
extension instead: ``employees-2026-11-20.csv`` then ``employees-2026-11-20-1.csv``.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final

TEMPLATE_FIELDS: Final = ("route", "sink", "record_id", "key", "date", "time", "ext", "seq")
TIME_FIELDS: Final = frozenset({"date", "time", "seq"})
_DEFAULT_SPECS: Final = {"date": "%Y-%m-%d", "time": "%H%M%S"}
MAX_NAME_BYTES: Final = 240  # leaves room below the usual 255-byte limit for ".part" and a suffix
_MAX_VALUE_CHARS: Final = 80
_MAX_CANDIDATES: Final = 100_000
_SAMPLE_TIME: Final = datetime(2026, 12, 31, 23, 59, 58, 123456)
_SAMPLE: Final[dict[str, Any]] = {"route": "r", "sink": "s", "record_id": "1", "key": "k", "ext": "csv"}
PART_SUFFIX: Final = ".part"


class _Stamp:
    """``{date}`` / ``{time}``: a datetime that formats with a default layout or the given strftime format."""

    __slots__ = ("default", "value")

    def __init__(self, value: datetime, default: str) -> None:
        self.value = value
        self.default = default

    def __format__(self, spec: str) -> str:
        return self.value.strftime(spec or self.default)


class _Hole:
    """A time field left open: names that differ only in these belong to the same file series."""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        self.field = field

    def __format__(self, spec: str) -> str:
        return f"\0{self.field}:{spec}\0"


def check_template(template: str) -> None:
    """Refuse templates that are paths, hidden names, or use unknown or computed fields."""
    if not template.strip():
        raise ValueError("filename must not be empty")
    if any(c in template for c in "/\\\0"):
        raise ValueError(f"filename {template!r} must be a file name, not a path (put folders in path)")
    if template.startswith("."):
        raise ValueError(f"filename {template!r} must not start with '.' (hidden names are temp files)")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"filename {template!r}: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or conversion is not None:
            raise ValueError(f"filename {template!r}: unknown field {{{name}}} "
                             f"(known: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)})")
        if spec and ("{" in spec or name not in TIME_FIELDS):
            raise ValueError(f"filename {template!r}: {{{name}}} takes no format (only date, time and seq do)")
    try:
        sample = render(template, _SAMPLE, _SAMPLE_TIME, 12)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"filename {template!r}: {exc}") from None
    if any(c in sample for c in "/\\\0") or sample.startswith("."):
        raise ValueError(f"filename {template!r}: a date/time format must not produce '/' or a leading '.'")


def uses(template: str, name: str) -> bool:
    """Whether the template has the field ``name``."""
    return any(field == name for _, field, _, _ in string.Formatter().parse(template))


def safe_part(value: str) -> str:
    """A record-supplied value made harmless in a file name (keys like "../../etc" or "a/b")."""
    cleaned = "".join(c if c.isalnum() or c in "-_.@+=" else "_" for c in value)[:_MAX_VALUE_CHARS]
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    return cleaned or "_"


def record_values(route: str, sink: str, record_id: str, key: str | None, ext: str) -> dict[str, str]:
    """The record-dependent fields, sanitised."""
    return {"route": safe_part(route), "sink": safe_part(sink), "record_id": safe_part(record_id),
            "key": safe_part(key) if key is not None else "_", "ext": ext}


def render(template: str, values: Mapping[str, Any], when: datetime, seq: int) -> str:
    fields = dict(values)
    fields.update(date=_Stamp(when, _DEFAULT_SPECS["date"]), time=_Stamp(when, _DEFAULT_SPECS["time"]), seq=seq)
    return template.format_map(fields)


def series(template: str, values: Mapping[str, Any]) -> str:
    """The name with date, time and seq left open: one file series (rotated file after file) per value."""
    fields = dict(values)
    fields.update(date=_Hole("date"), time=_Hole("time"), seq=_Hole("seq"))
    return template.format_map(fields)


def check_length(name: str, sink: str) -> str | None:
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"{sink}: file name {name[:60]!r}... is longer than {MAX_NAME_BYTES} bytes; shorten the template"
    return None


def candidates(template: str, values: Mapping[str, Any], when: datetime, first_seq: int) -> Iterator[tuple[str, int]]:
    """Names to try for a new file, in order, with the seq each used."""
    if uses(template, "seq"):
        for seq in range(first_seq, first_seq + _MAX_CANDIDATES):
            yield render(template, values, when, seq), seq + 1
        return
    name = render(template, values, when, 0)
    yield name, first_seq
    stem, ext = _split_ext(name)
    for n in range(1, _MAX_CANDIDATES):
        yield f"{stem}-{n}{ext}", first_seq


def part_name(final: str) -> str:
    """The hidden in-progress name of a file: ``.employees-1.csv.part`` (file drop pollers skip dot files)."""
    return f".{final}{PART_SUFFIX}"


def final_of_part(name: str) -> str | None:
    if name.startswith(".") and name.endswith(PART_SUFFIX) and len(name) > 1 + len(PART_SUFFIX):
        return name[1:-len(PART_SUFFIX)]
    return None


def pattern(template: str) -> re.Pattern[str]:
    """Matches every name the template can render, with or without a ``-N`` de-duplication suffix."""
    parts: list[str] = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(r"\d+" if name == "seq" else r".+?")
    body = "".join(parts)
    # "-N" before the extension (see candidates); the extension is the tail after the last literal dot.
    return re.compile(rf"(?:{body})|(?:{body[:_ext_start(body)]}-\d+{body[_ext_start(body):]})", re.DOTALL)


def _ext_start(regex_body: str) -> int:
    index = regex_body.rfind(r"\.")
    return index if index > 0 else len(regex_body)


def _split_ext(name: str) -> tuple[str, str]:
    stem, ext = os.path.splitext(name)
    return (stem, ext) if stem else (name, "")
