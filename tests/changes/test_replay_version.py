"""Versions recorded by a running node, ``map --version`` and ``dlq replay --version`` against real processes.

Version 1 of the route does not require ``VBELN``; version 2 (the e2e
harness's route) does. An order with an empty ``order_id`` therefore fails
version 2's mapping and is dead-lettered; replayed with ``--version 1`` it is
mapped by version 1 from the history and delivered, stamped as version 1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from syncbus.state import Store
from tests.e2e.harness import SYNCBUS, Node, order, wait_until, write_config
from tests.sinks.target_server import TargetServer

ROUTE = "orders-to-erp"


def v1(text: str) -> str:
    return (text.replace("version: 2", "version: 1")
                .replace("VBELN: {from: order_id, required: true}", "VBELN: {from: order_id}\n  V: {const: one}"))


def _route_version(node: Node) -> str | None:
    for line in httpx.get(f"{node.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("syncbus_route_info{") and f'route="{ROUTE}"' in line:
            return line.split('version="', 1)[1].split('"', 1)[0]
    return None


def test_versions_map_and_replay_with_a_version_from_history(tmp_path: Path, target: TargetServer):
    cfg = write_config(tmp_path / "config", target.url_for("/erp"))
    mapping = cfg / "mappings" / "orders.yaml"
    v2_text = mapping.read_text("utf-8")
    mapping.write_text(v1(v2_text), "utf-8")
    # one worker: with two, each swaps to version 2 on its own and the order could meet a worker still on 1
    node = Node(cfg, f"embedded://{tmp_path}/bus.db", f"sqlite:///{tmp_path}/store.db",
                extra_args=["--workers", "1"]).start()
    try:
        mapping.write_text(v2_text, "utf-8")                   # hot reload: version 2 is recorded on apply
        wait_until(lambda: _route_version(node) == "2", timeout=30, interval=0.2, what="version 2 running")
        history = json.loads(node.cli("versions", ROUTE, "--json").stdout)["versions"]
        assert [v["version"] for v in history] == [1, 2]
        assert node.cli("versions", ROUTE, "--show", "1").stdout == v1(v2_text)

        with httpx.Client(timeout=10) as client:
            assert node.post(client, order(1, order_id="")).status_code == 202
        wait_until(lambda: json.loads(node.cli("dlq", "list", "--json").stdout), timeout=30, what="a dead letter")
        [letter] = json.loads(node.cli("dlq", "list", "--json").stdout)
        assert letter["reason"] == "mapping" and letter["mapping_version"] == 2

        # map: the current file fails, version 1 from the history maps it (by file or by route name)
        record = tmp_path / "order.json"
        record.write_text(letter["record"]["value"], "utf-8")
        assert node.cli("map", str(mapping), str(record), check=False).returncode == 1
        for what in (str(mapping), ROUTE):
            out = node.cli("map", what, str(record), "--version", "1").stdout
            assert json.loads(out) == {"VBELN": "", "V": "one", "SEQ": 1, "NETWR": "1.50"}

        unknown = node.cli("dlq", "replay", letter["id"], "--version", "9", check=False)
        assert unknown.returncode == 1 and "no version '9'" in unknown.stderr
        assert json.loads(node.cli("dlq", "show", letter["id"]).stdout)["status"] == "pending"

        node.cli("dlq", "replay", letter["id"], "--version", "1")
        wait_until(lambda: target.requests_to("/erp"), timeout=30, what="the replay delivered")
        [delivery] = target.requests_to("/erp")
        assert delivery.header("x-syncbus-mapping-version") == "1"
        assert delivery.json() == {"VBELN": "", "V": "one", "SEQ": 1, "NETWR": "1.50"}
        wait_until(lambda: json.loads(node.cli("dlq", "show", letter["id"]).stdout)["status"] == "delivered",
                   timeout=30, what="the letter resolved")
        ledger = json.loads(node.cli("ledger", "--json", "--since", "1h").stdout)
        assert ledger["delivered"] == 1 and ledger["ok"]
        trace = json.loads(node.cli("trace", letter["record_id"], "--json").stdout)
        assert [e["detail"].get("version") for e in trace["events"] if e["stage"] == "mapped"] == [1]
    finally:
        assert node.stop() == 0, node.tail()


def test_map_version_needs_a_recorded_version(tmp_path: Path):
    cfg = write_config(tmp_path / "config", "http://127.0.0.1:9/x")
    store = f"sqlite:///{tmp_path}/store.db"
    Store(store).close()                                       # a store, but no history in it
    done = subprocess.run([SYNCBUS, "map", str(cfg / "mappings" / "orders.yaml"), "--version", "1",
                           "--config-dir", str(cfg), "--store", store], input='{"order_id": "1"}',
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "route 'orders-to-erp' has no version '1' in its history (known: none recorded)" in done.stderr
