"""The interface catalogue: one entry per route, generated from the files themselves.

The columns follow the interface requirements table integration teams keep
by hand (DESIGN §9): systems, direction, field mappings, frequency, interface
type, security, owner, version and the last change. Generating it means it
can never drift from what actually runs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..config import ConnectorsConfig
from .compiler import CompiledMapping
from .spec import FieldSpec


@dataclass
class FieldRow:
    target: str
    source: str
    rule: str


@dataclass
class CatalogEntry:
    route: str
    description: str
    source_system: str
    target_system: str
    direction: str
    topic: str
    sinks: list[str]
    formats: list[str]
    frequency: str
    interface: str
    security: str
    owner: str
    version: int
    last_change: str
    fields: list[FieldRow]


def build_catalog(mappings: list[CompiledMapping], connectors: ConnectorsConfig | None = None
                  ) -> list[CatalogEntry]:
    entries = []
    for m in sorted(mappings, key=lambda m: m.name):
        spec = m.spec
        systems = spec.systems
        src = systems.source if systems else spec.source.topic.split(".")[0].upper()
        tgt = systems.target if systems else ", ".join(t.sink for t in spec.all_targets)
        frequency = systems.frequency if systems else _frequency(m, connectors)
        last = max(spec.changelog, key=lambda c: c.version) if spec.changelog else None
        last_change = f"v{last.version} {last.date.isoformat()} {last.by}: {last.reason}" if last else ""
        entries.append(CatalogEntry(
            route=m.name, description=spec.description, source_system=src, target_system=tgt,
            direction=f"{src} → {tgt}", topic=spec.source.topic,
            sinks=[t.sink for t in spec.all_targets], formats=[t.format for t in spec.all_targets],
            frequency=frequency, interface=systems.interface if systems else "",
            security=systems.security if systems else "", owner=spec.owner, version=spec.version,
            last_change=last_change, fields=list(_field_rows(spec.fields, "")),
        ))
    return entries


def _frequency(m: CompiledMapping, connectors: ConnectorsConfig | None) -> str:
    if connectors:
        for c in connectors.sources.values():
            if c.config.topic == m.topic:
                schedule = getattr(c.config, "schedule", None)
                return f"cron {schedule}" if schedule else "realtime"
    return "realtime"


def _field_rows(fields: dict[str, Any], prefix: str) -> Any:
    for name, value in fields.items():
        target = f"{prefix}{name}"
        if isinstance(value, str):
            yield FieldRow(target, value, "")
            continue
        assert isinstance(value, FieldSpec)
        given = value.model_fields_set
        if "each" in given:
            yield FieldRow(f"{target}[]", value.each or "", "each item")
            yield from _field_rows(value.fields or {}, f"{target}[].")
            continue
        if "fields" in given:
            yield from _field_rows(value.fields or {}, f"{target}.")
            continue
        rule: list[str] = []
        source = value.from_ or ""
        if "const" in given:
            rule.append(f"constant {value.const!r}")
        if "expr" in given:
            rule.append(f"expr {value.expr}")
        if value.transform:
            rule.append(value.transform)
        if value.map is not None:
            rule.append("map " + ", ".join(f"{k}→{v}" for k, v in value.map.items()))
        if value.has_default:
            rule.append(f"default {value.default!r}")
        if value.required:
            rule.append("required")
        yield FieldRow(target, source, "; ".join(rule))


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(entries: list[CatalogEntry]) -> str:
    out = ["# Interface catalogue", "",
           "| route | systems | frequency | interface | security | owner | version | last change |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    out.extend(
        f"| {_md(e.route)} | {_md(e.direction)} | {_md(e.frequency)} | {_md(e.interface)} | {_md(e.security)} "
        f"| {_md(e.owner)} | {e.version} | {_md(e.last_change)} |" for e in entries
    )
    for e in entries:
        out += ["", f"## {e.route}", ""]
        if e.description:
            out += [e.description, ""]
        out += [f"- direction: {e.direction}", f"- source topic: `{e.topic}`",
                f"- targets: {', '.join(f'`{s}` ({f})' for s, f in zip(e.sinks, e.formats, strict=True))}",
                f"- owner: {e.owner}, version {e.version}", "",
                "| target field | source | rule |", "| --- | --- | --- |"]
        out.extend(f"| `{_md(f.target)}` | {('`' + _md(f.source) + '`') if f.source else ''} | {_md(f.rule)} |"
                   for f in e.fields)
    return "\n".join(out) + "\n"


def render_html(entries: list[CatalogEntry]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td><a href='#{esc(e.route)}'>{esc(e.route)}</a></td><td>{esc(e.direction)}</td>"
        f"<td>{esc(e.frequency)}</td><td>{esc(e.interface)}</td><td>{esc(e.security)}</td>"
        f"<td>{esc(e.owner)}</td><td>{e.version}</td><td>{esc(e.last_change)}</td></tr>"
        for e in entries
    )
    sections = []
    for e in entries:
        frows = "".join(f"<tr><td><code>{esc(f.target)}</code></td><td><code>{esc(f.source)}</code></td>"
                        f"<td>{esc(f.rule)}</td></tr>" for f in e.fields)
        sections.append(
            f"<section id='{esc(e.route)}'><h2>{esc(e.route)}</h2><p>{esc(e.description)}</p>"
            f"<p>{esc(e.direction)} · topic <code>{esc(e.topic)}</code> · owner {esc(e.owner)} · "
            f"version {e.version}</p><table><tr><th>target field</th><th>source</th><th>rule</th></tr>"
            f"{frows}</table></section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Interface catalogue</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
        "<h1>Interface catalogue</h1><table><tr><th>route</th><th>systems</th><th>frequency</th>"
        "<th>interface</th><th>security</th><th>owner</th><th>version</th><th>last change</th></tr>"
        f"{rows}</table>{''.join(sections)}</body></html>\n"
    )
