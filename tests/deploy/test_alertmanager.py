"""Alertmanager: the config is valid (amtool) and routes each alert to its owner's receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import ALERTMANAGER_CONFIG, ROOT, alert_rules, load_yaml, require_tool, run


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_tool("amtool", "prometheus-alertmanager")


def receivers_for(amtool: str, *labels: str) -> str:
    got = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels], timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    return got.stdout.strip()


def test_amtool_check_config(amtool: str) -> None:
    got = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)], timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "SUCCESS" in got.stdout


def test_sales_ops_alerts_go_to_sales_ops(amtool: str) -> None:
    got = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
               "--verify.receivers=sales-ops", "owner=sales-ops"], timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.strip() == "sales-ops"


def test_verify_receivers_fails_on_the_wrong_receiver(amtool: str) -> None:
    """The check above can fail: amtool exits non-zero when the receiver differs."""
    got = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
               "--verify.receivers=hr-ops", "owner=sales-ops"], timeout=60)
    assert got.returncode != 0


def _mapping_owners() -> set[str]:
    return {load_yaml(Path(p))["owner"] for p in sorted((ROOT / "mappings").glob("*.yaml"))}


def test_every_owner_has_its_receiver(amtool: str) -> None:
    """Each example mapping's owner, and the static owner of the non-route alerts."""
    static = {r["labels"]["owner"] for r in alert_rules() if "owner" in r.get("labels", {})}
    owners = _mapping_owners() | static
    assert {"sales-ops", "finance-ops", "hr-ops", "integration-team"} <= owners
    for owner in sorted(owners):
        assert receivers_for(amtool, f"owner={owner}", "severity=warning") == owner


def test_critical_alerts_also_page_on_call(amtool: str) -> None:
    assert receivers_for(amtool, "owner=finance-ops", "severity=critical") == "oncall-pager,finance-ops"


def test_an_unknown_owner_falls_back_to_the_integration_team(amtool: str) -> None:
    assert receivers_for(amtool, "owner=someone-new", "severity=warning") == "integration-team"


def test_receivers_show_email_wechat_and_webhook() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    by_name = {r["name"]: r for r in config["receivers"]}
    for owner in ("sales-ops", "finance-ops", "hr-ops", "integration-team"):
        receiver = by_name[owner]
        assert receiver.get("email_configs") and receiver.get("wechat_configs") and receiver.get("webhook_configs")
    assert config["route"]["group_by"][:2] == ["alertname", "owner"]
