"""A route with `dedupe:` drops a repeated record (same key, same content) and counts it; updates go through."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

from syncbus.config import Settings
from syncbus.project import load_project
from syncbus.record import H_CONTENT_TYPE, H_ID
from syncbus.router import RouterOptions
from syncbus.runtime import Runtime
from tests.sinks.target_server import TargetServer


async def _until(pred, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_duplicates_within_the_window_are_dropped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "connectors").mkdir()
    (tmp_path / "mappings" / "m.yaml").write_text(textwrap.dedent("""\
        mapping: orders
        version: 1
        owner: ops
        source: {topic: orders}
        key: id
        dedupe: {window: 10m}
        target: {sink: erp}
        fields: {ID: id, QTY: qty}
        """))
    async with TargetServer() as target:
        (tmp_path / "connectors" / "c.yaml").write_text(
            f"sinks:\n  - {{name: erp, type: http, url: \"{target.url}/erp\", retry: {{attempts: 1}}}}\n")
        rt = Runtime(Settings(tmp_path, f"embedded://{tmp_path}/bus.db"), load_project(tmp_path),
                     options=RouterOptions(lag_interval=0.2))
        await rt.start()
        try:
            for rid, body in (("r1", {"id": "A", "qty": 1}), ("r2", {"id": "A", "qty": 1}),   # a re-send
                              ("r3", {"id": "A", "qty": 2}), ("r4", {"id": "B", "qty": 1})):  # an update; another
                await rt.bus.publish("orders", json.dumps(body).encode(), body["id"],
                                     {H_ID: rid, H_CONTENT_TYPE: "application/json"})
            await _until(lambda: rt.metrics.value("syncbus_duplicates_dropped_total", {"route": "orders"}) == 1)
            await _until(lambda: len(target.requests_to("/erp")) == 3)
            assert [r.json() for r in target.requests_to("/erp")] == [
                {"ID": "A", "QTY": 1}, {"ID": "A", "QTY": 2}, {"ID": "B", "QTY": 1}]
            await _until(lambda: rt.store.outcomes_for(["r2"]) == {("orders", "r2"): "skipped"})
        finally:
            await rt.stop()
