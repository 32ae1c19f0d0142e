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


def _example_counts() -> tuple[int, int, int]:
    """Mappings, sources and sinks the example config declares (counted from the files, not remembered)."""
    import yaml

    mappings = len(list((ROOT / "mappings").glob("*.yaml")))
    sources = sinks = 0
    for path in (ROOT / "connectors").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        sources += len(doc.get("sources") or [])
        sinks += len(doc.get("sinks") or [])
    return mappings, sources, sinks


def _example_cases() -> int:
    import yaml

    return sum(len((yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("cases") or [])
               for p in (ROOT / "mappings" / "tests").glob("*.yaml"))


def test_validate_example_config(cli):
    run = cli("validate", "--config-dir", str(ROOT))
    assert run.code == 0, run.out + run.err
    m, src, snk = _example_counts()
    assert m >= 4 and run.out.startswith(f"ok: {m} mappings, {src} sources, {snk} sinks")


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
    n = _example_cases()
    assert ok.code == 0 and f"{n} of {n} cases ok" in ok.out
    t = config / "mappings" / "tests" / "erp-posting-to-finance.yaml"
    t.write_text(t.read_text().replace("amount: '-1234.57'", "amount: '-1234.56'"))
    bad = cli("test", "--config-dir", str(config))
    assert bad.code == 1
    assert "FAIL" in bad.out and "/amount: expected '-1234.56', got '-1234.57'" in bad.out


def test_catalog_markdown_and_html(cli, tmp_path):
    md = cli("catalog", "--config-dir", str(ROOT))
    assert md.code == 0
    crm = ("| crm-order-to-erp | CRM → ERP | realtime | REST API, XML body (ORDERS05 IDoc) | OAuth2 client credentials"
           " | sales-ops | 4 |")
    fin = "| erp-posting-to-finance | ERP → Finance | daily 22:00 | database to database | TLS, IP allow-list"
    assert crm in md.out
    assert fin in md.out
    assert "| `IDOC.E1EDK01.VBELN` | `order_id` | required |" in md.out
    assert "| 3 | 2026-11-20 | zhang | mask customer phone | not declared |" in md.out
    assert "| 4 | 2026-12-01 | zhang |" in md.out and "| liu (sales-ops) |" in md.out
    out = tmp_path / "catalog.html"
    html = cli("catalog", "--config-dir", str(ROOT), "--format", "html", "-o", str(out))
    assert html.code == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<tr><th>owner</th><td>sales-ops</td></tr>" in page
    assert "lookup(departments)" in page
    zh = cli("catalog", "--config-dir", str(ROOT), "--lang", "zh")
    assert zh.code == 0 and zh.out.startswith("# 接口目录") and "### 字段映射" in zh.out
    bad = cli("catalog", "--config-dir", str(ROOT), "--lang", "fr")
    assert bad.code == 1 and "--lang must be en or zh" in bad.err


def test_mapping_schema_file_is_generated_from_the_models(cli):
    committed = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())
    assert committed == mapping_json_schema(), "run: syncbus schema -o schemas/mapping.schema.json"
    run = cli("schema")
    assert json.loads(run.out) == committed


def test_map_prints_exact_payload_and_skipped(cli):
    order = (ROOT / "mappings" / "tests" / "data" / "crm_order.json").read_bytes()
    golden = (ROOT / "mappings" / "tests" / "data" / "crm_order.ORDERS05.xml").read_bytes()
    run = cli("map", str(ROOT / "mappings" / "crm-order-to-erp.yaml"), "-", stdin=order)
    assert run.code == 0 and run.out.encode() == golden.rstrip(b"\n") + b"\n"  # always ends with a newline
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


def example_env(tmp_path: Path) -> dict[str, str]:
    """A value for every `*_env` variable the example connectors name: folders, databases, URLs."""
    import yaml

    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and k.endswith("_env") and isinstance(v, str):
                    names.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in (ROOT / "connectors").glob("*.yaml"):
        walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    env = dict(SANDBOX_ENV)
    for name in names - env.keys():
        if name.endswith("_DIR"):
            (tmp_path / name.lower()).mkdir(exist_ok=True)
            env[name] = str(tmp_path / name.lower())
        elif "DSN" in name or "DB_URL" in name:
            env[name] = f"sqlite:///{tmp_path}/{name.lower()}.db"
        elif "URL" in name:
            env[name] = "http://127.0.0.1:9/x"
        else:
            env[name] = "x"
    return env


def test_run_with_a_sink_that_cannot_start_is_one_line(cli, config, tmp_path):
    env = {**example_env(tmp_path), "FINANCE_DB_URL": f"sqlite:///{tmp_path}/empty.db"}
    run = cli("run", "--config-dir", str(config), "--bus", f"embedded://{tmp_path}/bus.db", "--port", "0", env=env)
    assert run.code == 1
    assert "Traceback" not in run.out + run.err
    assert "error: finance-vouchers: table vouchers does not exist" in run.err
    assert len(run.err.strip().splitlines()) == 1, run.err     # one line: no banner, no traceback, no noise


