"""Issue 10's "done when": a shadow of the reference CRM -> ERP flow, 1,000 orders, promote and roll back live.

One real `syncbus run` (embedded bus, HTTP ingress, HTTP target), driven only
through HTTP and the command line:

1. The shadow changes one field rule (sales organisation of region north:
   3000 -> 3500). After 1,000 orders the shadow report says exactly
   ``IDOC.E1EDK01.VKORG`` differs, on exactly the north orders, and "same"
   on every other; the shadow delivered nothing.
2. While orders keep streaming in, ``syncbus promote`` makes the shadow live
   and ``syncbus rollback --to 4`` restores version 4; the hot reload swaps
   both under the running process. Every accepted record is delivered
   exactly once (the ledger, and the target's idempotency keys), and each
   delivery carries the VKORG of the version stamped on it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.changes.flow import LIVE, SHADOW, crm_order, shadow_text
from tests.e2e.harness import Node, wait_until
from tests.sinks.target_server import RecordedRequest, TargetServer

pytestmark = pytest.mark.slow

N = 1000
ERP = "/erp/orders"


def _report(node: Node) -> dict:
    return json.loads(node.cli("shadow", "report", LIVE, "--json", "--records", "--examples", "3").stdout)


def _ledger(node: Node) -> dict:
    return json.loads(node.cli("ledger", "--json", "--since", "1h", check=False).stdout)


def _settled(node: Node, accepted: int) -> bool:
    report = _ledger(node)
    return report["accepted"] == accepted and report["delivered"] == accepted and report["in_flight"] == 0


def _order_id(request: RecordedRequest) -> str:
    """The record key inside the idempotency key ``<route>:<key>:<record id>``."""
    return (request.header("idempotency-key") or "").split(":")[1]


def _vkorg(body: str) -> str:
    return body.split("<VKORG>", 1)[1].split("</VKORG>", 1)[0]


def _route_versions(node: Node) -> set[str]:
    """The versions the node runs: more than one while its workers are still swapping."""
    text = httpx.get(f"{node.url}/metrics", timeout=5).text
    return {line.split('version="', 1)[1].split('"', 1)[0] for line in text.splitlines()
            if line.startswith("syncbus_route_info{") and f'route="{LIVE}"' in line}


def test_shadow_report_then_promote_and_rollback_lose_and_duplicate_nothing(
        crm_node, target: TargetServer, tmp_path: Path):
    node: Node = crm_node(start=False)
    (node.config_dir / "mappings" / f"{SHADOW}.yaml").write_text(shadow_text(), "utf-8")
    node.start()
    region_of: dict[str, str] = {}
    with httpx.Client(timeout=10) as client:
        for i in range(N):
            order = crm_order(i)
            r = node.post(client, order)
            assert r.status_code == 202, r.text
            region_of[order["order_id"]] = order["region"]
    wait_until(lambda: _settled(node, N), timeout=120, interval=0.5, what="1,000 orders delivered")
    wait_until(lambda: _report(node)["compared"] == N, timeout=60, interval=0.5, what="1,000 records compared")

    # -- 1. the shadow report: exactly the changed field, on exactly the records it affects
    report = _report(node)
    north = sum(1 for r in region_of.values() if r == "north")
    assert north == N // 4
    assert (report["shadow"], report["shadow_version"], report["live_version"]) == (SHADOW, 5, 4)
    assert (report["same"], report["different"]) == (N - north, north)
    assert report["agreement"] == pytest.approx((N - north) / N)
    assert report["fields"] == [{"field": "IDOC.E1EDK01.VKORG", "records": north, "share": north / N}]
    records = report["records"]
    assert len(records) == N
    for rec in records:
        expected = ["IDOC.E1EDK01.VKORG"] if region_of[rec["key"]] == "north" else []
        assert rec["paths"] == expected, rec
        assert rec["outcome"] == ("different" if expected else "same")
    example = report["examples"][0]
    assert example["values"] == {"IDOC.E1EDK01.VKORG": {"live": "3000", "shadow": "3500"}}
    assert node.metric("syncbus_shadow_results_total", route=LIVE, outcome="different") == north
    assert node.metric("syncbus_shadow_results_total", route=LIVE, outcome="same") == N - north
    # the shadow delivered nothing: one delivery per order, all of the live version
    first = target.requests_to(ERP)
    assert len(first) == N
    assert {r.header("x-syncbus-mapping-version") for r in first} == {"4"}
    assert {_vkorg(r.text) for r in first if region_of[_order_id(r)] == "north"} == {"3000"}
    markdown = node.cli("shadow", "report", LIVE).stdout
    assert "agreement **75.0 %**" in markdown and "`IDOC.E1EDK01.VKORG` | 250 | 25.0 %" in markdown

    # -- 2. promote and roll back while orders keep streaming in
    stop = threading.Event()
    posted: list[str] = []
    errors: list[str] = []

    def stream() -> None:
        with httpx.Client(timeout=10) as client:
            i = N
            while not stop.is_set():
                order = crm_order(i)
                r = node.post(client, order)
                if r.status_code == 202:
                    posted.append(order["order_id"])
                    region_of[order["order_id"]] = order["region"]
                else:
                    errors.append(f"{r.status_code} {r.text}")
                i += 1
                time.sleep(0.01)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_until(lambda: len(posted) >= 100, timeout=30, what="streaming started")
        promoted = node.cli("promote", LIVE, "--reason", "north moves to 3500", "--json")
        assert json.loads(promoted.stdout)["to_version"] == 5
        assert not (node.config_dir / "mappings" / f"{SHADOW}.yaml").exists()
        wait_until(lambda: _route_versions(node) == {"5"}, timeout=30, interval=0.2, what="version 5 live")
        at_promote = len(posted)
        wait_until(lambda: len(posted) >= at_promote + 100, timeout=30, what="orders on version 5")
        before_rollback = len(posted)
        node.cli("rollback", LIVE, "--to", "4", "--reason", "finance not ready", "--approved-by", "liu")
        wait_until(lambda: _route_versions(node) == {"4"}, timeout=30, interval=0.2, what="version 4 live again")
        at_rollback = len(posted)
        wait_until(lambda: len(posted) >= at_rollback + 100, timeout=30, what="orders on version 4 again")
    finally:
        stop.set()
        streamer.join(30)
    assert not errors, errors[:5]
    total = N + len(posted)
    wait_until(lambda: _settled(node, total), timeout=120, interval=0.5, what=f"{total} orders delivered")

    # nothing lost, nothing twice: the ledger and the target's idempotency keys agree
    ledger = _ledger(node)
    assert ledger["ok"] and ledger["no_fate"] == 0 and ledger["pending"] == 0 and ledger["duplicates_on_bus"] == 0
    assert ledger["routes"] == {LIVE: {"delivered": total, "skipped": 0, "pending": 0, "discarded": 0,
                                       "in_flight": 0, "no_fate": 0}}
    deliveries = [r for r in target.requests_to(ERP) if r.status < 300]
    keys = Counter(r.header("idempotency-key") or "" for r in deliveries)
    assert len(keys) == total and max(keys.values()) == 1, keys.most_common(3)
    assert {k.split(":")[1] for k in keys} == set(region_of)
    # each delivery is what its stamped version makes of the order; the version follows the swaps. A record
    # is mapped when the route takes it off the bus, so one posted just before a swap may still be mapped by
    # the old version (and concurrent deliveries arrive out of order); what is certain is checked per order:
    version_of: dict[str, str] = {}
    for d in deliveries:
        version = d.header("x-syncbus-mapping-version") or ""
        if region_of[_order_id(d)] == "north":
            assert _vkorg(d.text) == {"4": "3000", "5": "3500"}[version]
        version_of[_order_id(d)] = version
    # posted once version 5 was live and before the rollback was asked for: version 5 unless taken off the bus
    # after the rollback; posted once version 4 was live again: version 4, every one (the one order that may
    # have been in flight while the swap was observed is left out)
    promoted_window = Counter(version_of[o] for o in posted[at_promote + 1:before_rollback])
    assert promoted_window["5"] > 0, promoted_window
    after_rollback = Counter(version_of[o] for o in posted[at_rollback + 1:])
    assert set(after_rollback) == {"4"}, after_rollback

    # the history and the audit say who did what
    history = json.loads(node.cli("versions", LIVE, "--json").stdout)
    assert [v["version"] for v in history["versions"]] == [4, 5]
    assert history["versions"][1]["by"] == "wang" and history["versions"][1]["approved_by"] == "liu (sales-ops)"
    changes = [(c["action"], c["from_version"], c["to_version"], c["actor"], c["approved_by"])
               for c in history["changes"]]
    assert changes == [("promote", 4, 5, "e2e-test", "liu (sales-ops)"), ("rollback", 5, 4, "e2e-test", "liu")]
    diff = node.cli("diff", LIVE, "4", "5").stdout
    assert '~ IDOC.E1EDK01.VKORG map: {east: 1000, south: 2000, north: 3000} -> ' \
           '{east: 1000, south: 2000, north: 3500}' in diff
    assert "fields: 0 added, 0 removed, 1 changed" in diff
