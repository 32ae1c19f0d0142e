"""The dead-letter HTTP API: filters, bulk replay and discard, the audit -- behind named admin keys."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from syncbus.config import Settings
from syncbus.ingress.app import create_app
from syncbus.project import load_project
from syncbus.runtime import Runtime
from tests.dlq.conftest import make_letter

ALICE = {"X-API-Key": "alice-key"}
BOB = {"X-API-Key": "bob-key"}


@pytest.fixture
async def api(tmp_path: Path):
    (tmp_path / "mappings").mkdir()
    (tmp_path / "connectors").mkdir()
    (tmp_path / "mappings" / "m.yaml").write_text(textwrap.dedent("""\
        mapping: orders
        version: 2
        owner: sales-ops
        source: {topic: crm.orders}
        target: {sink: erp, format: json}
        fields: {ID: order_id}
        """))
    (tmp_path / "connectors" / "c.yaml").write_text(textwrap.dedent("""\
        sinks:
          - {name: erp, type: http, url: "http://127.0.0.1:9/x", retry: {attempts: 1}}
        """))
    env = {"SYNCBUS_ADMIN_KEYS": "alice:alice-key,bob:bob-key"}
    rt = Runtime(Settings(tmp_path, f"embedded://{tmp_path}/bus.db"), load_project(tmp_path, env=env), env=env)
    await rt.bus.start()
    rt.started = True
    app = create_app(rt, manage_lifecycle=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, rt
    await rt.bus.stop()
    rt.store.close()


def _add(rt: Runtime, n: int, start: int = 0, **fields: object) -> list[str]:
    return [rt.store.add(make_letter(i, **fields)) for i in range(start, start + n)]  # type: ignore[arg-type]


async def test_list_takes_every_filter_and_pages(api):
    client, rt = api
    _add(rt, 3)
    _add(rt, 2, start=10, reason="mapping", error="field 'NETWR': not a number")
    r = await client.get("/dlq", params={"route": "orders", "limit": "2", "offset": "1"}, headers=ALICE)
    assert r.status_code == 200
    body = r.json()
    # newest first, so offset 1 skips SO-11
    assert (body["total"], len(body["items"]), body["items"][0]["key"]) == (5, 2, "SO-10")
    r = await client.get("/dlq", params={"reason": "mapping", "text": "NETWR", "key": "SO-10"}, headers=ALICE)
    assert [d["key"] for d in r.json()["items"]] == ["SO-10"]
    r = await client.get("/dlq", params={"sink": "erp", "since": "2026-11-20T08:01:00Z",
                                         "until": "2026-11-20T08:02:00Z"}, headers=ALICE)
    assert [d["key"] for d in r.json()["items"]] == ["SO-1"]


@pytest.mark.parametrize("query", [{"status": "lost"}, {"reason": "x"}, {"since": "yesterday"}, {"limit": "0"},
                                   {"limit": "1001"}, {"offset": "-1"}, {"text": "x" * 201},
                                   {"since": "2026-11-21", "until": "2026-11-20"}])
async def test_bad_list_parameters_are_400(api, query: dict[str, str]):
    client, _rt = api
    r = await client.get("/dlq", params=query, headers=ALICE)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request"


async def test_bulk_replay_by_filter_refuses_unfixed_mapping_failures_unless_forced(api):
    client, rt = api
    delivery = _add(rt, 2)
    [mapping] = _add(rt, 1, start=5, reason="mapping", version=2)
    r = await client.post("/dlq/replay", json={"filter": {"route": "orders"}, "reason": "ERP back"}, headers=ALICE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["replayed"] == 2 and body["failed"] == 1
    [refused] = [x for x in body["results"] if not x["ok"]]
    assert refused["id"] == mapping and refused["refusal"] == "needs_fix" and '"force": true' in refused["message"]
    r = await client.post(f"/dlq/{mapping}/replay", json={"reason": "try"}, headers=ALICE)
    assert r.status_code == 422 and r.json()["error"] == "needs_fix" and r.json()["current_status"] == "pending"
    r = await client.post(f"/dlq/{mapping}/replay", json={"reason": "try anyway", "force": True}, headers=BOB)
    assert r.status_code == 200 and r.json()["status"] == "replayed"
    audit = (await client.get("/dlq/audit", params={"action": "replay"}, headers=ALICE)).json()["items"]
    assert {(a["dead_letter_id"], a["actor"]) for a in audit} == {(delivery[0], "alice"), (delivery[1], "alice"),
                                                                  (mapping, "bob")}
    r = await client.post(f"/dlq/{mapping}/replay", headers=ALICE)
    assert r.status_code == 409 and r.json()["current_status"] == "replayed"


async def test_the_old_replay_body_still_works(api):
    client, rt = api
    ids = _add(rt, 2)
    r = await client.post("/dlq/replay", json={"route": "orders", "since": "2026-11-20"}, headers=ALICE)
    assert r.status_code == 200 and r.json()["replayed"] == 2
    assert {rt.store.get(i).status for i in ids} == {"replayed"}


@pytest.mark.parametrize("body", [{}, {"filter": {}}, {"ids": ["a"], "filter": {"route": "r"}},
                                  {"filter": {"status": "pending"}}, {"filter": {"reason": "nope"}},
                                  {"filter": {"route": "r"}, "rate": "fast"}, {"filter": {"route": "r"}, "limit": 0},
                                  {"filter": {"route": "r"}, "route": "r"}])
async def test_bad_replay_bodies_are_422(api, body: dict[str, object]):
    client, _rt = api
    r = await client.post("/dlq/replay", json=body, headers=ALICE)
    assert r.status_code == 422, r.text


async def test_bulk_discard_needs_a_reason_and_reports_per_letter(api):
    client, rt = api
    ids = _add(rt, 3)
    r = await client.post("/dlq/discard", json={"filter": {"route": "orders"}}, headers=ALICE)
    assert r.status_code == 422 and "reason" in r.json()["message"]
    assert (await client.delete(f"/dlq/{ids[0]}", params={"reason": "dup"}, headers=BOB)).status_code == 200
    r = await client.post("/dlq/discard", json={"ids": ids, "reason": "test orders"}, headers=ALICE)
    assert r.status_code == 200
    body = r.json()
    assert body["discarded"] == 2 and [x["refusal"] for x in body["results"]] == ["conflict", None, None]
    r = await client.delete(f"/dlq/{ids[1]}", headers=ALICE)
    assert r.status_code == 409 and r.json()["current_status"] == "discarded"
    audit = (await client.get("/dlq/audit", params={"actor": "alice"}, headers=BOB)).json()["items"]
    assert [(a["dead_letter_id"], a["reason"]) for a in audit] == [(ids[1], "test orders"), (ids[2], "test orders")]


async def test_audit_filters_are_bounded(api):
    client, _rt = api
    assert (await client.get("/dlq/audit", params={"action": "delete"}, headers=ALICE)).status_code == 400
    assert (await client.get("/dlq/audit", params={"since": "soon"}, headers=ALICE)).status_code == 400
    assert (await client.get("/dlq/audit", headers={"X-API-Key": "nope"})).status_code == 403
    assert (await client.get("/dlq/audit")).status_code == 401