# -- mapping language (issue 8): validate checks more, map ends with a newline -----------------------------


def test_map_output_always_ends_with_one_newline(cli):
    posting = ROOT / "mappings" / "tests" / "data" / "erp_posting_credit.json"
    run = cli("map", str(ROOT / "mappings" / "erp-posting-to-finance.yaml"), str(posting))
    assert run.code == 0 and run.out.endswith("}\n") and not run.out.endswith("\n\n")
    assert json.loads(run.out)["amount"] == "-1234.57"
    big = json.loads((ROOT / "mappings" / "tests" / "data" / "crm_order.json").read_text())
    big["amount"] = 250000
    run = cli("map", str(ROOT / "mappings" / "crm-order-to-erp.yaml"), "-", stdin=json.dumps(big).encode())
    assert run.code == 0 and "finance-prereview" in run.err  # fan-out: two payloads, each on its own lines
    xml, payload = run.out.split("</ORDERS05>\n")
    assert xml.startswith("<?xml")
    assert payload.endswith("}\n") and json.loads(payload)["IDOC"]["E1EDK01"]["NETWR"] == "250000.00"


def test_validate_reports_test_file_problems_with_lines(cli, config):
    t = config / "mappings" / "tests" / "oa-employee-to-hr.yaml"
    t.write_text(t.read_text().replace("  expected_body_file:", "  expected_bodyfile:", 1), encoding="utf-8")
    run = cli("validate", "--config-dir", str(config))
    assert run.code == 1
    [line] = run.out.strip().splitlines()
    assert line.startswith(f"{t}:") and "unknown key 'expected_bodyfile'" in line
    lineno = int(line.split(":")[1])
    assert "expected_bodyfile" in t.read_text().splitlines()[lineno - 1]
    assert cli("validate", str(t)).code == 1  # named on its own, too
    assert "unknown key 'expected_bodyfile'" in cli("test", "--config-dir", str(config)).out


def test_validate_reports_a_test_of_an_unknown_mapping_and_missing_files(cli, config):
    t = config / "mappings" / "tests" / "crm-order-to-erp.yaml"
    t.write_text(t.read_text().replace("mapping: crm-order-to-erp", "mapping: crm-order-to-sap")
                 .replace("input_file: data/crm_order.json", "input_file: data/nope.json", 1), encoding="utf-8")
    run = cli("validate", "--config-dir", str(config))
    assert run.code == 1
    assert "no mapping named 'crm-order-to-sap'" in run.out
    assert "input_file 'data/nope.json' not found" in run.out


def test_validate_warns_about_a_topic_no_source_publishes(cli, config):
    m = config / "mappings" / "oa-employee-to-hr.yaml"
    m.write_text(m.read_text().replace("topic: oa.employees", "topic: oa.employes"), encoding="utf-8")
    run = cli("validate", "--config-dir", str(config))
    assert run.code == 0, run.out
    [warning] = [ln for ln in run.out.splitlines() if "warning:" in ln]
    path, lineno, _col, message = warning.split(":", 3)
    assert path == str(m) and "topic: oa.employes" in m.read_text().splitlines()[int(lineno) - 1]
    assert "route 'oa-employee-to-hr' reads topic 'oa.employes' but no source publishes to it" in message
    assert run.out.strip().splitlines()[-1].startswith(f"ok: {_example_counts()[0]} mappings")
    assert "1 warnings" in run.out


def test_validate_refuses_a_version_without_its_changelog_entry(cli, config):
    m = config / "mappings" / "erp-posting-to-finance.yaml"
    m.write_text(m.read_text().replace("version: 3\n", "version: 4\n", 1), encoding="utf-8")
    run = cli("validate", "--config-dir", str(config))
    assert run.code == 1
    [line] = run.out.strip().splitlines()
    assert "version is 4 but the newest changelog entry is version 3" in line
    assert m.read_text().splitlines()[int(line.split(":")[1]) - 1] == "version: 4"


def test_validate_reports_expression_type_errors_with_lines(cli, config):
    m = config / "mappings" / "crm-order-to-erp.yaml"
    m.write_text(m.read_text().replace("when: dec(record.amount) >= 100000", 'when: dec(record.amount) >= "100000"'),
                 encoding="utf-8")
    run = cli("validate", "--config-dir", str(config))
    assert run.code == 1
    [line] = run.out.strip().splitlines()
    assert "bad CEL expression: decimal '>=' needs numbers, not a string" in line
    assert "when: dec(record.amount)" in m.read_text().splitlines()[int(line.split(":")[1]) - 1]
