"""``syncbus reconcile FLOW`` (reconcile.py, cli/reconcile.py) with the shipped reconcile/erp-posting-to-finance.yaml
against two real PostgreSQL databases, and the comparison rules on their own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncbus.errors import ConfigErrors
from syncbus.reconcile import Entry, ReconcileConfig, ReconcileError, compare, load_reconcile, to_markdown
from tests.e2e.harness import SYNCBUS
from tests.e2e.test_flow_erp_finance import ERP_DDL, FINANCE_DDL, create, expected, post

ROOT = Path(__file__).resolve().parents[1]
FLOW = "erp-posting-to-finance"
DOCS = {4711: [("1234.57", "S", "2026-11-20"), ("1234.57", "H", "2026-11-20")],
        4712: [("980.00", "S", "2026-11-21"), ("500.00", "H", "2026-11-21"), ("480.00", "H", "2026-11-21")]}


def reconcile(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNCBUS, "reconcile", FLOW, *args, "--config-dir", str(config)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


@pytest.fixture
def databases(tmp_path: Path, pg_url_factory: Callable[[], str]) -> tuple[Path, dict[str, str], sa.Engine]:
    """A config dir with the shipped reconcile file, an ERP with postings, finance with their vouchers."""
    (tmp_path / "reconcile").mkdir()
    shutil.copy(ROOT / "reconcile" / f"{FLOW}.yaml", tmp_path / "reconcile")
    erp_url, finance_url = pg_url_factory(), pg_url_factory()
    erp, finance = create(erp_url, ERP_DDL), create(finance_url, FINANCE_DDL)
    post(erp, DOCS)
    erp.dispose()
    with finance.begin() as conn:  # what the flow delivered: one voucher per line, amount signed
        conn.execute(sa.text("INSERT INTO vouchers VALUES (:no, '1000', 2026, :doc, :line, :day, '0000113100', "
                             ":amount, 'CNY', '', NULL)"),
                     [{"no": no, "doc": no[10:20], "line": int(no[-3:]), "amount": amount,
                       "day": "2026-11-20" if "4711" in no else "2026-11-21"} for no, amount in expected(DOCS).items()])
    return tmp_path, {"ERP_DSN": erp_url, "FINANCE_DB_URL": finance_url}, finance


def test_a_matching_flow_exits_0(databases: tuple[Path, dict[str, str], sa.Engine]) -> None:
    config, env, finance = databases
    run = reconcile(config, env)
    finance.dispose()
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"# Reconciliation of {FLOW}: match\n")
    assert "| rows | 5 | 5 |" in run.stdout
    assert "| 2026-11-20 | 2 | 2 | 0.00 | 0.00 | 0.00 | ok |" in run.stdout
    assert "| 2026-11-21 | 3 | 3 | 0.00 | 0.00 | 0.00 | ok |" in run.stdout


def test_a_deleted_voucher_and_a_changed_amount_exit_1_and_are_named(
        databases: tuple[Path, dict[str, str], sa.Engine]) -> None:
    config, env, finance = databases
    with finance.begin() as conn:
        conn.execute(sa.text("DELETE FROM vouchers WHERE voucher_no = '1000-2026-0100004711-002'"))
        conn.execute(sa.text("UPDATE vouchers SET amount = -499.99 WHERE voucher_no = '1000-2026-0100004712-002'"))
    finance.dispose()
    run = reconcile(config, env)
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert out.startswith(f"# Reconciliation of {FLOW}: MISMATCH\n")
    assert "| 2026-11-20 | 2 | 1 | 0.00 | 1234.57 | 1234.57 | **differs** |" in out
    assert "| 2026-11-21 | 3 | 3 | 0.00 | 0.01 | 0.01 | **differs** |" in out
    assert "## Missing in Finance (1)" in out and "| 1000-2026-0100004711-002 | 2026-11-20 | -1234.57 |" in out
    assert "## Amounts differ (1)" in out
    assert "| 1000-2026-0100004712-002 | 2026-11-21 | -500.00 | -499.99 | 0.01 |" in out

    report = json.loads(reconcile(config, env, "--json").stdout)
    assert report["ok"] is False
    assert report["missing_in_target"] == [{"key": "1000-2026-0100004711-002", "day": "2026-11-20",
                                            "amount": "-1234.57"}]
    assert [(d["key"], d["difference"]) for d in report["amounts_differ"]] == [("1000-2026-0100004712-002", "0.01")]
    # one day at a time: 2026-11-21 alone still differs, 2026-11-20 alone too
    assert reconcile(config, env, "--since", "2026-11-21", "--until", "2026-11-21").returncode == 1
    only = json.loads(reconcile(config, env, "--json", "--since", "2026-11-21").stdout)
    assert [d["day"] for d in only["days"]] == ["2026-11-21"] and only["missing_in_target"] == []


def test_refusals_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "reconcile").mkdir()
    run = subprocess.run([SYNCBUS, "reconcile", "nope", "--config-dir", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1 and "no reconciliation for flow 'nope'" in run.stderr and "Traceback" not in run.stderr
    (tmp_path / "reconcile" / "f.yaml").write_text(
        "flow: f\nsource:\n  dsn: sqlite:///erp.db\n  query: SELECT 1\ntarget:\n  dsn_env: FIN\n"
        "  query: SELECT * FROM v WHERE d > :day\n")
    with pytest.raises(ConfigErrors) as err:
        load_reconcile(tmp_path, "f", env={"FIN": "sqlite://"})
    messages = [str(e) for e in err.value.errors]
    assert any(m.endswith("f.yaml:3:3: secrets come from the environment only: use dsn_env: VAR") for m in messages)
    (tmp_path / "reconcile" / "f.yaml").write_text(
        "flow: f\nsource: {dsn_env: FIN, query: SELECT 1 AS key}\ntarget: {dsn_env: FIN, query: SELECT 1}\n")
    config = load_reconcile(tmp_path, "f", env={"FIN": "sqlite://"})
    from syncbus.reconcile import reconcile as run_reconcile

    with pytest.raises(ReconcileError, match="source: the query returns no column 'day'"):
        run_reconcile(config)


def entries(*rows: tuple[str, str, str]) -> list[Entry]:
    return [Entry(k, d, Decimal(a)) for k, d, a in rows]


def test_the_comparison_rules() -> None:
    config = ReconcileConfig.model_validate({"flow": "f", "source": {"dsn": "sqlite://", "query": "SELECT 1"},
                                             "target": {"dsn": "sqlite://", "query": "SELECT 1"},
                                             "tolerance": "0.01"})
    same = compare(config, entries(("a", "2026-01-01", "1.00")), entries(("a", "2026-01-01", "1.01")))
    assert same.ok  # within the tolerance
    report = compare(config, entries(("a", "2026-01-01", "1.00"), ("b", "2026-01-01", "2"), ("b", "2026-01-01", "3")),
                     entries(("a", "2026-01-02", "1.00"), ("b", "2026-01-01", "5")))
    assert not report.ok
    assert report.duplicates == {"b": {"source": 2, "target": 1}}
    assert [(s.day, t.day) for s, t in report.days_differ] == [("2026-01-01", "2026-01-02")]
    assert report.amounts_differ == []  # b: 2 + 3 == 5
    text = to_markdown(report)
    assert "## Days differ (1)" in text and "## Keys more than once (1)" in text
    assert compare(config, [], []).ok and "No rows on either side." in to_markdown(compare(config, [], []))
