"""The state store (PostgreSQL) goes away under a running node, and comes back.

A real outage: the node's database stops accepting connections and its
sessions are terminated, as when PostgreSQL restarts or fails over. What
needs the store answers 503 ``store_unavailable`` with ``Retry-After`` --
never a 500, never the driver's text -- and what was accepted meanwhile is
delivered once the store is back, with the ledger clean.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.harness import ADMIN_KEY, Node, order, wait_until, write_config
from tests.sinks.target_server import TargetServer

pytestmark = pytest.mark.postgres


def _set_outage(session: Any, database: str, down: bool) -> None:
    from psycopg import sql

    with session.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("false" if down else "true")))
        if down:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


def _console_login(node: Node) -> httpx.Client:
    """A client logged into the console with the admin key (its session is in the store)."""
    client = httpx.Client(base_url=node.url, timeout=10)
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    r = client.post("/console/login", data={"csrf": csrf.group(1), "key": ADMIN_KEY, "next": ""})
    assert r.status_code == 303 and client.get("/console/routes").status_code == 200, r.text
    return client


def test_store_outage_is_503_and_nothing_accepted_is_lost(tmp_path: Path, pg_url: str, _pg_session: Any) -> None:
    database = make_url(pg_url).database
    assert database
    with TargetServer() as target:
        config = write_config(tmp_path / "config", target.url_for("/erp/orders"), suffix="-store-outage")
        node = Node(config, f"embedded://{tmp_path}/bus.db", pg_url, extra_args=["--workers", "1"]).start()
        admin = {"X-API-Key": ADMIN_KEY}
        try:
            with httpx.Client(timeout=10) as client:
                for i in range(10):
                    assert node.post(client, order(i)).status_code == 202
                wait_until(lambda: len(target.requests) >= 10, what="deliveries before the outage")

                console = _console_login(node)
                _set_outage(_pg_session, database, down=True)
                try:
                    # a person in the console gets a page saying so (sessions live in the store)
                    page = console.get("/console/routes")
                    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
                    assert "The state store is unavailable; try again shortly." in page.text
                    assert page.headers["retry-after"] == "5"
                    for word in ("psycopg", "Traceback", "OperationalError", database):
                        assert word not in page.text
                    refused = client.get(f"{node.url}/dlq", headers=admin)
                    assert refused.status_code == 503, refused.text
                    assert refused.json()["error"] == "store_unavailable"
                    assert refused.headers["retry-after"] == "5"
                    for word in ("psycopg", "Traceback", "OperationalError", "password", database):
                        assert word not in refused.text
                    # On the embedded bus an idempotency claim is written with the record, in the bus file:
                    # an idempotent post does not need the store.
                    keyed = node.post(client, order(100), **{"Idempotency-Key": "k-100"})
                    assert keyed.status_code == 202, keyed.text
                    # A plain post only needs the bus: accepted, and must not be lost.
                    accepted = [node.post(client, order(i)) for i in range(10, 20)]
                    assert [r.status_code for r in accepted] == [202] * 10
                    assert client.get(f"{node.url}/healthz").status_code == 200
                finally:
                    _set_outage(_pg_session, database, down=False)
                    console.close()

                wait_until(lambda: client.get(f"{node.url}/dlq", headers=admin).status_code == 200, timeout=30,
                           what="the dead-letter API back with the store")
                repeat = node.post(client, order(100), **{"Idempotency-Key": "k-100"})
                assert repeat.status_code == 202 and repeat.json()["id"] == keyed.json()["id"], repeat.text

            wait_until(lambda: {r.json()["VBELN"] for r in target.requests if r.status < 300}
                       >= {f"SO-{i:06d}" for i in [*range(20), 100]}, timeout=60,
                       what="every accepted order delivered after the outage")

            def ledger() -> dict[str, Any]:
                proc = node.cli("ledger", "--json", "--since", "1h", check=False)
                return dict(json.loads(proc.stdout)) if proc.stdout.strip() else {}

            wait_until(lambda: ledger().get("no_fate") == 0 and ledger().get("in_flight") == 0
                       and ledger().get("delivered") == 21, timeout=60, what="a clean ledger after the outage")
            delivered = {r.json()["VBELN"] for r in target.requests if r.status < 300}
            assert delivered == {f"SO-{i:06d}" for i in [*range(20), 100]}
        finally:
            code = node.stop()
        assert code == 0, node.tail()
