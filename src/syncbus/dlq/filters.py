"""Which dead letters an operation is about: one filter, one page, shared by the CLI, the API and the console.

The three front ends take the same filters (route, status, failure reason,
sink, failure time window, record key, text in the payload or error) as
text. Parsing and bounding them here, once, means a value the CLI refuses is
refused by the API with the same words, and no unbounded or malformed value
reaches the store (where it would be a slow query or a 500).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..errors import SyncbusError
from ..state import DeadLetter, Store
from ..state.models import REASONS, STATUSES, storable
from ..units import parse_duration

MAX_NAME = 200      # route and sink names
MAX_KEY = 512       # a record key
MAX_TEXT = 200      # the payload/error search text
MAX_PAGE = 10_000   # letters in one page or one bulk operation
FIELDS = ("route", "status", "reason", "sink", "since", "until", "key", "text")


class LetterMasker(Protocol):
    """What a read-only caller's view of dead letters needs (``ingress/security/masking.Masker``)."""

    def letter(self, dl: DeadLetter) -> DeadLetter: ...

    def search_view(self, value: bytes, content_type: str | None, error: str, edited: bool) -> tuple[bytes, str]:
        ...


class FilterError(SyncbusError):
    """A filter value cannot be used as given (unknown status, malformed time, too long)."""


def parse_time(text: str, label: str = "--since", now: datetime | None = None) -> datetime:
    """``2026-11-20``, ``2026-11-20T08:00:00+08:00`` or a duration ago (``2h``, ``30m``, ``7d``).

    A time without a zone is UTC: that is how the store keeps every time.
    """
    now = now or datetime.now(UTC)
    raw = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?\s*(ms|s|m|h|d)", raw):
        try:
            if raw.endswith("d"):
                return now - timedelta(days=float(raw[:-1]))
            return now - timedelta(seconds=parse_duration(raw))
        except (ValueError, OverflowError):
            raise FilterError(f"{label} {text!r}: too far back") from None
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{label} {text!r}: expected an ISO date/time or a duration ago such as 2h") from None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:  # 0001-01-01T00:00+01:00 is a valid ISO time that is no time in UTC (where the store compares)
        dt.astimezone(UTC)
    except OverflowError:
        raise FilterError(f"{label} {text!r}: out of the range of dates") from None
    return dt


