"""The dead-letter / audit / trace / idempotency store on a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.errors import SyncbusError
from syncbus.record import H_DEAD_LETTER, H_ID, Record
from syncbus.state import (
    DeadLetterConflict,
    DeadLetterNotFound,
    IdempotencyConflict,
    IdempotencyInProgress,
    Outcome,
    Store,
    StoreError,
    sqlite_url,
)
from syncbus.state.models import DeadLetter, TraceEvent, decode_value, encode_value

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "var" / "syncbus.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, db_file: Path) -> Iterator[Store]:
    """The same guarantees on SQLite (one node) and PostgreSQL (the shared store of several nodes)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else sqlite_url(db_file)
    s = Store(url)
    yield s
    s.close()


def _dl(route: str = "crm-order-to-erp", record_id: str = "rec-1", *, at: datetime = T0, attempts: int = 4,
        error: str = "HTTP 503 from erp-orders", reason: str = "delivery", value: bytes = b'{"order_id": 7}',
        ) -> DeadLetter:
    return DeadLetter(route=route, reason=reason, error=error, attempts=attempts, first_failed_at=at,
                      last_failed_at=at, mapping_version=3, sink="erp-orders", record_id=record_id,
                      topic="crm.orders", partition=0, offset=41, key="7", value=value,
                      headers={H_ID: record_id, "content-type": "application/json"})


def test_creates_folder_wal_and_tables(db_file: Path) -> None:
    store = Store(sqlite_url(db_file))
    assert db_file.is_file()
    conn = sqlite3.connect(db_file)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"dead_letters", "dlq_audit", "trace_events", "idempotency_keys", "record_outcomes"} <= names
    assert store.ping()
    store.close()


def test_add_get_roundtrip(store: Store) -> None:
    dl = _dl()
    assert store.add(dl) == dl.id
    got = store.get(dl.id)
    assert got == dl
    assert got.first_failed_at.tzinfo is not None and got.first_failed_at == T0
    assert isinstance(got.value, bytes)


def test_from_record_and_to_record(store: Store) -> None:
    rec = Record(value=b"<a/>", key="k1", headers={H_ID: "r-99", "content-type": "application/xml"},
                 topic="oa.hr", partition=0, offset=12)
    dl = DeadLetter.from_record(rec, route="oa-hr", reason="schema", error="input schema: at /x: bad",
                                mapping_version=2)
    assert (dl.record_id, dl.topic, dl.offset, dl.key, dl.status, dl.attempts) == ("r-99", "oa.hr", 12, "k1",
                                                                                   "pending", 1)
    store.add(dl)
    back = store.get(dl.id).to_record()
    assert (back.value, back.key, back.headers, back.topic, back.offset) == (rec.value, rec.key, rec.headers,
                                                                             rec.topic, rec.offset)


def test_to_json_text_and_binary_values(store: Store) -> None:
    text = _dl(value='{"name": "华东"}'.encode())
    data = json.loads(json.dumps(text.to_json()))          # JSON-able
    for field in ("id", "route", "reason", "error", "attempts", "first_failed_at", "last_failed_at",
                  "status", "mapping_version", "sink", "record"):
        assert field in data
    assert data["first_failed_at"] == "2026-11-20T10:00:00+00:00"
    assert data["record"] == {"id": "rec-1", "key": "7", "topic": "crm.orders", "partition": 0, "offset": 41,
                              "headers": {H_ID: "rec-1", "content-type": "application/json"},
                              "value": '{"name": "华东"}', "value_encoding": "utf-8"}
    binary = _dl(value=b"\xff\x00\x01")
    rec = binary.to_json()["record"]
    assert rec["value_encoding"] == "base64"
    assert base64.b64decode(rec["value"]) == b"\xff\x00\x01"
    assert decode_value(rec["value"], rec["value_encoding"]) == b"\xff\x00\x01"
    assert encode_value(b"abc") == ("abc", "utf-8")
    with pytest.raises(ValueError, match="base64"):
        decode_value("not base64!", "base64")


