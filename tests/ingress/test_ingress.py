"""The HTTP ingress contract of DESIGN §7, against a real runtime on the embedded bus."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from syncbus.config import Settings
from syncbus.ingress.app import create_app
from syncbus.project import load_project
from syncbus.runtime import Runtime

KEY = "k-123"
ADMIN = "adm-1"


@pytest.fixture
async def node(tmp_path: Path):
    (tmp_path / "mappings").mkdir()
    (tmp_path / "connectors").mkdir()
    (tmp_path / "mappings" / "m.yaml").write_text(textwrap.dedent("""\
        mapping: m
        version: 1
        owner: o
        source: {topic: t.in}
        target: {sink: nowhere, format: json}
        fields: {ID: id}
        """))
    (tmp_path / "connectors" / "c.yaml").write_text(textwrap.dedent("""\
        sources:
          - {name: crm, type: http_ingress, topic: t.in, key: id, auth: {api_keys_env: KEYS}, max_body: 2KiB,
             max_depth: 8}
          - {name: open, type: http_ingress, topic: t.open}
        sinks:
          - {name: nowhere, type: http, url: "http://127.0.0.1:9/x", retry: {attempts: 1}}
        """))
    env = {"KEYS": f"{KEY},other", "SYNCBUS_ADMIN_KEYS": ADMIN}
    project = load_project(tmp_path, env=env)
    rt = Runtime(Settings(tmp_path, f"embedded://{tmp_path}/bus.db"), project, env=env)
    await rt.bus.start()
    await rt.trace.start()
    rt.started = True
    app = create_app(rt, manage_lifecycle=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, rt
    await rt.trace.stop()
    await rt.bus.stop()
    rt.store.close()


async def test_accepts_json_and_publishes_durably(node):
    client, rt = node
    r = await client.post("/ingress/crm", json={"id": "A1", "x": 1}, headers={"X-API-Key": KEY})
    assert r.status_code == 202
    body = r.json()
    assert body["id"] and body["topic"] == "t.in" and body["offset"] == 0
    consumer = rt.bus.consumer("probe", ["t.in"])
    await consumer.start()
    [rec] = await consumer.fetch(10, 2.0)
    await consumer.stop()
    assert rec.key == "A1"
    assert rec.headers["syncbus-id"] == body["id"]
    assert rec.headers["content-type"] == "application/json"
    assert rt.metrics.value("syncbus_records_received_total", {"source": "crm"}) == 1


async def test_xml_by_content_type_and_bearer(node):
    client, _rt = node
    xml = b"<?xml version='1.0'?><order><id>X9</id></order>"
    r = await client.post("/ingress/crm", content=xml,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/xml"})
    assert r.status_code == 202, r.text
    consumer = _rt.bus.consumer("probe-xml", ["t.in"])
    await consumer.start()
    [rec] = await consumer.fetch(10, 2.0)
    await consumer.stop()
    assert rec.value == xml                                  # published as received: XML stays XML
    assert rec.headers["content-type"] == "application/xml"
    assert rec.key == "X9"                                   # the key path is found inside the root element
    assert rec.headers["syncbus-id"] == r.json()["id"]


@pytest.mark.parametrize(
    ("headers", "content", "status", "code"),
    [
        ({}, b'{"id":1}', 401, "unauthorized"),
        ({"X-API-Key": "wrong"}, b'{"id":1}', 403, "forbidden"),
        ({"X-API-Key": KEY, "Content-Type": "text/plain"}, b"hi", 415, "unsupported_media_type"),
        ({"X-API-Key": KEY, "Content-Type": "application/json"}, b'{"id": ', 400, "invalid_body"),
        ({"X-API-Key": KEY, "Content-Type": "application/json"}, b"[" * 20 + b"]" * 20, 422, "refused_body"),
        ({"X-API-Key": KEY, "Content-Type": "application/json"}, b"[1, 2]", 422, "unprocessable"),
        ({"X-API-Key": KEY, "Content-Type": "application/json"}, b'{"a":"' + b"x" * 3000 + b'"}', 413,
         "payload_too_large"),
        ({"X-API-Key": KEY, "Content-Type": "application/xml"},
         b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', 422, "refused_body"),
    ],
    ids=["no-key", "wrong-key", "415", "malformed", "too-deep", "not-object", "413", "xml-entity"],
)
async def test_refusals_have_json_bodies(node, headers, content, status, code):
    client, rt = node
    r = await client.post("/ingress/crm", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    assert r.json()["message"]
    assert rt.metrics.value("syncbus_records_received_total", {"source": "crm"}) == 0
    assert rt.metrics.value("syncbus_ingress_rejected_total", {"source": "crm", "reason": code}) == 1


async def test_unknown_source_is_404_and_open_source_needs_no_key(node):
    client, _rt = node
    assert (await client.post("/ingress/nope", json={})).status_code == 404
    assert (await client.post("/ingress/open", json={"a": 1})).status_code == 202


async def test_idempotency_key_returns_first_id_and_publishes_once(node):
    client, rt = node
    h = {"X-API-Key": KEY, "Idempotency-Key": "order-77"}
    first = await client.post("/ingress/crm", json={"id": "77"}, headers=h)
    again = await client.post("/ingress/crm", json={"id": "77"}, headers=h)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    marks = await rt.bus.high_water(["t.in"])
    assert marks["t.in"] == 1


async def test_idempotency_key_with_another_body_is_422(node):
    client, rt = node
    h = {"X-API-Key": KEY, "Idempotency-Key": "order-78"}
    assert (await client.post("/ingress/crm", json={"id": "78"}, headers=h)).status_code == 202
    other = await client.post("/ingress/crm", json={"id": "78", "amount": 2}, headers=h)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    assert "order-78" in other.json()["message"]
    assert (await rt.bus.high_water(["t.in"]))["t.in"] == 1    # the second order was not published
    # an empty or oversized key is a 400
    for bad in ("", "x" * 256):
        r = await client.post("/ingress/crm", json={"id": "1"}, headers={"X-API-Key": KEY, "Idempotency-Key": bad})
        assert r.status_code == 400, bad


async def test_readyz_is_503_when_the_bus_is_away(node):
    client, rt = node
    assert (await client.get("/readyz")).status_code == 200
    await rt.bus.stop()
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["bus"] is False
    r = await client.post("/ingress/crm", json={"id": "A"}, headers={"X-API-Key": KEY})
    assert r.status_code == 503 and r.json()["error"] == "bus_unavailable"


async def test_health_ready_metrics_docs(node):
    client, _rt = node
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["bus"] is True
    metrics = await client.get("/metrics")
    assert "syncbus_records_received_total" in metrics.text
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "syncbus"


async def test_dead_letter_api_requires_admin_key(node):
    client, _rt = node
    assert (await client.get("/dlq")).status_code == 401
    assert (await client.get("/dlq", headers={"X-API-Key": KEY})).status_code == 403
    r = await client.get("/dlq", headers={"X-API-Key": ADMIN})
    assert r.status_code == 200 and r.json() == {"items": [], "total": 0}
    assert (await client.get("/dlq/dl-nope", headers={"X-API-Key": ADMIN})).status_code == 404
    assert (await client.post("/dlq/replay", json={}, headers={"X-API-Key": ADMIN})).status_code == 422
