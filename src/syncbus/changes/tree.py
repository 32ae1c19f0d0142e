"""Compare what two mappings made of one record, as trees: the list of paths that differ.

A shadow run needs to say *which field* changed (``IDOC.E1EDK01.VKORG``), not
that two byte strings differ, so the mapped objects are walked side by side.
Besides field paths a difference can be about the record as a whole; those
paths start with ``@`` so they never clash with a field name:

* ``@error``   -- one side failed to map (or both, with different errors);
* ``@skipped`` -- one side's ``when`` filtered the record out;
* ``@key``     -- the record key differs;
* ``@targets`` -- the record goes to different targets (a target ``when``);
* ``@body[sink]`` -- same tree, different bytes (format, root or field order).

Both sides failing with the same error is "same": the shadow would
dead-letter it exactly as the live route does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..mapping.compiler import CompiledMapping
from ..record import Record

MAX_PATHS = 200        # per record; a 10,000-item list that changed everywhere is reported as a prefix
MAX_VALUE_CHARS = 300  # per value in a sample
_MISSING = object()
_INDEX = re.compile(r"\[\d+\]")


@dataclass
class Side:
    """One mapping's result for one record: outputs per sink, skipped, or an error."""

    key: str | None = None
    skipped: bool = False
    error: str | None = None
    payload: Any = None
    bodies: dict[str, bytes] = field(default_factory=dict)


def run_side(mapping: CompiledMapping, record: Record) -> Side:
    """Map like the router does, catching every error: a shadow never dead-letters, it reports."""
    try:
        result = mapping.map_bytes(record.value, record.headers.get("content-type"), record.key)
    except Exception as exc:  # a mapping error is a result here, not a failure of the shadow
        return Side(error=f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
    if result.skipped:
        return Side(key=result.key, skipped=True)
    payload = result.outputs[0].payload if result.outputs else None
    return Side(key=result.key, payload=payload, bodies={o.target.sink: o.body for o in result.outputs})


@dataclass
class Difference:
    """The differing paths of one record, and the two values at each (for samples)."""

    paths: list[str] = field(default_factory=list)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    truncated: int = 0

    @property
    def same(self) -> bool:
        return not self.paths

    def add(self, path: str, live: Any, shadow: Any) -> None:
        if len(self.paths) >= MAX_PATHS:
            self.truncated += 1
            return
        self.paths.append(path)
        self.values[path] = {"live": _show(live), "shadow": _show(shadow)}


def compare(live: Side, shadow: Side) -> Difference:
    """The differences between the live side and the shadow side of one record."""
    diff = Difference()
    if live.error is not None or shadow.error is not None:
        if live.error != shadow.error:
            diff.add("@error", live.error, shadow.error)
        return diff
    if live.skipped or shadow.skipped:
        if live.skipped != shadow.skipped:
            diff.add("@skipped", live.skipped, shadow.skipped)
        return diff
    if live.key != shadow.key:
        diff.add("@key", live.key, shadow.key)
    if list(live.bodies) != list(shadow.bodies):
        diff.add("@targets", list(live.bodies), list(shadow.bodies))
    tree_diff(live.payload, shadow.payload, "", diff)
    if not any(not p.startswith("@") for p in diff.paths):
        for sink, body in live.bodies.items():
            other = shadow.bodies.get(sink)
            if other is not None and other != body:
                diff.add(f"@body[{sink}]", body.decode("utf-8", "replace"), other.decode("utf-8", "replace"))
    return diff


def tree_diff(a: Any, b: Any, path: str, diff: Difference) -> None:
    """Walk two mapped objects side by side; objects by key (in the live side's order), lists by index."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            p = f"{path}.{k}" if path else str(k)
            av, bv = a.get(k, _MISSING), b.get(k, _MISSING)
            if av is _MISSING or bv is _MISSING:
                diff.add(p, av, bv)
            else:
                tree_diff(av, bv, p, diff)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            p = f"{path}[{i}]"
            if i >= len(a) or i >= len(b):
                diff.add(p, a[i] if i < len(a) else _MISSING, b[i] if i < len(b) else _MISSING)
            else:
                tree_diff(a[i], b[i], p, diff)
        return
    if type(a) is not type(b) or a != b:
        diff.add(path or "@root", a, b)


def field_of(path: str) -> str:
    """The path with list indices dropped (``E1EDP01[3].MENGE`` -> ``E1EDP01[].MENGE``): what "a field" is."""
    return _INDEX.sub("[]", path)


def _show(value: Any) -> Any:
    """A value as a sample shows it: JSON-able and bounded; a missing value is marked as such."""
    if value is _MISSING:
        return {"missing": True}
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:
        return repr(value)[:MAX_VALUE_CHARS]
    if len(text) <= MAX_VALUE_CHARS:
        return orjson.loads(text)
    return text[:MAX_VALUE_CHARS] + "…"
