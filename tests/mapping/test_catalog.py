"""The interface catalogue (`syncbus catalog`): the facts per flow, wording, secrecy, and the printed page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from syncbus.config import Component, ConnectorsConfig
from syncbus.mapping.catalog import build_catalog, catalog_for, render_html, render_markdown
from syncbus.mapping.catalog_words import condition_in_words
from syncbus.mapping.loader import load_mapping
from tests.support.kafka import in_ci  # in CI a missing browser fails instead of skipping

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def markdown() -> str:
    return catalog_for(ROOT)


def test_every_fact_of_a_flow_is_in_the_catalogue(markdown: str) -> None:
    crm = markdown.split("## crm-order-to-erp\n", 1)[1].split("\n## ", 1)[0]
    for fact in [
        "| systems | CRM → ERP |",
        "| direction | CRM → ERP (one-way) |",
        "| interface type | REST API, XML body (ORDERS05 IDoc) |",
        "| frequency / schedule | realtime |",
        "| security | OAuth2 client credentials |",
        "client_secret from $ERP_CLIENT_SECRET",  # authentication: where the secret comes from, not what it is
        "crm-orders: API keys (from $SYNCBUS_CRM_KEYS)",
        "| source | crm-orders (http_ingress, realtime (push)): POST /ingress/crm-orders → topic crm.orders |",
        "erp-orders (http, xml, root ORDERS05): url from $ERP_ORDERS_URL",
        "| record key | order_id |",
        '| filter (when) | status is “APPROVED” (`record.status == "APPROVED"`) |',
        "finance-prereview: amount is at least 100000 (`dec(record.amount) >= 100000`)",
        "erp-orders: 4 attempts (1 try + 3 retries), exponential backoff 0.5s … 30s, then dead letter",
        "| input schema | schemas/crm_order.schema.json (CRM sales order) |",
        "erp-orders: schemas/erp_orders05.schema.json; finance-prereview: not declared",
        "| owner | sales-ops |",
        "| version | 4 |",
        "| `IDOC.E1EDKA1.KUNNR` | `cust_code` | trim \\| upper \\| zfill(10); required |",
        "| `IDOC.E1EDP01[].VPREI` | `unit_price` | decimal(2) |",
        "| `order_id` | string | yes |",
    ]:
        assert fact in crm, fact
    # the whole change history, with approvals
    history = re.findall(r"^\| (\d) \| (2026-\d\d-\d\d) \| (\w+) \| (.+?) \| (.+?) \|$", crm, re.M)
    assert [h[0] for h in history] == ["1", "2", "3", "4"]
    assert history[0][4] == "not declared" and history[3][4] == "liu (sales-ops)"
    assert "| oa-employee-to-hr | OA → HR |" in markdown and "OA ↔ HR (two-way)" in markdown


def test_secrets_and_environment_values_never_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"ERP_CLIENT_SECRET": "s3cr3t-client", "ERP_ORDERS_URL": "https://bob:pa55w0rd@erp-host.example/o",
               "SYNCBUS_CRM_KEYS": "key-one,key-two", "ERP_CLIENT_ID": "client-id-42"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    for text in (catalog_for(ROOT), catalog_for(ROOT, "html")):
        for name in secrets:
            assert f"${name}" in text
        for part in ("s3cr3t-client", "pa55w0rd", "erp-host.example", "key-one", "key-two", "client-id-42"):
            assert part not in text, part


def test_schedules_addresses_and_missing_facts(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "mapping: nightly\nversion: 1\nowner: fin\nsource: {topic: erp.postings}\n"
        "targets:\n  - {sink: vouchers}\n  - {sink: nowhere, when: 'record.amount >= 100000.0 && has(record.x)'}\n"
        "fields: {A: a}\n", encoding="utf-8")
    mapping = load_mapping(tmp_path / "m.yaml")
    source = Component("erp-postings", "source", "sql_poll", SimpleNamespace(
        topic="erp.postings", schedule="0 22 * * *", timezone="Asia/Shanghai", dsn="${ERP_DSN}",
        query="SELECT * FROM postings"), "c.yaml", 3)
    poll = Component("other", "source", "http_poll", {"topic": "x", "interval": 30.0, "url": "https://h/x"},
                     "c.yaml", 9)
    sink = Component("vouchers", "sink", "sql", SimpleNamespace(
        url="postgresql://fin:hunter2@db/fin", table="vouchers", retry={"attempts": 4, "initial": 1.0, "max": 60.0},
        auth=None), "c.yaml", 12)
    connectors = ConnectorsConfig(sources={"erp-postings": source, "other": poll}, sinks={"vouchers": sink})
    [entry] = build_catalog([mapping], connectors)
    text = render_markdown([entry])
    assert "erp-postings (sql_poll, cron 0 22 * * * (Asia/Shanghai)): dsn from $ERP_DSN; query SELECT" in text
    assert "| frequency / schedule | erp-postings: cron 0 22 * * * (Asia/Shanghai) |" in text
    assert "url postgresql://***@db/fin; table vouchers" in text and "hunter2" not in text
    assert "4 attempts (1 try + 3 retries), exponential backoff 1s … 60s" in text
    assert "nowhere: amount is at least 100000.0 and x is present" in text
    assert "nowhere (not declared, json): not declared" in text
    for row in ("interface type", "security", "description", "input schema"):
        assert f"| {row} | not declared |" in text, row
    assert "### Change history\n\nnot declared" in text
    assert "| record key | the bus key (not declared) |" in text


@pytest.mark.parametrize(("source", "en", "zh"), [
    ('record.status == "APPROVED"', "status is “APPROVED”", "status 等于 “APPROVED”"),
    ("dec(record.amount) >= 100000", "amount is at least 100000", "amount 不小于 100000"),
    ("record.a < 1 || !has(record.customer.phone)", "a is less than 1 or not (customer.phone is present)",
     "a 小于 1 或 非 (customer.phone 存在)"),
    ('record.lines.exists(l, l.qty > 1)', 'record.lines.exists(l, l.qty > 1)', 'record.lines.exists(l, l.qty > 1)'),
])
def test_conditions_in_words(source: str, en: str, zh: str) -> None:
    assert condition_in_words(source, "en") == en
    assert condition_in_words(source, "zh") == zh


def test_chinese_headings() -> None:
    md = catalog_for(ROOT, lang="zh")
    for heading in ("# 接口目录", "## 概览", "### 字段映射", "### 变更记录"):
        assert heading in md
    assert "| 负责人 | sales-ops |" in md and "| 批准人 |" in md


def test_html_is_one_self_contained_document() -> None:
    page = catalog_for(ROOT, "html")
    assert page.startswith("<!doctype html>") and page.endswith("</html>\n")
    for external in ("<script", "<link", " src=", "@import", "url(", "http://", "https://"):
        assert external not in page, external
    assert "@media print" in page and "page-break-before" in page
    flows = len(list((ROOT / "mappings").glob("*.yaml")))
    assert page.count("<section class='flow'") == flows
    assert page.count("<table class='fields'>") == flows


def browser(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not in_ci() and CHROMIUM is None, reason="needs the Debian package chromium")
@pytest.mark.parametrize(("lang", "headings"), [
    ("en", ["Interface catalogue", "Summary", "crm-order-to-erp", "erp-posting-to-finance", "oa-employee-to-hr",
            "Field mappings", "Change history", "Sign-off"]),
    ("zh", ["接口目录", "概览", "字段映射", "变更记录", "签字确认"]),
])
def test_html_renders_in_a_browser(tmp_path: Path, lang: str, headings: list[str]) -> None:
    page = tmp_path / f"catalog-{lang}.html"
    page.write_text(catalog_for(ROOT, "html", lang), encoding="utf-8")
    shot = tmp_path / f"catalog-{lang}.png"
    browser(f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    print(f"screenshot: {shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one
    dom = browser("--dump-dom", page.as_uri()).stdout
    found = re.findall(r"<h[123][^>]*>(.*?)</h[123]>", dom)
    for heading in headings:
        assert any(heading in h for h in found), (heading, found[:12])
    assert dom.count("<tr>") > 60  # the tables made it into the DOM


def test_render_functions_take_entries(markdown: str) -> None:
    entries = build_catalog([load_mapping(ROOT / "mappings" / "oa-employee-to-hr.yaml")])
    assert render_markdown(entries).startswith("# Interface catalogue")
    assert "oa-employee-to-hr" in render_html(entries)
    assert entries[0].sinks == ["hr-drop"] and entries[0].formats == ["csv"]