def test_pending_duplicate_is_merged(store: Store) -> None:
    first = store.add(_dl(attempts=4, at=T0))
    again = _dl(attempts=4, at=T0 + timedelta(minutes=5), error="HTTP 500", reason="delivery")
    assert store.add(again) == first                       # no second entry
    dl = store.get(first)
    assert dl.attempts == 8
    assert dl.error == "HTTP 500"
    assert dl.first_failed_at == T0
    assert dl.last_failed_at == T0 + timedelta(minutes=5)
    assert store.count() == 1
    # Another route's failure of the same record is its own dead letter.
    other = store.add(_dl(route="crm-to-finance"))
    assert other != first
    assert store.count_pending() == {"crm-order-to-erp": 1, "crm-to-finance": 1}


def test_failure_after_replay_creates_new_linked_entry(store: Store) -> None:
    first = store.add(_dl())
    store.begin_replay(first, actor="li", reason="ERP back up")
    # The replayed record fails again before the replayer marked the letter replayed:
    again = _dl(at=T0 + timedelta(hours=1), attempts=1)
    again.headers[H_DEAD_LETTER] = first
    second = store.add(DeadLetter.from_record(again.to_record(), route=again.route, reason="delivery",
                                              error="HTTP 503", sink="erp-orders"))
    assert second != first
    assert store.get(first).status == "replayed"       # its replay happened and failed again
    new = store.get(second)
    assert (new.status, new.attempts, new.replay_of) == ("pending", 1, first)
    assert H_DEAD_LETTER not in new.headers
    store.end_replay(first, {"offset": 7})             # the replayer's late mark changes nothing
    assert store.get(first).status == "replayed"
    assert store.count_pending() == {"crm-order-to-erp": 1}


def test_list_filters_order_and_paging(store: Store) -> None:
    ids = [store.add(_dl(record_id=f"r{i}", at=T0 + timedelta(minutes=i), route="a" if i % 2 else "b"))
           for i in range(6)]
    assert [d.id for d in store.list()] == ids[::-1]                      # newest first
    assert [d.record_id for d in store.list(route="a")] == ["r5", "r3", "r1"]
    assert [d.record_id for d in store.list(since=T0 + timedelta(minutes=4))] == ["r5", "r4"]
    # A naive `since` is UTC, an aware one in another zone is converted.
    cst = datetime(2026, 11, 20, 18, 4, tzinfo=ZoneInfo("Asia/Shanghai"))     # = 10:04 UTC
    assert [d.record_id for d in store.list(since=cst)] == ["r5", "r4"]
    assert [d.record_id for d in store.list(since=datetime(2026, 11, 20, 10, 4))] == ["r5", "r4"]
    assert [d.record_id for d in store.list(limit=2, offset=1)] == ["r4", "r3"]
    store.discard([ids[0]], actor="li", reason="test data")
    assert [d.record_id for d in store.list(status="discarded")] == ["r0"]
    assert store.count(status="pending") == 5
    assert store.count(route="b", status="pending") == 2
    with pytest.raises(StoreError, match="unknown dead-letter status 'gone'"):
        store.list(status="gone")


def test_count_pending(store: Store) -> None:
    assert store.count_pending() == {}
    a1, _a2, _b1 = store.add(_dl("a", "1")), store.add(_dl("a", "2")), store.add(_dl("b", "1"))
    assert store.count_pending() == {"a": 2, "b": 1}
    store.discard([a1], actor="x", reason="y")
    assert store.count_pending() == {"a": 1, "b": 1}


def test_edit_only_pending_and_audited(store: Store) -> None:
    dl_id = store.add(_dl(value=b'{"amount": "12,5"}'))
    edited = store.edit(dl_id, b'{"amount": "12.5"}', actor="zhang", reason="decimal comma")
    assert edited.value == b'{"amount": "12.5"}'
    assert store.get(dl_id).value == b'{"amount": "12.5"}'
    [entry] = store.audit(dl_id)
    assert (entry.action, entry.actor, entry.reason) == ("edit", "zhang", "decimal comma")
    assert entry.details["before"] == '{"amount": "12,5"}'
    assert entry.details["after"] == '{"amount": "12.5"}'
    assert entry.at.tzinfo is not None
    store.discard([dl_id], actor="zhang", reason="duplicate")
    with pytest.raises(StoreError, match=f"dead letter {dl_id} is discarded, not pending"):
        store.edit(dl_id, b"{}", actor="zhang", reason="late")
    with pytest.raises(StoreError, match="must be bytes"):
        store.edit(dl_id, "text", actor="zhang", reason="x")  # type: ignore[arg-type]


