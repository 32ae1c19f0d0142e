"""Named admin keys (DESIGN §5) and the audit actor: the key's name, X-Actor only as a note (ingress/auth.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from syncbus.ingress.auth import Actor, AdminKeyError, parse_admin_keys
from tests.e2e.harness import API_KEY, Node, order, write_config

ALICE = "alice-key-8d2f:with:colons"
BOB = "bob-key-41c9"


@pytest.mark.parametrize(("text", "keys"), [
    ("", {}),
    (" , ,", {}),
    ("alice:K1,bob:K2", {"alice": "K1", "bob": "K2"}),
    ("K1", {"admin": "K1"}),
    ("K1, K2 ,K3", {"admin": "K1", "admin-2": "K2", "admin-3": "K3"}),
    (" alice : K1 ", {"alice": "K1"}),
    ("ops.team-1_x:a:b:c", {"ops.team-1_x": "a:b:c"}),          # split on the first ':' only
    ("bad name:K1", {"admin": "bad name:K1"}),                   # not a name: the whole entry is a key
    ("dGVzdA==:x", {"admin": "dGVzdA==:x"}),
    ("n" * 65 + ":K1", {"admin": "n" * 65 + ":K1"}),
    ("alice:K1,K2", {"alice": "K1", "admin": "K2"}),
])
def test_parse_admin_keys(text: str, keys: dict[str, str]) -> None:
    assert parse_admin_keys(text) == keys


@pytest.mark.parametrize(("text", "message"), [
    ("alice:", r"entry 1 \(alice\) has an empty key"),
    ("alice:K1,alice:K2", "names 'alice' twice"),
    ("alice:SAME,bob:SAME", "gives 'alice' and 'bob' the same key"),
])
def test_parse_admin_keys_refuses_ambiguity_without_printing_keys(text: str, message: str) -> None:
    with pytest.raises(AdminKeyError, match=message) as info:
        parse_admin_keys(text)
    assert "K1" not in str(info.value) and "SAME" not in str(info.value)


def test_actor_text() -> None:
    assert str(Actor("alice")) == "alice"
    assert str(Actor("alice", "bob")) == "alice (for bob)"


@dataclass
class NamedKeysNode(Node):
    def env(self) -> dict[str, str]:
        return {**super().env(), "SYNCBUS_ADMIN_KEYS": f"alice:{ALICE},bob:{BOB}"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamedKeysNode]:
    root = tmp_path_factory.mktemp("auth")
    write_config(root, "http://127.0.0.1:9/nowhere", attempts=1)
    n = NamedKeysNode(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db").start()
    yield n
    n.stop()


def _dead_letter_id(node: NamedKeysNode) -> str:
    r = httpx.post(f"{node.url}/ingress/crm", json=order(7, order_id=None), headers={"X-API-Key": API_KEY},
                   timeout=10)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = httpx.get(f"{node.url}/dlq?route=orders-to-erp", headers={"X-API-Key": ALICE},
                          timeout=5).json()["items"]
        if items:
            return str(items[0]["id"])
        time.sleep(0.1)
    raise AssertionError("no dead letter appeared")


def test_the_audit_names_the_key_and_x_actor_is_only_a_note(node: NamedKeysNode) -> None:
    dl_id = _dead_letter_id(node)
    r = httpx.delete(f"{node.url}/dlq/{dl_id}?reason=test", timeout=5,
                     headers={"Authorization": f"Bearer {BOB}", "X-Actor": "carol"})
    assert r.status_code == 200, r.text
    audit = httpx.get(f"{node.url}/dlq/{dl_id}", headers={"X-API-Key": ALICE}, timeout=5).json()["audit"]
    assert [a["actor"] for a in audit if a["action"] == "discard"] == ["bob (for carol)"]


@pytest.mark.parametrize(("headers", "status"), [
    ({"X-Actor": "alice"}, 401),                          # a name in a header proves nothing
    ({"X-API-Key": "alice"}, 403),
    ({"X-API-Key": ALICE[:-1]}, 403),
    ({"X-API-Key": ALICE, "X-Actor": "x" * 129}, 400),
    ({"X-API-Key": ALICE, "X-Actor": "carol\x7f"}, 400),
    ({"X-API-Key": ALICE, "X-Actor": "carol"}, 200),
])
def test_admin_requests_need_a_named_key(node: NamedKeysNode, headers: dict[str, str], status: int) -> None:
    r = httpx.get(f"{node.url}/dlq", headers=headers, timeout=5)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["status"] == status


def test_no_part_of_a_key_reaches_the_log(node: NamedKeysNode) -> None:
    httpx.get(f"{node.url}/dlq", headers={"X-API-Key": ALICE}, timeout=5)
    httpx.get(f"{node.url}/dlq", headers={"X-API-Key": BOB[:-1]}, timeout=5)
    log = Path(str(node.log)).read_text("utf-8", "replace")
    for key in (ALICE, BOB):
        assert key[:6] not in log
