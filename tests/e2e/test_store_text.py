"""What a record or a request can put into the store's text, on a real node with a PostgreSQL store.

PostgreSQL refuses NUL in text columns, and a NUL arrives easily: in a JSON
key (``"SO-\\u0000-1"``), in a target's error body. Such a dead letter could
not be stored, and the route retried storing it forever -- no later record
was delivered. Filters carrying a NUL, and times outside the range of dates,
were a 500 there.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import ADMIN_KEY, Node, order, wait_until, write_config
from tests.sinks.target_server import TargetServer

pytestmark = pytest.mark.postgres


def test_a_nul_in_a_key_is_stored_and_the_route_goes_on(tmp_path: Path, pg_url: str) -> None:
    with TargetServer() as target:
        config = write_config(tmp_path / "config", target.url_for("/erp/orders"), suffix="-text")
        node = Node(config, f"embedded://{tmp_path}/bus.db", pg_url, extra_args=["--workers", "1"]).start()
        admin = {"X-API-Key": ADMIN_KEY}
        try:
            with httpx.Client(base_url=node.url, timeout=10) as client:
                bad = node.post(client, order(1, order_id="SO-\u0000-1", amount="n/a \u0000"))
                assert bad.status_code == 202, bad.text
                good = node.post(client, order(2))
                assert good.status_code == 202, good.text
                wait_until(lambda: any(r.status < 300 for r in target.requests), timeout=30,
                           what="the next order delivered")

                def letters() -> list[dict]:
                    r = client.get("/dlq", params={"key": "SO-\u0000-1"}, headers=admin)
                    assert r.status_code == 200, r.text
                    return list(r.json()["items"])

                wait_until(lambda: len(letters()) == 1, timeout=30, what="the dead letter stored")
                [letter] = letters()
                assert letter["key"] == "SO-\\x00-1" and "\\x00" in letter["error"], letter
                assert client.get("/trace/ab%00", headers=admin).status_code == 404
                for edge in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
                    r = client.get("/dlq", params={"since": edge}, headers=admin)
                    assert r.status_code == 400 and "out of the range of dates" in r.json()["message"], r.text
                discarded = client.delete(f"/dlq/{letter['id']}", params={"reason": "bad \u0000 data"},
                                          headers=admin)
                assert discarded.status_code == 200, discarded.text
        finally:
            assert node.stop() == 0, node.tail()
