"""The record ledger: the fate of every accepted record, the operator's proof that nothing was lost.

A record is *accepted* once it is durably on a source topic (that is when
ingress answers 202 and a poll source moves its cursor), so the bus itself
lists what was accepted. Each route subscribed to the topic gives the record
one fate, read from the state store:

* ``delivered`` / ``skipped`` (filtered by ``when``) -- the outcome row;
* ``pending`` / ``discarded`` -- its newest dead letter (``replaying`` and
  ``replayed`` count as in flight: a replay is on its way; a letter resolved
  by a later delivery counts as delivered);
* ``in_flight`` -- no outcome yet, and the route's consumer group has not
  committed past the record;
* ``no_fate`` -- the group committed past the record but no outcome was ever
  stored (lost: the router stores outcomes before it commits), or it has been
  in flight longer than the grace period (stuck).

``syncbus ledger`` exits 1 when any record has no fate.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .bus.inspect import BusEntry, GroupOffsets, read_entries, read_group_offsets
from .router import group_for
from .state import DeadLetter, Store

FATES = ("delivered", "skipped", "pending", "discarded", "in_flight", "no_fate")
# A record's overall fate is its worst fate over its routes, in this order.
_SEVERITY = {fate: i for i, fate in enumerate(FATES)}
MAX_IDS = 1000  # ids listed per fate; counts are always complete


@dataclass
class LedgerReport:
    since: float
    until: float
    grace: float
    accepted: int = 0
    fates: Counter[str] = field(default_factory=Counter)
    per_route: dict[str, Counter[str]] = field(default_factory=dict)
    unrouted: int = 0
    duplicates_on_bus: int = 0
    no_fate: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fates["no_fate"] == 0

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "grace_seconds": self.grace, "accepted": self.accepted,
                **{f: self.fates.get(f, 0) for f in FATES}, "unrouted": self.unrouted,
                "duplicates_on_bus": self.duplicates_on_bus,
                "routes": {r: {f: c.get(f, 0) for f in FATES} for r, c in sorted(self.per_route.items())},
                "no_fate_records": self.no_fate[:MAX_IDS], "ok": self.ok}


def route_fate(entry: BusEntry, route: str, outcome: str | None, letter: DeadLetter | None,
               committed: int | None, now: float, grace: float) -> tuple[str, str]:
    """(fate, why) of one record on one route."""
    if outcome == "delivered":
        return "delivered", ""
    if outcome == "skipped":
        return "skipped", ""
    if outcome == "dead_lettered":
        if letter is None:
            return "no_fate", "outcome says dead-lettered but there is no dead letter"
        if letter.status == "pending":
            return "pending", ""
        if letter.status == "discarded":
            return "discarded", ""
        if letter.status == "delivered":
            return "delivered", ""
        if now - entry.received_at <= grace:      # replaying / replayed: the replay is on its way
            return "in_flight", ""
        return "no_fate", f"dead letter {letter.id} is {letter.status} since longer than the grace period"
    if committed is not None and entry.offset < committed:
        return "no_fate", "the route committed past the record without an outcome (lost)"
    if now - entry.received_at <= grace:
        return "in_flight", ""
    return "no_fate", "in flight longer than the grace period (stuck)"


def compute(entries: Sequence[BusEntry], routes: Mapping[str, str], offsets: GroupOffsets,
            outcomes: Mapping[tuple[str, str], str], letters: Mapping[tuple[str, str], DeadLetter], *,
            since: float, until: float, grace: float, now: float) -> LedgerReport:
    """The ledger from what the bus and the store hold (pure, so tests can feed it directly)."""
    report = LedgerReport(since, until, grace)
    by_topic: dict[str, list[str]] = {}
    for route, topic in routes.items():
        by_topic.setdefault(topic, []).append(route)
        report.per_route[route] = Counter()
    seen: set[str] = set()
    for entry in entries:
        if entry.replay_route is not None:
            continue                      # a replay is a second copy of an accepted record
        if entry.record_id in seen:
            report.duplicates_on_bus += 1  # e.g. a takeover of an unconfirmed idempotency claim
            continue
        seen.add(entry.record_id)
        report.accepted += 1
        subscribed = by_topic.get(entry.topic, [])
        if not subscribed:
            report.unrouted += 1
            continue
        worst = "delivered"
        for route in subscribed:
            committed = offsets.get((group_for(route), entry.topic, entry.partition))
            fate, why = route_fate(entry, route, outcomes.get((route, entry.record_id)),
                                   letters.get((route, entry.record_id)), committed, now, grace)
            report.per_route[route][fate] += 1
            if _SEVERITY[fate] > _SEVERITY[worst]:
                worst = fate
            if fate == "no_fate":
                report.no_fate.append({"record_id": entry.record_id, "route": route, "topic": entry.topic,
                                       "partition": entry.partition, "offset": entry.offset,
                                       "source": entry.source, "why": why})
        report.fates[worst] += 1
    return report


def scope(project: Any, source: str | None = None) -> tuple[dict[str, str], list[str]]:
    """(route → topic, source topics) the ledger accounts for; shadows deliver nothing, so they have no fate."""
    routes = {name: m.topic for name, m in project.mappings.items() if not getattr(m.spec, "shadow_of", None)}
    topics = [c.config.topic for c in project.connectors.sources.values() if source is None or c.name == source]
    return routes, topics


async def build(store: Store, bus_url: str, routes: Mapping[str, str], topics: Sequence[str], *,
                since: float, until: float | None = None, source: str | None = None,
                grace: float = 600.0) -> LedgerReport:
    """Read the bus and the store and account for every record accepted in [since, until)."""
    now = time.time()
    until = now if until is None else until
    entries = await read_entries(bus_url, sorted(set(topics)), since, until)
    if source is not None:
        entries = [e for e in entries if e.source == source]
    groups: dict[str, Sequence[str]] = {group_for(r): [t] for r, t in routes.items()}
    offsets = await read_group_offsets(bus_url, groups)
    ids = sorted({e.record_id for e in entries})
    outcomes = await asyncio.to_thread(store.outcomes_for, ids)
    letters = await asyncio.to_thread(store.latest_letters, ids)
    return compute(entries, routes, offsets, outcomes, letters, since=since, until=until, grace=grace, now=now)


def render_text(report: LedgerReport) -> str:
    lines = [f"accepted {report.accepted}: " + ", ".join(f"{f} {report.fates.get(f, 0)}" for f in FATES)
             + (f", unrouted {report.unrouted}" if report.unrouted else "")]
    for route, counts in sorted(report.per_route.items()):
        lines.append(f"  {route}: " + ", ".join(f"{f} {counts.get(f, 0)}" for f in FATES if counts.get(f)))
    for item in report.no_fate[:MAX_IDS]:
        lines.append(f"NO FATE {item['record_id']} route={item['route']} {item['topic']}[{item['partition']}]"
                     f"@{item['offset']}: {item['why']}")
    return "\n".join(lines) + "\n"
