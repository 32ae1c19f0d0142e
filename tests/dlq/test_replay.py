"""Replay goes to the failed route only; other routes of the same topic never see the record twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncbus.config import Settings
from syncbus.dlq.replay import parse_since, replay, replay_matching
from syncbus.project import load_project
from syncbus.record import H_CONTENT_TYPE, H_ID, H_RECEIVED_AT
from syncbus.router import RouterOptions
from syncbus.runtime import Runtime
from tests.sinks.target_server import Reply, TargetServer


def _config(root: Path, url: str) -> Path:
    (root / "mappings").mkdir(parents=True)
    (root / "connectors").mkdir()
    for name in ("to-erp", "to-crm-archive"):
        (root / "mappings" / f"{name}.yaml").write_text(textwrap.dedent(f"""\
            mapping: {name}
            version: 1
            owner: ops
            source: {{topic: orders}}
            key: id
            target: {{sink: {name}-sink}}
            fields: {{ID: id, ROUTE: {{const: {name}}}}}
            """))
    (root / "connectors" / "c.yaml").write_text(textwrap.dedent(f"""\
        sinks:
          - {{name: to-erp-sink, type: http, url: "{url}/erp", retry: {{attempts: 1}}}}
          - {{name: to-crm-archive-sink, type: http, url: "{url}/archive", retry: {{attempts: 1}}}}
        """))
    return root


def _committed(rt: Runtime, group: str) -> int:
    path = rt.bus.url.removeprefix("embedded://")
    with sqlite3.connect(path) as conn:
        row = conn.execute('SELECT next_offset FROM offsets WHERE "group"=? AND topic=?', (group, "orders")).fetchone()
    return int(row[0]) if row else 0


async def _until(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


@pytest.fixture
async def running(tmp_path: Path):
    async with TargetServer() as target:
        cfg = _config(tmp_path / "cfg", target.url)
        rt = Runtime(Settings(cfg, f"embedded://{tmp_path}/bus.db"), load_project(cfg),
                     options=RouterOptions(lag_interval=0.2))
        await rt.start()
        try:
            yield rt, target
        finally:
            await rt.stop()


async def test_replay_reaches_only_the_failed_route(running):
    rt, target = running
    target.script(Reply(400, "no such customer"), path="/erp")
    await rt.bus.publish("orders", json.dumps({"id": "A"}).encode(), "A",
                         {H_ID: "rec-A", H_CONTENT_TYPE: "application/json", H_RECEIVED_AT: str(time.time())})
    await _until(lambda: rt.metrics.value("syncbus_dead_letters_total", {"route": "to-erp", "reason": "delivery"}))
    await _until(lambda: len(target.requests_to("/archive")) == 1)
    [dl] = rt.store.list(route="to-erp")
    [result] = await replay(rt.store, rt.bus, [dl.id], "tester", "customer created in ERP")
    assert result.ok
    delivered = {"route": "to-erp", "sink": "to-erp-sink"}
    await _until(lambda: rt.metrics.value("syncbus_records_delivered_total", delivered))
    # The other route has consumed past the replayed record (and so had every chance to take it):
    await _until(lambda: _committed(rt, "syncbus.to-crm-archive") > result.offset)
    assert [r.status for r in target.requests_to("/erp")] == [400, 200]
    assert len(target.requests_to("/archive")) == 1
    erp = target.requests_to("/erp")
    assert erp[0].header("idempotency-key") == erp[1].header("idempotency-key") == "to-erp:A:rec-A"
    await _until(lambda: rt.store.get(dl.id).status == "delivered")
    audit = rt.store.audit(dl.id)
    assert [(a.action, a.actor) for a in audit] == [("replay", "tester"), ("replayed", "system"),
                                                    ("resolve", "system")]
    assert audit[0].reason == "customer created in ERP"
    await rt.trace.flush()
    stages = [e.stage for e in rt.store.trace("rec-A") if e.route in (None, "to-erp")]
    assert stages.count("dead_lettered") == 1 and "replayed" in stages and stages[-1] == "delivered"
    await _until(lambda: rt.metrics.registry.get_sample_value(
        "syncbus_consumer_lag", {"route": "to-erp", "topic": "orders"}) == 0)


async def test_replay_by_route_and_since(running):
    rt, target = running
    target.set_default(Reply(503))
    for key in ("B", "C"):
        await rt.bus.publish("orders", json.dumps({"id": key}).encode(), key,
                             {H_ID: f"rec-{key}", H_CONTENT_TYPE: "application/json"})
    await _until(lambda: len(rt.store.list(status="pending")) == 4)
    # "since" must select: a window that ends before the failures finds nothing
    assert await replay_matching(rt.store, rt.bus, "to-crm-archive", datetime.now(UTC) + timedelta(seconds=5),
                                 "tester", "bulk") == []
    target.set_default(Reply(200))
    results = await replay_matching(rt.store, rt.bus, "to-crm-archive", parse_since("1h"), "tester", "bulk")
    assert [r.ok for r in results] == [True, True]
    await _until(lambda: len(target.requests_to("/archive")) == 4)
    await _until(lambda: {d.status for d in rt.store.list(route="to-crm-archive")} == {"delivered"})
    assert {d.route for d in rt.store.list(status="pending")} == {"to-erp"}
    assert parse_since("2026-11-20T08:00:00+08:00").isoformat() == "2026-11-20T08:00:00+08:00"
