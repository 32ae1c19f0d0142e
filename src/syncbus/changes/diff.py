"""The field-level difference between two versions of a mapping, from the parsed specs, not the text.

A text diff of two mapping files shows moved comments and re-indented
blocks; a reviewer wants "``VKORG``: the value table changed, ``TELF1`` is new,
``when`` changed". So both specs are flattened into target paths
(``IDOC.E1EDK01.VKORG``; an ``each`` list's item fields as ``E1EDP01[].MENGE``)
with each field's rule, and compared rule by rule: source (``from``, ``const``,
``expr``, ``each``), ``transform``, ``map``, ``default``, ``required`` and
``when``. Route-level changes (``when``, ``key``, ``source``, targets by sink,
field order) come first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..mapping.spec import FieldSpec, MappingSpec, TargetSpec

RULES = ("source", "transform", "map", "default", "required", "when")
ROUTE_KEYS = ("when", "key", "shadow_of", "owner", "description")


@dataclass(frozen=True)
class Change:
    """One difference: ``kind`` is added, removed or changed; ``what`` names the rule or setting."""

    kind: str
    path: str
    what: str = ""
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "what": self.what, "old": self.old, "new": self.new}

    def __str__(self) -> str:
        sign = {"added": "+", "removed": "-", "changed": "~"}[self.kind]
        if self.kind == "added":
            return f"{sign} {self.path}: {_show(self.new)}"
        if self.kind == "removed":
            return f"{sign} {self.path}: {_show(self.old)}"
        return f"{sign} {self.path}{' ' + self.what if self.what else ''}: {_show(self.old)} -> {_show(self.new)}"


@dataclass
class SpecDiff:
    route: str
    old_version: int
    new_version: int
    route_changes: list[Change] = field(default_factory=list)
    field_changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.route_changes or self.field_changes)

    def counts(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "changed": 0}
        for c in self.field_changes:
            out[c.kind] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "from": self.old_version, "to": self.new_version,
                "route_changes": [c.to_json() for c in self.route_changes],
                "field_changes": [c.to_json() for c in self.field_changes], "fields": self.counts()}

    def render(self) -> str:
        lines = [f"{self.route}: version {self.old_version} -> {self.new_version}"]
        if self.empty:
            lines.append("  no differences in fields, targets or filters")
        lines += [f"  {c}" for c in self.route_changes]
        lines += [f"  {c}" for c in self.field_changes]
        n = self.counts()
        lines.append(f"fields: {n['added']} added, {n['removed']} removed, {n['changed']} changed")
        return "\n".join(lines) + "\n"


def diff_specs(old: MappingSpec, new: MappingSpec) -> SpecDiff:
    """Everything that changes what a record becomes or where it goes, old -> new."""
    out = SpecDiff(new.mapping, old.version, new.version)
    for key in ROUTE_KEYS:
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            out.route_changes.append(Change("changed", key, "", a, b))
    for what in ("topic", "schema_", "format"):
        a, b = getattr(old.source, what), getattr(new.source, what)
        if a != b:
            out.route_changes.append(Change("changed", f"source.{what.rstrip('_')}", "", a, b))
    out.route_changes += _targets(old.all_targets, new.all_targets)
    a_fields, b_fields = flatten(old.fields), flatten(new.fields)
    for path, rule in a_fields.items():
        if path not in b_fields:
            out.field_changes.append(Change("removed", path, "", _summary(rule), None))
    for path, rule in b_fields.items():
        if path not in a_fields:
            out.field_changes.append(Change("added", path, "", None, _summary(rule)))
            continue
        before = a_fields[path]
        for what in RULES:
            if before.get(what) != rule.get(what):
                out.field_changes.append(Change("changed", path, what, before.get(what), rule.get(what)))
    out.route_changes += _order(old.fields, new.fields, "")
    return out


def flatten(fields: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Target path -> the field's rules; nested objects contribute their fields, not themselves."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, str):
            out[path] = {"source": f"from {value}"}
        elif isinstance(value, dict):
            out.update(flatten(value, path))
        elif isinstance(value, FieldSpec):
            rule = _rules(value)
            if value.each is not None:
                out[path] = rule
                out.update(flatten(value.fields or {}, f"{path}[]"))
            elif value.fields is not None:
                if value.from_ is not None or value.when is not None:
                    out[path] = rule
                out.update(flatten(value.fields, path))
            else:
                out[path] = rule
    return out


def _rules(spec: FieldSpec) -> dict[str, Any]:
    given = spec.model_fields_set
    if "const" in given:
        source: str = f"const {spec.const!r}"
    elif spec.each is not None:
        source = f"each {spec.each}"
    elif spec.expr is not None:
        source = f"expr {spec.expr}"
    elif spec.from_ is not None:
        source = f"from {spec.from_}"
    else:
        source = "object"
    rule: dict[str, Any] = {"source": source}
    if spec.transform:
        rule["transform"] = spec.transform
    if spec.map is not None:
        rule["map"] = dict(spec.map)
    if spec.has_default:
        rule["default"] = spec.default
    if spec.required:
        rule["required"] = True
    if spec.when:
        rule["when"] = spec.when
    return rule


def _summary(rule: dict[str, Any]) -> str:
    return ", ".join(f"{v}" if k == "source" else f"{k} {_show(v)}" for k, v in rule.items())


def _targets(old: list[TargetSpec], new: list[TargetSpec]) -> list[Change]:
    a = {t.sink: t.model_dump(mode="json", by_alias=True) for t in old}
    b = {t.sink: t.model_dump(mode="json", by_alias=True) for t in new}
    out: list[Change] = []
    for sink in a:
        if sink not in b:
            out.append(Change("removed", f"target {sink}", "", _target_summary(a[sink]), None))
    for sink, spec in b.items():
        if sink not in a:
            out.append(Change("added", f"target {sink}", "", None, _target_summary(spec)))
            continue
        for key in sorted(set(a[sink]) | set(spec)):
            if a[sink].get(key) != spec.get(key):
                out.append(Change("changed", f"target {sink}", key, a[sink].get(key), spec.get(key)))
    return out


def _target_summary(spec: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in spec.items() if v not in (None, {}, "") and k != "sink")


def _order(old: dict[str, Any], new: dict[str, Any], prefix: str) -> list[Change]:
    """Objects keep the field order of the file: a reordering changes the payload, so it is reported."""
    out: list[Change] = []
    common_old = [k for k in old if k in new]
    common_new = [k for k in new if k in old]
    if common_old != common_new:
        out.append(Change("changed", prefix or "fields", "order", common_old, common_new))
    for name in common_new:
        a, b = _children(old[name]), _children(new[name])
        if a is not None and b is not None:
            sub = f"{prefix}.{name}" if prefix else name
            if isinstance(new[name], FieldSpec) and new[name].each is not None:
                sub += "[]"
            out += _order(a, b, sub)
    return out


def _children(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, FieldSpec) and value.fields is not None:
        return value.fields
    return None


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)
