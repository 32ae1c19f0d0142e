"""The paging rules of http_poll (sources/http_poll_paging.py) on their own: no server needed."""

from __future__ import annotations

import httpx
import pytest

from syncbus.sources.http_poll import HttpPollConfig
from syncbus.sources.http_poll_paging import MISSING, PageError, Paging, dig, link_next, read_page

BASE = httpx.URL("https://api.example.com/v1/items?per_page=50")


def paging(**options: str) -> Paging:
    return HttpPollConfig.model_validate({"name": "p", "type": "http_poll", "topic": "t", "url": str(BASE),
                                          **options}).paging()


@pytest.mark.parametrize(("header", "expected"), [
    ('<https://api.example.com/v1/items?page=3>; rel="next", <https://api.example.com/v1/items?page=9>; rel="last"',
     "https://api.example.com/v1/items?page=3"),
    ('<https://a.example/x?page=1>; rel="prev", <https://a.example/x?page=3>; rel=next',
     "https://a.example/x?page=3"),
    ('</items?cursor=abc>; title="x, y"; rel="next"', "/items?cursor=abc"),  # a comma inside a quoted parameter
    ('<https://a.example/x?page=2>; rel="prev next"', "https://a.example/x?page=2"),
    ('<https://a.example/x?page=1>; rel="first"', None),
    ("", None),
    (None, None),
])
def test_link_header(header: str | None, expected: str | None) -> None:
    assert link_next(header) == expected


def test_dig() -> None:
    body = {"data": {"rows": [{"id": 7}]}, "meta": {"next": None}}
    assert dig(body, "data.rows.0.id") == 7
    assert dig(body, "") is body
    assert dig(body, "meta.next") is None
    assert dig(body, "meta.cursor") is MISSING
    assert dig(body, "data.rows.5") is MISSING


def test_cursor_paging_stops_when_the_page_is_empty_or_the_cursor_stands_still() -> None:
    p = paging(cursor_param="since", cursor_path="next")
    page = read_page({"items": [1, 2], "next": "c2"}, httpx.Headers(), BASE, BASE, p, "c1", 100)
    assert page.cursor == "c2" and page.next == "https://api.example.com/v1/items?per_page=50&since=c2"
    assert read_page({"items": [], "next": "c2"}, httpx.Headers(), BASE, BASE, p, "c2", 100).next is None
    assert read_page({"items": [3], "next": "c2"}, httpx.Headers(), BASE, BASE, p, "c2", 100).next is None
    none = read_page({"items": []}, httpx.Headers(), BASE, BASE, p, "c2", 100)
    assert none.cursor is MISSING and none.next is None  # no cursor in the answer: keep the old one


def test_has_more_and_a_short_page_end_cursor_paging() -> None:
    flagged = paging(cursor_param="since", cursor_path="next", has_more_path="has_more")
    done = read_page({"items": [1], "next": "c2", "has_more": False}, httpx.Headers(), BASE, BASE, flagged, "c1", 5)
    assert done.next is None
    limited = paging(cursor_param="since", cursor_record="ts", limit_param="limit")
    short = read_page({"items": [{"ts": 4}]}, httpx.Headers(), BASE, BASE, limited, 1, 2)
    assert short.cursor == 4 and short.next is None
    full = read_page({"items": [{"ts": 3}, {"ts": 4}]}, httpx.Headers(), BASE, BASE, limited, 1, 2)
    assert full.next == "https://api.example.com/v1/items?per_page=50&since=4"


def test_page_tokens_keep_the_first_requests_parameters() -> None:
    p = paging(page_token_path="nextPageToken", page_token_param="pageToken")
    url = BASE.copy_set_param("pageToken", "t1")
    page = read_page({"items": [1], "nextPageToken": "t2"}, httpx.Headers(), url, BASE, p, None, 10)
    assert page.next == "https://api.example.com/v1/items?per_page=50&pageToken=t2"
    assert read_page({"items": [1], "nextPageToken": ""}, httpx.Headers(), url, BASE, p, None, 10).next is None


def test_what_the_options_do_not_describe_is_a_page_error() -> None:
    p = paging(cursor_param="since", cursor_record="ts")
    with pytest.raises(PageError, match=r"expected a list of records at 'items', found dict"):
        read_page({"items": {"a": 1}}, httpx.Headers(), BASE, BASE, p, None, 10)
    with pytest.raises(PageError, match=r"the last record has no 'ts'"):
        read_page({"items": [{"ts": 1}, {"id": 2}]}, httpx.Headers(), BASE, BASE, p, None, 10)
    with pytest.raises(PageError, match="the cursor must be text or a number, got dict"):
        read_page({"items": [{"ts": {"nested": 1}}]}, httpx.Headers(), BASE, BASE, p, None, 10)


@pytest.mark.parametrize(("options", "message"), [
    ({"cursor_param": "since"}, "cursor_param needs cursor_path or cursor_record"),
    ({"cursor_path": "a", "cursor_record": "b"}, "not both"),
    ({"page_token_path": "next"}, "page_token_path and page_token_param go together"),
    ({"next_url": "Link", "page_token_path": "a", "page_token_param": "b"}, "not both"),
    ({"url": "ftp://example.com/x"}, "expected http://host"),
])
def test_inconsistent_options_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpPollConfig.model_validate({"name": "p", "type": "http_poll", "topic": "t", "url": str(BASE), **options})
