"""A shadow never delivers and never dead-letters: errors on either side are differences, replays are passed over."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx

from tests.e2e.harness import Node, order, wait_until, write_config
from tests.sinks.target_server import TargetServer

LIVE = "orders-to-erp"
SHADOW = "orders-next"


def _report(node: Node) -> dict:
    return json.loads(node.cli("shadow", "report", SHADOW, "--json", "--records", "--examples", "10").stdout)


def test_errors_on_either_side_are_reported_not_dead_lettered(tmp_path: Path, target: TargetServer):
    cfg = write_config(tmp_path / "config", target.url_for("/erp"))
    (cfg / "mappings" / "orders-next.yaml").write_text(textwrap.dedent(f"""\
        mapping: {SHADOW}
        shadow_of: {LIVE}
        version: 3
        owner: e2e
        source: {{topic: e2e.orders}}
        when: record.status != "DRAFT"
        key: order_id
        target: {{sink: erp, format: json}}
        fields:
          VBELN: order_id
          SEQ: seq
          NETWR: {{from: amount, transform: "decimal(2)", required: true}}
        """), "utf-8")
    node = Node(cfg, f"embedded://{tmp_path}/bus.db", f"sqlite:///{tmp_path}/store.db").start()
    try:
        orders = [order(1), order(2, order_id=""), order(3, status="DRAFT"), order(4)]
        del orders[3]["amount"]
        with httpx.Client(timeout=10) as client:
            for o in orders:
                assert node.post(client, o).status_code == 202
        wait_until(lambda: _report(node)["compared"] == 4, timeout=30, interval=0.3, what="4 records compared")
        report = _report(node)
        paths = {r["key"]: r["paths"] for r in report["records"]}
        assert paths == {"SO-000001": [], "": ["@error"], "SO-000003": [], "SO-000004": ["@error"]}
        values = {e["key"]: e["values"]["@error"] for e in report["examples"]}
        assert values[""]["shadow"] is None and "VBELN" in values[""]["live"]       # live fails, shadow maps
        assert values["SO-000004"]["live"] is None and "NETWR" in values["SO-000004"]["shadow"]
        # only the live route dead-lettered and delivered; the shadow did neither
        letters = json.loads(node.cli("dlq", "list", "--json").stdout)
        assert [(d["route"], d["key"]) for d in letters] == [(LIVE, "")]
        wait_until(lambda: len(target.requests) == 2, timeout=30, what="2 deliveries")
        assert {r.json()["SEQ"] for r in target.requests} == {1, 4}
        # a replay is a second copy of a record the shadow compared already: passed over
        node.cli("dlq", "replay", letters[0]["id"], "--force")
        wait_until(lambda: len(json.loads(node.cli("dlq", "list", "--json").stdout)) == 2, timeout=30,
                   what="the replay failed again into a new letter")
        node.cli("shadow", "report", LIVE)                     # by the live route's name too
        assert _report(node)["compared"] == 4
        ledger = json.loads(node.cli("ledger", "--json", "--since", "1h", check=False).stdout)
        assert set(ledger["routes"]) == {LIVE} and ledger["no_fate"] == 0
        assert node.metric("syncbus_shadow_results_total", route=LIVE, outcome="different") == 2
    finally:
        assert node.stop() == 0, node.tail()
