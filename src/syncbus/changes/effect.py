"""``syncbus report``: what a change did to a flow, measured from what the store already keeps.

Per flow: volume, error rate (failed delivery attempts), dead-letter rate,
processing time p50/p95 (the record's ``received`` trace event to its last
``delivered`` event; records that went through a replay are left out, their
age is a person's waiting time, not processing time) and the time from dead
letter to resolution (first failure of the replay chain to the letter being
delivered or discarded). Then the same for what it is compared with:

* ``versions``: records split by the mapping version that mapped them --
  the ``version`` of their ``mapped`` trace event (outcome rows carry no
  version), or the version a dead letter failed with; skipped records are
  mapped by nobody and count for neither side;
* ``periods``: the window against the window of equal length before it.

Changes are reported in percent of the first side, None where that side is 0
or has no data -- a missing number is never drawn as a zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import queries

METRICS: tuple[tuple[str, str, str], ...] = (
    # (attribute, label, unit)
    ("volume", "records", ""),
    ("error_rate", "error rate (failed attempts)", "%"),
    ("dead_letter_rate", "dead-letter rate", "%"),
    ("p50", "processing time p50", "s"),
    ("p95", "processing time p95", "s"),
    ("resolution_p50", "dead letter to resolution p50", "s"),
)


@dataclass
class Stats:
    """One flow on one side of the comparison."""

    volume: int = 0
    delivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    latencies: list[float] = field(default_factory=list)
    resolutions: list[float] = field(default_factory=list)
    unresolved: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.failed_attempts / self.attempts if self.attempts else None

    @property
    def dead_letter_rate(self) -> float | None:
        return self.dead_lettered / self.volume if self.volume else None

    @property
    def p50(self) -> float | None:
        return percentile(self.latencies, 50)

    @property
    def p95(self) -> float | None:
        return percentile(self.latencies, 95)

    @property
    def resolution_p50(self) -> float | None:
        return percentile(self.resolutions, 50)

    def to_json(self) -> dict[str, Any]:
        return {"volume": self.volume, "delivered": self.delivered, "skipped": self.skipped,
                "dead_lettered": self.dead_lettered, "attempts": self.attempts,
                "failed_attempts": self.failed_attempts, "error_rate": _r(self.error_rate),
                "dead_letter_rate": _r(self.dead_letter_rate), "p50_seconds": _r(self.p50),
                "p95_seconds": _r(self.p95), "timed_records": len(self.latencies),
                "resolution_p50_seconds": _r(self.resolution_p50),
                "resolution_p95_seconds": _r(percentile(self.resolutions, 95)),
                "resolved": len(self.resolutions), "unresolved": self.unresolved}


@dataclass
class Flow:
    route: str
    sides: dict[str, Stats]
    daily: list[dict[str, Any]] = field(default_factory=list)   # {"day", "volume": {series: n}, "dead_lettered"}

    def change(self, metric: str) -> float | None:
        """Percent change from the first side to the second (None without two sides or a base of 0)."""
        if len(self.sides) != 2:
            return None
        a: float | None
        b: float | None
        a, b = (getattr(s, metric) for s in self.sides.values())
        if a is None or b is None or a == 0:
            return None
        return (b - a) / a * 100.0

    def to_json(self) -> dict[str, Any]:
        out = {"route": self.route, "sides": {k: s.to_json() for k, s in self.sides.items()}, "daily": self.daily}
        if len(self.sides) == 2:
            out["change_percent"] = {m: _r(self.change(m), 2) for m, _l, _u in METRICS}
        return out


@dataclass
class EffectReport:
    since: datetime
    until: datetime
    mode: str                       # "window" | "versions" | "periods"
    sides: dict[str, str]           # side label -> what it is
    flows: list[Flow]

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "mode": self.mode,
                "sides": self.sides, "flows": [f.to_json() for f in self.flows]}


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (an observed value, as people expect from "p95 was 1.2 s")."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


@dataclass
class _Rec:
    outcome: str | None = None
    at: datetime | None = None
    version: int | None = None
    delivered_at: datetime | None = None
    replayed: bool = False
    attempts: int = 0
    failed: int = 0


def build(store: Any, *, since: datetime, until: datetime, routes: Sequence[str] | None = None,
          compare_versions: tuple[int, int] | None = None, compare_periods: bool = False) -> EffectReport:
    """Gather and compute; ``routes`` None means every route with data in the window."""
    if compare_versions is not None:
        a, b = compare_versions
        mode, sides = "versions", {f"v{a}": f"mapping version {a}", f"v{b}": f"mapping version {b}"}
        start = since
    elif compare_periods:
        span = until - since
        start = since - span
        mode, sides = "periods", {"before": f"{start:%Y-%m-%d %H:%M} to {since:%Y-%m-%d %H:%M} UTC",
                                  "after": f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"}
    else:
        start = since
        mode, sides = "window", {"window": f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"}
    recs: dict[tuple[str, str], _Rec] = defaultdict(_Rec)
    for route, rid, outcome, at in queries.outcomes(store, start, until, routes):
        rec = recs[(route, rid)]
        rec.outcome, rec.at = outcome, at
    # trace events of a record can trail its outcome a little: read a minute past the window
    for route, rid, stage, at, detail in queries.route_events(store, start, until + timedelta(minutes=1), routes):
        rec = recs[(route, rid)]
        if stage == "mapped" and rec.version is None and isinstance(detail.get("version"), int):
            rec.version = detail["version"]
        elif stage == "attempt":
            rec.attempts += 1
            rec.failed += detail.get("outcome") != "ok"
        elif stage == "delivered" and not rec.replayed:
            rec.delivered_at = at if rec.delivered_at is None else max(rec.delivered_at, at)
        elif stage == "replayed":
            rec.replayed = True
    in_range, by_id = queries.letters(store, start, until, routes)
    letter_version = {(d.route, d.record_id): d.mapping_version for d in in_range}
    received = queries.received_at(store, sorted({rid for (_r, rid), rec in recs.items()
                                                  if rec.delivered_at is not None and not rec.replayed}))
    side_of = _sider(mode, sides, compare_versions, since)
    stats: dict[str, dict[str, Stats]] = defaultdict(lambda: {k: Stats() for k in sides})
    daily: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (route, rid), rec in recs.items():
        if rec.outcome is None:
            continue  # still in flight at the window's end, or finished outside it
        version = rec.version if rec.version is not None else letter_version.get((route, rid))
        side = side_of(rec.at, version)
        _day(daily[route], rec, version, mode)
        if side is None:
            continue
        s = stats[route][side]
        s.volume += 1
        s.delivered += rec.outcome == "delivered"
        s.skipped += rec.outcome == "skipped"
        s.dead_lettered += rec.outcome == "dead_lettered"
        s.attempts += rec.attempts
        s.failed_attempts += rec.failed
        got = received.get(rid)
        if rec.delivered_at is not None and got is not None and not rec.replayed:
            s.latencies.append(max(0.0, (rec.delivered_at - got).total_seconds()))
    for d in in_range:
        side = side_of(d.first_failed_at, d.mapping_version)
        if side is None:
            continue
        s = stats[d.route][side]
        if d.status in ("delivered", "discarded") and d.status_at is not None:
            s.resolutions.append(max(0.0, (d.status_at - _origin(d, by_id).first_failed_at).total_seconds()))
        elif d.status == "pending":
            s.unresolved += 1
    names = sorted(set(stats) | set(daily)) if routes is None else list(routes)
    flows = [Flow(r, stats[r], _every_day(daily[r], start, until)) for r in names]
    return EffectReport(since, until, mode, sides, flows)


def _sider(mode: str, sides: dict[str, str], versions: tuple[int, int] | None, since: datetime) -> Any:
    labels = list(sides)

    def side_of(at: datetime | None, version: int | None) -> str | None:
        if mode == "versions":
            assert versions is not None
            return labels[versions.index(version)] if version in versions else None
        if mode == "periods":
            return labels[0] if at is not None and at < since else labels[1]
        return labels[0]

    return side_of


def _origin(letter: queries.Letter, by_id: dict[str, queries.Letter]) -> queries.Letter:
    seen = set()
    while letter.replay_of and letter.replay_of in by_id and letter.id not in seen:
        seen.add(letter.id)
        letter = by_id[letter.replay_of]
    return letter


def _day(days: dict[str, dict[str, Any]], rec: _Rec, version: int | None, mode: str) -> None:
    if rec.at is None:
        return
    key = f"{rec.at:%Y-%m-%d}"
    day = days.setdefault(key, {"day": key, "volume": {}, "dead_lettered": 0})
    series = f"v{version}" if mode == "versions" and version is not None else (
        "not mapped" if mode == "versions" else "records")
    day["volume"][series] = day["volume"].get(series, 0) + 1
    day["dead_lettered"] += rec.outcome == "dead_lettered"


def _every_day(days: dict[str, dict[str, Any]], start: datetime, until: datetime) -> list[dict[str, Any]]:
    """One entry per calendar day of the window (UTC), days without records included: a gap is information."""
    out = []
    day = start.date()
    while day <= until.date():
        key = f"{day:%Y-%m-%d}"
        out.append(days.get(key) or {"day": key, "volume": {}, "dead_lettered": 0})
        day += timedelta(days=1)
    return out