def test_transitions_are_all_or_nothing(store: Store) -> None:
    a, b, c = (store.add(_dl(record_id=f"r{i}")) for i in range(3))
    store.discard([c], actor="li", reason="junk")
    with pytest.raises(DeadLetterConflict) as err:
        store.transition([a, b, c, "dl-missing"], "pending", "replaying", "replay", "li", "retry")
    assert (err.value.id, err.value.status) == (c, "discarded")
    assert isinstance(err.value, SyncbusError)
    with pytest.raises(DeadLetterNotFound):
        store.discard([a, "dl-missing"], actor="li", reason="x")
    assert store.get(a).status == store.get(b).status == "pending"      # nothing changed
    done = store.transition([a, b, a], "pending", "replaying", "replay", "li", "retry", {"topic": "crm.orders"})
    assert [d.id for d in done] == [a, b]
    assert all(d.status == "replaying" for d in done)
    with pytest.raises(DeadLetterConflict, match=f"dead letter {a} is replaying, not pending"):
        store.discard([a], actor="li", reason="x")
    with pytest.raises(StoreError, match="cannot go from discarded to pending"):
        store.transition([c], "discarded", "pending", "revert", "li", "x")
    assert store.discard([], actor="li", reason="nothing") == []


def test_abort_replay_returns_to_pending_and_stale_replays_revert(store: Store) -> None:
    a, b = store.add(_dl(record_id="1")), store.add(_dl(record_id="2"))
    store.begin_replay(a, "li", "x")
    store.abort_replay(a, "bus down")
    assert store.get(a).status == "pending"
    store.begin_replay(b, "li", "x")
    assert store.revert_stale_replays(datetime.now(UTC) - timedelta(minutes=1)) == []
    assert store.revert_stale_replays(datetime.now(UTC) + timedelta(seconds=1)) == [b]
    assert store.get(b).status == "pending"
    assert [e.action for e in store.audit(b)] == ["replay", "revert"]


def test_delivery_resolves_open_letters_only(store: Store) -> None:
    pending = store.add(_dl(record_id="p"))
    discarded = store.add(_dl(record_id="d"))
    store.discard([discarded], "li", "junk")
    replayed = store.add(_dl(record_id="r"))
    store.begin_replay(replayed, "li", "x")
    store.end_replay(replayed, {})
    other_sink = store.add(DeadLetter.from_record(_dl(record_id="s").to_record(), route="crm-order-to-erp",
                                                  reason="delivery", error="x", sink="finance"))
    resolved = store.record_outcomes("crm-order-to-erp", [
        Outcome("p", "delivered", "crm.orders", 0, 1), Outcome("d", "delivered", "crm.orders", 0, 2),
        Outcome("r", "delivered", "crm.orders", 0, 3),
        Outcome("s", "dead_lettered", "crm.orders", 0, 4, delivered_sinks=("erp-orders",))])
    assert sorted(resolved) == sorted([pending, replayed])
    assert store.get(pending).status == store.get(replayed).status == "delivered"
    assert store.get(discarded).status == "discarded"       # a person's decision stands
    assert store.get(other_sink).status == "pending"        # another target still failed
    assert [(e.action, e.actor) for e in store.audit(pending)] == [("resolve", "system")]
    # upsert: the same outcome twice (a re-processed record) is one row
    store.record_outcomes("crm-order-to-erp", [Outcome("p", "delivered", "crm.orders", 0, 1)])
    assert store.outcomes_for(["p", "s"]) == {("crm-order-to-erp", "p"): "delivered",
                                              ("crm-order-to-erp", "s"): "dead_lettered"}


