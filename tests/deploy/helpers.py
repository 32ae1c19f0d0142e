"""Helpers for the deployment tests: the files under deploy/ and the real tools that check them.

promtool and amtool come from the Debian packages ``prometheus`` and ``prometheus-alertmanager``
(``deploy/setup.sh prometheus`` installs them). A missing tool skips its tests on a laptop but
FAILS them when ``CI`` is set to anything truthy (CI=1, CI=true, CI=yes...): CI must never go
green by skipping the only real check of the alert rules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "syncbus.rules.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "syncbus.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
README = ROOT / "README.md"

RUNBOOK_BASE = "https://github.com/syncbus/syncbus/blob/main/README.md#"

_FALSY = ("", "0", "false", "no", "off")


def in_ci() -> bool:
    """CI set to anything truthy."""
    return os.environ.get("CI", "").strip().lower() not in _FALSY


def require_tool(name: str, package: str) -> str:
    """The tool's path; skip without it, but fail in CI."""
    path = shutil.which(name)
    if path:
        return path
    reason = (f"{name} not found on PATH (Debian package {package}: "
              f"`deploy/setup.sh prometheus` or `apt-get install --no-install-recommends {package}`)")
    if in_ci():
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def run(cmd: list[str], timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, check=False)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def rule_groups() -> list[dict[str, Any]]:
    return load_yaml(RULES)["groups"]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def recording_names() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def readme_anchors() -> list[str]:
    """Anchors of every heading of README.md, outside fenced code blocks."""
    anchors = []
    fenced = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m and not fenced:
            anchors.append(github_anchor(m.group(2)))
    return anchors
