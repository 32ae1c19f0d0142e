"""Dead-letter operations as on-call staff use them: bulk replay, bulk discard, edit, the audit.

The CLI (``syncbus dlq``), the HTTP API (``/dlq``) and the web console call
these and only render the outcome, so the three can never disagree on what
"replay everything of route X" does: which letters it picks (pending ones,
oldest first so records with one key stay in order), which it refuses (see
``policy.py``), how fast it goes (``ratelimit.py``) and what it audits.

Bulk operations work letter by letter and report per letter: a letter
another person replayed or discarded a moment ago is reported with its
current status, and the rest still happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..bus.base import Bus
from ..errors import SyncbusError
from ..record import H_CONTENT_TYPE
from ..state import AuditEntry, DeadLetter, DeadLetterConflict, DeadLetterNotFound, Store
from .filters import MAX_PAGE, DeadLetterFilter, FilterError
from .policy import replay_blocker
from .ratelimit import TokenBucket
from .replay import ReplayResult, replay_one

MAX_VALUE = 16 * 1024 * 1024         # an edited record value
MAX_REASON = 1000                    # an audit reason
STOP_AFTER_BUS_ERRORS = 3            # a bulk replay stops when the bus refuses this many in a row
DISCARD_CHUNK = 200
ACTIONS: frozenset[str] = frozenset({"edit", "replay", "replayed", "discard", "resolve", "revert"})

Progress = Callable[[int, int, ReplayResult], None]   # (done, total, the latest result)


class OperationError(SyncbusError):
    """An operation cannot start as asked (no selection, no reason for a bulk discard, bad edit)."""


@dataclass(frozen=True)
class Selection:
    """Dead letters named by id, or every pending one matching a filter (at most ``limit``)."""

    ids: tuple[str, ...] = ()
    filter: DeadLetterFilter | None = None
    limit: int = MAX_PAGE

    @classmethod
    def of(cls, ids: Sequence[str] | None, flt: DeadLetterFilter | None, limit: int = MAX_PAGE) -> Selection:
        """Exactly one of ids or a non-empty filter: "replay everything" must be spelled out as a filter."""
        wanted = tuple(dict.fromkeys(i.strip() for i in ids or () if i.strip()))
        has_filter = flt is not None and not flt.is_empty()
        if wanted and has_filter:
            raise OperationError("give dead-letter ids or a filter, not both")
        if not wanted and not has_filter:
            raise OperationError("give dead-letter ids, or a filter (route, reason, sink, since, until, key, text)")
        if not 1 <= limit <= MAX_PAGE:
            raise OperationError(f"limit must be from 1 to {MAX_PAGE}")
        if len(wanted) > MAX_PAGE:
            raise OperationError(f"at most {MAX_PAGE} ids at once")
        return cls(wanted, flt.pending_only() if has_filter and flt is not None else None, limit)

    @property
    def is_bulk(self) -> bool:
        return self.filter is not None or len(self.ids) > 1

    def describe(self) -> str:
        return self.filter.describe() if self.filter is not None else " ".join(self.ids)


@dataclass
class BulkResult:
    """Per-letter results of a bulk replay or discard, and the counts a summary line needs."""

    action: str                       # "replay" | "discard"
    results: list[ReplayResult] = field(default_factory=list)

    def count(self, refusal: str | None) -> int:
        if refusal is None:
            return sum(r.ok for r in self.results)
        return sum(1 for r in self.results if r.refusal == refusal)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def summary(self, override: str = "--force") -> str:
        """``12 replayed, 3 refused (need an edit or --force), 1 not pending`` -- only what happened."""
        done = "replayed" if self.action == "replay" else "discarded"
        parts = [f"{self.count(None)} {done}"]
        labels = {"needs_fix": f"refused (need an edit, a newer mapping or {override})",
                  "conflict": "not pending", "not_found": "not found", "bus": "not taken by the bus",
                  "not_attempted": "not attempted (stopped)"}
        parts += [f"{n} {label}" for kind, label in labels.items() if (n := self.count(kind))]
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        key = "replayed" if self.action == "replay" else "discarded"
        return {"results": [r.to_json() for r in self.results], key: self.count(None),
                "failed": sum(not r.ok for r in self.results), "summary": self.summary("force")}


def mapping_versions(project: Any) -> dict[str, int]:
    """Route → the mapping version it runs now (for the needs-fix guard); empty when unknown."""
    mappings = getattr(project, "mappings", None) or {}
    return {name: int(m.version) for name, m in mappings.items()}


def _check_reason(reason: str, required: bool, what: str) -> str:
    """Audit reasons are free text from people: bounded, and required where the operation says so."""
    text = (reason or "").strip()
    if required and not text:
        raise OperationError(f"{what} needs a reason (it is audited)")
    if len(text) > MAX_REASON:
        raise OperationError(f"the reason is longer than {MAX_REASON} characters")
    return text


def select_letters(store: Store, selection: Selection) -> tuple[list[DeadLetter], list[str]]:
    """(letters found, ids not found); a filter's letters oldest first, so one key's records stay in order."""
    if selection.filter is not None:
        letters = store.list(limit=selection.limit, **selection.filter.store_args())
        return sorted(letters, key=lambda d: (d.first_failed_at, d.offset)), []
    found: list[DeadLetter] = []
    missing: list[str] = []
    for dl_id in selection.ids:
        try:
            found.append(store.get(dl_id))
        except DeadLetterNotFound:
            missing.append(dl_id)
    return found, missing


def _not_found(dl_id: str) -> ReplayResult:
    return ReplayResult(dl_id, False, str(DeadLetterNotFound(dl_id)), refusal="not_found")


async def replay_letters(store: Store, bus: Bus, selection: Selection, *, actor: str, reason: str,
                         versions: Mapping[str, int], force: bool = False, rate: float | None = None,
                         override: str = "--force", progress: Progress | None = None) -> BulkResult:
    """Replay the selection one letter at a time; refuse needs-fix letters unless ``force``.

    ``override`` is how the caller's user forces (``--force``, ``"force": true``)
    and goes into refusal messages. After ``STOP_AFTER_BUS_ERRORS`` bus
    failures in a row the rest is reported ``not_attempted``: the bus is down
    and each further try would only revert.
    """
    why = _check_reason(reason, False, "a replay") or "replay"
    letters, missing = await asyncio.to_thread(select_letters, store, selection)
    bulk = BulkResult("replay", [_not_found(i) for i in missing])
    total = len(letters) + len(missing)
    bucket = TokenBucket(rate) if rate else None
    bus_errors = 0
    for dl in letters:
        if bus_errors >= STOP_AFTER_BUS_ERRORS:
            result = ReplayResult(dl.id, False, "not attempted: the bus refused the previous replays",
                                  status=dl.status, refusal="not_attempted")
        else:
            blocker = None
            if not force and dl.status == "pending":
                blocker = await asyncio.to_thread(replay_blocker, store, dl, versions)
            if blocker is not None:
                result = ReplayResult(dl.id, False, blocker.explain(override), status=dl.status,
                                      refusal="needs_fix")
            else:
                if bucket is not None:
                    await bucket.acquire()
                result = await replay_one(store, bus, dl.id, actor, why)
                bus_errors = bus_errors + 1 if result.refusal == "bus" else 0
        bulk.results.append(result)
        if progress is not None:
            progress(len(bulk.results), total, result)
    return bulk


def _discard_one(store: Store, dl_id: str, actor: str, reason: str, details: dict[str, Any]) -> ReplayResult:
    """One letter in its own transaction, so a conflict is reported for that letter only."""
    try:
        [dl] = store.discard([dl_id], actor, reason, details)
    except DeadLetterNotFound:
        return _not_found(dl_id)
    except DeadLetterConflict as exc:
        return ReplayResult(dl_id, False, str(exc), status=exc.status, refusal="conflict")
    return ReplayResult(dl_id, True, "discarded", status=dl.status)


def discard_letters(store: Store, selection: Selection, *, actor: str, reason: str,
                    progress: Progress | None = None) -> BulkResult:
    """pending → discarded for the selection; a reason is required for more than one letter.

    Chunks are discarded in one transaction each; a chunk in which some
    letter moved on meanwhile is redone letter by letter, so that letter is
    reported with its status and the others are still discarded.
    """
    why = _check_reason(reason, selection.is_bulk, "discarding more than one dead letter") or "discard"
    details = {"selection": selection.describe()[:500]} if selection.is_bulk else {}
    if selection.filter is not None:
        ids = [d.id for d in select_letters(store, selection)[0]]
    else:
        ids = list(selection.ids)
    bulk = BulkResult("discard")
    for start in range(0, len(ids), DISCARD_CHUNK):
        chunk = ids[start:start + DISCARD_CHUNK]
        try:
            done = store.discard(chunk, actor, why, details)
            results = [ReplayResult(d.id, True, "discarded", status=d.status) for d in done]
        except (DeadLetterNotFound, DeadLetterConflict):
            results = [_discard_one(store, i, actor, why, details) for i in chunk]
        for result in results:
            bulk.results.append(result)
            if progress is not None:
                progress(len(bulk.results), len(ids), result)
    return bulk


def is_json(dl: DeadLetter) -> bool:
    """By the record's content type, as the router decodes it."""
    return "json" in (dl.headers.get(H_CONTENT_TYPE) or "").lower()


