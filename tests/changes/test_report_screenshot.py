"""The HTML flow report in a real browser: headless Chromium renders it from disk, offline.

The page must show its charts with no script and no network, so the test
renders it with ``--screenshot`` from a ``file://`` URL and reads the PNG
back: the bars of both compared versions must be there in their colours, and
the page must not be blank. (A person looked at the same screenshot while the
page was built; this keeps it from silently breaking.)
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from syncbus.changes.effect import build
from syncbus.changes.effect_render import render_html
from syncbus.changes.svg import SIDE_COLORS
from syncbus.state import Store
from tests.changes.effect_data import NOW, fill
from tests.support.kafka import in_ci  # in CI a missing browser fails instead of skipping

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def read_png(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, RGB pixels) of an 8-bit RGB or RGBA PNG, as Chromium writes them."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = color_type = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color_type in (2, 6)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    bpp = 3 if color_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels += [tuple(line[i:i + 3]) for i in range(0, stride, bpp)]  # type: ignore[misc]
        prev = line
    return width, height, pixels


def rgb(hex_color: str) -> tuple[int, int, int]:
    return int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16)


@pytest.mark.skipif(not in_ci() and not Path(CHROMIUM).exists(), reason="needs Chromium (deploy/setup.sh installs it)")
def test_report_page_renders_its_charts_offline(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path}/store.db")
    fill(store)
    page = tmp_path / "report.html"
    page.write_text(render_html(build(store, since=NOW - timedelta(days=3), until=NOW, compare_versions=(4, 5))),
                    "utf-8")
    shot = tmp_path / "report.png"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1200,900", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.exists(), done.stderr[-2000:]
    width, height, pixels = read_png(shot)
    assert (width, height) == (1200, 900)
    colors = Counter(pixels)
    background, _n = colors.most_common(1)[0]
    assert sum(n for c, n in colors.items() if c != background) > width * height // 10, "the page looks blank"
    before, after = rgb(SIDE_COLORS[0]), rgb(SIDE_COLORS[1])
    assert colors[after] > 2000, "no bars of the second version"       # v5 bars and its day's column
    assert colors[before] > 2000, "no bars of the first version"
