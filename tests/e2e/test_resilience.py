"""Crashes, scale-out and broker restarts: nothing is lost (issue 3)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from syncbus.bus import open_bus
from syncbus.record import H_CONTENT_TYPE, H_ID, H_RECEIVED_AT
from tests.e2e.harness import Node, order, wait_until
from tests.sinks.target_server import Reply, TargetServer
from tests.support.kafka import describe_group

pytestmark = pytest.mark.slow


def publish_direct(bus_url: str, topic: str, count: int, keys: int | None = None) -> None:
    """Put records on the bus as the ingress would, without HTTP (fast set-up for big runs)."""

    async def go() -> None:
        bus = open_bus(bus_url)
        await bus.start()
        try:
            import orjson

            batch = []
            for i in range(count):
                o = order(i if keys is None else i % keys, seq=i)
                headers = {H_ID: f"rec-{i:06d}", H_CONTENT_TYPE: "application/json",
                           H_RECEIVED_AT: f"{time.time():.6f}"}
                batch.append(bus.publish(topic, orjson.dumps(o), o["order_id"], headers))
                if len(batch) >= 500:
                    await asyncio.gather(*batch)
                    batch = []
            await asyncio.gather(*batch)
        finally:
            await bus.stop()

    asyncio.run(go())


def record_ids(target: TargetServer) -> list[str]:
    return [(r.header("idempotency-key") or "").rsplit(":", 1)[-1] for r in target.requests if r.status < 300]


def test_kill9_mid_stream_then_restart_delivers_everything(make_node, target: TargetServer, bus_url: str,
                                                            suffix: str, capsys):
    n = 10_000
    publish_direct(bus_url, f"e2e.orders{suffix}", n)
    node: Node = make_node()
    wait_until(lambda: len(target.requests) >= n // 3, timeout=120, what="a third delivered")
    node.kill9()
    before = len(target.requests)
    node.start()
    wait_until(lambda: len(set(record_ids(target))) >= n, timeout=180, what="all records delivered")
    node.stop()
    ids = record_ids(target)
    assert set(ids) == {f"rec-{i:06d}" for i in range(n)}
    duplicates = len(ids) - len(set(ids))
    with capsys.disabled():
        print(f"\n[kill -9 on {bus_url.split(':')[0]}] {n} records, killed after {before} deliveries, "
              f"{duplicates} delivered twice ({duplicates / n:.2%})")
    assert duplicates <= 2_000  # bounded by what was in flight or uncommitted at the kill


@pytest.mark.kafka
def test_two_runners_share_the_partitions(tmp_path, kafka_bootstrap: str, target: TargetServer, suffix: str):
    from tests.e2e.harness import write_config

    cfg = write_config(tmp_path / "config", target.url_for("/erp/orders"), suffix=suffix)
    bus = f"kafka://{kafka_bootstrap}"
    one = ["--workers", "1"]  # a runner is one group member
    a = Node(cfg, bus, f"sqlite:///{tmp_path}/store-a.db", extra_args=one).start()
    b = Node(cfg, bus, f"sqlite:///{tmp_path}/store-b.db", extra_args=one).start()
    try:
        # The stream starts only once the group has settled with both members owning partitions:
        # a rebalance during the stream would (rightly) redeliver in-flight records.
        group, topic = f"syncbus.orders-to-erp{suffix}", f"e2e.orders{suffix}"

        def settled() -> bool:
            view = describe_group(kafka_bootstrap, group)
            return (view is not None and view.state == "Stable" and len(view.members) == 2
                    and all(view.members.values()) and view.assigned == {(topic, p) for p in range(4)})

        wait_until(settled, timeout=60, interval=0.5, what="both runners own partitions")
        n = 2_000
        publish_direct(bus, f"e2e.orders{suffix}", n, keys=400)
        wait_until(lambda: len(set(record_ids(target))) >= n, timeout=120, what="all delivered")
        route = f"orders-to-erp{suffix}"
        wait_until(lambda: a.metric("syncbus_records_delivered_total", route=route)
                   + b.metric("syncbus_records_delivered_total", route=route) >= n, what="metrics")
        got_a = a.metric("syncbus_records_delivered_total", route=route)
        got_b = b.metric("syncbus_records_delivered_total", route=route)
        assert got_a > 0 and got_b > 0, (got_a, got_b)
        assert got_a + got_b == n
        ids = record_ids(target)
        assert len(ids) == n == len(set(ids))  # together: each record exactly once
    finally:
        a.stop()
        b.stop()


@pytest.mark.kafka
@pytest.mark.parametrize("bus_kind", [pytest.param("kafka", marks=pytest.mark.kafka)], indirect=True)
def test_broker_restart_mid_stream_loses_nothing(make_node, target: TargetServer, kafka_broker, suffix: str):
    node: Node = make_node()
    target.set_default(Reply(200, {"ok": True}))
    accepted: list[str] = []
    failures: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            _produce()
        except BaseException as exc:  # must fail the test, not end as a thread warning
            errors.append(exc)

    def _produce() -> None:
        with httpx.Client(timeout=90) as client:
            i = 0
            while not stop.is_set() and i < 3_000:
                for _attempt in range(100):  # a client retries what was not accepted
                    try:
                        r = node.post(client, order(i % 300, seq=i))
                    except httpx.HTTPError as exc:
                        failures.append(str(exc))
                        time.sleep(0.2)
                        continue
                    if r.status_code == 202:
                        accepted.append(r.json()["id"])
                        break
                    failures.append(f"{r.status_code} {r.text[:100]}")
                    time.sleep(0.2)
                else:
                    raise AssertionError("record never accepted")
                i += 1
                time.sleep(0.002)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(accepted) >= 500, timeout=60, what="stream running")
        kafka_broker.restart()
        restarted_at = len(accepted)
        wait_until(lambda: len(accepted) >= 2_000 or not t.is_alive(), timeout=120, what="stream after restart")
    finally:
        stop.set()
        t.join(120)
    assert not t.is_alive(), "the client thread hangs"
    assert not errors, errors
    assert len(accepted) >= 2_000 and len(accepted) > restarted_at, "the stream did not resume after the restart"
    wait_until(lambda: set(accepted) <= set(record_ids(target)), timeout=120, what="every accepted record delivered")
    print(f"\n[broker restart] {len(accepted)} accepted, {len(failures)} refused/retried during the restart, "
          f"{len(record_ids(target)) - len(set(record_ids(target)))} duplicates")


def test_sigterm_finishes_in_flight_and_commits(make_node, target: TargetServer, bus_url: str, suffix: str):
    n = 3_000
    publish_direct(bus_url, f"e2e.orders{suffix}", n)
    target.set_default(Reply(200, {"ok": True}, delay=0.01))  # keep deliveries in flight at the stop
    node: Node = make_node()
    wait_until(lambda: len(target.requests) >= 500, timeout=60, what="500 delivered")
    started = time.monotonic()
    assert node.stop(timeout=30) == 0  # graceful: exit code 0
    stopped_in = time.monotonic() - started
    target.set_default(Reply(200, {"ok": True}))
    node.start()
    wait_until(lambda: len(set(record_ids(target))) >= n, timeout=120, what="all delivered after restart")
    ids = record_ids(target)
    assert len(ids) == len(set(ids)) == n, f"{len(ids) - len(set(ids))} duplicates after a graceful stop"
    assert stopped_in < 15
