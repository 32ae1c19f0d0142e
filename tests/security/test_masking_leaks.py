"""A read-only key never sees a masked value -- not in the payload, and not where the record is quoted.

A target that rejects a record often echoes it in its error body, and the
sink keeps a snippet of that body in the dead letter's error; a mapping error
quotes the value it could not convert. Before, a ``dlq:read`` key saw the
phone number there (API, trace, console), and could recover a masked value
digit by digit by counting matches of a text search. A real node, a target
that echoes the record, and the API and console as each key sees them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import wait_until
from tests.security.node import CRM_KEY, SecureNode, write_secure_config
from tests.sinks.target_server import Reply, TargetServer

PHONE = "13812345678"
ID_CARD = "110101199001011234"
KEYS = {"reader": "reader-key-5e1d", "writer": "writer-key-0b7c"}


@pytest.fixture(scope="module")
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        # as a validating target answers: the record quoted back in the error body
        server.set_default(Reply(422, f"rejected record {{'VBELN': 'SO-LEAK-1', 'TEL': '{PHONE}'}}"))
        yield server


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, target: TargetServer) -> Iterator[SecureNode]:
    root = write_secure_config(tmp_path_factory.mktemp("leaks"), target_url=target.url_for("/orders"))
    env = {"SYNCBUS_ADMIN_KEYS": ",".join(f"{n}:{k}" for n, k in KEYS.items()),
           "SYNCBUS_KEY_SCOPES": "reader=dlq:read,writer=dlq:write", "SYNCBUS_MASK_FIELDS": "customer.phone,id_card"}
    n = SecureNode(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db", extra_env=env).start()
    order = {"order_id": "SO-LEAK-1", "seq": 1, "id_card": ID_CARD, "customer": {"phone": PHONE, "name": "Wang"}}
    with n.client() as client:
        assert client.post("/ingress/crm", json=order, headers={"X-API-Key": CRM_KEY}).status_code == 202
        wait_until(lambda: client.get("/dlq", headers=_as("writer")).json()["total"] == 1, timeout=30,
                   what="the dead letter")
    yield n
    assert n.stop() == 0, n.tail()


def _as(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def _letter(node: SecureNode, key: str) -> dict[str, Any]:
    with node.client() as client:
        return dict(client.get("/dlq", headers=_as(key)).json()["items"][0])


def test_the_writer_sees_the_error_as_the_target_sent_it(node: SecureNode) -> None:
    assert PHONE in _letter(node, "writer")["error"]


def test_a_reader_sees_the_error_scrubbed_in_the_api_and_the_trace(node: SecureNode) -> None:
    letter = _letter(node, "reader")
    assert PHONE not in letter["error"] and "'TEL': '****'" in letter["error"], letter["error"]
    with node.client() as client:
        one = client.get(f"/dlq/{letter['id']}", headers=_as("reader"))
        trace = client.get(f"/trace/{letter['record_id']}", headers=_as("reader"))
    assert one.status_code == trace.status_code == 200
    for text in (one.text, trace.text):
        assert PHONE not in text and ID_CARD not in text
    assert "****" in trace.text


def test_a_reader_cannot_find_a_masked_value_by_searching(node: SecureNode) -> None:
    with node.client() as client:
        def total(key: str, text: str) -> int:
            r = client.get("/dlq", params={"text": text}, headers=_as(key))
            assert r.status_code == 200, r.text
            return int(r.json()["total"])

        for probe in (PHONE, PHONE[:5], PHONE[3:9], ID_CARD, '"phone":"1381'):
            assert total("reader", probe) == 0, probe
            assert total("writer", probe) == 1, probe
        assert total("reader", "SO-LEAK-1") == 1          # what the reader may see is still searchable
        assert total("reader", "rejected record") == 1


def test_the_console_shows_a_reader_the_same(node: SecureNode) -> None:
    letter = _letter(node, "writer")
    with httpx.Client(base_url=node.url, timeout=10) as client:
        page = client.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        r = client.post("/console/login", data={"csrf": csrf.group(1), "key": KEYS["reader"], "next": ""})
        assert r.status_code == 303, r.text
        for path in ("/console/dead-letters", f"/console/dead-letters/{letter['id']}",
                     f"/console/trace?id={letter['record_id']}", f"/console/dead-letters?text={PHONE[:6]}"):
            shown = client.get(path)
            assert shown.status_code == 200, (path, shown.status_code)
            assert PHONE not in shown.text and ID_CARD not in shown.text, path
        assert "SO-LEAK-1" not in client.get(f"/console/dead-letters?text={PHONE[:6]}").text


def test_a_reader_finds_what_it_sees_and_nothing_behind_the_mask(node: SecureNode) -> None:
    with node.client() as client:
        def total(text: str) -> int:
            return int(client.get("/dlq", params={"text": text}, headers=_as("reader")).json()["total"])

        assert total('"name":"Wang"') == 1       # the payload as stored, as the reader is shown it
        assert total("****") == 1                # the mask itself is what the reader sees
        assert total("'TEL': '****'") == 1       # in the error too


def test_after_an_edit_the_old_value_stays_hidden(node: SecureNode) -> None:
    """Fixing the phone changes the value, not the error that quotes the old one: readers see no error now."""
    letter = _letter(node, "writer")
    fixed = {"order_id": "SO-LEAK-1", "seq": 1, "id_card": ID_CARD, "customer": {"phone": "13900000000"}}
    new_value = node.config_dir / "fixed.json"
    new_value.write_text(json.dumps(fixed), encoding="utf-8")
    node.cli("dlq", "edit", letter["id"], "--file", str(new_value), "--reason", "phone corrected")
    with node.client() as client:
        seen = _letter(node, "reader")
        assert seen["edited"] is True and seen["error"].startswith("[masked: the record was edited")
        assert client.get("/dlq", params={"text": PHONE[:6]}, headers=_as("reader")).json()["total"] == 0
        trace = client.get(f"/trace/{letter['record_id']}", headers=_as("reader")).text
        one = client.get(f"/dlq/{letter['id']}", headers=_as("reader")).text
    for text in (trace, one, json.dumps(seen)):
        assert PHONE not in text and "13900000000" not in text
