"""Charts as inline SVG, drawn on the server: the report page needs no script and no asset from elsewhere.

Two shapes cover the report: pairs of horizontal bars (one metric, before vs
after, each metric on its own scale because seconds and percentages do not
share an axis) and daily columns stacked by series (volume per version).
Every text is escaped; a value that is missing is written "n/a" and drawn as
no bar at all -- never as a zero, which would read as "perfect".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

SIDE_COLORS = ("#9aa7b8", "#2563c9")
SERIES_COLORS = ("#2563c9", "#e08a1e", "#2f9e5b", "#8e44ad", "#c0392b", "#16a2b8", "#7f8c8d")
FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, sans-serif'"

Fmt = Callable[[float | None], str]


def paired_bars(title: str, rows: Sequence[tuple[str, float | None, float | None, Fmt]],
                sides: Sequence[str], width: int = 520) -> str:
    """One row per metric: the two sides' bars on the row's own scale, values written beside them."""
    label_w, value_w, bar_h, gap = 190, 90, 14, 16
    plot_w = width - label_w - value_w - 10
    row_h = bar_h * 2 + gap
    height = 46 + row_h * len(rows) + 8
    out = [_open(width, height, title),
           f"<text x='0' y='16' font-size='14' font-weight='600' {FONT}>{escape(title)}</text>"]
    for i, side in enumerate(sides[:2]):
        x = label_w + i * 140
        out.append(f"<rect x='{x}' y='26' width='10' height='10' fill='{SIDE_COLORS[i]}'/>"
                   f"<text x='{x + 14}' y='35' font-size='11' {FONT}>{escape(side)}</text>")
    for r, (label, a, b, fmt) in enumerate(rows):
        y0 = 46 + r * row_h
        top = max((v for v in (a, b) if v is not None), default=0.0)
        out.append(f"<text x='{label_w - 8}' y='{y0 + bar_h + 4}' font-size='12' text-anchor='end' {FONT}>"
                   f"{escape(label)}</text>")
        for j, value in enumerate((a, b)[:len(sides)]):
            y = y0 + j * bar_h
            w = 0 if value is None or top <= 0 else max(1.0, plot_w * value / top)
            if value is not None:
                out.append(f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h - 2}' "
                           f"fill='{SIDE_COLORS[j]}'><title>{escape(sides[j])}: {escape(fmt(value))}</title></rect>")
            out.append(f"<text x='{label_w + w + 4:.1f}' y='{y + bar_h - 3}' font-size='11' {FONT}>"
                       f"{escape(fmt(value))}</text>")
    out.append("</svg>")
    return "".join(out)


def stacked_columns(title: str, days: Sequence[tuple[str, dict[str, float]]], series: Sequence[str],
                    width: int = 520, height: int = 200, colors: dict[str, str] | None = None) -> str:
    """Daily columns, each stacked by series (e.g. records per mapping version), with a scale and a legend.

    ``colors`` pins a series to a colour, so a version has the same colour here as in the paired bars.
    """
    def color(i: int) -> str:
        return (colors or {}).get(series[i]) or _color(i)

    left, bottom, top_pad = 44, 34, 46
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    total = max((sum(v.values()) for _d, v in days), default=0.0)
    out = [_open(width, height, title),
           f"<text x='0' y='16' font-size='14' font-weight='600' {FONT}>{escape(title)}</text>"]
    for i, name in enumerate(series):
        x = left + i * 110
        out.append(f"<rect x='{x}' y='26' width='10' height='10' fill='{color(i)}'/>"
                   f"<text x='{x + 14}' y='35' font-size='11' {FONT}>{escape(name)}</text>")
    base = top_pad + plot_h
    out.append(f"<line x1='{left}' y1='{base}' x2='{left + plot_w}' y2='{base}' stroke='#555' stroke-width='1'/>")
    out.append(f"<text x='{left - 6}' y='{top_pad + 4}' font-size='10' text-anchor='end' {FONT}>{total:g}</text>"
               f"<text x='{left - 6}' y='{base}' font-size='10' text-anchor='end' {FONT}>0</text>")
    if not days or total <= 0:
        out.append(f"<text x='{left + plot_w / 2}' y='{top_pad + plot_h / 2}' font-size='12' text-anchor='middle' "
                   f"fill='#777' {FONT}>no records in the window</text></svg>")
        return "".join(out)
    slot = plot_w / len(days)
    col_w = max(2.0, min(40.0, slot * 0.7))
    for d, (day, values) in enumerate(days):
        cx = left + d * slot + (slot - col_w) / 2
        y = float(base)
        for i, name in enumerate(series):
            n = values.get(name, 0)
            if n <= 0:
                continue
            h = plot_h * n / total
            y -= h
            out.append(f"<rect x='{cx:.1f}' y='{y:.1f}' width='{col_w:.1f}' height='{h:.1f}' fill='{color(i)}'>"
                       f"<title>{escape(day)} {escape(name)}: {n:g}</title></rect>")
        if d in (0, len(days) - 1) or len(days) <= 8 or (len(days) <= 62 and d % 7 == 0):
            out.append(f"<text x='{cx + col_w / 2:.1f}' y='{base + 14}' font-size='10' text-anchor='middle' "
                       f"{FONT}>{escape(day[5:])}</text>")
    out.append("</svg>")
    return "".join(out)


def _open(width: int, height: int, title: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>")


def _color(i: int) -> str:
    return SERIES_COLORS[i % len(SERIES_COLORS)]
