"""Issue 3's end-to-end cases, on the embedded bus and on a real Kafka broker."""

from __future__ import annotations

import json

import httpx

from tests.e2e.harness import ADMIN_KEY, Node, order, wait_until
from tests.sinks.target_server import Reply, TargetServer


def settled(node: Node) -> int:
    """Records whose fate is stored and whose offsets the route committed (the ledger's delivered + skipped)."""
    proc = node.cli("ledger", "--json", "--since", "1h", check=False)
    report = json.loads(proc.stdout)
    return int(report["delivered"]) + int(report["skipped"]) if report["in_flight"] == 0 else -1


def delivered_keys(target: TargetServer) -> list[str]:
    return [r.header("idempotency-key") or "" for r in target.requests if r.status < 300]


def test_n_orders_each_delivered_once(make_node, target: TargetServer, suffix: str):
    node = make_node()
    n = 200
    with httpx.Client(timeout=10) as client:
        ids = []
        for i in range(n):
            r = node.post(client, order(i))
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        skipped = node.post(client, order(999_999, status="DRAFT"))
        assert skipped.status_code == 202
    wait_until(lambda: len(target.requests) >= n, what=f"{n} deliveries")
    # Count only once every record's fate is stored and committed: a late duplicate would be here by then.
    wait_until(lambda: settled(node) == n + 1, timeout=30, what="every record settled in the ledger")
    keys = delivered_keys(target)
    assert len(keys) == n == len(set(keys))
    # the idempotency key is <route>:<record key>:<record id>
    assert {k.rsplit(":", 1)[1] for k in keys} == set(ids)
    first = target.requests[0]
    body = first.json()
    assert set(body) == {"VBELN", "SEQ", "NETWR"}
    assert first.header("x-syncbus-route") == f"orders-to-erp{suffix}"
    assert first.header("x-syncbus-mapping-version") == "2"
    assert first.header("traceparent", "").startswith("00-")
    route = f"orders-to-erp{suffix}"
    wait_until(lambda: node.metric("syncbus_records_delivered_total", route=route) == n, what="metrics")
    assert node.metric("syncbus_records_received_total", source="crm") == n + 1
    wait_until(lambda: node.metric("syncbus_records_skipped_total", route=route) == 1, what="skip metric")
    assert node.metric("syncbus_delivery_attempts_total", route=route, outcome="ok") == n
    assert node.metric("syncbus_end_to_end_seconds_count", route=route) == n
    assert node.metric("syncbus_route_info", route=route, version="2", owner="e2e") == 1


def test_same_key_is_delivered_in_order(make_node, target: TargetServer):
    node = make_node()
    target.set_default(Reply(200, {"ok": True}, delay=0.005))
    with httpx.Client(timeout=10) as client:
        for i in range(60):
            assert node.post(client, order(i % 3, seq=i)).status_code == 202
    wait_until(lambda: len(target.requests) >= 60, what="60 deliveries")
    wait_until(lambda: settled(node) == 60, timeout=30, what="every record settled in the ledger")
    per_key: dict[str, list[int]] = {}
    for r in sorted(target.requests, key=lambda r: r.time):
        body = r.json()
        per_key.setdefault(body["VBELN"], []).append(body["SEQ"])
    # exactly the posted sequence per key: no reordering, no duplicate, no gap
    assert per_key == {f"SO-{k:06d}": list(range(k, 60, 3)) for k in range(3)}


def test_retry_503_twice_then_ok(make_node, target: TargetServer, suffix: str):
    node = make_node()
    target.script(503, 503, 200)
    with httpx.Client(timeout=10) as client:
        assert node.post(client, order(1)).status_code == 202
    wait_until(lambda: len(target.requests) >= 3, what="3 attempts")
    route = f"orders-to-erp{suffix}"
    wait_until(lambda: node.metric("syncbus_records_delivered_total", route=route) == 1, what="delivered")
    assert [r.status for r in target.requests] == [503, 503, 200]
    assert len({r.header("idempotency-key") for r in target.requests}) == 1  # same key on every try
    assert node.metric("syncbus_delivery_attempts_total", route=route, outcome="retryable") == 2
    assert node.metric("syncbus_delivery_attempts_total", route=route, outcome="ok") == 1
    dlq = json.loads(node.cli("dlq", "list", "--json").stdout)
    assert dlq == []


def test_400_is_dead_lettered_after_one_attempt(make_node, target: TargetServer, suffix: str):
    node = make_node()
    target.script(Reply(400, {"error": "KUNNR unknown"}))
    with httpx.Client(timeout=10) as client:
        rid = node.post(client, order(7)).json()["id"]
    route = f"orders-to-erp{suffix}"
    wait_until(lambda: node.metric("syncbus_dead_letters_total", route=route, reason="delivery") == 1,
               what="dead letter")
    assert len(target.requests) == 1
    [dl] = json.loads(node.cli("dlq", "list", "--json").stdout)
    assert dl["route"] == route and dl["reason"] == "delivery" and dl["attempts"] == 1
    assert dl["status"] == "pending" and "400" in dl["error"] and "KUNNR unknown" in dl["error"]
    assert dl["record"]["id"] == rid and json.loads(dl["record"]["value"])["order_id"] == "SO-000007"
    assert dl["topic"] == f"e2e.orders{suffix}" and dl["offset"] >= 0
    assert node.metric("syncbus_delivery_attempts_total", route=route, outcome="permanent") == 1
    wait_until(lambda: node.metric("syncbus_dead_letters_pending", route=route) == 1, timeout=15,
               what="pending gauge")
    trace = json.loads(node.cli("trace", rid, "--json").stdout)
    assert [e["stage"] for e in trace["events"]][-1] == "dead_lettered"
    assert trace["outcome"] == {route: "dead_lettered"}


