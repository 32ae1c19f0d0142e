"""The alert and recording rules: promtool's own checks and unit tests, and our conventions."""

from __future__ import annotations

import re

import pytest

from .helpers import (
    PROMETHEUS_CONFIG,
    README,
    RULE_TESTS,
    RULES,
    RUNBOOK_BASE,
    alert_rules,
    github_anchor,
    load_yaml,
    readme_anchors,
    recording_names,
    require_tool,
    rule_groups,
    run,
)
from .promql import exported_metric_names, metric_names, unknown_names

SEVERITIES = {"warning", "critical"}
OWNER_JOIN = re.compile(r"\*\s*on\s*\(\s*route\s*\)\s*group_left\s*\(\s*owner\s*\)\s*route:syncbus_route_info:owner")


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def test_promtool_check_rules(promtool: str) -> None:
    got = run([promtool, "check", "rules", str(RULES)])
    assert got.returncode == 0, got.stdout + got.stderr
    assert "SUCCESS" in got.stdout


def test_promtool_test_rules(promtool: str) -> None:
    assert RULE_TESTS, "no promtool unit test files in deploy/prometheus/tests"
    got = run([promtool, "test", "rules", *map(str, RULE_TESTS)])
    assert got.returncode == 0, got.stdout + got.stderr
    assert "FAILED" not in got.stdout + got.stderr


def test_promtool_check_prometheus_config(promtool: str) -> None:
    """prometheus.yml parses and its rule_files glob finds the rules (promtool checks them too)."""
    got = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert got.returncode == 0, got.stdout + got.stderr
    assert str(RULES.name) in got.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        doc = load_yaml(path)
        assert doc.get("group_eval_order"), f"{path}: set group_eval_order, or promtool evaluates groups at random"
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts - fires == set(), "alerts without a test case where they fire"
    assert alerts - quiet == set(), "alerts without a test case where they do not fire (exp_alerts: [])"
    assert (fires | quiet) - alerts == set(), "test cases for alerts that do not exist"


def test_group_eval_order_names_every_group() -> None:
    groups = [g["name"] for g in rule_groups()]
    for path in RULE_TESTS:
        assert load_yaml(path)["group_eval_order"] == groups, path


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_carries_owner_severity_and_runbook(rule: dict) -> None:
    labels = rule.get("labels", {})
    assert labels.get("severity") in SEVERITIES
    expr = rule["expr"]
    if "owner" in labels:
        # not about one route: a static owner, and no route label to join on
        assert labels["owner"] == "integration-team"
        assert "route" not in {lbl for lbl in re.findall(r"by\s*\(([^)]*)\)", expr)}
    else:
        assert OWNER_JOIN.search(expr), f"{rule['alert']}: join the owner: * on(route) group_left(owner) ..."
    annotations = rule.get("annotations", {})
    assert annotations.get("summary") and annotations.get("description")
    assert annotations.get("runbook_url") == RUNBOOK_BASE + rule["alert"].lower()


def test_runbook_anchors_exist_in_readme() -> None:
    anchors = readme_anchors()
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_BASE)
        assert anchors.count(anchor) == 1, f"README.md needs exactly one heading '### {rule['alert']}' (#{anchor})"


def test_runbook_section_has_no_stale_alerts() -> None:
    """Every alert heading under '## Runbook' belongs to an alert that exists."""
    text = README.read_text(encoding="utf-8")
    assert "\n## Runbook\n" in text
    section = text.split("\n## Runbook\n", 1)[1].split("\n## ", 1)[0]
    headings = set(re.findall(r"^### (\S+)\s*$", section, flags=re.M))
    assert headings == {r["alert"] for r in alert_rules()}


def test_github_anchor() -> None:
    assert github_anchor("SyncbusErrorRatioHigh") == "syncbuserrorratiohigh"
    assert github_anchor("Runbook: SyncbusBusDown") == "runbook-syncbusbusdown"
    assert github_anchor("The example flows (DESIGN §9)") == "the-example-flows-design-9"


def test_rules_name_only_exported_metrics() -> None:
    known = exported_metric_names() | recording_names()
    for group in rule_groups():
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            assert unknown_names(rule["expr"], known) == set(), f"{group['name']}/{name}: unknown metric"


def test_recording_rule_names_follow_convention() -> None:
    """level:metric:operations, so they never collide with exported names."""
    for name in recording_names():
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_metric_name_tokenizer() -> None:
    expr = ('(sum by (route) (rate(foo_total{outcome!="ok", route=~"a|b"}[5m] offset 1h)) > 0.02)'
            ' * on(route) group_left(owner) level:bar:max and time() - 4.7E-02 * baz'
            ' or topk by (route) (1, max by (route, owner) (qux{job="x"})) unless histogram_quantile('
            '0.95, sum by (le) (rate(h_bucket[$__rate_interval]))) / ignoring(a) bool nan')
    assert metric_names(expr) == {"foo_total", "level:bar:max", "baz", "qux", "h_bucket"}
    known = {"foo_total", "level:bar:max", "baz", "qux"}
    assert unknown_names(expr, known) == {"h_bucket"}
    assert unknown_names("rate(process_cpu_seconds_total[5m]) + up", set()) == set()


def test_exported_names_come_from_the_registry() -> None:
    names = exported_metric_names()
    assert {"syncbus_records_delivered_total", "syncbus_end_to_end_seconds_bucket", "syncbus_route_info",
            "syncbus_dead_letters_pending", "syncbus_consumer_lag"} <= names
    assert "syncbus_records_delivered" not in names
