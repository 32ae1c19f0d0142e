"""The test target server itself, used the synchronous way (as end-to-end tests will)."""

from __future__ import annotations

import httpx
import pytest

from tests.sinks.target_server import Reply, TargetServer


def test_records_and_follows_the_script(target: TargetServer) -> None:
    target.script(503, Reply(201, {"id": 7}, {"X-Seen": "yes"}))
    target.script(Reply(418, "teapot"), path="/tea")
    with httpx.Client(base_url=target.url) as client:
        first = client.post("/orders?x=1", content=b"one", headers={"X-Test": "a"})
        tea = client.put("/tea", json={"a": 1})
        second = client.post("/orders", content=b"two")
        third = client.get("/orders")
    assert [first.status_code, tea.status_code, second.status_code, third.status_code] == [503, 418, 201, 200]
    assert second.json() == {"id": 7} and second.headers["x-seen"] == "yes"
    assert third.json() == {"ok": True}
    reqs = target.requests
    assert [(r.method, r.path, r.status) for r in reqs] == \
        [("POST", "/orders", 503), ("PUT", "/tea", 418), ("POST", "/orders", 201), ("GET", "/orders", 200)]
    assert reqs[0].query == "x=1" and reqs[0].body == b"one" and reqs[0].header("X-Test") == "a"
    assert reqs[1].json() == {"a": 1}
    assert reqs[0].time <= reqs[1].time <= reqs[2].time
    assert [r.path for r in target.requests_to("/tea")] == ["/tea"]


def test_wait_for(target: TargetServer) -> None:
    with pytest.raises(TimeoutError, match="expected 1 requests to /x, got 0"):
        target.wait_for(1, timeout=0.05, path="/x")
    httpx.post(target.url_for("/x"))
    assert len(target.wait_for(1, path="/x")) == 1


def test_require_bearer(target: TargetServer) -> None:
    target.require_bearer("sesame")
    assert httpx.get(target.url).status_code == 401
    assert httpx.get(target.url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(target.url, headers={"Authorization": "Bearer sesame"}).status_code == 200


def test_token_endpoint(target: TargetServer) -> None:
    token_url = target.oauth(client_id="c", client_secret="s", expires_in=60)
    bad = httpx.post(token_url, data={"grant_type": "client_credentials"}, auth=("c", "wrong"))
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert httpx.post(token_url, data={"grant_type": "password"}, auth=("c", "s")).status_code == 400
    good = httpx.post(token_url, data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"})
    assert good.json() == {"access_token": "token-1", "token_type": "Bearer", "expires_in": 60}
    assert httpx.get(target.url, headers={"Authorization": "Bearer token-1"}).status_code == 200
    target.revoke_tokens()
    assert httpx.get(target.url, headers={"Authorization": "Bearer token-1"}).status_code == 401
    assert len(target.token_requests) == 3


async def test_async_context_manager() -> None:
    async with TargetServer(default=Reply(202)) as server:
        async with httpx.AsyncClient() as client:
            assert (await client.post(server.url_for("orders"))).status_code == 202
        assert len(await server.wait_for_async(1)) == 1
