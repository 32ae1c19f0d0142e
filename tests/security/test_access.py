"""Who may do what, on a real `syncbus run`: allow-lists, X-Forwarded-For, scopes, JWTs, masking, rate limits.

Every refusal is checked from the outside (status, JSON body, headers) and in
``syncbus_ingress_rejected_total``. Clients on other loopback addresses (127.0.0.2,
127.0.0.3) stand in for outsiders and for a reverse proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import wait_until
from tests.security.jwks import TestIdp
from tests.security.node import CRM_KEY, SecureNode, from_address, write_secure_config

KEYS = {"reader": "reader-key-1f0a", "writer": "writer-key-9c2b", "boss": "boss-key-77de", "feeder": "feeder-key-3a41",
        "spammer": "spammer-key-e5b0"}
PROXY = "127.0.0.3"
OUTSIDER = "127.0.0.2"
PHONE = "13812345678"
ID_CARD = "110101199001011234"


def auth(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> TestIdp:
    return TestIdp(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, idp: TestIdp) -> Iterator[SecureNode]:
    root = write_secure_config(tmp_path_factory.mktemp("access"))
    env = {
        "SYNCBUS_ADMIN_KEYS": ",".join(f"{n}:{k}" for n, k in KEYS.items()),
        "SYNCBUS_KEY_SCOPES": "reader=dlq:read,writer=dlq:write,feeder=ingress:crm,spammer=dlq:read",
        "SYNCBUS_MASK_FIELDS": "customer.phone,id_card",
        "SYNCBUS_TRUSTED_PROXIES": PROXY,
        "SYNCBUS_ADMIN_ALLOW_IPS": f"127.0.0.1,{PROXY}",
        "SYNCBUS_ADMIN_RATE_LIMIT": "20/s",
        **idp.env(),
    }
    n = SecureNode(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db", extra_env=env).start()
    yield n
    assert n.stop() == 0, n.tail()


@pytest.fixture(scope="module")
def letter(node: SecureNode) -> dict[str, Any]:
    """A dead letter holding personal data (its delivery fails: the target refuses connections)."""
    order = {"order_id": "SO-PII-1", "seq": 1, "id_card": ID_CARD, "customer": {"phone": PHONE, "name": "Wang"}}
    with node.client() as client:
        assert client.post("/ingress/crm", json=order, headers={"X-API-Key": CRM_KEY}).status_code == 202
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            items = client.get("/dlq", params={"key": "SO-PII-1"}, headers=auth("boss")).json()["items"]
            found[:] = items
            return bool(items)

        wait_until(arrived, timeout=30, interval=0.2, what="the dead letter")
    return found[0]


def rejected(node: SecureNode, source: str, reason: str) -> float:
    return node.metric("syncbus_ingress_rejected_total", source=source, reason=reason)


# -- IP allow-lists and X-Forwarded-For --------------------------------------------------------------


def test_source_allow_list(node: SecureNode) -> None:
    before = rejected(node, "restricted", "ip")
    with node.client() as inside, from_address(OUTSIDER, node) as outside:
        assert inside.post("/ingress/restricted", json={"order_id": "A1"}).status_code == 202
        refused = outside.post("/ingress/restricted", json={"order_id": "A2"})
    assert refused.status_code == 403
    assert refused.json() == {"error": "ip", "status": 403,
                              "message": f"source restricted does not accept requests from address {OUTSIDER}"}
    assert rejected(node, "restricted", "ip") == before + 1


def test_forged_forwarded_for_from_an_untrusted_client_is_ignored(node: SecureNode) -> None:
    with from_address(OUTSIDER, node) as outside:
        refused = outside.post("/ingress/restricted", json={"order_id": "A3"},
                               headers={"X-Forwarded-For": "127.0.0.1"})
    assert refused.status_code == 403 and refused.json()["error"] == "ip"


def test_forwarded_for_from_a_trusted_proxy(node: SecureNode) -> None:
    with from_address(PROXY, node) as proxy:
        allowed = proxy.post("/ingress/restricted", json={"order_id": "A4"}, headers={"X-Forwarded-For": "127.0.0.1"})
        # The client sent "X-Forwarded-For: 127.0.0.1" itself; the proxy appended the address it really saw.
        forged = proxy.post("/ingress/restricted", json={"order_id": "A5"},
                            headers={"X-Forwarded-For": f"127.0.0.1, {OUTSIDER}"})
        garbage = proxy.post("/ingress/restricted", json={"order_id": "A6"},
                             headers={"X-Forwarded-For": "127.0.0.1, <script>"})
        no_header = proxy.post("/ingress/restricted", json={"order_id": "A7"})
    assert allowed.status_code == 202
    assert forged.status_code == 403 and OUTSIDER in forged.json()["message"]
    assert garbage.status_code == 400 and garbage.json()["error"] == "bad_request"
    assert no_header.status_code == 403          # the proxy itself is not on the source's list


def test_admin_allow_list(node: SecureNode) -> None:
    before = rejected(node, "@admin", "ip")
    with from_address(OUTSIDER, node) as outside:
        refused = outside.get("/dlq", headers=auth("boss"))
    assert refused.status_code == 403 and refused.json()["error"] == "ip"
    assert rejected(node, "@admin", "ip") == before + 1


# -- scopes ---------------------------------------------------------------------------------------


def test_read_scope_cannot_replay_or_discard(node: SecureNode, letter: dict[str, Any]) -> None:
    with node.client() as client:
        assert client.get("/dlq", headers=auth("reader")).status_code == 200
        replay = client.post(f"/dlq/{letter['id']}/replay", headers=auth("reader"))
        discard = client.delete(f"/dlq/{letter['id']}", headers=auth("reader"))
    for refused in (replay, discard):
        assert refused.status_code == 403
        body = refused.json()
        assert body["error"] == "insufficient_scope" and body["missing_scope"] == "dlq:write"
        assert "reader lacks the scope 'dlq:write'" in body["message"]
        assert 'scope="dlq:write"' in refused.headers["www-authenticate"]


def test_ingress_scope_is_not_admin(node: SecureNode) -> None:
    with node.client() as client:
        assert client.post("/ingress/crm", json={"order_id": "F1"}, headers=auth("feeder")).status_code == 202
        no_read = client.get("/dlq", headers=auth("feeder"))
        boss_posts = client.post("/ingress/crm", json={"order_id": "F2"}, headers=auth("boss"))
        wrong_key = client.post("/ingress/crm", json={"order_id": "F3"}, headers={"X-API-Key": "nope"})
    assert no_read.status_code == 403 and no_read.json()["missing_scope"] == "dlq:read"
    assert boss_posts.status_code == 403 and boss_posts.json()["missing_scope"] == "ingress:crm"
    assert wrong_key.status_code == 403 and wrong_key.json()["error"] == "forbidden"


def test_read_only_keys_see_personal_data_masked(node: SecureNode, letter: dict[str, Any]) -> None:
    with node.client() as client:
        listed = client.get("/dlq", params={"key": "SO-PII-1"}, headers=auth("reader")).text
        shown = client.get(f"/dlq/{letter['id']}", headers=auth("reader"))
        full = client.get(f"/dlq/{letter['id']}", headers=auth("writer")).text
    for text in (listed, shown.text):
        assert PHONE not in text and ID_CARD not in text and "****" in text and "Wang" in text
    assert shown.json()["id"] == letter["id"]
    assert PHONE in full and ID_CARD in full


def test_write_scope_replays_and_is_the_audited_actor(node: SecureNode, letter: dict[str, Any],
                                                      idp: TestIdp) -> None:
    token = idp.token("dana", "dlq:write")
    with node.client() as client:
        replay = client.post(f"/dlq/{letter['id']}/replay", json={"reason": "target is back"}, headers=bearer(token))
        assert replay.status_code == 200, replay.text
        audit = client.get(f"/dlq/{letter['id']}", headers=auth("writer")).json()["audit"]
    assert any(a["action"] == "replay" and a["actor"] == "dana" for a in audit)


# -- JWT ------------------------------------------------------------------------------------------


def test_jwt_tokens(node: SecureNode, idp: TestIdp, letter: dict[str, Any]) -> None:
    with node.client() as client:
        ok = client.get("/dlq", params={"key": "SO-PII-1"}, headers=bearer(idp.token("erin", "dlq:read")))
        replay = client.post(f"/dlq/{letter['id']}/replay", headers=bearer(idp.token("erin", "dlq:read")))
        expired = client.get("/dlq", headers=bearer(idp.token("erin", "dlq:read", expires_in=-120)))
        audience = client.get("/dlq", headers=bearer(idp.token("erin", "dlq:read", aud="another-service")))
        posted = client.post("/ingress/crm", json={"order_id": "J1"}, headers=bearer(idp.token("crm", "ingress:crm")))
    assert ok.status_code == 200 and PHONE not in ok.text                  # read-only: masked
    assert replay.status_code == 403 and replay.json()["missing_scope"] == "dlq:write"
    for refused, why in ((expired, "expired"), (audience, "not meant for this service")):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "invalid_token" and why in refused.json()["message"]
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert posted.status_code == 202


# -- rate limits ----------------------------------------------------------------------------------


def test_source_rate_limit(node: SecureNode) -> None:
    before = rejected(node, "limited", "rate_limited")
    with node.client() as client:
        answers = [client.post("/ingress/limited", json={"order_id": f"L{i}"}) for i in range(12)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and len(limited) < 12 and answers[0].status_code == 202
    assert all(int(a.headers["retry-after"]) >= 1 and a.json()["error"] == "rate_limited" for a in limited)
    assert rejected(node, "limited", "rate_limited") == before + len(limited)


def test_admin_rate_limit_is_per_key(node: SecureNode) -> None:
    with node.client() as client:
        answers = [client.get("/healthz" if i % 2 else "/ledger", headers=auth("spammer")) for i in range(80)]
        other = client.get("/dlq", headers=auth("reader"))
    limited = [a for a in answers if a.status_code == 429]
    assert limited and "key spammer" in limited[0].json()["message"]
    assert other.status_code == 200
