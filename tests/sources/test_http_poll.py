"""http_poll against a real paged API (tests/sources/http_poll_api.py), through the real poll runner.

Paging (cursor, watermark, page token, Link header, next link in the body),
the durable cursor (stored only after the ack, resumed after a restart), the
failure classes (down: retried, cursor kept; refused: says what and where),
credentials from the environment only, and credentials never leaving the
API's origin.
"""

from __future__ import annotations

import asyncio
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.config import load_connector_file
from syncbus.errors import ConfigErrors
from syncbus.metrics import Metrics
from syncbus.sources.http_poll import HttpPollRefused, HttpPollSource, HttpPollUnavailable
from syncbus.sources.poller import PollRunner
from syncbus.sources.publisher import Publisher, PublishError
from syncbus.tracing import TraceRecorder
from tests.sinks.target_server import Reply, TargetServer

from .helpers import State, topic_records
from .http_poll_api import PagedApi
from .test_poller import until
from .test_publisher import RefusingBus


@pytest.fixture
async def api() -> AsyncIterator[PagedApi]:
    async with PagedApi(count=5, page_size=2) as server:
        yield server


def source(api: TargetServer, path: str, **options: Any) -> HttpPollSource:
    return HttpPollSource({"name": "crm", "type": "http_poll", "topic": "crm.in", "url": api.url_for(path),
                           **options})


def runner(src: HttpPollSource, bus: Any, state: State, metrics: Metrics) -> PollRunner:
    return PollRunner(src, Publisher(bus, metrics, TraceRecorder(state)), state, metrics, node="node-a")


def ids(records: list[Any]) -> list[int]:
    return [orjson.loads(r.value)["id"] for r in records]


CURSOR = {"cursor_param": "since", "cursor_path": "next_cursor", "has_more_path": "has_more", "key": "id"}


# -- paging and the durable cursor ----------------------------------------------------------


