"""Bulk replay, bulk discard, edit and the audit: the service code under the CLI, the API and the console."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.dlq.filters import DeadLetterFilter, FilterError
from syncbus.dlq.operations import (
    OperationError,
    Selection,
    discard_letters,
    edit_letter,
    list_audit,
    replay_letters,
)
from syncbus.record import H_DEAD_LETTER, H_REPLAY_ROUTE
from syncbus.state import DeadLetterConflict

VERSIONS: Mapping[str, int] = {"orders": 1}


def test_a_selection_is_ids_or_a_non_empty_filter():
    with pytest.raises(OperationError, match="give dead-letter ids, or a filter"):
        Selection.of([], DeadLetterFilter())
    with pytest.raises(OperationError, match="not both"):
        Selection.of(["dl-1"], DeadLetterFilter(route="r"))
    sel = Selection.of([" dl-1 ", "dl-1", ""], None)
    assert sel.ids == ("dl-1",) and not sel.is_bulk
    assert Selection.of(None, DeadLetterFilter(route="r")).filter.status == "pending"


async def test_replay_by_filter_goes_oldest_first_and_skips_what_does_not_match(store, add, bus: EmbeddedBus):
    ids = add(3, route="orders")
    other = add(1, route="employees")
    seen: list[tuple[int, int, bool]] = []
    bulk = await replay_letters(store, bus, Selection.of(None, DeadLetterFilter(route="orders")), actor="alice",
                                reason="target fixed", versions=VERSIONS,
                                progress=lambda done, total, r: seen.append((done, total, r.ok)))
    assert [r.id for r in bulk.results] == ids and bulk.ok
    assert seen == [(1, 3, True), (2, 3, True), (3, 3, True)]
    assert bulk.summary() == "3 replayed"
    assert {store.get(i).status for i in ids} == {"replayed"} and store.get(other[0]).status == "pending"
    consumer = bus.consumer("probe", ["crm.orders"])
    await consumer.start()
    records = await consumer.fetch(10, 2.0)
    await consumer.stop()
    assert [r.headers[H_DEAD_LETTER] for r in records] == ids
    assert {r.headers[H_REPLAY_ROUTE] for r in records} == {"orders"}
    assert [(a.action, a.actor, a.reason) for a in store.audit(ids[0])][:1] == [("replay", "alice", "target fixed")]


async def test_needs_fix_letters_are_refused_unless_forced(store, add, bus: EmbeddedBus):
    [mapping] = add(1, reason="mapping")
    [delivery] = add(1, reason="delivery")
    sel = Selection.of(None, DeadLetterFilter(route="orders"))
    bulk = await replay_letters(store, bus, sel, actor="a", reason="", versions=VERSIONS, override='"force": true')
    by_id = {r.id: r for r in bulk.results}
    assert by_id[delivery].ok
    assert by_id[mapping].refusal == "needs_fix" and '"force": true' in by_id[mapping].message
    assert store.get(mapping).status == "pending" and store.audit(mapping) == []      # refused: nothing audited
    assert bulk.summary() == '1 replayed, 1 refused (need an edit, a newer mapping or --force)'
    forced = await replay_letters(store, bus, Selection((mapping,)), actor="a", reason="", versions=VERSIONS,
                                  force=True)
    assert forced.ok and store.get(mapping).status == "replayed"


async def test_replay_by_id_reports_conflicts_and_unknown_ids_and_does_the_rest(store, add, bus: EmbeddedBus):
    a, b = add(2)
    store.discard([a], "bob", "duplicate")
    bulk = await replay_letters(store, bus, Selection.of([a, "dl-nope", b], None), actor="alice", reason="x",
                                versions=VERSIONS)
    refusals = {r.id: (r.refusal, r.status) for r in bulk.results}
    assert refusals == {a: ("conflict", "discarded"), "dl-nope": ("not_found", ""), b: (None, "replayed")}
    assert not bulk.ok and bulk.summary() == "1 replayed, 1 not pending, 1 not found"


async def test_rate_limits_a_bulk_replay(store, add, bus: EmbeddedBus):
    add(12)
    started = time.monotonic()
    bulk = await replay_letters(store, bus, Selection.of(None, DeadLetterFilter(route="orders")), actor="a",
                                reason="", versions=VERSIONS, rate=20.0)
    elapsed = time.monotonic() - started
    assert bulk.count(None) == 12
    assert elapsed >= 0.45, elapsed        # (12 - 2 burst) / 20 per second = 0.5 s


class RefusingBus(EmbeddedBus):
    """The real embedded bus, except that it refuses every publish (the bus is down)."""

    publishes = 0

    async def publish(self, *args: object, **kwargs: object) -> object:
        RefusingBus.publishes += 1
        raise ConnectionError("broker down: secret-internal-detail")


async def test_a_bulk_replay_stops_when_the_bus_keeps_refusing(store, add, tmp_path):
    ids = add(6)
    down = RefusingBus(str(tmp_path / "down.db"))
    await down.start()
    try:
        bulk = await replay_letters(store, down, Selection.of(None, DeadLetterFilter(route="orders")), actor="a",
                                    reason="", versions=VERSIONS)
    finally:
        await down.stop()
    assert RefusingBus.publishes == 3
    assert [r.refusal for r in bulk.results] == ["bus"] * 3 + ["not_attempted"] * 3
    assert all("secret-internal-detail" not in r.message for r in bulk.results)   # to the log, not the user
    assert {store.get(i).status for i in ids} == {"pending"}                        # reverted, nothing lost
    assert bulk.summary() == "0 replayed, 3 not taken by the bus, 3 not attempted (stopped)"


def test_bulk_discard_needs_a_reason_and_survives_a_letter_that_moved_on(store, add):
    ids = add(5)
    sel = Selection.of(None, DeadLetterFilter(route="orders"))
    with pytest.raises(OperationError, match="needs a reason"):
        discard_letters(store, sel, actor="alice", reason="  ")
    store.discard([ids[2]], "bob", "mine")                        # someone else was faster
    bulk = discard_letters(store, Selection.of(ids, None), actor="alice", reason="test data")
    assert [r.ok for r in bulk.results] == [True, True, False, True, True]
    assert bulk.results[2].refusal == "conflict" and bulk.results[2].status == "discarded"
    assert [store.get(i).status for i in ids] == ["discarded"] * 5
    audit = list_audit(store, actor="alice", action="discard")
    assert sorted(a.dead_letter_id for a in audit) == sorted(ids[:2] + ids[3:])
    assert audit[0].details["selection"] == " ".join(ids)
    single = add(1)
    assert discard_letters(store, Selection.of(single, None), actor="a", reason="").results[0].ok  # one: optional


def test_edit_validates_and_ignores_a_reformat(store, add):
    [dl_id] = add(1, reason="mapping", value=b'{"order_id":"SO-1","amount":"five"}')
    with pytest.raises(OperationError, match="needs a reason"):
        edit_letter(store, dl_id, b'{"amount": 5}', actor="a", reason="")
    with pytest.raises(OperationError, match="not valid JSON"):
        edit_letter(store, dl_id, b'{"amount": 5', actor="a", reason="fix")
    with pytest.raises(OperationError, match="empty"):
        edit_letter(store, dl_id, b"  \n", actor="a", reason="fix")
    _, changed = edit_letter(store, dl_id, b'{\n  "order_id": "SO-1",\n  "amount": "five"\n}', actor="a",
                             reason="only indented")
    assert not changed and store.audit(dl_id) == []
    dl, changed = edit_letter(store, dl_id, b'{"order_id": "SO-1", "amount": 5}', actor="alice", reason="typo")
    assert changed and dl.value == b'{"order_id": "SO-1", "amount": 5}'
    [entry] = list_audit(store, dl_id=dl_id)
    assert (entry.action, entry.actor) == ("edit", "alice")
    assert entry.details["before"] == '{"order_id":"SO-1","amount":"five"}'
    store.discard([dl_id], "a", "gone")
    with pytest.raises(DeadLetterConflict):
        edit_letter(store, dl_id, b'{"amount": 6}', actor="a", reason="late")


def test_list_audit_refuses_unknown_actions(store):
    with pytest.raises(FilterError, match="action 'delete'"):
        list_audit(store, action="delete")
