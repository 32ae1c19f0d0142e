"""The effect report as Markdown (for a change ticket), JSON (for scripts) or one self-contained HTML page.

The HTML page carries its CSS and its charts (inline SVG, ``svg.py``) in the
file itself: it is mailed around and opened from disk, so it loads nothing,
runs no script, and every value in it is escaped.
"""

from __future__ import annotations

import json
from html import escape

from .effect import METRICS, EffectReport, Flow
from .svg import SIDE_COLORS, paired_bars, stacked_columns


def seconds(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    if x < 120:
        return f"{x:.2f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f} %"


def count(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def change(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f} %"


FORMATS = {"": count, "%": percent, "s": seconds}


def render_json(report: EffectReport) -> str:
    return json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n"


def render_markdown(report: EffectReport) -> str:
    sides = list(report.sides)
    lines = [f"# Flow report, {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC", ""]
    lines += [f"- **{s}**: {d}" for s, d in report.sides.items()] + [""]
    if not report.flows:
        lines.append("No records in the window.")
    for flow in report.flows:
        lines += [f"## {_md(flow.route)}", "",
                  "| metric | " + " | ".join(sides) + (" | change |" if len(sides) == 2 else " |"),
                  "| --- | " + " | ".join("---:" for _ in sides) + (" | ---: |" if len(sides) == 2 else " |")]
        for metric, label, unit in METRICS:
            fmt = FORMATS[unit]
            cells = [fmt(getattr(flow.sides[s], metric)) for s in sides]
            tail = f" | {change(flow.change(metric))} |" if len(sides) == 2 else " |"
            lines.append(f"| {label} | " + " | ".join(cells) + tail)
        extra = ", ".join(f"{s}: {st.delivered} delivered, {st.skipped} skipped, {st.dead_lettered} dead-lettered, "
                          f"{st.unresolved} dead letters open" for s, st in flow.sides.items())
        lines += ["", extra, ""]
    return "\n".join(lines) + "\n"


def render_html(report: EffectReport) -> str:
    sides = list(report.sides)
    title = f"Flow report {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}"
    body = [f"<h1>{escape(title)}</h1>",
            "<p class='sub'>" + " &middot; ".join(f"<b>{escape(s)}</b>: {escape(d)}" for s, d in report.sides.items())
            + "</p>"]
    if not report.flows:
        body.append("<p>No records in the window.</p>")
    for flow in report.flows:
        body.append(_flow_html(flow, sides, report.mode))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def _flow_html(flow: Flow, sides: list[str], mode: str) -> str:
    head = "".join(f"<th>{escape(s)}</th>" for s in sides) + ("<th>change</th>" if len(sides) == 2 else "")
    rows = []
    for metric, label, unit in METRICS:
        fmt = FORMATS[unit]
        cells = "".join(f"<td>{escape(fmt(getattr(flow.sides[s], metric)))}</td>" for s in sides)
        if len(sides) == 2:
            pct = flow.change(metric)
            # more errors, dead letters or time is worse; more volume is just more
            cls = "" if pct is None or abs(pct) < 0.05 or metric == "volume" else (
                " class='up'" if pct > 0 else " class='down'")
            cells += f"<td{cls}>{escape(change(pct))}</td>"
        rows.append(f"<tr><th scope='row'>{escape(label)}</th>{cells}</tr>")
    bars = paired_bars(
        "Processing and resolution time",
        [(label, getattr(flow.sides[sides[0]], m), getattr(flow.sides[sides[-1]], m) if len(sides) == 2 else None,
          seconds) for m, label, unit in METRICS if unit == "s"], sides)
    rates = paired_bars(
        "Error and dead-letter rates",
        [(label, getattr(flow.sides[sides[0]], m), getattr(flow.sides[sides[-1]], m) if len(sides) == 2 else None,
          percent) for m, label, unit in METRICS if unit == "%"], sides)
    series = sorted({k for d in flow.daily for k in d["volume"]}, key=_series_order)
    pinned = {"not mapped": "#c9cfd8"}
    if mode == "versions":   # the compared versions keep their colours from the bars above
        pinned.update(zip(sides, SIDE_COLORS, strict=False))
    columns = stacked_columns("Records per day" + (" by mapping version" if mode == "versions" else ""),
                              [(d["day"], d["volume"]) for d in flow.daily], series, colors=pinned)
    return (f"<section><h2>{escape(flow.route)}</h2><table><thead><tr><th>metric</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><div class='charts'><figure>{bars}</figure>"
            f"<figure>{rates}</figure><figure>{columns}</figure></div></section>")


def _series_order(name: str) -> tuple[int, int, str]:
    if name.startswith("v") and name[1:].isdigit():
        return (0, int(name[1:]), name)
    return (1, 0, name)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


CSS = """
body{margin:0;background:#f5f6f8;color:#1d2330;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 12px}
.sub{color:#4a5468;margin:0 0 20px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:18px 20px;margin:0 0 20px}
table{border-collapse:collapse;margin:0 0 14px;min-width:520px}
th,td{padding:5px 12px;border-bottom:1px solid #e6e9ef;text-align:right;white-space:nowrap}
th[scope=row],thead th:first-child{text-align:left;font-weight:500}
thead th{background:#f0f2f6;font-weight:600}
td.up{color:#b23a1e}td.down{color:#1f7a45}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0;padding:8px;border:1px solid #eef0f4;border-radius:6px;background:#fcfcfd}
"""
