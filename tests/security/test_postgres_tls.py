"""TLS to PostgreSQL (the shared state store, SQL sinks): verify-full against the test CA works, a wrong CA fails.

The server is ``pg.sh up --tls`` (tests/support/postgres.py): it accepts TCP clients only
over TLS, with a certificate signed by its own test CA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus.errors import SyncbusError
from syncbus.sinks.base import Delivery
from syncbus.sinks.sql import SqlSink
from syncbus.state import DeadLetter, Store, StoreError
from tests.security.certs import make_ca

pytestmark = pytest.mark.postgres


def with_ca(url: str, ca: Path) -> str:
    parsed = sa.make_url(url)
    return parsed.update_query_dict({"sslrootcert": str(ca)}).render_as_string(hide_password=False)


def test_state_store_over_verified_tls(pg_tls_url: str) -> None:
    assert "sslmode=verify-full" in pg_tls_url
    store = Store(pg_tls_url)
    try:
        dl_id = store.add(DeadLetter(route="r", reason="delivery", error="e", value=b"{}", record_id="x", topic="t"))
        assert store.get(dl_id).value == b"{}"
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").scalar() is True
    finally:
        store.close()


def test_state_store_refuses_a_server_its_ca_did_not_sign(pg_tls_url: str, tmp_path: Path) -> None:
    wrong = with_ca(pg_tls_url, make_ca(tmp_path))
    with pytest.raises(StoreError, match="certificate verify failed") as caught:
        Store(wrong)
    assert "Traceback" not in str(caught.value)


async def test_sql_sink_refuses_a_server_its_ca_did_not_sign(pg_tls_url: str, tmp_path: Path) -> None:
    url = with_ca(pg_tls_url, make_ca(tmp_path))
    sink = SqlSink({"name": "finance", "type": "sql", "url": url, "table": "vouchers", "key_columns": ["no"],
                    "create_table": True, "batch_linger": 0})
    delivery: dict[str, Any] = {"route": "r", "mapping_version": 1, "sink": "finance", "record_id": "1", "key": "1",
                                "idempotency_key": "r:1:1", "body": b'{"no": "1"}', "content_type": "application/json",
                                "payload": {"no": "1"}}
    try:
        with pytest.raises(SyncbusError, match="certificate verify failed"):
            await sink.start()
            await sink.send(Delivery(**delivery))
    finally:
        await sink.close()