def _name(value: str | None, label: str, limit: int) -> str | None:
    """Empty means "no filter": HTML forms send every field, filled or not."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > limit:
        raise FilterError(f"{label} is longer than {limit} characters")
    if not text.isprintable():
        raise FilterError(f"{label} contains control characters")
    return text


def _choice(value: str | None, label: str, allowed: frozenset[str]) -> str | None:
    text = _name(value, label, 32)
    if text is not None and text not in allowed:
        raise FilterError(f"{label} {text!r}: expected one of {', '.join(sorted(allowed))}")
    return text


@dataclass(frozen=True)
class DeadLetterFilter:
    """A parsed, bounded filter; ``store_args()`` is what ``Store.list``/``count`` take."""

    route: str | None = None
    status: str | None = None
    reason: str | None = None
    sink: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    key: str | None = None
    text: str | None = None
    # the filter as typed, for links and forms that must show it again
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, *, route: str | None = None, status: str | None = None, reason: str | None = None,
              sink: str | None = None, since: str | None = None, until: str | None = None,
              key: str | None = None, text: str | None = None, now: datetime | None = None,
              labels: dict[str, str] | None = None) -> DeadLetterFilter:
        """Raises :class:`FilterError`; ``labels`` renames fields in messages (``reason`` → ``--failure-reason``)."""
        names = {"route": "route", "status": "status", "reason": "reason", "sink": "sink", "since": "since",
                 "until": "until", "key": "key", "text": "text", **(labels or {})}
        since_text = _name(since, names["since"], 64)
        until_text = _name(until, names["until"], 64)
        key_value = None if key is None or key == "" else key
        if key_value is not None and len(key_value) > MAX_KEY:
            raise FilterError(f"{names['key']} is longer than {MAX_KEY} characters")
        text_value = _name(text, names["text"], MAX_TEXT)
        parsed = cls(
            route=_name(route, names["route"], MAX_NAME),
            status=_choice(status, names["status"], STATUSES),
            reason=_choice(reason, names["reason"], REASONS),
            sink=_name(sink, names["sink"], MAX_NAME),
            since=parse_time(since_text, names["since"], now) if since_text else None,
            until=parse_time(until_text, names["until"], now) if until_text else None,
            key=storable(key_value),  # a key is stored so (a NUL becomes \\x00): searched so too
            text=text_value,
        )
        if parsed.since and parsed.until and parsed.until <= parsed.since:
            raise FilterError(f"{names['until']} must be later than {names['since']}")
        raw = {"route": parsed.route, "status": parsed.status, "reason": parsed.reason, "sink": parsed.sink,
               "since": since_text, "until": until_text, "key": key_value, "text": text_value}
        return replace(parsed, raw={k: v for k, v in raw.items() if v is not None})

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | None], *, labels: Mapping[str, str] | None = None,
                     now: datetime | None = None) -> DeadLetterFilter:
        """``parse`` for filters that arrive as a mapping (a query string, a form, renamed CLI options)."""
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise FilterError(f"unknown filter {', '.join(sorted(unknown))}")
        return cls.parse(**{f: values.get(f) for f in FIELDS}, now=now, labels=dict(labels or {}))

    def store_args(self) -> dict[str, Any]:
        return {"route": self.route, "status": self.status, "reason": self.reason, "sink": self.sink,
                "since": self.since, "until": self.until, "key": self.key, "text": self.text}

    def is_empty(self) -> bool:
        return not any(v is not None for v in self.store_args().values())

    def pending_only(self, label: str = "status") -> DeadLetterFilter:
        """The filter for a replay or discard: only pending letters can be either, so say so if asked otherwise."""
        if self.status not in (None, "pending"):
            raise FilterError(f"{label} {self.status!r}: only pending dead letters can be replayed or discarded")
        return replace(self, status="pending")

    def describe(self) -> str:
        """``route=orders-to-erp reason=mapping`` -- for summaries and audit details."""
        return " ".join(f"{k}={v}" for k, v in self.raw.items()) or "all"


@dataclass
class Page:
    """One page of a listing and where it sits in the whole."""

    items: list[DeadLetter]
    total: int
    offset: int
    limit: int

    @property
    def first(self) -> int:
        return self.offset + 1 if self.items else 0

    @property
    def last(self) -> int:
        return self.offset + len(self.items)

    @property
    def has_next(self) -> bool:
        return self.last < self.total

    @property
    def has_previous(self) -> bool:
        return self.offset > 0

    def describe(self) -> str:
        if self.total == 0:
            return "no dead letters match"
        if not self.items:
            return f"showing none of {self.total} (offset {self.offset} is past the end)"
        return f"showing {self.first}-{self.last} of {self.total}"

    def to_json(self) -> dict[str, Any]:
        """``GET /dlq``'s body as it has always been: the page's letters and the total (for "x-y of N")."""
        return {"items": [d.to_json() for d in self.items], "total": self.total}


def check_paging(limit: int, offset: int, max_limit: int = MAX_PAGE) -> None:
    if not 1 <= limit <= max_limit:
        raise FilterError(f"limit must be from 1 to {max_limit}")
    if not 0 <= offset <= 10**9:
        raise FilterError("offset must be from 0 to 1000000000")


def list_page(store: Store, flt: DeadLetterFilter, limit: int = 100, offset: int = 0,
              masker: LetterMasker | None = None) -> Page:
    """Newest failure first, with the total for "showing x-y of N".

    ``masker``: the caller may only see letters masked (``dlq:read``): they come back masked, a text
    search looks only at what the caller may see, and a ``key`` filter for a key that is itself a masked
    value finds nothing (it would confirm the value).
    """
    check_paging(limit, offset)
    items, total = store.page(limit, offset, view=masker.search_view if masker is not None else None,
                              **flt.store_args())
    if masker is not None:
        items = [masker.letter(d) for d in items]
        if flt.key is not None and any(d.key != flt.key for d in items):
            return Page([], 0, offset, limit)
    return Page(items, total, offset, limit)
