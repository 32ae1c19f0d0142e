"""The Grafana dashboard and its provisioning: what it shows, and that every query is sound."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import COMPOSE, DASHBOARD, PROVISIONING, load_yaml, recording_names, require_tool, run
from .promql import exported_metric_names, unknown_names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """Grafana's variables replaced by values PromQL accepts."""
    return (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
            .replace("$route", ".*"))


def test_route_template_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    route = variables["route"]
    assert route["type"] == "query" and route["includeAll"] and route["multi"]
    assert "label_values(syncbus_route_info, route)" in json.dumps(route["query"])
    # every per-route query honours the selection
    for title, expr in exprs():
        if "route" in expr and "syncbus_" in expr and "source_reason:" not in expr:
            assert 'route=~"$route"' in expr, f"{title}: {expr}"


def test_dashboard_shows_what_operators_need() -> None:
    text = " ".join(e for _, e in exprs())
    for needle in ("syncbus_records_delivered_total",          # per-route rate
                   "route:syncbus_error_ratio:rate5m",          # errors
                   "syncbus_delivery_attempts_total",
                   "histogram_quantile(0.50, sum by (route, le) (rate(syncbus_end_to_end_seconds_bucket",
                   "histogram_quantile(0.95, sum by (route, le) (rate(syncbus_end_to_end_seconds_bucket",
                   "route:syncbus_dead_letters_pending:max",    # dead letters pending
                   "syncbus_consumer_lag",                      # lag
                   "time() - route:syncbus_last_success_timestamp_seconds:max"):  # last success age
        assert needle in text, needle


def test_panels_are_well_formed() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"], p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])


def test_dashboard_names_only_exported_metrics() -> None:
    known = exported_metric_names() | recording_names()
    for title, expr in exprs():
        assert unknown_names(expr, known) == set(), f"panel {title!r}: {expr}"
    for var in dashboard()["templating"]["list"]:
        for metric in re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", json.dumps(var.get("query", ""))):
            assert metric in known, var["name"]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool checks each query's syntax (as a recording rule, with the variables filled in)."""
    promtool = require_tool("promtool", "prometheus")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:n{i}", "expr": as_promql(expr)} for i, (_, expr) in enumerate(exprs())]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    got = run([promtool, "check", "rules", str(path)])
    assert got.returncode == 0, got.stdout + got.stderr


def test_provisioning_matches_dashboard_and_compose() -> None:
    datasources = load_yaml(PROVISIONING / "datasources" / "syncbus.yml")["datasources"]
    prom = next(d for d in datasources if d["type"] == "prometheus")
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == prom["uid"]
    assert prom["url"] == "http://prometheus:9090"

    providers = load_yaml(PROVISIONING / "dashboards" / "syncbus.yml")["providers"]
    path = providers[0]["options"]["path"]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[path] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"


@pytest.mark.parametrize("path", sorted(PROVISIONING.rglob("*.yml")), ids=lambda p: p.name)
def test_provisioning_files_are_version_1(path: Path) -> None:
    assert load_yaml(path)["apiVersion"] == 1