def test_audit_rows(store: Store) -> None:
    a, b = store.add(_dl(record_id="1")), store.add(_dl(record_id="2"))
    store.edit(a, b"{}", actor="zhang", reason="fix")
    store.begin_replay(a, actor="zhang", reason="fixed")
    store.discard([b], actor="li", reason="test order")
    log = store.audit()
    assert [(e.dead_letter_id, e.action, e.actor) for e in log] == [
        (a, "edit", "zhang"), (a, "replay", "zhang"), (b, "discard", "li")]
    assert [e.action for e in store.audit(a)] == ["edit", "replay"]
    assert [e.dead_letter_id for e in store.audit(actor="li")] == [b]
    assert store.audit("dl-none") == []
    assert store.audit(limit=1)[0].action == "edit"
    assert json.dumps([e.to_json() for e in log])


def test_unknown_id_and_bad_input(store: Store) -> None:
    with pytest.raises(StoreError, match="no dead letter with id 'dl-nope'"):
        store.get("dl-nope")
    with pytest.raises(StoreError, match="no dead letter with id 'dl-nope'"):
        store.edit("dl-nope", b"x", actor="a", reason="b")
    with pytest.raises(StoreError, match="unknown reason 'oops'"):
        store.add(_dl(reason="oops"))
    with pytest.raises(StoreError, match="record_id"):
        store.add(_dl(record_id=""))
    with pytest.raises(StoreError, match="unknown stage 'teleported'"):
        store.add_trace([TraceEvent(record_id="r", stage="teleported")])


def test_trace_ordered_and_prefix_search(store: Store) -> None:
    store.add_trace([
        TraceEvent(record_id="18ab-1", stage="delivered", route="r", at=T0 + timedelta(seconds=3),
                   detail={"sink": "erp-orders", "status": 200}),
        TraceEvent(record_id="18ab-1", stage="received", at=T0, detail={"source": "crm-orders"}),
        TraceEvent(record_id="18ab-1", stage="mapped", route="r", at=T0 + timedelta(seconds=1)),
        TraceEvent(record_id="18ab-1", stage="attempt", route="r", at=T0 + timedelta(seconds=1)),
        TraceEvent(record_id="19cd-2", stage="received", at=T0),
        TraceEvent(record_id="1%_x", stage="received", at=T0),
    ])
    store.add_trace([])
    events = store.trace("18ab-1")
    # By time; same time keeps insertion order.
    assert [e.stage for e in events] == ["received", "mapped", "attempt", "delivered"]
    assert events[-1].detail == {"sink": "erp-orders", "status": 200}
    assert events[0].route is None and events[1].route == "r"
    assert store.trace("missing") == []
    assert store.find_record_ids("18") == ["18ab-1"]
    assert store.find_record_ids("1") == ["1%_x", "18ab-1", "19cd-2"]
    assert store.find_record_ids("1", limit=1) == ["1%_x"]
    assert store.find_record_ids("1%") == ["1%_x"]           # LIKE wildcards are literal
    assert store.purge_trace(T0 + timedelta(seconds=2)) == 5
    assert [e.stage for e in store.trace("18ab-1")] == ["delivered"]


def test_idempotency_claim_confirm_and_takeover(store: Store) -> None:
    first = store.idempotency_claim("crm-orders", "K-1", "rec-a", "fp1")
    assert (first.record_id, first.new, first.confirmed) == ("rec-a", True, False)
    with pytest.raises(IdempotencyInProgress):       # the first request is still publishing
        store.idempotency_claim("crm-orders", "K-1", "rec-b", "fp1")
    with pytest.raises(IdempotencyConflict):         # same key, different body
        store.idempotency_claim("crm-orders", "K-1", "rec-b", "fp2")
    store.idempotency_confirm("crm-orders", "K-1", "rec-a", "crm.orders", 0, 5)
    again = store.idempotency_claim("crm-orders", "K-1", "rec-c", "fp1")
    assert (again.record_id, again.new, again.confirmed, again.offset) == ("rec-a", False, True, 5)
    assert store.idempotency_claim("shop", "K-1", "rec-c", "fp9").new          # keys are per source
    assert not store.idempotency_release("crm-orders", "K-1", "rec-a")          # confirmed: kept
    # A claim left pending by a crash is taken over with its ORIGINAL record id.
    store.idempotency_claim("crm-orders", "K-2", "rec-x", "fp")
    assert ("crm-orders", "K-2", "rec-x") in store.unconfirmed_claims(datetime.now(UTC) + timedelta(seconds=1))
    taken = store.idempotency_claim("crm-orders", "K-2", "rec-y", "fp", in_progress_for=0)
    assert (taken.record_id, taken.new) == ("rec-x", True)
    assert store.idempotency_release("crm-orders", "K-2", "rec-x")
    assert store.idempotency_claim("crm-orders", "K-2", "rec-z", "fp").record_id == "rec-z"   # free again
    assert store.purge_idempotency(datetime.now(UTC) + timedelta(seconds=1)) == 3


