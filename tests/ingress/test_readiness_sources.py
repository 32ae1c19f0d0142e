"""`/readyz` reports a poll source whose system is down, without taking the node out of rotation."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import httpx

from syncbus.config import Settings
from syncbus.ingress.app import create_app
from syncbus.project import load_project
from syncbus.runtime import Runtime


async def test_a_down_database_shows_in_readyz_details(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "connectors").mkdir()
    (tmp_path / "mappings" / "m.yaml").write_text(textwrap.dedent("""\
        mapping: postings
        version: 1
        owner: finance
        source: {topic: erp.postings}
        target: {sink: out, format: json}
        fields: {ID: id}
        """))
    missing = tmp_path / "no-such-folder" / "erp.db"   # SQLite cannot open it: the database is "down"
    (tmp_path / "connectors" / "c.yaml").write_text(textwrap.dedent(f"""\
        sources:
          - {{name: erp, type: sql_poll, dsn_env: ERP_DSN, query: "SELECT * FROM postings", watermark: changed_at,
             key: id, interval: 1s, topic: erp.postings, retry: {{initial: 0.2s, max: 1s}}}}
        sinks:
          - {{name: out, type: file, path: "{tmp_path / 'out'}", format: jsonl}}
        """))
    env = {"ERP_DSN": f"sqlite:///{missing}"}
    rt = Runtime(Settings(tmp_path, f"embedded://{tmp_path}/bus.db"), load_project(tmp_path, env=env), env=env)
    await rt.start()
    try:
        app = create_app(rt, manage_lifecycle=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            deadline = time.monotonic() + 20
            while True:
                ready = await client.get("/readyz")
                erp = ready.json().get("details", {}).get("sources", {}).get("erp", {})
                if erp.get("up") is False:
                    break
                assert time.monotonic() < deadline, ready.json()
                await asyncio.sleep(0.1)
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            assert erp["last_error"] and erp["failures"] >= 1
            assert rt.metrics.value("syncbus_source_up", {"source": "erp"}) == 0
    finally:
        await rt.stop()
