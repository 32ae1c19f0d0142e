"""Reading one page of a polled HTTP API: records, the next page, the cursor. No I/O here.

Kept apart from the source so the rules that decide "what is the next
request" and "how far is safe to remember" can be read (and tested) in one
place. Three ways an API says where the next page is, as real APIs do:

* **cursor** (Stripe ``starting_after``, "changes since"): the next page is
  the same URL with the cursor parameter set to the new cursor. The cursor
  is read from a response field (``cursor_path``) or from the last record
  (``cursor_record``, a watermark such as ``updated_at``);
* **page token** (Google ``pageToken``/``nextPageToken``): a response field
  holds an opaque token for the next page, sent back as a query parameter;
  no token means the last page;
* **next link**: a response field holding the next page's URL
  (``links.next``, ``@odata.nextLink``), or the RFC 8288 ``Link`` header
  with ``rel="next"`` (GitHub, GitLab).

Paths are dotted (``data.items``, ``meta.next_cursor``); a path segment that
is a number indexes a list; the empty path is the whole body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

LINK_HEADER: Final = "Link"  # the value of `next_url` that means "the RFC 8288 Link header"

_MISSING: Final = object()
# One link-value of a Link header: <uri> followed by ;-separated parameters.
_LINK = re.compile(r"""<([^>]*)>((?:\s*;\s*[^;,=\s]+\s*(?:=\s*(?:"[^"]*"|[^;,]*))?)*)""")
_PARAM = re.compile(r"""\s*;\s*([^=;,\s]+)\s*(?:=\s*(?:"([^"]*)"|([^;,]*)))?""")


class PageError(ValueError):
    """The response is not what the options describe (no list at ``items``, a cursor of the wrong kind)."""


def dig(obj: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a JSON value, or :data:`MISSING`; ``""`` is the value itself."""
    if path == "":
        return obj
    cur = obj
    for part in path.split("."):
        if isinstance(cur, Mapping):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


MISSING: Final = _MISSING


def link_next(header: str | None) -> str | None:
    """The target of the ``rel="next"`` link in an RFC 8288 ``Link`` header value, if any."""
    if not header:
        return None
    for match in _LINK.finditer(header):
        for name, quoted, bare in _PARAM.findall(match.group(2)):
            value = quoted if quoted else bare.strip()
            if name.lower() == "rel" and "next" in value.lower().split():
                return match.group(1).strip()
    return None


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Credentials go only where the configured URL points: a next link elsewhere is refused."""
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def cursor_text(value: Any, where: str) -> str:
    """A cursor or token as a query parameter value: text and numbers, nothing else."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PageError(f"{where} must be text or a number, got {type(value).__name__}: {str(value)[:80]!r}")
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class Paging:
    """The paging options of one source, as :func:`read_page` needs them."""

    items: str
    cursor_param: str | None
    cursor_path: str | None
    cursor_record: str | None
    next_url: str | None
    page_token_path: str | None
    page_token_param: str | None
    has_more_path: str | None
    limit_param: str | None


@dataclass(frozen=True, slots=True)
class Page:
    """What one response says: its records, the cursor once they are all on the bus, the next request.

    ``cursor`` is :data:`MISSING` when the page carries no cursor (keep the
    previous one); ``next`` is the absolute URL of the next page of this
    run, or None when the run is done.
    """

    items: list[Any]
    cursor: Any
    next: str | None


def read_page(body: Any, headers: httpx.Headers, url: httpx.URL, base: httpx.URL, paging: Paging,
              previous_cursor: Any, limit: int) -> Page:
    """Interpret one decoded JSON response ``body`` that answered ``url`` (``base``: the first URL of the run)."""
    items = dig(body, paging.items)
    if items is MISSING or not isinstance(items, list):
        found = "nothing" if items is MISSING else type(items).__name__
        raise PageError(f"expected a list of records at {paging.items or 'the top level'!r}, found {found}")
    cursor = _cursor(body, items, paging)
    nxt = _next(body, headers, url, base, paging, items, cursor, previous_cursor, limit)
    return Page(items, cursor, nxt)


def _cursor(body: Any, items: list[Any], paging: Paging) -> Any:
    if paging.cursor_path is not None:
        value = dig(body, paging.cursor_path)
        return MISSING if value is None or value == "" else value
    if paging.cursor_record is not None and items:
        value = dig(items[-1], paging.cursor_record)
        if value is MISSING or value is None:
            raise PageError(f"the last record has no {paging.cursor_record!r} (cursor_record) to remember")
        return value
    return MISSING


def _next(body: Any, headers: httpx.Headers, url: httpx.URL, base: httpx.URL, paging: Paging,
          items: list[Any], cursor: Any, previous_cursor: Any, limit: int) -> str | None:
    if paging.has_more_path is not None:
        more = dig(body, paging.has_more_path)
        if not (more is not MISSING and bool(more)):
            return None
    if paging.next_url is not None:
        target = link_next(headers.get("link")) if paging.next_url == LINK_HEADER else dig(body, paging.next_url)
        if target is MISSING or target in (None, ""):
            return None
        if not isinstance(target, str):
            raise PageError(f"next_url {paging.next_url!r} must hold a URL, got {type(target).__name__}")
        return str(url.join(target))
    if paging.page_token_path is not None and paging.page_token_param is not None:
        token = dig(body, paging.page_token_path)
        if token is MISSING or token in (None, ""):
            return None
        return str(base.copy_set_param(paging.page_token_param, cursor_text(token, "the page token")))
    if paging.cursor_param is None or cursor is MISSING or not items or cursor == previous_cursor:
        return None  # cursor paging: an empty page, or a cursor that did not move, ends the run
    if paging.has_more_path is None and paging.limit_param is not None and len(items) < limit:
        return None  # a short page is the last one
    return str(with_cursor(base, paging.cursor_param, cursor))


def with_cursor(base: httpx.URL, param: str, cursor: Any) -> httpx.URL:
    """The first URL of a run from ``cursor``: a URL cursor (a delta link) as is, else ``param=cursor``."""
    if isinstance(cursor, str) and cursor.startswith(("http://", "https://")):
        return httpx.URL(cursor)
    return base.copy_set_param(param, cursor_text(cursor, "the cursor"))
