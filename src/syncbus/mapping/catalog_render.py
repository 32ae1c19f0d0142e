"""The interface catalogue as Markdown and as a self-contained HTML document.

The HTML page is meant to be printed and signed: headings, one table per flow,
print styles (each flow starts on a new page, no background colours needed),
a sign-off block, and no external assets (no fonts, scripts or images from
anywhere), so it renders the same offline and in an archive years later.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import partial

from .catalog_model import FlowEntry, SchemaInfo
from .catalog_words import label

__all__ = ["render_html", "render_markdown"]


def _esc(value: object) -> str:
    return html.escape(str(value))


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_md(text)}`" if text else ""


def _facts(e: FlowEntry, lang: str) -> list[tuple[str, str, str]]:
    """(label, plain text, code text) rows of a flow's main table; code text is shown in monospace."""
    t: Callable[[str], str] = partial(label, lang)
    nd = t("not_declared")
    sources = "; ".join(f"{s.name} ({s.type}, {s.schedule}): {s.address} → {t('topic')} {e.topic}"
                        for s in e.sources) or \
        f"{nd} ({t('topic')} {e.topic})"
    targets = "; ".join(f"{x.name} ({x.type}, {x.format}): {x.address}" for x in e.targets)
    fanout = "; ".join(f"{x.name}: {x.condition}" for x in e.targets)
    auth = "; ".join([*(f"{s.name}: {s.auth}" for s in e.sources), *(f"{x.name}: {x.auth}" for x in e.targets)])
    retry = "; ".join(f"{x.name}: {x.retry}" for x in e.targets)
    outputs = "; ".join(f"{x.name}: {x.schema}" for x in e.targets)
    return [
        (t("description"), e.description, ""),
        (t("systems"), f"{e.source_system} → {e.target_system}", ""),
        (t("direction"), e.direction, ""),
        (t("interface"), e.interface, ""),
        (t("frequency"), e.frequency, ""),
        (t("security"), e.security, ""),
        (t("authentication"), auth or nd, ""),
        (t("source"), sources, ""),
        (t("targets"), targets, ""),
        (t("key"), e.key, ""),
        (t("when"), e.when or t("all_records"), e.when_expr),
        (t("fanout"), fanout, "; ".join(x.condition_expr for x in e.targets if x.condition_expr)),
        (t("retry"), retry or nd, ""),
        (t("input_schema"), _schema_line(e.input_schema) if e.input_schema else nd, ""),
        (t("output_schema"), outputs or nd, ""),
        (t("owner"), e.owner, ""),
        (t("version"), str(e.version), ""),
    ]


# --------------------------------------------------------------------------- Markdown


def render_markdown(entries: list[FlowEntry], lang: str = "en") -> str:
    t: Callable[[str], str] = partial(label, lang)
    out = [f"# {t('title')}", "", t("intro"), "", f"## {t('summary')}", "",
           f"| {t('route')} | {t('systems')} | {t('frequency')} | {t('interface')} | {t('security')} "
           f"| {t('owner')} | {t('version')} | {t('last_change')} |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    out.extend(
        f"| {_md(e.route)} | {_md(e.source_system)} → {_md(e.target_system)} | {_md(e.frequency)} "
        f"| {_md(e.interface)} | {_md(e.security)} | {_md(e.owner)} | {e.version} | {_md(e.last_change)} |"
        for e in entries
    )
    for e in entries:
        out += ["", f"## {e.route}", "", f"| {t('details')} | |", "| --- | --- |"]
        for name, text, code in _facts(e, lang):
            out.append(f"| {_md(name)} | {_md(text)}{' (' + _code(code) + ')' if code else ''} |")
        out += ["", f"### {t('fields')}", "", f"| {t('target_field')} | {t('source_path')} | {t('rule')} |",
                "| --- | --- | --- |"]
        out.extend(f"| {_code(f.target)} | {_code(f.source)} | {_md(f.rule)} |" for f in e.fields)
        out += ["", f"### {t('changelog')}", ""]
        if e.changelog:
            out += [f"| {t('version')} | {t('date')} | {t('by')} | {t('reason')} | {t('approved_by')} |",
                    "| --- | --- | --- | --- | --- |"]
            out.extend(f"| {c.version} | {c.date} | {_md(c.by)} | {_md(c.reason)} | {_md(c.approved_by)} |"
                       for c in e.changelog)
        else:
            out.append(t("not_declared"))
        for title, info in _schemas(e):
            out += ["", f"### {t('schema_fields')}: {_md(title)} ({_code(info.path)})", "",
                    f"| {t('field')} | {t('type')} | {t('required')} |", "| --- | --- | --- |"]
            out.extend(f"| {_code(n)} | {_md(ty)} | {t('yes') if req else t('no')} |" for n, ty, req in info.fields)
    return "\n".join(out) + "\n"


