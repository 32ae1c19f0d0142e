"""Encryption at rest on a real node: nothing personal on disk, the CLI and API read it, keys rotate."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx

from tests.e2e.harness import ADMIN_KEY, wait_until
from tests.security.node import CRM_KEY, SecureNode, write_secure_config

PHONE = "13812345678"
K1 = "k1:" + base64.b64encode(os.urandom(32)).decode()
K2 = "k2:" + base64.b64encode(os.urandom(32)).decode()


def leaks(folder: Path, secret: bytes) -> list[str]:
    """Where ``secret`` is in the node's files (database, WAL), with what surrounds it."""
    found = []
    for path in folder.iterdir():
        data = path.read_bytes() if path.is_file() else b""
        at = data.find(secret)
        if at >= 0:
            found.append(f"{path.name}@{at}: {data[max(0, at - 200):at + 40]!r}")
    return found


def test_encrypted_node(tmp_path: Path) -> None:
    root = write_secure_config(tmp_path / "config")
    data = tmp_path / "data"
    node = SecureNode(root, f"embedded://{data}/bus.db", f"sqlite:///{data}/bus.db",
                      extra_env={"SYNCBUS_DATA_KEYS": K1}, extra_args=["--encrypt-bus"]).start()
    admin = {"X-API-Key": ADMIN_KEY}
    try:
        with node.client() as client:
            for i in range(3):
                order = {"order_id": f"SO-ENC-{i}", "seq": i, "customer": {"phone": PHONE}}
                assert client.post("/ingress/crm", json=order, headers={"X-API-Key": CRM_KEY}).status_code == 202
            wait_until(lambda: client.get("/dlq", headers=admin).json()["total"] == 3, timeout=30,
                       what="three dead letters")
            shown = client.get("/dlq", headers=admin).json()["items"][0]
            assert PHONE in shown["record"]["value"]                     # the API reads through the codec
            wait_until(lambda: client.get(f"/trace/{shown['record_id']}", headers=admin).status_code == 200,
                       timeout=30, what="the trace (written in batches)")
    finally:
        assert node.stop() == 0, node.tail()
    assert leaks(data, PHONE.encode()) == []     # record keys (SO-ENC-…) stay clear: ordering and filters use them

    with_key = node.cli("dlq", "list", "--json")                        # node.env() carries SYNCBUS_DATA_KEYS
    assert PHONE in with_key.stdout
    node.extra_env = {}
    without = node.cli("dlq", "list", "--json", check=False)
    assert without.returncode == 1 and "Traceback" not in without.stderr
    assert "encrypted with data key 'k1'" in without.stderr and "SYNCBUS_DATA_KEYS" in without.stderr

    node.extra_env = {"SYNCBUS_DATA_KEYS": f"{K2},{K1}"}                 # the new key first, the old one kept
    rotated = json.loads(node.cli("keys", "rotate", "--json").stdout)
    assert rotated["key"] == "k2" and rotated["resealed"]["dead_letters"] == 3 and rotated["resealed"]["bus"] >= 3
    node.extra_env = {"SYNCBUS_DATA_KEYS": K2}                          # the old key is gone
    assert PHONE in node.cli("dlq", "list", "--json").stdout
    restarted = SecureNode(root, node.bus, node.store, port=node.port, extra_env={"SYNCBUS_DATA_KEYS": K2}).start()
    try:
        with httpx.Client(timeout=10) as client:
            assert client.get(f"{restarted.url}/dlq", headers=admin).json()["total"] == 3
    finally:
        assert restarted.stop() == 0, restarted.tail()
