"""Replaying dead letters: publish the original record again, for its route only.

The record goes back onto its source topic with ``syncbus-replay-route`` set,
so the other routes subscribed to that topic skip it (they already had it),
and with ``syncbus-replay-sink`` when only one target of a fan-out failed.
The record keeps its id, so the idempotency key the target sees is the same
as on the first try and a target that did receive it can drop the duplicate.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
from dataclasses import dataclass
from datetime import datetime

from ..bus.base import Bus
from ..record import H_DEAD_LETTER, H_REPLAY_ROUTE, H_REPLAY_SINK
from ..state import DeadLetterConflict, DeadLetterNotFound, Store
from ..state.models import TraceEvent, utcnow
from .filters import DeadLetterFilter, parse_time

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    """What happened to one dead letter asked to be replayed.

    ``status`` is the letter's status after the call (the current one when the
    replay was refused), so a caller that lost a race can say what it is now.
    """

    id: str
    ok: bool
    message: str = ""
    topic: str = ""
    offset: int = -1
    status: str = ""
    # why not, when not ok: "not_found" | "conflict" | "needs_fix" (would fail the same way; see policy.py)
    # | "bus" (the bus did not take it) | "not_attempted" (a bulk replay stopped before it)
    refusal: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "ok": self.ok, "message": self.message, "topic": self.topic,
                "offset": self.offset, "status": self.status, "refusal": self.refusal}


def default_actor() -> str:
    """Who a CLI action is audited as: $SYNCBUS_ACTOR, else the login name."""
    try:
        return os.environ.get("SYNCBUS_ACTOR") or getpass.getuser()
    except Exception:
        return "unknown"


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-20``, ``2026-11-20T08:00:00+08:00`` or a duration ago (``2h``, ``30m``); see ``filters.parse_time``."""
    return parse_time(text, "--since", now)


async def replay_one(store: Store, bus: Bus, dl_id: str, actor: str, reason: str) -> ReplayResult:
    """pending → replaying (compare-and-set) → publish → replayed; the publish failing reverts to pending.

    Taking the letter out of ``pending`` BEFORE publishing is what makes a
    replay happen at most once per letter: of twenty concurrent calls one
    wins, the others are told the letter is replaying; a discard racing it
    either wins (nothing is published) or is refused.
    """
    try:
        dl = await asyncio.to_thread(store.begin_replay, dl_id, actor, reason)
    except DeadLetterNotFound as exc:
        return ReplayResult(dl_id, False, str(exc), refusal="not_found")
    except DeadLetterConflict as exc:
        return ReplayResult(dl_id, False, str(exc), status=exc.status, refusal="conflict")
    record = dl.to_record()
    headers = {**record.headers, H_REPLAY_ROUTE: dl.route, H_DEAD_LETTER: dl.id}
    if dl.sink and dl.reason == "delivery":
        headers[H_REPLAY_SINK] = dl.sink
    else:
        headers.pop(H_REPLAY_SINK, None)
    # stamped before the publish: the route may deliver the record before the trace event below is written,
    # and the trace must still read "replayed, then delivered"
    replayed_at = utcnow()
    try:
        published = await bus.publish(dl.topic, dl.value, dl.key, headers)
    except BaseException as exc:
        await asyncio.shield(asyncio.to_thread(store.abort_replay, dl.id, f"{type(exc).__name__}: {exc}"))
        if not isinstance(exc, Exception):
            raise
        # the cause goes to the log, not to the person asking (it may carry broker internals)
        log.warning("replay of %s not published to %s: %s: %s", dl.id, dl.topic, type(exc).__name__, exc)
        return ReplayResult(dl.id, False, f"the bus did not take the record of {dl.id} (see the log); "
                                          "it is pending again", status="pending", refusal="bus")
    where = {"topic": published.topic, "partition": published.partition, "offset": published.offset}
    await asyncio.to_thread(store.end_replay, dl.id, where)
    event = TraceEvent(record_id=dl.record_id, stage="replayed", route=dl.route, at=replayed_at,
                       detail={"dead_letter": dl.id, "actor": actor, "reason": reason, **where})
    await asyncio.to_thread(store.add_trace, [event])
    return ReplayResult(dl.id, True, "replayed", published.topic, published.offset, status="replayed")


async def replay(store: Store, bus: Bus, ids: list[str], actor: str, reason: str) -> list[ReplayResult]:
    """Replay ids one by one without the needs-fix guard (``operations.replay_letters`` applies it)."""
    return [await replay_one(store, bus, dl_id, actor, reason) for dl_id in ids]


async def replay_matching(store: Store, bus: Bus, route: str | None, since: datetime | None, actor: str,
                          reason: str, limit: int = 10_000) -> list[ReplayResult]:
    """Every pending letter of ``route`` failed since ``since``, oldest first, without the needs-fix guard.

    Kept for callers that predate ``operations.replay_letters`` (which applies
    the guard, the rate and the other filters).
    """
    flt = DeadLetterFilter(route=route, status="pending", since=since)
    letters = await asyncio.to_thread(store.list, limit=limit, **flt.store_args())
    results = []
    for dl in sorted(letters, key=lambda d: (d.first_failed_at, d.offset)):  # oldest first: keep order
        results.append(await replay_one(store, bus, dl.id, actor, reason))
    return results
