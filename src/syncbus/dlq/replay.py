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
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..bus.base import Bus
from ..errors import SyncbusError
from ..record import H_DEAD_LETTER, H_REPLAY_ROUTE, H_REPLAY_SINK
from ..units import parse_duration
from .models import DeadLetter, TraceEvent
from .store import Store, StoreError


@dataclass
class ReplayResult:
    id: str
    ok: bool
    message: str = ""
    topic: str = ""
    offset: int = -1

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "ok": self.ok, "message": self.message, "topic": self.topic,
                "offset": self.offset}


def default_actor() -> str:
    try:
        return os.environ.get("SYNCBUS_ACTOR") or getpass.getuser()
    except Exception:
        return "unknown"


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-20``, ``2026-11-20T08:00:00+08:00`` or a duration ago (``2h``, ``30m``)."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?\s*(ms|s|m|h|d)", raw):
        if raw.endswith("d"):
            return now - timedelta(days=float(raw[:-1]))
        return now - timedelta(seconds=parse_duration(raw))
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise SyncbusError(f"--since {text!r}: expected an ISO date/time or a duration such as 2h") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


async def replay_one(store: Store, bus: Bus, dl: DeadLetter, actor: str, reason: str) -> ReplayResult:
    if dl.status != "pending":
        return ReplayResult(dl.id, False, f"dead letter {dl.id} is {dl.status}, not pending")
    record = dl.to_record()
    headers = {**record.headers, H_REPLAY_ROUTE: dl.route, H_DEAD_LETTER: dl.id}
    if dl.sink and dl.reason == "delivery":
        headers[H_REPLAY_SINK] = dl.sink
    else:
        headers.pop(H_REPLAY_SINK, None)
    published = await bus.publish(dl.topic, dl.value, dl.key, headers)
    where = {"topic": published.topic, "partition": published.partition, "offset": published.offset}
    await asyncio.to_thread(store.mark_replayed, [dl.id], actor, reason, where)
    event = TraceEvent(record_id=dl.record_id, stage="replayed", route=dl.route,
                       detail={"dead_letter": dl.id, "actor": actor, "reason": reason, **where})
    await asyncio.to_thread(store.add_trace, [event])
    return ReplayResult(dl.id, True, "replayed", published.topic, published.offset)


async def replay(store: Store, bus: Bus, ids: list[str], actor: str, reason: str) -> list[ReplayResult]:
    results = []
    for dl_id in ids:
        try:
            dl = await asyncio.to_thread(store.get, dl_id)
        except StoreError as exc:
            results.append(ReplayResult(dl_id, False, str(exc)))
            continue
        results.append(await replay_one(store, bus, dl, actor, reason))
    return results


async def replay_matching(store: Store, bus: Bus, route: str | None, since: datetime | None, actor: str,
                          reason: str, limit: int = 10_000) -> list[ReplayResult]:
    letters = await asyncio.to_thread(store.list, route=route, status="pending", since=since, limit=limit)
    results = []
    for dl in sorted(letters, key=lambda d: (d.first_failed_at, d.offset)):  # oldest first: keep order
        results.append(await replay_one(store, bus, dl, actor, reason))
    return results
