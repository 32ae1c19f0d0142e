"""``syncbus report``: the numbers per flow, per version and per period, and how they are rendered."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from syncbus.changes.effect import build, percentile
from syncbus.changes.effect_render import render_html, render_json, render_markdown
from syncbus.state import Store
from tests.changes.effect_data import NOW, ROUTE, fill
from tests.e2e.harness import SYNCBUS


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(f"sqlite:///{tmp_path}/store.db")
    fill(st)
    return st


def test_percentile_is_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([float(i) for i in range(1, 11)], 50) == 5.0
    assert percentile([float(i) for i in range(1, 11)], 95) == 10.0


def test_compare_versions(store: Store):
    report = build(store, since=NOW - timedelta(days=3), until=NOW, compare_versions=(4, 5))
    [flow] = report.flows
    v4, v5 = flow.sides["v4"], flow.sides["v5"]
    assert (v4.volume, v4.delivered, v4.dead_lettered, v4.skipped) == (11, 10, 1, 0)
    assert (v5.volume, v5.delivered, v5.dead_lettered) == (10, 10, 0)
    assert (v4.p50, v4.p95, v5.p50, v5.p95) == (5.0, 10.0, 10.0, 20.0)
    assert v4.error_rate == pytest.approx(1 / 11) and v5.error_rate == 0.0
    assert v4.dead_letter_rate == pytest.approx(1 / 11) and v5.dead_letter_rate == 0.0
    assert v4.resolution_p50 == 3600.0 and v5.resolution_p50 is None
    assert flow.change("p50") == pytest.approx(100.0) and flow.change("p95") == pytest.approx(100.0)
    assert flow.change("dead_letter_rate") == pytest.approx(-100.0)
    assert flow.change("resolution_p50") is None            # nothing to compare with: not a zero
    days = {d["day"]: d["volume"] for d in flow.daily}
    assert sum(v.get("v4", 0) for v in days.values()) == 11 and sum(v.get("not mapped", 0) for v in days.values()) == 2


def test_compare_periods_and_a_single_window(store: Store):
    report = build(store, since=NOW - timedelta(days=1), until=NOW, compare_periods=True)
    before, after = report.flows[0].sides["before"], report.flows[0].sides["after"]
    assert (before.volume, after.volume) == (12, 11)          # the skipped records count as volume here
    assert (before.p50, after.p50) == (5.0, 10.0)
    window = build(store, since=NOW - timedelta(days=1), until=NOW)
    assert list(window.flows[0].sides) == ["window"] and window.flows[0].sides["window"].volume == 11
    assert window.flows[0].change("p50") is None
    assert build(store, since=NOW - timedelta(days=1), until=NOW, routes=["other"]).flows[0].sides["window"].volume \
        == 0


def test_markdown_and_json(store: Store):
    report = build(store, since=NOW - timedelta(days=3), until=NOW, compare_versions=(4, 5))
    md = render_markdown(report)
    assert "| processing time p50 | 5.00 s | 10.00 s | +100.0 % |" in md
    assert "| dead letter to resolution p50 | 60.0 min | n/a | n/a |" in md
    data = json.loads(render_json(report))
    assert data["flows"][0]["change_percent"]["p95"] == 100.0
    assert data["flows"][0]["sides"]["v4"]["resolved"] == 1


def test_html_is_self_contained_and_escaped(tmp_path: Path):
    st = Store(f"sqlite:///{tmp_path}/store.db")
    fill(st, route="<b>evil</b>&co")
    html = render_html(build(st, since=NOW - timedelta(days=3), until=NOW, compare_versions=(4, 5)))
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;&amp;co" in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", html)
    # the only URL is the SVG namespace, which is a name, not something fetched
    assert set(re.findall(r"https?://[^\s'\"]+", html)) == {"http://www.w3.org/2000/svg"}
    assert html.count("<svg") == 3


def test_the_command_writes_each_format(tmp_path: Path, store: Store):
    cfg = tmp_path / "cfg"
    (cfg / "mappings").mkdir(parents=True)
    out = tmp_path / "report.html"
    args = [SYNCBUS, "report", "--compare", "4", "5", "--since", "3d", "--config-dir", str(cfg), "--store",
            f"sqlite:///{tmp_path}/store.db"]
    done = subprocess.run([*args, "--format", "html", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text("utf-8").startswith("<!doctype html>")
    done = subprocess.run([*args, "--format", "json"], capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["flows"][0]["route"] == ROUTE
    bad = subprocess.run([*args, "--compare-periods"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not both" in bad.stderr
