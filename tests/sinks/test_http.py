"""The HTTP sink against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from syncbus.errors import DeliveryError
from syncbus.sinks.auth import parse_retry_after
from syncbus.sinks.base import Delivery, Sink
from syncbus.sinks.http import HttpSink, HttpSinkConfig
from syncbus.sinks.retry import DeliveryFailed
from tests.sinks.target_server import Reply, TargetServer

MakeDelivery = Callable[..., Delivery]
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


def http_sink(url: str, **options: Any) -> HttpSink:
    config = {"name": "erp", "type": "http", "url": url,
              "retry": {"attempts": 4, "initial": "10ms", "max": "50ms"}, "timeout": "2s"}
    config.update(options)
    return HttpSink(config)


@pytest.fixture
async def sink(target: TargetServer) -> AsyncIterator[HttpSink]:
    s = http_sink(target.url_for("/orders"))
    await s.start()
    yield s
    await s.close()


async def test_is_a_sink() -> None:
    assert isinstance(http_sink("http://127.0.0.1:1/"), Sink)


async def test_sends_body_and_syncbus_headers(target: TargetServer, make_delivery: MakeDelivery) -> None:
    s = http_sink(target.url_for("/orders?client=100"), headers={"X-Tenant": "acme"})
    await s.send(make_delivery(record_id="rec-9", idempotency_key="crm-to-erp:order-42:rec-9"))
    await s.close()
    (req,) = target.requests
    assert (req.method, req.path, req.query, req.body) == ("POST", "/orders", "client=100", b'{"VBELN": "42"}')
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["idempotency-key"] == "crm-to-erp:order-42:rec-9"
    assert h["x-syncbus-route"] == "crm-to-erp"
    assert h["x-syncbus-mapping-version"] == "3"
    assert h["x-syncbus-record-id"] == "rec-9"
    assert h["x-tenant"] == "acme"
    assert h["user-agent"].startswith("syncbus/")
    assert TRACEPARENT.match(h["traceparent"])
    assert "authorization" not in h


async def test_traceparent_from_the_router_is_passed_on(
        target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await sink.send(make_delivery(traceparent=given))
    await sink.send(make_delivery(traceparent="garbage"))
    await sink.send(make_delivery())
    await sink.send(make_delivery())
    sent = [r.headers["traceparent"] for r in target.requests]
    assert sent[0] == given
    assert TRACEPARENT.match(sent[1]) and sent[1] != "garbage"
    assert sent[2] != sent[3]  # a fresh trace per delivery


async def test_header_precedence(target: TargetServer, make_delivery: MakeDelivery) -> None:
    """Config headers may set the Content-Type (SOAP); nobody may replace the idempotency key."""
    s = http_sink(target.url_for("/soap"), method="put",
                  headers={"content-type": "text/xml; charset=utf-8", "Idempotency-Key": "mine"})
    await s.send(make_delivery(content_type="application/xml", body=b"<a/>",
                               headers={"SOAPAction": "urn:create", "X-Syncbus-Route": "spoofed"}))
    await s.close()
    (req,) = target.requests
    assert req.method == "PUT"
    assert req.headers["content-type"] == "text/xml; charset=utf-8"
    assert req.headers["soapaction"] == "urn:create"
    assert req.headers["idempotency-key"] == "crm-to-erp:order-42:rec-1"
    assert req.headers["x-syncbus-route"] == "crm-to-erp"


async def test_non_ascii_keys_are_percent_encoded(
        target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    await sink.send(make_delivery(key="Müller\n1", idempotency_key="crm-to-erp:Müller\n1:rec-1"))
    assert target.requests[0].headers["idempotency-key"] == "crm-to-erp:M%C3%BCller%0A1:rec-1"


async def test_503_503_200_is_three_attempts(
        target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    target.script(503, Reply(503, "busy"), 200)
    outcomes: list[str] = []
    attempts = await sink.retry.run(lambda: sink.send(make_delivery()), lambda o, d, e: outcomes.append(o))
    assert attempts == 3
    assert outcomes == ["retryable", "retryable", "ok"]
    assert [r.status for r in target.requests] == [503, 503, 200]
    # every try carries the same idempotency key, so the target can drop duplicates
    assert len({r.headers["idempotency-key"] for r in target.requests}) == 1


async def test_400_is_permanent_with_the_targets_answer(
        target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    body = '{"error": "VBELN\\n too long"} ' + "x" * 600
    target.script(Reply(400, body))
    outcomes: list[str] = []
    with pytest.raises(DeliveryFailed) as info:
        await sink.retry.run(lambda: sink.send(make_delivery()), lambda o, d, e: outcomes.append(o))
    failed = info.value
    assert (failed.attempts, failed.permanent, outcomes) == (1, True, ["permanent"])
    assert failed.last_error.status == 400
    message = str(failed.last_error)
    prefix = f"HTTP 400 from {target.url}/orders: "
    assert message.startswith(prefix + '{"error": "VBELN\\n too long"} xxx')
    assert len(message) == len(prefix) + 300 + 1  # 300 chars of body and an ellipsis
    assert len(target.requests) == 1


@pytest.mark.parametrize(("status", "retryable"), [
    (408, True), (425, True), (429, True), (500, True), (502, True), (503, True), (504, True),
    (401, False), (403, False), (404, False), (409, False), (413, False), (422, False),
])
async def test_status_classification(target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery,
                                     status: int, retryable: bool) -> None:
    target.script(status)
    with pytest.raises(DeliveryError) as info:
        await sink.send(make_delivery())
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert str(info.value).startswith(f"HTTP {status} from {target.url}/orders")


async def test_2xx_is_delivered(target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    target.script(201, 202, Reply(204))
    for _ in range(3):
        await sink.send(make_delivery())
    assert [r.status for r in target.requests] == [201, 202, 204]


async def test_redirect_is_not_followed(target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    target.script(Reply(301, headers={"Location": "https://user:pw@erp.example/v2/orders?key=secret"}))
    with pytest.raises(DeliveryError) as info:
        await sink.send(make_delivery())
    assert not info.value.retryable
    assert "redirect to https://erp.example/v2/orders?… not followed" in str(info.value)
    assert "secret" not in str(info.value) and "pw" not in str(info.value)
    assert len(target.requests) == 1


async def test_target_down_is_retried_exactly_attempts_times(dead_url: str, make_delivery: MakeDelivery) -> None:
    s = http_sink(dead_url, retry={"attempts": 3, "initial": "10ms"})
    seen: list[tuple[str, BaseException | None]] = []
    with pytest.raises(DeliveryFailed) as info:
        await s.retry.run(lambda: s.send(make_delivery()), lambda o, d, e: seen.append((o, e)))
    await s.close()
    assert info.value.attempts == 3 and not info.value.permanent
    assert [o for o, _ in seen] == ["retryable"] * 3
    assert str(info.value.last_error) == f"connection refused: {dead_url}"
    assert info.value.reason == f"gave up after 3 attempts: connection refused: {dead_url}"


async def test_unresolvable_host_is_retryable(make_delivery: MakeDelivery) -> None:
    s = http_sink("http://no-such-host.invalid/orders", timeout="2s")
    with pytest.raises(DeliveryError) as info:
        await s.send(make_delivery())
    await s.close()
    assert info.value.retryable
    assert "no-such-host.invalid" in str(info.value)


async def test_timeout_is_retryable(target: TargetServer, make_delivery: MakeDelivery) -> None:
    target.script(Reply(200, delay=3))
    s = http_sink(target.url_for("/slow"), timeout="200ms")
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        await s.send(make_delivery())
    elapsed = time.monotonic() - started
    await s.close()
    assert info.value.retryable
    assert str(info.value) == f"timeout after 200ms: {target.url}/slow"
    assert 0.15 < elapsed < 1.5


async def test_retry_after_is_honoured(target: TargetServer, make_delivery: MakeDelivery) -> None:
    target.script(Reply(429, headers={"Retry-After": "1"}), 200)
    s = http_sink(target.url_for("/orders"), retry={"attempts": 2, "initial": "10ms", "max": "5s"})
    assert await s.retry.run(lambda: s.send(make_delivery())) == 2
    await s.close()
    first, second = target.requests
    assert (first.status, second.status) == (429, 200)
    assert 0.95 <= second.time - first.time < 1.6


async def test_retry_after_is_capped_at_max(target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    target.script(Reply(503, headers={"Retry-After": "3600"}), 200)
    assert await sink.retry.run(lambda: sink.send(make_delivery())) == 2
    first, second = target.requests
    assert second.time - first.time < 0.5  # max is 50ms


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == pytest.approx(30.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_connections_are_kept_alive(target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    for _ in range(5):
        await sink.send(make_delivery())
    assert len({r.client for r in target.requests}) == 1


async def test_pool_limit_and_concurrency(target: TargetServer, make_delivery: MakeDelivery) -> None:
    target.set_default(Reply(200, delay=0.02))
    s = http_sink(target.url_for("/orders"), max_connections=5)
    await asyncio.gather(*(s.send(make_delivery(record_id=f"r{i}")) for i in range(40)))
    await s.close()
    requests = target.requests
    assert len(requests) == 40
    assert {r.headers["x-syncbus-record-id"] for r in requests} == {f"r{i}" for i in range(40)}
    assert 1 < len({r.client for r in requests}) <= 5


async def test_send_starts_lazily_and_close_is_idempotent(target: TargetServer, make_delivery: MakeDelivery) -> None:
    s = http_sink(target.url_for("/orders"))
    await s.send(make_delivery())
    await s.close()
    await s.close()
    await s.start()
    await s.start()
    await s.send(make_delivery())
    await s.close()
    assert len(target.requests) == 2


async def test_huge_error_bodies_are_not_held(
        target: TargetServer, sink: HttpSink, make_delivery: MakeDelivery) -> None:
    target.script(Reply(500, b"E" * 5_000_000))
    with pytest.raises(DeliveryError) as info:
        await sink.send(make_delivery())
    assert len(str(info.value)) < 400
    await sink.send(make_delivery())  # the sink is still fine afterwards


async def test_messages_hide_credentials_in_the_url(target: TargetServer, make_delivery: MakeDelivery) -> None:
    target.script(400)
    s = http_sink(target.url.replace("http://", "http://bob:hunter2@") + "/orders?api_key=hunter2")
    with pytest.raises(DeliveryError) as info:
        await s.send(make_delivery())
    await s.close()
    assert "hunter2" not in str(info.value)
    assert str(info.value) == f"HTTP 400 from {target.url}/orders?…"


# ----------------------------------------------------------------------------- static auth


@pytest.mark.parametrize(("auth", "header", "value"), [
    ({"bearer": {"token": "tok"}}, "authorization", "Bearer tok"),
    ({"basic": {"username": "erp", "password": "pw"}}, "authorization",
     "Basic " + base64.b64encode(b"erp:pw").decode()),
    ({"api_key": {"header": "X-Api-Token", "value": "k1"}}, "x-api-token", "k1"),
    ({"api_key": {"value": "k2"}}, "x-api-key", "k2"),
])
async def test_static_auth(target: TargetServer, make_delivery: MakeDelivery,
                           auth: dict[str, Any], header: str, value: str) -> None:
    s = http_sink(target.url_for("/orders"), auth=auth)
    await s.send(make_delivery())
    await s.close()
    assert target.requests[0].headers[header] == value


async def test_wrong_static_token_is_permanent_without_a_second_try(
        target: TargetServer, make_delivery: MakeDelivery) -> None:
    target.require_bearer("right")
    s = http_sink(target.url_for("/orders"), auth={"bearer": {"token": "wrong"}})
    with pytest.raises(DeliveryFailed) as info:
        await s.retry.run(lambda: s.send(make_delivery()))
    await s.close()
    assert info.value.permanent and info.value.last_error.status == 401
    assert len(target.requests) == 1


def test_secrets_stay_out_of_reprs() -> None:
    config = HttpSinkConfig.model_validate({"name": "erp", "type": "http", "url": "https://erp/x",
                                            "auth": {"basic": {"username": "u", "password": "hunter2"}}})
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())


async def test_connections_are_bounded_and_reused(target: TargetServer, make_delivery: MakeDelivery) -> None:
    s = http_sink(target.url_for("/orders"), max_connections=3)
    target.set_default(Reply(200, {"ok": True}, delay=0.02))
    await asyncio.gather(*(s.send(make_delivery(record_id=f"r{i}")) for i in range(30)))
    await s.close()
    assert len(target.requests) == 30
    assert len({r.client for r in target.requests}) == 3  # keep-alive: 3 connections carried all 30


async def test_single_connection(target: TargetServer, make_delivery: MakeDelivery) -> None:
    s = http_sink(target.url_for("/orders"), max_connections=1)
    await asyncio.gather(*(s.send(make_delivery(record_id=f"r{i}")) for i in range(10)))
    await s.close()
    assert len(target.requests) == 10
    assert len({r.client for r in target.requests}) == 1