def _schema_line(info: SchemaInfo) -> str:
    return f"{info.path} ({info.title})" if info.title else info.path


def _schemas(e: FlowEntry) -> list[tuple[str, SchemaInfo]]:
    found = [("input", e.input_schema)] if e.input_schema and e.input_schema.fields else []
    found += [(f"output {sink}", info) for sink, info in e.output_schemas if info.fields]
    return [(title, info) for title, info in found if info is not None]


# --------------------------------------------------------------------------- HTML

_CSS = """
:root{--ink:#1d2433;--muted:#5b6475;--rule:#c9ced8;--head:#eef1f6}
*{box-sizing:border-box}
body{font:14px/1.45 "Noto Sans","Noto Sans CJK SC","Microsoft YaHei",Helvetica,Arial,sans-serif;color:var(--ink);
max-width:1100px;margin:2.5em auto;padding:0 2em}
h1{font-size:1.9em;margin:0 0 .2em;border-bottom:3px solid var(--ink);padding-bottom:.2em}
h2{font-size:1.35em;margin:2.2em 0 .6em;border-bottom:1px solid var(--rule);padding-bottom:.2em}
h3{font-size:1.05em;margin:1.6em 0 .4em;color:var(--muted)}
p.intro{color:var(--muted)}
table{border-collapse:collapse;width:100%;margin:.6em 0 1em;page-break-inside:auto}
tr{page-break-inside:avoid}
th,td{border:1px solid var(--rule);padding:5px 8px;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600}
table.facts th{width:22%}
code{font:12.5px/1.3 "DejaVu Sans Mono",Menlo,Consolas,monospace;background:#f5f6f8;padding:0 3px;border-radius:3px}
nav ol{margin:.3em 0}
.sign td{height:3.2em}
.muted{color:var(--muted)}
@media print{
 body{margin:0;max-width:none;font-size:11pt}
 section.flow{page-break-before:always}
 nav{display:none}
 th{background:none}
 a{color:inherit;text-decoration:none}
 @page{size:A4;margin:18mm 15mm}
}
"""


def render_html(entries: list[FlowEntry], lang: str = "en") -> str:
    t: Callable[[str], str] = partial(label, lang)
    esc: Callable[[object], str] = _esc
    summary_rows = "".join(
        f"<tr><td><a href='#{esc(e.route)}'>{esc(e.route)}</a></td><td>{esc(e.source_system)} → "
        f"{esc(e.target_system)}</td><td>{esc(e.frequency)}</td><td>{esc(e.interface)}</td>"
        f"<td>{esc(e.security)}</td><td>{esc(e.owner)}</td><td>{e.version}</td><td>{esc(e.last_change)}</td></tr>"
        for e in entries
    )
    nav = "".join(f"<li><a href='#{esc(e.route)}'>{esc(e.route)}</a></li>" for e in entries)
    sections = [_html_flow(e, lang) for e in entries]
    return (
        f"<!doctype html><html lang='{esc(lang)}'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(t('title'))}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(t('title'))}</h1><p class='intro'>{esc(t('intro'))}</p></header>"
        f"<nav><h2>{esc(t('contents'))}</h2><ol>{nav}</ol></nav>"
        f"<h2>{esc(t('summary'))}</h2><table class='summary'><thead><tr><th>{esc(t('route'))}</th>"
        f"<th>{esc(t('systems'))}</th><th>{esc(t('frequency'))}</th><th>{esc(t('interface'))}</th>"
        f"<th>{esc(t('security'))}</th><th>{esc(t('owner'))}</th><th>{esc(t('version'))}</th>"
        f"<th>{esc(t('last_change'))}</th></tr></thead><tbody>{summary_rows}</tbody></table>"
        f"{''.join(sections)}</body></html>\n"
    )


