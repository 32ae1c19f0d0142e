"""OAuth2 client credentials: one shared, cached token; refreshed on expiry and on a 401."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from syncbus.errors import DeliveryError
from syncbus.sinks.auth import HttpAuth, OAuth2Auth, OAuth2ClientCredentials, OAuth2TokenProvider
from syncbus.sinks.base import Delivery
from syncbus.sinks.http import HttpSink
from syncbus.sinks.retry import DeliveryFailed
from tests.sinks.target_server import Reply, TargetServer

MakeDelivery = Callable[..., Delivery]


def oauth_sink(target: TargetServer, token_url: str, **oauth: Any) -> HttpSink:
    credentials = {"token_url": token_url, "client_id": "syncbus", "client_secret": "s3cret"}
    credentials.update(oauth)
    return HttpSink({"name": "erp", "type": "http", "url": target.url_for("/orders"), "timeout": "2s",
                     "retry": {"attempts": 3, "initial": "10ms", "max": "50ms"},
                     "auth": {"oauth2_client_credentials": credentials}})


def provider_of(sink: HttpSink) -> OAuth2TokenProvider:
    assert isinstance(sink.auth, OAuth2Auth)
    return sink.auth.provider


async def test_one_token_request_for_many_concurrent_sends(target: TargetServer, make_delivery: MakeDelivery) -> None:
    token_url = target.oauth(expires_in=3600, delay=0.05)  # a slow token endpoint widens the race
    sink = oauth_sink(target, token_url, scope=["orders.write", "orders.read"], audience="erp-api")
    await asyncio.gather(*(sink.send(make_delivery(record_id=f"r{i}")) for i in range(50)))
    await asyncio.gather(*(sink.send(make_delivery(record_id=f"s{i}")) for i in range(10)))  # cached
    await sink.close()

    (token_request,) = target.token_requests
    form = token_request.form()
    assert form == {"grant_type": "client_credentials", "scope": "orders.write orders.read",
                    "audience": "erp-api", "client_id": "syncbus", "client_secret": "s3cret"}
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(b"syncbus:s3cret").decode()
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    orders = target.requests_to("/orders")
    assert len(orders) == 60
    assert {r.headers["authorization"] for r in orders} == {"Bearer token-1"}
    assert {r.status for r in orders} == {200}


@pytest.mark.parametrize(("client_auth", "basic", "form_fields"), [
    ("basic", True, False), ("post", False, True), ("both", True, True),
])
async def test_client_auth_styles(target: TargetServer, make_delivery: MakeDelivery,
                                  client_auth: str, basic: bool, form_fields: bool) -> None:
    sink = oauth_sink(target, target.oauth(), client_auth=client_auth)
    await sink.send(make_delivery())
    await sink.close()
    (req,) = target.token_requests
    assert ("authorization" in req.headers) is basic
    assert ("client_secret" in req.form()) is form_fields
    assert target.requests_to("/orders")[0].status == 200


async def test_token_is_refreshed_before_it_expires(target: TargetServer, make_delivery: MakeDelivery) -> None:
    """Server-side the token dies after 1s; the sink renews it at 0.9s, so no send ever sees a 401."""
    sink = oauth_sink(target, target.oauth(expires_in=1))
    await sink.send(make_delivery())
    await sink.send(make_delivery())
    await asyncio.sleep(1.0)
    await sink.send(make_delivery())
    await sink.close()
    assert len(target.token_requests) == 2
    assert [r.headers["authorization"] for r in target.requests_to("/orders")] == \
        ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    assert {r.status for r in target.requests_to("/orders")} == {200}


async def test_expiry_uses_expires_in_minus_a_margin() -> None:
    """With a fake clock: 3600s tokens are reused until 3570s (30s margin), then fetched again."""
    now = [1000.0]
    tokens = iter(["a", "b", "c"])

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": next(tokens), "expires_in": 3600})

    client = httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint))
    config = OAuth2ClientCredentials(token_url="https://idp/token", client_id="c", client_secret="s")
    provider = OAuth2TokenProvider(config, client, clock=lambda: now[0])
    assert await provider.token() == "a"
    now[0] += 3569
    assert await provider.token() == "a"
    now[0] += 2
    assert await provider.token() == "b"
    provider.invalidate("a")  # a stale invalidation must not throw away the fresh token
    assert await provider.token() == "b"
    provider.invalidate("b")
    assert await provider.token() == "c"
    assert provider.fetches == 3
    await client.aclose()


async def test_401_invalidates_the_token_and_retries_once_within_the_attempt(
        target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth())
    await sink.send(make_delivery())
    target.revoke_tokens()  # e.g. the IdP rotated its keys
    outcomes: list[str] = []
    attempts = await sink.retry.run(lambda: sink.send(make_delivery()), lambda o, d, e: outcomes.append(o))
    await sink.close()
    assert (attempts, outcomes) == (1, ["ok"])
    assert [(r.headers["authorization"], r.status) for r in target.requests_to("/orders")] == \
        [("Bearer token-1", 200), ("Bearer token-1", 401), ("Bearer token-2", 200)]
    assert len(target.token_requests) == 2


async def test_many_401s_at_once_fetch_one_new_token(target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth())
    await sink.send(make_delivery())
    target.revoke_tokens()
    await asyncio.gather(*(sink.send(make_delivery(record_id=f"r{i}")) for i in range(20)))
    await sink.close()
    assert len(target.token_requests) == 2
    final = [r for r in target.requests_to("/orders") if r.status == 200]
    assert len(final) == 21


async def test_a_second_401_is_permanent(target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth())
    target.script(401, 401, path="/orders")
    with pytest.raises(DeliveryFailed) as info:
        await sink.retry.run(lambda: sink.send(make_delivery()))
    await sink.close()
    assert info.value.permanent and info.value.attempts == 1
    assert info.value.last_error.status == 401
    assert len(target.requests_to("/orders")) == 2 and len(target.token_requests) == 2


async def test_token_endpoint_refusing_credentials_is_permanent(
        target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth(client_secret="other"))
    with pytest.raises(DeliveryFailed) as info:
        await sink.retry.run(lambda: sink.send(make_delivery()))
    await sink.close()
    assert info.value.permanent and info.value.attempts == 1
    message = str(info.value.last_error)
    assert message.startswith(f"token endpoint refused client credentials: HTTP 401 from {target.url}/oauth/token: ")
    assert "invalid_client" in message
    assert "s3cret" not in message
    assert target.requests_to("/orders") == []


async def test_token_endpoint_5xx_is_retryable(target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth())
    target.script(503, path="/oauth/token")
    outcomes: list[str] = []
    assert await sink.retry.run(lambda: sink.send(make_delivery()), lambda o, d, e: outcomes.append(o)) == 2
    await sink.close()
    assert outcomes == ["retryable", "ok"]
    assert [r.status for r in target.token_requests] == [503, 200]


async def test_token_endpoint_down_is_retryable(
        target: TargetServer, dead_url: str, make_delivery: MakeDelivery) -> None:
    target.require_bearer("never-used")
    sink = oauth_sink(target, dead_url)
    with pytest.raises(DeliveryError) as info:
        await sink.send(make_delivery())
    await sink.close()
    assert info.value.retryable
    assert str(info.value) == f"token endpoint connection refused: {dead_url}"


async def test_concurrent_senders_share_one_failed_token_request(
        target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth())
    target.script(Reply(503, delay=0.1), path="/oauth/token")
    results = await asyncio.gather(*(sink.send(make_delivery()) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, DeliveryError) and r.retryable for r in results)
    assert len(target.token_requests) == 1
    await sink.send(make_delivery())  # the next attempt fetches anew
    await sink.close()
    assert len(target.token_requests) == 2


async def test_token_response_without_access_token_is_permanent(
        target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth())
    target.script(Reply(200, "<html>login</html>"), path="/oauth/token")
    with pytest.raises(DeliveryError) as info:
        await sink.send(make_delivery())
    await sink.close()
    assert not info.value.retryable
    assert "returned no access_token" in str(info.value) and "<html>login</html>" in str(info.value)


async def test_cancelled_sender_does_not_cancel_the_shared_token_request(
        target: TargetServer, make_delivery: MakeDelivery) -> None:
    sink = oauth_sink(target, target.oauth(delay=0.1))
    first = asyncio.create_task(sink.send(make_delivery()))
    await asyncio.sleep(0.03)
    second = asyncio.create_task(sink.send(make_delivery()))
    await asyncio.sleep(0.01)
    first.cancel()
    await second
    await sink.close()
    assert first.cancelled()
    assert len(target.token_requests) == 1


@pytest.mark.parametrize(("auth", "fragment"), [
    ({}, "give one auth scheme"),
    ({"bearer": {"token": "a"}, "api_key": {"value": "b"}}, "give only one auth scheme, not bearer and api_key"),
])
def test_exactly_one_auth_scheme(auth: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        HttpAuth.model_validate(auth)