async def test_cursor_paging_stores_the_cursor_and_a_restart_resumes_after_it(
        api: PagedApi, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    first = runner(source(api, "/cursor", **CURSOR), bus, state, metrics)
    result = await first.run()
    await first.stop()
    assert (result.records, result.pages) == (5, 3)
    assert state.get_checkpoint("crm") == {"cursor": 5}
    assert [q.get("since") for q in api.queries("/cursor")] == [None, "2", "4"]  # has_more=false: no 4th request

    api.add(3)  # a restart (new source instance) asks after the stored cursor only
    second = runner(source(api, "/cursor", **CURSOR), bus, state, metrics)
    again = await second.run()
    await second.stop()
    assert again.records == 3 and state.get_checkpoint("crm") == {"cursor": 8}
    assert api.queries("/cursor")[3]["since"] == "5"
    published = await topic_records(bus, "crm.in")
    assert ids(published) == list(range(1, 9))  # each once, in order
    assert [r.key for r in published] == [str(n) for n in range(1, 9)]
    assert published[0].headers["content-type"] == "application/json"
    assert orjson.loads(published[0].value) == {"id": 1, "name": "rec-1", "updated_at": "2026-01-01T00:00:01"}


async def test_watermark_from_the_last_record_with_a_limit_parameter(
        api: PagedApi, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    src = source(api, "/watermark", items="data", cursor_param="updated_since", cursor_record="updated_at",
                 limit_param="limit", batch_size=2, params={"updated_since": "2026-01-01T00:00:01"})
    result = await runner(src, bus, state, metrics).run()
    assert result.records == 4  # record 1 is not after the initial value given in params
    assert state.get_checkpoint("crm") == {"cursor": "2026-01-01T00:00:05"}
    queries = api.queries("/watermark")
    assert [q["updated_since"] for q in queries] == ["2026-01-01T00:00:01", "2026-01-01T00:00:03",
                                                     "2026-01-01T00:00:05"]
    assert {q["limit"] for q in queries} == {"2"}  # the short last page (1 < 2) ended the run, no 4th request
    assert len(queries) == 3


async def test_page_tokens_read_the_whole_listing_every_run(api: PagedApi, bus: EmbeddedBus, state: State,
                                                            metrics: Metrics) -> None:
    src = source(api, "/tokens", items="people", key="id", page_token_path="nextPageToken",
                 page_token_param="pageToken", params={"fields": "all"})
    r = runner(src, bus, state, metrics)
    assert (await r.run()).records == 5
    assert [q.get("pageToken") for q in api.queries("/tokens")] == [None, "t2", "t4"]
    assert {q["fields"] for q in api.queries("/tokens")} == {"all"}  # fixed params on every page
    assert (await r.run()).records == 5  # no cursor: a snapshot API is read in full each time
    assert state.get_checkpoint("crm") == {"cursor": None}


async def test_link_header_and_next_link_in_the_body_are_followed(api: PagedApi, bus: EmbeddedBus,
                                                                  state: State, metrics: Metrics) -> None:
    links = source(api, "/links", items="", next_url="Link", key="id")
    assert (await runner(links, bus, state, metrics).run()).records == 5
    assert [q.get("page") for q in api.queries("/links")] == [None, "2", "3"]
    body = HttpPollSource({"name": "body", "type": "http_poll", "topic": "body.in", "url": api.url_for("/body-next"),
                           "items": "data.rows", "next_url": "links.next"})
    assert (await runner(body, bus, state, metrics).run()).records == 5  # relative next links resolved
    assert [q.get("page") for q in api.queries("/body-next")] == [None, "2", "3"]
    assert ids(await topic_records(bus, "body.in")) == [1, 2, 3, 4, 5]


async def test_an_api_page_larger_than_batch_size_moves_the_cursor_only_once_all_of_it_is_on_the_bus(
        bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    async with PagedApi(count=5, page_size=5) as api:
        flaky = RefusingBus(bus, {"4"})  # the bus refuses record 4: the second piece of the API's one page
        r = runner(source(api, "/cursor", **CURSOR, batch_size=2), flaky, state, metrics)
        with pytest.raises(PublishError):
            await r.run()
        assert state.get_checkpoint("crm") == {"cursor": None}  # records 1-2 are on the bus, the page is not
        flaky.refuse.clear()
        result = await r.run()  # starts the listing again from the durable cursor
        assert result.cursor == {"cursor": 5} and result.pages == 3
        got = ids(await topic_records(bus, "crm.in"))
        assert sorted(set(got)) == [1, 2, 3, 4, 5]  # nothing lost; 1-3 twice (at-least-once)
        assert [q.get("since") for q in api.queries("/cursor")] == [None, None]


async def test_a_full_load_beside_a_running_node_never_moves_the_cursor_back(
        api: PagedApi, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    state.put_checkpoint("crm", {"cursor": 9})
    result = await runner(source(api, "/cursor", **CURSOR), bus, state, metrics).run_full()
    assert result.records == 5 and state.get_checkpoint("crm") == {"cursor": 9}
    assert api.queries("/cursor")[0].get("since") is None  # the full load started from the beginning


# -- failures ------------------------------------------------------------------------------------


async def test_a_failing_server_is_retried_with_backoff_and_the_cursor_does_not_move(
        api: PagedApi, bus: EmbeddedBus, state: State, metrics: Metrics) -> None:
    state.put_checkpoint("crm", {"cursor": 2})
    api.script(503, Reply(502, "bad gateway"), path="/cursor")
    r = runner(source(api, "/cursor", **CURSOR, interval="1h", retry={"initial": "50ms", "max": "100ms"}),
               bus, state, metrics)
    with pytest.raises(HttpPollUnavailable, match=r"source 'crm': GET http://127\.0\.0\.1:\d+/cursor\?…: HTTP 503"):
        await r.run()
    assert state.get_checkpoint("crm") == {"cursor": 2}
    await r.start()
    try:
        await until(lambda: state.get_checkpoint("crm") == {"cursor": 5})
        await until(lambda: r.status()["up"] is True)
    finally:
        await r.stop()
    assert [req.status for req in api.requests_to("/cursor")][:4] == [503, 502, 200, 200]
    assert {q.get("since") for q in api.queries("/cursor")[:3]} == {"2"}  # every retry from the stored cursor
    assert ids(await topic_records(bus, "crm.in")) == [3, 4, 5]


async def test_connection_refused_and_timeouts_are_the_api_being_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody listens there
    down = HttpPollSource({"name": "crm", "type": "http_poll", "topic": "t", "url": f"http://127.0.0.1:{port}/x"})
    await down.start()
    try:
        with pytest.raises(HttpPollUnavailable, match=rf"connection refused: http://127\.0\.0\.1:{port}/x"):
            await down.poll(None, full=True, limit=10)
    finally:
        await down.stop()
    async with TargetServer(default=Reply(200, {"items": []}, delay=1.0)) as slow:
        src = source(slow, "/slow", timeout="200ms")
        await src.start()
        try:
            with pytest.raises(HttpPollUnavailable, match=r"GET http://127\.0\.0\.1:\d+/slow: no answer within 200ms"):
                await src.poll(None, full=True, limit=10)
        finally:
            await src.stop()


async def test_a_4xx_fails_the_slot_at_once_saying_what_and_where(api: PagedApi, bus: EmbeddedBus, state: State,
                                                                  metrics: Metrics) -> None:
    api.script(Reply(404, {"error": "no such collection: contactz"}), path="/cursor")
    r = runner(source(api, "/cursor", **CURSOR, interval="1h", retry={"initial": "50ms", "max": "100ms"}),
               bus, state, metrics)
    await r.start()
    try:
        await until(lambda: any(s.ok is False for s in state.slots("crm")))
    finally:
        await r.stop()
    [slot] = state.slots("crm")
    assert len(api.requests_to("/cursor")) == 1  # refused: not retried within the slot
    for text in (slot.detail, r.status()["last_error"]):
        assert "source 'crm': GET http://127.0.0.1" in text and "/cursor" in text
        assert "HTTP 404 Not Found" in text and "no such collection: contactz" in text
    assert state.get_checkpoint("crm") is None


async def test_a_response_without_the_records_list_is_refused(api: PagedApi) -> None:
    src = source(api, "/cursor", items="data.rows")
    await src.start()
    try:
        with pytest.raises(HttpPollRefused, match=r"/cursor.*expected a list of records at 'data\.rows', found no"):
            await src.poll(None, full=True, limit=10)
        api.script(Reply(200, "<html>maintenance</html>"), path="/cursor")
        with pytest.raises(HttpPollRefused, match=r"HTTP 200 but the body is not JSON .*<html>maintenance"):
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()


async def test_an_oversized_response_is_refused(api: PagedApi) -> None:
    api.script(Reply(200, {"items": ["x" * 4000]}), path="/cursor")
    src = source(api, "/cursor", max_bytes="2KiB")
    await src.start()
    try:
        with pytest.raises(HttpPollRefused, match="more than max_bytes=2048"):
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()


# -- credentials ---------------------------------------------------------------------------------


def load(tmp_path: Path, block: str, env: dict[str, str]) -> HttpPollSource:
    path = tmp_path / "poll.yaml"
    path.write_text(textwrap.dedent(block))
    component = load_connector_file(path, env=env).sources["crm"]
    return HttpPollSource(component.config)


async def test_credential_headers_come_from_the_environment_only(api: PagedApi, tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match=r"poll\.yaml:8:\d+: header 'Authorization' carries a credential.*_env"):
        load(tmp_path, f"""\
            sources:
              - name: crm
                type: http_poll
                topic: crm.in
                url: {api.url_for('/cursor')}
                headers:
                  Accept-Language: zh-CN
                  Authorization: Bearer s3cret
            """, env={})
    src = load(tmp_path, f"""\
        sources:
          - name: crm
            type: http_poll
            topic: crm.in
            url: {api.url_for('/cursor')}
            headers:
              Accept-Language: zh-CN
              Authorization_env: CRM_AUTH
            """, env={"CRM_AUTH": "Bearer from-env"})
    api.require_bearer("from-env")
    await src.start()
    try:
        batch = await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()
    assert len(batch.records) == 2
    [req] = api.requests_to("/cursor")
    assert req.header("authorization") == "Bearer from-env" and req.header("accept-language") == "zh-CN"


async def test_oauth2_token_is_fetched_and_refreshed_after_a_401(api: PagedApi, tmp_path: Path) -> None:
    token_url = api.oauth(client_id="syncbus", client_secret="s3cret")
    src = load(tmp_path, f"""\
        sources:
          - name: crm
            type: http_poll
            topic: crm.in
            url: {api.url_for('/cursor')}
            auth: {{oauth2_client_credentials: {{token_url: "{token_url}", client_id: syncbus,
                                                 client_secret_env: CRM_SECRET}}}}
            """, env={"CRM_SECRET": "s3cret"})
    await src.start()
    try:
        assert len((await src.poll(None, full=True, limit=10)).records) == 2
        api.revoke_tokens()
        assert len((await src.poll(None, full=True, limit=10)).records) == 2  # 401, new token, same poll
    finally:
        await src.stop()
    assert [r.status for r in api.requests_to("/cursor")] == [200, 401, 200]
    assert len(api.token_requests) == 2


async def test_wrong_client_credentials_are_refused(api: PagedApi) -> None:
    token_url = api.oauth(client_id="syncbus", client_secret="s3cret")
    src = source(api, "/cursor", auth={"oauth2_client_credentials": {"token_url": token_url, "client_id": "syncbus",
                                                                     "client_secret": "wrong"}})
    await src.start()
    try:
        with pytest.raises(HttpPollRefused, match="token endpoint refused client credentials: HTTP 401"):
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()


async def test_credentials_never_follow_a_link_or_redirect_to_another_host(api: PagedApi) -> None:
    async with TargetServer() as elsewhere:
        api.script(Reply(200, {"data": {"rows": [{"id": 1}]}, "links": {"next": elsewhere.url_for("/steal")}}),
                   path="/body-next")
        src = source(api, "/body-next", items="data.rows", next_url="links.next",
                     headers={"X-Api-Key": "k"}, batch_size=1)
        await src.start()
        try:
            first = await src.poll(None, full=True, limit=1)
            assert len(first.records) == 1 and first.more
            with pytest.raises(HttpPollRefused, match=r"the next page .*/steal is on another host"):
                await src.poll(first.cursor, full=True, limit=1)
            api.script(Reply(302, headers={"Location": elsewhere.url_for("/steal")}), path="/body-next")
            with pytest.raises(HttpPollRefused, match="HTTP 302 redirects to another host"):
                await src.poll(None, full=True, limit=1)
            api.script(Reply(307, headers={"Location": "/links"}), path="/body-next")  # same origin: followed
            plain = source(api, "/body-next", items="")
            await plain.start()
            try:
                moved = await plain.poll(None, full=True, limit=10)
            finally:
                await plain.stop()
            assert len(moved.records) == 2 and api.requests[-1].path == "/links"
        finally:
            await src.stop()
        assert elsewhere.requests == []


# -- cancellation ------------------------------------------------------------------------------


async def test_stop_during_a_slow_request_leaves_nothing_running(bus: EmbeddedBus, state: State,
                                                                 metrics: Metrics) -> None:
    async with TargetServer(default=Reply(200, {"items": []}, delay=5.0)) as slow:
        r = runner(source(slow, "/slow", interval="1h"), bus, state, metrics)
        await r.start()
        await until(lambda: len(slow.requests) == 1)
        await asyncio.wait_for(r.stop(), 2)
        assert state.slots("crm") == [] and r.status()["state"] == "stopped"
