"""The ledger's accounting rules (syncbus/ledger.py), fed directly; the e2e chaos suite uses it on real nodes."""

from __future__ import annotations

from syncbus.bus.inspect import BusEntry
from syncbus.ledger import compute, route_fate
from syncbus.state import DeadLetter

NOW = 10_000.0


def entry(rid: str, offset: int, *, topic: str = "t", at: float = NOW - 1, replay: str | None = None) -> BusEntry:
    return BusEntry(rid, topic, 0, offset, "crm", at, replay)


def letter(rid: str, status: str, route: str = "r") -> DeadLetter:
    dl = DeadLetter(route=route, reason="delivery", error="x", value=b"{}", record_id=rid)
    dl.status = status
    return dl


def test_each_fate() -> None:
    entries = [entry("d", 0), entry("s", 1), entry("p", 2), entry("x", 3), entry("f", 4), entry("lost", 5),
               entry("stuck", 6, at=NOW - 3600), entry("fresh", 7), entry("resolved", 8),
               entry("d", 9, replay="r"),                  # a replay of d: not a new record
               entry("d", 10),                             # d published twice (a taken-over claim)
               entry("other", 0, topic="no-route")]
    outcomes = {("r", "d"): "delivered", ("r", "s"): "skipped", ("r", "p"): "dead_lettered",
                ("r", "x"): "dead_lettered", ("r", "f"): "dead_lettered", ("r", "resolved"): "dead_lettered"}
    letters = {("r", "p"): letter("p", "pending"), ("r", "x"): letter("x", "discarded"),
               ("r", "resolved"): letter("resolved", "delivered")}
    report = compute(entries, {"r": "t"}, {("syncbus.r", "t", 0): 6}, outcomes, letters,
                     since=0, until=NOW, grace=600, now=NOW)
    assert report.accepted == 10 and report.unrouted == 1 and report.duplicates_on_bus == 1
    assert dict(report.fates) == {"delivered": 2, "skipped": 1, "pending": 1, "discarded": 1, "in_flight": 1,
                                  "no_fate": 3}
    why = {item["record_id"]: item["why"] for item in report.no_fate}
    assert set(why) == {"f", "lost", "stuck"}
    assert "no dead letter" in why["f"] and "lost" in why["lost"] and "stuck" in why["stuck"]
    assert not report.ok and report.to_json()["no_fate"] == 3


def test_worst_fate_over_routes_and_replays_in_flight() -> None:
    entries = [entry("a", 0)]
    outcomes = {("r1", "a"): "delivered", ("r2", "a"): "dead_lettered"}
    report = compute(entries, {"r1": "t", "r2": "t"}, {}, outcomes, {("r2", "a"): letter("a", "pending", "r2")},
                     since=0, until=NOW, grace=600, now=NOW)
    assert dict(report.fates) == {"pending": 1} and report.ok
    assert report.per_route["r1"]["delivered"] == 1 and report.per_route["r2"]["pending"] == 1
    replaying = letter("a", "replaying")
    assert route_fate(entry("a", 0), "r", "dead_lettered", replaying, None, NOW, 600)[0] == "in_flight"
    old = entry("a", 0, at=NOW - 3600)
    assert route_fate(old, "r", "dead_lettered", replaying, None, NOW, 600)[0] == "no_fate"