def validate_value(dl: DeadLetter, value: bytes) -> None:
    """Refuse an edit that cannot be replayed: empty, too large, or not JSON for a JSON record."""
    if len(value) > MAX_VALUE:
        raise OperationError(f"the new value is larger than {MAX_VALUE} bytes")
    if not value.strip():
        raise OperationError("the new value is empty; nothing was changed")
    if is_json(dl):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            # orjson's message is only position information about the user's own text
            raise OperationError(f"the new value is not valid JSON ({exc}); nothing was changed") from None


def edit_letter(store: Store, dl_id: str, value: bytes, *, actor: str, reason: str) -> tuple[DeadLetter, bool]:
    """(the letter, whether it changed): an unchanged value is not an edit and is not audited."""
    why = _check_reason(reason, True, "an edit")
    dl = store.get(dl_id)
    if dl.status != "pending":
        raise DeadLetterConflict(dl_id, dl.status, "pending")
    validate_value(dl, value)
    if same_value(dl, value):
        return dl, False
    return store.edit(dl_id, value, actor, why), True


def same_value(dl: DeadLetter, value: bytes) -> bool:
    """Byte-equal, or for a JSON record the same JSON (the console shows it indented).

    Re-indenting is not a fix: counting it as an edit would let a letter pass
    the needs-fix guard without any change.
    """
    if value == dl.value:
        return True
    if not is_json(dl):
        return False
    try:
        return bool(orjson.loads(value) == orjson.loads(dl.value))
    except orjson.JSONDecodeError:
        return False


def pretty_value(dl: DeadLetter) -> str:
    """The payload as a person reads it: indented JSON when it is JSON, else the text as stored."""
    text = dl.value.decode("utf-8", "replace")
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(dl.value)
        return orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode()
    return text


def list_audit(store: Store, *, dl_id: str | None = None, actor: str | None = None, action: str | None = None,
               since: datetime | None = None, limit: int = 1000) -> list[AuditEntry]:
    """Every audited action, oldest first, filtered; the action must be one the store writes."""
    if action is not None and action not in ACTIONS:
        raise FilterError(f"action {action!r}: expected one of {', '.join(sorted(ACTIONS))}")
    if not 1 <= limit <= 100_000:
        raise FilterError("limit must be from 1 to 100000")
    return store.audit(dl_id, limit, since=since, actor=actor, action=action)
