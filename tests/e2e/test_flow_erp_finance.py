"""The ERP → finance flow for real (DESIGN §9): a PostgreSQL table of FI postings, polled by a real
`syncbus run`, mapped by mappings/erp-posting-to-finance.yaml, upserted as vouchers into a second
PostgreSQL database -- on the embedded bus and on Kafka.

The node's config is the shipped one: the ``erp-postings`` source and the ``finance-vouchers`` sink
are taken from connectors/example.yaml, the mapping and the reconciliation from mappings/ and
reconcile/; only the nightly cron becomes ``interval: 1s`` and the page size 3 (so that pages end
inside groups of equal watermarks).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.e2e.harness import SYNCBUS, Node, wait_until

ROOT = Path(__file__).resolve().parents[2]
FLOW = "erp-posting-to-finance"

ERP_DDL = [
    """CREATE TABLE fi_postings (
         bukrs char(4) NOT NULL, belnr char(10) NOT NULL, gjahr char(4) NOT NULL, buzei char(3) NOT NULL,
         budat date NOT NULL, dmbtr numeric(13,2) NOT NULL CHECK (dmbtr >= 0),
         shkzg char(1) NOT NULL CHECK (shkzg IN ('S', 'H')), hkont varchar(10) NOT NULL, waers char(3) NOT NULL,
         sgtxt varchar(50), changed_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (bukrs, gjahr, belnr, buzei))""",
    "CREATE INDEX fi_postings_changed ON fi_postings (changed_at, bukrs, gjahr, belnr, buzei)",
]
FINANCE_DDL = [
    """CREATE TABLE vouchers (
         voucher_no varchar(40) PRIMARY KEY, company char(4) NOT NULL, fiscal_year smallint NOT NULL,
         document char(10) NOT NULL, line smallint NOT NULL, date date NOT NULL, account varchar(10) NOT NULL,
         amount numeric(15,2) NOT NULL, currency char(3) NOT NULL, text varchar(50) NOT NULL,
         idempotency_key text)""",
]

Line = tuple[str, str, str]  # (dmbtr, shkzg, budat)


def create(url: str, ddl: list[str]) -> sa.Engine:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in ddl:
            conn.execute(sa.text(statement))
    return engine


def post(erp: sa.Engine, documents: dict[int, list[Line]], changed_at: Any = None) -> None:
    """Book documents in ONE transaction: every line gets the same changed_at (now(), or the one given)."""
    rows = [{"belnr": f"01000{n:05d}", "buzei": f"{i:03d}", "dmbtr": amount, "shkzg": side, "budat": budat,
             "hkont": "0000113100" if side == "H" else "0000400000", "sgtxt": None if i == 1 else f"doc {n}"}
            for n, lines in documents.items() for i, (amount, side, budat) in enumerate(lines, start=1)]
    stamp = "now()" if changed_at is None else ":changed_at"
    with erp.begin() as conn:
        conn.execute(sa.text("INSERT INTO fi_postings (bukrs, belnr, gjahr, buzei, budat, dmbtr, shkzg, hkont, "
                             f"waers, sgtxt, changed_at) VALUES ('1000', :belnr, '2026', :buzei, :budat, :dmbtr, "
                             f":shkzg, :hkont, 'CNY', :sgtxt, {stamp})"),
                     [{**r, "changed_at": changed_at} for r in rows])


def expected(documents: dict[int, list[Line]]) -> dict[str, Decimal]:
    """voucher_no -> signed amount, as the mapping must compute it."""
    return {f"1000-2026-01000{n:05d}-{i:03d}": (-1 if side == "H" else 1) * Decimal(amount)
            for n, lines in documents.items() for i, (amount, side, _) in enumerate(lines, start=1)}


def vouchers(finance: sa.Engine) -> dict[str, Decimal]:
    with finance.connect() as conn:
        return {r.voucher_no: r.amount for r in conn.execute(sa.text("SELECT voucher_no, amount FROM vouchers"))}


def flow_config(root: Path, suffix: str) -> Path:
    """The shipped ERP → finance config, with a 1s interval and topic/route names unique on a shared Kafka."""
    (root / "mappings").mkdir(parents=True)
    shutil.copytree(ROOT / "mappings" / "schemas", root / "mappings" / "schemas")
    mapping = (ROOT / "mappings" / f"{FLOW}.yaml").read_text("utf-8")
    (root / "mappings" / f"{FLOW}.yaml").write_text(
        mapping.replace(f"mapping: {FLOW}", f"mapping: {FLOW}{suffix}")
               .replace("topic: erp.postings", f"topic: erp.postings{suffix}"), "utf-8")
    example = yaml.safe_load((ROOT / "connectors" / "example.yaml").read_text("utf-8"))
    [source] = [s for s in example["sources"] if s["name"] == "erp-postings"]
    [sink] = [s for s in example["sinks"] if s["name"] == "finance-vouchers"]
    assert source["schedule"] == "0 22 * * *" and source["timezone"] == "Asia/Shanghai"  # the shipped schedule
    del source["schedule"], source["timezone"]
    source.update(interval="1s", batch_size=3, topic=f"erp.postings{suffix}")
    sink["retry"] = {"attempts": 4, "initial": "100ms", "max": "1s"}
    (root / "connectors").mkdir()
    (root / "connectors" / "erp-finance.yaml").write_text(yaml.safe_dump({"sources": [source], "sinks": [sink]}))
    (root / "reconcile").mkdir()
    shutil.copy(ROOT / "reconcile" / f"{FLOW}.yaml", root / "reconcile" / f"{FLOW}.yaml")
    return root


class Flow:
    """Two PostgreSQL databases, the config dir and the nodes of one test."""

    def __init__(self, root: Path, bus: str, suffix: str, make_db: Callable[[], str]) -> None:
        self.erp_url, self.finance_url = make_db(), make_db()
        self.erp = create(self.erp_url, ERP_DDL)
        self.finance = create(self.finance_url, FINANCE_DDL)
        self.config = flow_config(root / "config", suffix)
        self.bus, self.store = bus, f"sqlite:///{root / 'store.db'}"
        self.nodes: list[Node] = []

    def env(self) -> dict[str, str]:
        return {"ERP_DSN": self.erp_url, "FINANCE_DB_URL": self.finance_url}

    def start(self) -> Node:
        node = Node(self.config, self.bus, self.store)
        self.nodes.append(node)
        return node.start()

    def command(self, *args: str, bus: bool = True) -> subprocess.CompletedProcess[str]:
        where = ["--config-dir", str(self.config), *(["--bus", self.bus, "--store", self.store] if bus else [])]
        return subprocess.run([SYNCBUS, *args, *where], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **self.env()})

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.stop()
        self.erp.dispose()
        self.finance.dispose()


@pytest.fixture
def flow(tmp_path: Path, bus_url: str, suffix: str, pg_url_factory: Callable[[], str],
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Flow]:
    f = Flow(tmp_path, bus_url, suffix, pg_url_factory)
    for name, value in f.env().items():
        monkeypatch.setenv(name, value)  # the nodes inherit them: secrets only from the environment
    yield f
    f.close()


def test_postings_become_signed_vouchers_without_loss_or_doubles(flow: Flow) -> None:
    first = {4711: [("1234.57", "S", "2026-11-20"), ("1234.57", "H", "2026-11-20")],
             4712: [("980.00", "S", "2026-11-20"), ("500.00", "H", "2026-11-20"), ("480.00", "H", "2026-11-20")]}
    post(flow.erp, first)  # before the first start: no stored watermark -> a full load
    node = flow.start()
    want = expected(first)
    wait_until(lambda: vouchers(flow.finance) == want, timeout=60, what="the first vouchers")
    with flow.finance.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM vouchers WHERE voucher_no = '1000-2026-0100004712-001'")).one()
    assert (row.company, row.fiscal_year, row.document, row.line) == ("1000", 2026, "0100004712", 1)
    assert (str(row.date), row.account, row.currency, row.text) == ("2026-11-20", "0000400000", "CNY", "")

    # more documents with the SAME changed_at as the first ones (pages of 3 end inside the group)
    with flow.erp.connect() as conn:
        stamp = conn.execute(sa.text("SELECT max(changed_at) FROM fi_postings")).scalar_one()
    more = {n: [("10.10", "S", "2026-11-21"), ("10.10", "H", "2026-11-21")] for n in (4713, 4714, 4715)}
    more[4716] = [("0.01", "S", "2026-11-21"), ("0.01", "H", "2026-11-21")]
    post(flow.erp, more, changed_at=stamp)
    want |= expected(more)
    wait_until(lambda: vouchers(flow.finance) == want, timeout=60, what="the vouchers of equal watermarks")
    wait_until(lambda: node.metric("syncbus_records_received_total", source="erp-postings") == len(want),
               what="the received count")
    assert flow.command("reconcile", FLOW, bus=False).returncode == 0

    # restart: the next node resumes from the stored watermark -- it reads only what is new
    assert node.stop() == 0
    later = {4717: [("99999.99", "S", "2026-11-22"), ("99999.99", "H", "2026-11-22")]}
    post(flow.erp, later)
    node = flow.start()
    want |= expected(later)
    wait_until(lambda: vouchers(flow.finance) == want, timeout=60, what="the vouchers after the restart")
    wait_until(lambda: node.metric("syncbus_records_received_total", source="erp-postings") == 2,
               what="only the new records")

    # a full load as a separate process beside the running node: everything again, upserted onto the same rows
    run = flow.command("sync", "--full", "erp-postings")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"erp-postings: {len(want)} records in ")
    wait_until(lambda: node.metric("syncbus_records_delivered_total", sink="finance-vouchers") == 2 + len(want),
               timeout=60, what="the full load delivered")
    assert vouchers(flow.finance) == want
    report = flow.command("reconcile", FLOW, "--json", bus=False)
    assert report.returncode == 0, report.stdout + report.stderr
    totals = json.loads(report.stdout)
    assert totals["ok"] and totals["source"]["rows"] == totals["target"]["rows"] == len(want)
    assert [d["day"] for d in totals["days"]] == ["2026-11-20", "2026-11-21", "2026-11-22"]