def test_idempotency_claim_race_between_threads(db_file: Path) -> None:
    # Separate Store objects = separate pools, as two processes would have.
    stores = [Store(sqlite_url(db_file)) for _ in range(4)]
    barrier = threading.Barrier(16)

    def claim(n: int) -> str:
        barrier.wait()
        try:
            got = stores[n % 4].idempotency_claim("crm-orders", "same-key", f"rec-{n}", "fp")
        except IdempotencyInProgress:
            return "in-progress"
        return got.record_id if got.new else "dup"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(claim, range(16)))
    winners = [r for r in results if r.startswith("rec-")]
    assert len(winners) == 1
    assert results.count("in-progress") == 15
    for s in stores:
        s.close()


def test_dead_letter_dedupe_race_between_threads(db_file: Path) -> None:
    stores = [Store(sqlite_url(db_file)) for _ in range(4)]
    barrier = threading.Barrier(8)

    def add(n: int) -> str:
        barrier.wait()
        return stores[n % 4].add(_dl(attempts=1))

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(add, range(8)))
    assert len(set(ids)) == 1
    assert stores[0].get(ids[0]).attempts == 8
    for s in stores:
        s.close()


async def test_shares_the_file_with_a_running_bus(db_file: Path) -> None:
    bus = EmbeddedBus(str(db_file))
    await bus.start()
    store = Store(sqlite_url(db_file))

    async def publish_many() -> None:
        for i in range(100):
            await bus.publish("t", str(i).encode())

    def store_work() -> None:
        for i in range(30):
            store.add(_dl(record_id=f"r{i}"))
            store.add_trace([TraceEvent(record_id=f"r{i}", stage="dead_lettered", route="x")])

    await asyncio.gather(publish_many(), asyncio.to_thread(store_work))
    assert store.count() == 30
    assert await bus.high_water(["t"]) == {"t": 100}
    store.close()
    await bus.stop()


def test_unusable_url_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a SQLAlchemy database URL"):
        Store("no url at all")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        Store(sqlite_url(blocker / "sub" / "db.sqlite"))


def test_pending_summary_and_last_delivered(store: Store) -> None:
    store.add(_dl(record_id="a", at=T0))
    store.add(_dl(record_id="b", at=T0 + timedelta(hours=1)))
    store.add(_dl(route="other", record_id="c", at=T0 + timedelta(hours=2)))
    counts, oldest = store.pending_summary()
    assert counts == {"crm-order-to-erp": 2, "other": 1}
    assert oldest == {"crm-order-to-erp": T0.timestamp(), "other": (T0 + timedelta(hours=2)).timestamp()}
    assert store.last_delivered() == {}
    before = datetime.now(UTC).timestamp()
    store.record_outcomes("r1", [Outcome("x", "delivered", "t", 0, 1), Outcome("y", "skipped", "t", 0, 2)])
    store.record_outcomes("r2", [Outcome("z", "dead_lettered", "t", 0, 3)])
    last = store.last_delivered()
    assert list(last) == ["r1"] and before - 1 <= last["r1"] <= datetime.now(UTC).timestamp() + 1


def test_trace_details_of_any_json_kind_are_stored_alike(store: Store) -> None:
    """PostgreSQL wrote JSON with the standard library (a Decimal failed the whole batch); SQLite with orjson."""
    from decimal import Decimal

    store.add_trace([TraceEvent(record_id="rec-j", stage="mapped",
                                detail={"amount": Decimal("12.50"), "at": T0, 1: "int key", "nan": float("nan")})])
    [event] = store.trace("rec-j")
    assert event.detail == {"amount": "12.50", "at": T0.isoformat(), "1": "int key", "nan": None}