def _html_flow(e: FlowEntry, lang: str) -> str:
    t: Callable[[str], str] = partial(label, lang)
    esc = html.escape
    facts = "".join(
        f"<tr><th>{esc(name)}</th><td>{esc(text)}"
        f"{' <code>' + esc(code) + '</code>' if code else ''}</td></tr>"
        for name, text, code in _facts(e, lang)
    )
    fields = "".join(
        f"<tr><td><code>{esc(f.target)}</code></td><td>{'<code>' + esc(f.source) + '</code>' if f.source else ''}"
        f"</td><td>{esc(f.rule)}</td></tr>" for f in e.fields
    )
    if e.changelog:
        changes = (
            f"<table class='changes'><thead><tr><th>{esc(t('version'))}</th><th>{esc(t('date'))}</th>"
            f"<th>{esc(t('by'))}</th><th>{esc(t('reason'))}</th><th>{esc(t('approved_by'))}</th></tr></thead><tbody>"
            + "".join(f"<tr><td>{c.version}</td><td>{esc(c.date)}</td><td>{esc(c.by)}</td><td>{esc(c.reason)}</td>"
                      f"<td>{esc(c.approved_by)}</td></tr>" for c in e.changelog)
            + "</tbody></table>"
        )
    else:
        changes = f"<p class='muted'>{esc(t('not_declared'))}</p>"
    schemas = "".join(
        f"<h3>{esc(t('schema_fields'))}: {esc(title)} (<code>{esc(info.path)}</code>)</h3>"
        f"<table class='schema'><thead><tr><th>{esc(t('field'))}</th><th>{esc(t('type'))}</th>"
        f"<th>{esc(t('required'))}</th></tr></thead><tbody>"
        + "".join(f"<tr><td><code>{esc(n)}</code></td><td>{esc(ty)}</td><td>{esc(t('yes') if r else t('no'))}</td>"
                  "</tr>" for n, ty, r in info.fields)
        + "</tbody></table>"
        for title, info in _schemas(e)
    )
    signoff = (
        f"<h3>{esc(t('signoff'))}</h3><table class='sign'><thead><tr><th>{esc(t('role'))}</th>"
        f"<th>{esc(t('name'))}</th><th>{esc(t('signature'))}</th><th>{esc(t('date'))}</th></tr></thead><tbody>"
        f"<tr><td>{esc(t('process_owner'))} ({esc(e.owner)})</td><td></td><td></td><td></td></tr>"
        f"<tr><td>{esc(t('integration'))}</td><td></td><td></td><td></td></tr></tbody></table>"
    )
    return (
        f"<section class='flow' id='{esc(e.route)}'><h2>{esc(e.route)}</h2>"
        f"<table class='facts'><tbody>{facts}</tbody></table>"
        f"<h3>{esc(t('fields'))}</h3><table class='fields'><thead><tr><th>{esc(t('target_field'))}</th>"
        f"<th>{esc(t('source_path'))}</th><th>{esc(t('rule'))}</th></tr></thead><tbody>{fields}</tbody></table>"
        f"<h3>{esc(t('changelog'))}</h3>{changes}{schemas}{signoff}</section>"
    )