def test_mapping_error_is_dead_lettered_and_fixed_by_edit(make_node, target: TargetServer, suffix: str):
    node = make_node()
    with httpx.Client(timeout=10) as client:
        assert node.post(client, order(5, amount="five")).status_code == 202
    route = f"orders-to-erp{suffix}"
    wait_until(lambda: node.metric("syncbus_dead_letters_total", route=route, reason="mapping") == 1,
               what="mapping dead letter")
    [dl] = json.loads(node.cli("dlq", "list", "--json").stdout)
    assert "NETWR" in dl["error"] and dl["reason"] == "mapping"
    fixed = json.dumps(order(5, amount=5)).encode()
    path = node.config_dir / "fixed.json"
    path.write_bytes(fixed)
    node.cli("dlq", "edit", dl["id"], "--file", str(path), "--reason", "amount typo")
    node.cli("dlq", "replay", dl["id"], "--reason", "fixed amount")
    wait_until(lambda: len(target.requests) == 1, what="replayed delivery")
    assert target.requests[0].json()["NETWR"] == "5.00"
    wait_until(lambda: json.loads(node.cli("dlq", "show", dl["id"]).stdout)["status"] == "delivered",
               what="the letter resolved once its replay got through")
    shown = json.loads(node.cli("dlq", "show", dl["id"]).stdout)
    assert [a["action"] for a in shown["audit"]] == ["edit", "replay", "replayed", "resolve"]
    assert shown["audit"][1]["actor"] == "e2e-test" and shown["audit"][1]["reason"] == "fixed amount"


def test_target_down_dead_letter_then_replay(make_node, target: TargetServer, suffix: str, tmp_path):
    import socket

    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))  # a port nobody listens on (yet)
    port = hold.getsockname()[1]
    node = make_node(target_url=f"http://127.0.0.1:{port}/erp/orders", attempts=3)
    route = f"orders-to-erp{suffix}"
    with httpx.Client(timeout=10) as client:
        rid = node.post(client, order(42)).json()["id"]
    wait_until(lambda: node.metric("syncbus_dead_letters_total", route=route, reason="delivery") == 1,
               what="dead letter")
    assert node.metric("syncbus_delivery_attempts_total", route=route, outcome="retryable") == 3
    [dl] = json.loads(node.cli("dlq", "list", "--json").stdout)
    assert dl["attempts"] == 3 and dl["record_id"] == rid
    hold.close()
    with TargetServer(port=port) as revived:
        out = node.cli("dlq", "replay", dl["id"])
        assert dl["id"] in out.stdout
        revived.wait_for(1, timeout=15)
        wait_until(lambda: node.metric("syncbus_records_delivered_total", route=route) == 1, what="delivered")
        assert len(revived.requests) == 1
        assert revived.requests[0].header("idempotency-key").endswith(rid)
    again = node.cli("dlq", "replay", dl["id"], check=False)
    assert again.returncode == 1 and "not pending" in again.stdout + again.stderr
    # the API sees the same store
    r = httpx.get(f"{node.url}/dlq/{dl['id']}", headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 200
    wait_until(lambda: httpx.get(f"{node.url}/dlq/{dl['id']}", headers={"X-API-Key": ADMIN_KEY}).json()["status"]
               == "delivered", what="the letter resolved by the replay's delivery")


def test_undecodable_record_on_the_bus_is_a_schema_dead_letter(make_node, target: TargetServer, bus_url: str,
                                                               suffix: str):
    import asyncio

    from syncbus.bus import open_bus

    async def put() -> None:
        bus = open_bus(bus_url)
        await bus.start()
        try:
            await bus.publish(f"e2e.orders{suffix}", b'{"order_id": "SO-1", ', "SO-1",
                              {"syncbus-id": "garbage-1", "content-type": "application/json"})
        finally:
            await bus.stop()

    node = make_node()
    asyncio.run(put())
    route = f"orders-to-erp{suffix}"
    wait_until(lambda: node.metric("syncbus_dead_letters_total", route=route, reason="schema") == 1,
               what="schema dead letter")
    [dl] = json.loads(node.cli("dlq", "list", "--json").stdout)
    assert dl["reason"] == "schema" and "invalid json" in dl["error"] and dl["record_id"] == "garbage-1"
    assert target.requests == []
    discard = node.cli("dlq", "discard", dl["id"], "--reason", "test garbage")
    assert dl["id"] in discard.stdout
    assert json.loads(node.cli("dlq", "list", "--json", "--status", "discarded").stdout)[0]["status"] == "discarded"
