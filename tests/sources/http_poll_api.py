"""A real paged REST API for the http_poll tests: TargetServer answering from a growing list of records.

The records are ``{"id": n, "name": "rec-n", "updated_at": "2026-01-01T00:00:0n"}``
(``updated_at`` rises with ``id``); ``add(k)`` makes ``k`` more appear. Each
path pages them the way one family of real APIs does:

* ``/cursor?since=ID[&limit=N]`` -> ``{"items": [...], "next_cursor": ID, "has_more": bool}``
  (records after ``since``; Stripe-like);
* ``/watermark?updated_since=TS[&limit=N]`` -> ``{"data": [...]}`` (records updated after TS);
* ``/tokens?pageToken=T`` -> ``{"people": [...], "nextPageToken": T}`` (Google-like, the whole listing);
* ``/links?page=P`` -> a bare JSON list with ``Link: <...>; rel="next"`` (GitHub-like);
* ``/body-next?page=P`` -> ``{"data": {"rows": [...]}, "links": {"next": "/body-next?page=P+1"}}``.

Scripts (``script(503, path="/cursor")``), auth (``require_bearer``, ``oauth``)
and the request log are TargetServer's, so tests can break the API on purpose.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from tests.sinks.target_server import RecordedRequest, Reply, TargetServer


def record(n: int) -> dict[str, Any]:
    return {"id": n, "name": f"rec-{n}", "updated_at": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}"}


class PagedApi(TargetServer):
    """See the module docstring. ``page_size``: records per page unless the request asks for fewer."""

    def __init__(self, count: int = 5, page_size: int = 2) -> None:
        super().__init__()
        self.count = count
        self.page_size = page_size

    def add(self, k: int) -> None:
        with self._lock:
            self.count += k

    def queries(self, path: str) -> list[dict[str, str]]:
        """The query parameters of every request to ``path``, in order."""
        return [{k: v[-1] for k, v in parse_qs(r.query).items()} for r in self.requests_to(path)]

    def _decide(self, req: RecordedRequest) -> Reply:
        reply = super()._decide(req)  # scripts and auth first
        if reply is not self.default:
            return reply
        q = {k: v[-1] for k, v in parse_qs(req.query).items()}
        size = min(int(q.get("limit", self.page_size)), self.page_size)
        everything = [record(n) for n in range(1, self.count + 1)]
        if req.path == "/cursor":
            since = int(q.get("since", 0))
            rest = [r for r in everything if r["id"] > since]
            page = rest[:size]
            return Reply(200, {"items": page, "next_cursor": page[-1]["id"] if page else since,
                               "has_more": len(rest) > len(page)})
        if req.path == "/watermark":
            since = q.get("updated_since", "")
            return Reply(200, {"data": [r for r in everything if r["updated_at"] > since][:size]})
        if req.path == "/tokens":
            start = int(q.get("pageToken", "t0")[1:])
            body: dict[str, Any] = {"people": everything[start:start + size]}
            if start + size < len(everything):
                body["nextPageToken"] = f"t{start + size}"
            return Reply(200, body)
        if req.path == "/links":
            page = int(q.get("page", 1))
            rows = everything[(page - 1) * size:page * size]
            headers = {}
            if page * size < len(everything):
                headers["Link"] = (f'<{self.url_for("/links")}?page=1>; rel="first", '
                                   f'<{self.url_for("/links")}?page={page + 1}>; rel="next"')
            return Reply(200, rows, headers)
        if req.path == "/body-next":
            page = int(q.get("page", 1))
            rows = everything[(page - 1) * size:page * size]
            nxt = f"/body-next?page={page + 1}" if page * size < len(everything) else None
            return Reply(200, {"data": {"rows": rows}, "links": {"next": nxt}})
        return Reply(404, {"error": "no such path"})
