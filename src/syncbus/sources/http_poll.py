"""``http_poll``: GET records from a REST API on a schedule, page by page, remembering a cursor.

What is remembered, and when, is the whole point of the type:

* The **durable cursor** is a value the API gives out (a response field,
  ``cursor_path``, or a field of the last record, ``cursor_record``). It
  moves only once every record of the API page it came with is on the bus
  (the poll runner stores it after the ack), so a crash re-reads at most
  that page: duplicates possible, losses not.
* **Paging within a run** (next links, page tokens) is transient: page
  tokens expire, so they are never stored. A run that stops half-way (a
  crash, a 503 on page 7) starts its listing again from the durable cursor.
  An API page larger than ``batch_size`` is handed to the runner in pieces
  from memory.
* An API without a cursor (a plain paged listing) is read in full on every
  run -- the snapshot semantics such APIs have.

Failures: a connection refused, a timeout, HTTP 5xx/408/425/429 are
"the API is down" (:class:`HttpPollUnavailable`): the runner retries with
backoff and the cursor stays. Any other 4xx, or a 2xx that is not what the
options describe, is :class:`HttpPollRefused`: the slot fails at once with a
message saying what was asked where and what came back.

Credentials come from the environment only: ``auth`` takes the same schemes
as the HTTP sink (bearer, basic, api_key, OAuth2 client credentials, each
secret as ``x_env``), and a credential header (Authorization, X-API-Key,
Cookie, anything named like a token) in ``headers`` must be ``Name_env: VAR``
(the config loader refuses it otherwise). Next links that leave the API's
origin are refused, so credentials never travel to another host.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Literal

import httpx
import orjson
from pydantic import Field, field_validator, model_validator

from ..errors import DeliveryError, SyncbusError
from ..sinks.auth import (
    RETRYABLE_STATUS,
    Authenticator,
    HttpAuth,
    body_snippet,
    check_http_url,
    describe_transport_error,
    make_authenticator,
    safe_url,
)
from ..sinks.tls import ClientTls, tls_context
from ..units import Duration, Size, format_duration
from .base import NewRecord, PollBatch, PollSource, PollSourceConfig, SourceConfig
from .http_poll_paging import (
    LINK_HEADER,
    MISSING,
    Page,
    PageError,
    Paging,
    cursor_text,
    dig,
    read_page,
    same_origin,
    with_cursor,
)
from .poller import PollRefused

MAX_EMPTY_PAGES = 100  # empty pages that still point at a next page, followed within one poll at most
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class HttpPollError(SyncbusError):
    """Base of what ``http_poll`` raises."""


class HttpPollUnavailable(HttpPollError):
    """The API is down or overloaded (no connection, timeout, 5xx, 408/425/429): retried with backoff."""


class HttpPollRefused(HttpPollError, PollRefused):
    """The API answered and said no (4xx), or answered something the options do not describe."""


class HttpPollConfig(PollSourceConfig, ClientTls):
    """``type: http_poll`` -- what to GET, how to find the records, the next page and the cursor."""

    type: Literal["http_poll"] = "http_poll"
    url: str = Field(description="URL of the first page (or url_env: VAR); fixed query parameters may be in it.")
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters added to the first request of every run. A parameter named like "
                    "`cursor_param` gives the value for the very first run (before any cursor is stored).")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers. Credentials (Authorization, X-API-Key, Cookie, ...) only as "
                    "`Name_env: VAR`.")
    auth: HttpAuth | None = Field(None, description="Credentials, as for the http sink: oauth2_client_credentials, "
                                                    "bearer, basic or api_key (secrets as x_env).")
    items: str = Field("items", description="Dotted path of the list of records in the JSON response "
                                            "(`data.items`); empty: the response itself is the list.")
    key: str | None = Field(None, description="Dotted path of the record key inside each record (e.g. `id`).")
    cursor_param: str | None = Field(
        None, description="Query parameter that sends the stored cursor (e.g. `since`, `starting_after`). "
                          "Cursor paging: with no next_url or page token, the next page is the same URL with "
                          "the new cursor, until a page is empty or the cursor stops moving.")
    cursor_path: str | None = Field(
        None, description="Response field holding the cursor to remember (e.g. `next_cursor`). A cursor that "
                          "is an absolute URL of the same API (a delta link) is requested as is next time.")
    cursor_record: str | None = Field(
        None, description="Instead of cursor_path: a field of the last record to remember, a watermark such as "
                          "`updated_at` (the API must return records in ascending order of it).")
    next_url: str | None = Field(
        None, description=f"How to find the next page's URL: `{LINK_HEADER}` for the RFC 8288 Link header "
                          "(rel=\"next\"), or the dotted path of a response field holding it (`links.next`).")
    page_token_path: str | None = Field(
        None, description="Response field holding the next page token (e.g. `nextPageToken`); none: last page.")
    page_token_param: str | None = Field(
        None, description="Query parameter that sends the page token back (e.g. `pageToken`).")
    has_more_path: str | None = Field(
        None, description="Response field that says whether more pages follow (e.g. `has_more`); saves the "
                          "empty last request of cursor paging.")
    limit_param: str | None = Field(
        None, description="Query parameter that asks for `batch_size` records per page (e.g. `limit`); a "
                          "shorter page then ends cursor paging.")
    timeout: Duration = Field(30.0, gt=0, description="Time limit of one request, connect to last byte (duration).")
    max_bytes: Size = Field(16 * 1024 * 1024, ge=1024, description="Largest response body accepted (size).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not name or any(c in name for c in " :\r\n\0"):
                raise ValueError(f"invalid header name {name!r}")
            if any(c in val for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: value must be one line")
        return value

    @model_validator(mode="after")
    def _paging(self) -> HttpPollConfig:
        if self.cursor_path is not None and self.cursor_record is not None:
            raise ValueError("give cursor_path (a response field) or cursor_record (a record field), not both")
        if (self.page_token_path is None) != (self.page_token_param is None):
            raise ValueError("page_token_path and page_token_param go together")
        if self.next_url is not None and self.page_token_path is not None:
            raise ValueError("give next_url or page_token_path/page_token_param, not both")
        if self.cursor_param is not None and self.cursor_path is None and self.cursor_record is None:
            raise ValueError("cursor_param needs cursor_path or cursor_record: where the next cursor comes from")
        return self

    def paging(self) -> Paging:
        return Paging(items=self.items, cursor_param=self.cursor_param, cursor_path=self.cursor_path,
                      cursor_record=self.cursor_record, next_url=self.next_url,
                      page_token_path=self.page_token_path, page_token_param=self.page_token_param,
                      has_more_path=self.has_more_path, limit_param=self.limit_param)




@dataclass
class _Listing:
    """One run's walk through the API's pages, kept between polls of the same run (never stored)."""

    durable: Any                       # the cursor safe to remember: every record before it is on the bus
    buffered: list[NewRecord] = field(default_factory=list)  # the rest of the current API page
    page_cursor: Any = MISSING         # the cursor that becomes durable once `buffered` is handed out
    next: str | None = None            # URL of the next API page of this run
    handed: Any = field(default_factory=object)  # the cursor object last returned: handed back to continue


class HttpPollSource(PollSource):
    """GET records from a REST API: cursor or page-token paging, a durable cursor, credentials from the environment.

    Each run starts at `url` (plus `params`, plus `cursor_param` set to the
    stored cursor), takes the records at `items`, and follows the pages --
    the cursor (`cursor_param` + `cursor_path`/`cursor_record`), a page token
    (`page_token_path` + `page_token_param`) or a next link (`next_url`: a
    response field or the `Link` header) -- until the last. The cursor is
    stored once the records before it are on the bus, so a restart resumes
    after them. Connection failures, timeouts and 5xx/429 are retried with
    backoff (the cursor stays); other 4xx fail the run with the URL and the
    API's answer.
    """

    Config: ClassVar[type[SourceConfig]] = HttpPollConfig
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "beta"
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "crm-contacts", "type": "http_poll", "url_env": "CRM_API_URL", "topic": "crm.contacts",
         "auth": {"bearer": {"token_env": "CRM_API_TOKEN"}}, "items": "data", "key": "id",
         "cursor_param": "updated_since", "cursor_record": "updated_at", "limit_param": "limit",
         "interval": "1m"},
        {"name": "shop-orders", "type": "http_poll", "url": "https://shop.example.com/api/orders",
         "topic": "shop.orders", "headers": {"X-API-Key_env": "SHOP_API_KEY"}, "items": "orders",
         "key": "order_no", "cursor_param": "cursor", "cursor_path": "next_cursor", "has_more_path": "has_more",
         "schedule": "*/5 * * * *", "timezone": "Asia/Shanghai"},
        {"name": "hr-people", "type": "http_poll", "url": "https://hr.example.com/v1/people", "topic": "hr.people",
         "items": "people", "key": "employeeId", "page_token_path": "nextPageToken", "page_token_param": "pageToken",
         "schedule": "0 22 * * *", "timezone": "Asia/Shanghai", "ca_file": "/etc/syncbus/hr-ca.pem"},
        {"name": "tickets", "type": "http_poll", "url": "https://desk.example.com/api/tickets?per_page=100",
         "topic": "desk.tickets", "next_url": "Link", "key": "id", "items": ""},
    ]
    config: HttpPollConfig

    def __init__(self, config: SourceConfig | Mapping[str, Any]) -> None:
        super().__init__(config)
        self._client: httpx.AsyncClient | None = None
        self._auth: Authenticator | None = None
        self._listing: _Listing | None = None
        base = httpx.URL(self.config.url).copy_merge_params(self.config.params)
        if self.config.limit_param is not None:
            base = base.copy_set_param(self.config.limit_param, str(self.config.batch_size))
        self._base = base

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None:
            return
        cfg = self.config
        # redirects are followed by _get, only within the API's origin: httpx would carry custom
        # credential headers (X-API-Key) to any host a redirect names
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout), verify=tls_context(cfg),
                                         follow_redirects=False, trust_env=False,
                                         headers={"Accept": "application/json"})
        self._auth = make_authenticator(cfg.auth, self._client, cfg.timeout)

    async def stop(self) -> None:
        client, self._client = self._client, None
        self._auth = None
        self._listing = None
        if client is not None:
            await client.aclose()

    # -- polling -----------------------------------------------------------------------

    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        listing = self._listing
        if listing is None or cursor is not listing.handed:  # a new run: walk from the durable cursor
            listing = _Listing(durable=self.durable(cursor))
            listing.next = str(self._first_url(listing.durable))
            self._listing = listing
        empty = 0
        while not listing.buffered and listing.next is not None:
            await self._fetch(listing, limit)
            if not listing.buffered:
                self._settle(listing)
                empty += 1
                if empty > MAX_EMPTY_PAGES:
                    raise HttpPollRefused(f"{self._where()}: {empty} empty pages in a row, each pointing at "
                                          "another; check next_url / page_token_path")
        records, listing.buffered = listing.buffered[:limit], listing.buffered[limit:]
        if not listing.buffered:
            self._settle(listing)
        more = bool(listing.buffered) or listing.next is not None
        out: Any = {"cursor": listing.durable}
        if not records and out == cursor:
            out = cursor  # nothing new: the very cursor we were given
        listing.handed = out
        if not more:
            self._listing = None
        return PollBatch(records=records, cursor=out, more=more)

    @staticmethod
    def durable(cursor: Any | None) -> Any:
        """The API's cursor inside the stored one (``{"cursor": value}``; None: never stored)."""
        if isinstance(cursor, Mapping):
            return cursor.get("cursor")
        return cursor

    def later(self, stored: Any | None, seen: Any | None) -> Any | None:
        """Compare the API's cursors, not the wrappers around them."""
        best = super().later(self.durable(stored), self.durable(seen))
        return seen if best == self.durable(seen) else stored

    def _first_url(self, durable: Any) -> httpx.URL:
        base = self._base
        if durable is None:
            return base
        if isinstance(durable, str) and durable.startswith(("http://", "https://")):
            url = httpx.URL(durable)
            if not same_origin(url, base):
                raise HttpPollRefused(f"{self._where()}: the stored cursor is a URL on another host "
                                      f"({safe_url(url)}); credentials go only to {safe_url(base)}")
            return url
        if self.config.cursor_param is None:
            return base
        try:
            return with_cursor(base, self.config.cursor_param, durable)
        except PageError as exc:
            raise HttpPollRefused(f"{self._where()}: stored cursor {json.dumps(durable)[:80]}: {exc}") from None

    def _settle(self, listing: _Listing) -> None:
        """Every record of the current API page is handed out: its cursor becomes the durable one."""
        if listing.page_cursor is not MISSING:
            listing.durable = listing.page_cursor
            listing.page_cursor = MISSING

    async def _fetch(self, listing: _Listing, limit: int) -> None:
        assert listing.next is not None
        url = httpx.URL(listing.next)
        if not same_origin(url, self._base):
            raise HttpPollRefused(f"{self._where()}: the next page {safe_url(url)} is on another host; "
                                  f"credentials go only to {safe_url(self._base)}")
        body, headers, final = await self._get(url)
        try:
            page: Page = read_page(body, headers, final, self._base, self.config.paging(), listing.durable, limit)
            listing.buffered = [self._record(item) for item in page.items]
        except PageError as exc:
            raise HttpPollRefused(f"{self._where(url)}: {exc}") from None
        listing.page_cursor = page.cursor
        listing.next = page.next

    def _record(self, item: Any) -> NewRecord:
        key: str | None = None
        if self.config.key is not None:
            value = dig(item, self.config.key)
            if value is not MISSING and value is not None:
                key = cursor_text(value, f"record key {self.config.key!r}") if not isinstance(value, str) else value
        return NewRecord(value=orjson.dumps(item), key=key)

    # -- one request -------------------------------------------------------------------

    async def _get(self, url: httpx.URL) -> tuple[Any, httpx.Headers, httpx.URL]:
        """GET ``url``: the decoded JSON body, the headers and the final URL (after redirects)."""
        if self._client is None:
            await self.start()
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, content, final = await self._authorized(url)
            location = headers.get("location")
            if status not in REDIRECTS or not location:
                break
            target = url.join(location)
            if not same_origin(target, self._base):
                raise HttpPollRefused(f"{self._where(url)}: HTTP {status} redirects to another host "
                                      f"({safe_url(target)}); credentials go only to {safe_url(self._base)}")
            url = target
        else:
            raise HttpPollRefused(f"{self._where(url)}: more than {MAX_REDIRECTS} redirects")
        where = self._where(url)
        if status in RETRYABLE_STATUS or status >= 500:
            raise HttpPollUnavailable(f"{where}: HTTP {status}: {body_snippet(content)}")
        if not 200 <= status < 300:
            raise HttpPollRefused(f"{where}: HTTP {status} {_reason(status)}: {body_snippet(content)}")
        try:
            return orjson.loads(content), headers, final
        except orjson.JSONDecodeError as exc:
            raise HttpPollRefused(f"{where}: HTTP {status} but the body is not JSON ({exc}): "
                                  f"{body_snippet(content)}") from None

    async def _authorized(self, url: httpx.URL) -> tuple[int, httpx.Headers, bytes, httpx.URL]:
        """One exchange with credentials; a 401 with OAuth2 gets one more try with a fresh token."""
        sent = await self._auth_headers()
        answer = await self._exchange(url, sent)
        if answer[0] == 401 and self._auth is not None and self._auth.refreshable:
            self._auth.invalidate(sent)  # the token expired early or was revoked
            answer = await self._exchange(url, await self._auth_headers())
        return answer

    async def _auth_headers(self) -> dict[str, str]:
        if self._auth is None:
            return {}
        try:
            return await self._auth.headers()
        except DeliveryError as exc:  # the token endpoint's verdict, classified like any other answer
            kind = HttpPollUnavailable if exc.retryable else HttpPollRefused
            raise kind(f"{self._where()}: {exc}") from None

    async def _exchange(self, url: httpx.URL, auth: dict[str, str]
                        ) -> tuple[int, httpx.Headers, bytes, httpx.URL]:
        assert self._client is not None
        cfg = self.config
        where = safe_url(url)
        try:
            async with self._client.stream("GET", url, headers={**cfg.headers, **auth}) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cfg.max_bytes:
                    raise HttpPollRefused(f"{self._where(url)}: the response is {declared} bytes, more than "
                                          f"max_bytes={cfg.max_bytes}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cfg.max_bytes:
                        raise HttpPollRefused(f"{self._where(url)}: the response is larger than "
                                              f"max_bytes={cfg.max_bytes}")
                    chunks.append(chunk)
                return response.status_code, response.headers, b"".join(chunks), response.url
        except httpx.TimeoutException as exc:
            raise HttpPollUnavailable(f"{self._where(url)}: no answer within "
                                      f"{format_duration(cfg.timeout)}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise HttpPollRefused(f"{self._where(url)}: {exc}") from exc
        except httpx.TransportError as exc:
            raise HttpPollUnavailable(f"source {self.name!r}: GET {describe_transport_error(exc, where)}") from exc
        except ssl.SSLError as exc:  # a TLS 1.3 alert read with the response escapes httpx's mapping
            raise HttpPollUnavailable(f"{self._where(url)}: TLS: {exc.reason or exc}") from exc

    def _where(self, url: httpx.URL | None = None) -> str:
        return f"source {self.name!r}: GET {safe_url(url if url is not None else self._base)}"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
