"""validate / test / catalog / schema, run as the real command on the example config and on broken copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from syncbus.mapping.spec import mapping_json_schema

from .conftest import ROOT


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the example config dir to break."""
    for name in ("mappings", "connectors", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path


def test_validate_example_config(cli):
    run = cli("validate", "--config-dir", str(ROOT))
    assert run.code == 0, run.out + run.err
    assert run.out.startswith("ok: 3 mappings, 3 sources, 4 sinks")


def test_validate_reports_unknown_sink_with_line(cli, config):
    m = config / "mappings" / "oa-employee-to-hr.yaml"
    m.write_text(m.read_text().replace("sink: hr-drop", "sink: hr-dorp"))
    run = cli("validate", "--config-dir", str(config))
    assert run.code == 1
    [line] = run.out.strip().splitlines()
    path, lineno, _col, message = line.split(":", 3)
    assert path.endswith("oa-employee-to-hr.yaml")
    assert "sink: hr-dorp" in m.read_text().splitlines()[int(lineno) - 1]
    assert "unknown sink 'hr-dorp'" in message and "hr-drop" in message
    # a named file is checked on its own: no cross-references
    assert cli("validate", str(m)).code == 0


def test_validate_refuses_secrets_in_files(cli, config):
    c = config / "connectors" / "example.yaml"
    c.write_text(c.read_text().replace("client_secret_env: ERP_CLIENT_SECRET", "client_secret: hunter2"))
    run = cli("validate", str(c))
    assert run.code == 1
    assert "secrets come from the environment only: use client_secret_env" in run.out
    assert "example.yaml:" in run.out


def test_validate_collects_every_error(cli, config):
    (config / "mappings" / "broken.yaml").write_text(
        "mapping: broken\nversion: 1\nowner: x\nsource: {topic: t}\ntarget: {sink: erp-orders}\n"
        "fields:\n  A: {frm: x}\n  B: {form: y}\n")
    run = cli("validate", "--config-dir", str(config))
    assert run.code == 1
    lines = run.out.strip().splitlines()
    assert len(lines) == 2
    assert all(ln.startswith(str(config / "mappings" / "broken.yaml") + ":") for ln in lines)


def test_syncbus_test_passes_on_examples_and_fails_on_a_wrong_expectation(cli, config):
    ok = cli("test", "--config-dir", str(ROOT))
    assert ok.code == 0 and "14 of 14 cases ok" in ok.out
    t = config / "mappings" / "tests" / "erp-posting-to-finance.yaml"
    t.write_text(t.read_text().replace("amount: '-1234.57'", "amount: '-1234.56'"))
    bad = cli("test", "--config-dir", str(config))
    assert bad.code == 1
    assert "FAIL" in bad.out and "/amount: expected '-1234.56', got '-1234.57'" in bad.out


def test_catalog_markdown_and_html(cli, tmp_path):
    md = cli("catalog", "--config-dir", str(ROOT))
    assert md.code == 0
    crm = "| crm-order-to-erp | CRM → ERP | realtime | REST API, XML body (ORDERS05 IDoc) | OAuth2 client credentials"
    fin = "| erp-posting-to-finance | ERP → Finance | daily 22:00 | database to database | TLS, IP allow-list"
    assert crm in md.out
    assert fin in md.out
    assert "`IDOC.E1EDK01.VBELN` | `order_id` | required" in md.out
    assert "v3 2026-11-20 zhang: mask customer phone" in md.out
    out = tmp_path / "catalog.html"
    html = cli("catalog", "--config-dir", str(ROOT), "--format", "html", "-o", str(out))
    assert html.code == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<td>sales-ops</td>" in page
    assert "lookup(departments)" in page


def test_mapping_schema_file_is_generated_from_the_models(cli):
    committed = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())
    assert committed == mapping_json_schema(), "run: syncbus schema -o schemas/mapping.schema.json"
    run = cli("schema")
    assert json.loads(run.out) == committed


def test_map_prints_exact_payload_and_skipped(cli):
    order = (ROOT / "mappings" / "tests" / "data" / "crm_order.json").read_bytes()
    golden = (ROOT / "mappings" / "tests" / "data" / "crm_order.ORDERS05.xml").read_bytes()
    run = cli("map", str(ROOT / "mappings" / "crm-order-to-erp.yaml"), "-", stdin=order)
    assert run.code == 0 and run.out.encode() == golden
    draft = order.replace(b'"APPROVED"', b'"DRAFT"')
    run = cli("map", str(ROOT / "mappings" / "crm-order-to-erp.yaml"), "-", stdin=draft)
    assert run.code == 0 and run.out == "" and "skipped" in run.err


SANDBOX_ENV = {
    "SYNCBUS_CRM_KEYS": "a", "SYNCBUS_ERP_KEYS": "b", "SYNCBUS_OA_KEYS": "c",
    "ERP_ORDERS_URL": "http://127.0.0.1:9/x", "ERP_TOKEN_URL": "http://127.0.0.1:9/t", "ERP_CLIENT_ID": "x",
    "ERP_CLIENT_SECRET": "y", "FINANCE_PREREVIEW_URL": "http://127.0.0.1:9/p",
}


def test_run_refuses_unset_environment_once_per_variable(cli, config):
    run = cli("run", "--config-dir", str(config), "--port", "1", env={"SYNCBUS_CRM_KEYS": "k"})
    assert run.code == 1 and "Traceback" not in run.out + run.err
    assert "environment variable ERP_ORDERS_URL (for 'url') is not set" in run.out
    assert run.out.count("ERP_ORDERS_URL") == 1
    assert "SYNCBUS_CRM_KEYS" not in run.out


def test_run_with_a_sink_that_cannot_start_is_one_line(cli, config, tmp_path):
    env = {**SANDBOX_ENV, "FINANCE_DB_URL": f"sqlite:///{tmp_path}/empty.db", "HR_DROP_DIR": str(tmp_path / "hr")}
    run = cli("run", "--config-dir", str(config), "--bus", f"embedded://{tmp_path}/bus.db", "--port", "0", env=env)
    assert run.code == 1
    assert "Traceback" not in run.out + run.err
    assert "error: finance-vouchers: table vouchers does not exist" in run.err
