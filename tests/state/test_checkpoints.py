"""Checkpoints and schedule slots (state/checkpoints.py), on SQLite and on a real PostgreSQL.

The cross-process test is the one that matters for several nodes: many
processes claim the same slot at once and exactly one wins.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncbus.state.checkpoints import CheckpointError, CheckpointStore

SLOT = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(url: str) -> Iterator[CheckpointStore]:
    s = CheckpointStore(url)
    yield s
    s.close()


def test_cursor_round_trip_and_replace(store: CheckpointStore) -> None:
    assert store.get_checkpoint("erp") is None
    store.put_checkpoint("erp", {"changed_at": "2026-11-20T10:00:00", "id": 7})
    assert store.get_checkpoint("erp") == {"changed_at": "2026-11-20T10:00:00", "id": 7}
    store.put_checkpoint("erp", 42)
    assert store.get_checkpoint("erp") == 42
    assert store.get_checkpoint("other") is None


def test_cursor_must_be_json(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        store.put_checkpoint("erp", datetime.now(UTC))
    assert store.get_checkpoint("erp") is None


def test_merge_keeps_the_furthest(store: CheckpointStore) -> None:
    def later(stored: object, seen: object) -> object:
        return seen if stored is None else max(stored, seen)  # type: ignore[type-var]

    assert store.merge_checkpoint("erp", 10, later) == 10
    store.put_checkpoint("erp", 50)  # the running node moved on meanwhile
    assert store.merge_checkpoint("erp", 30, later) == 50
    assert store.get_checkpoint("erp") == 50


def test_a_slot_is_claimed_once(store: CheckpointStore) -> None:
    assert store.last_slot("erp") is None
    assert store.claim_slot("erp", SLOT, "node-a")
    assert not store.claim_slot("erp", SLOT, "node-b")      # held, not stale
    assert store.claim_slot("erp", SLOT, "node-a")          # the holder itself may claim again
    assert store.claim_slot("erp", SLOT + timedelta(days=1), "node-b")  # another slot
    store.finish_slot("erp", SLOT, ok=True, detail="12 records")
    assert not store.claim_slot("erp", SLOT, "node-a")      # finished slots never run again
    assert store.last_slot("erp") == SLOT + timedelta(days=1)
    [newer, older] = store.slots("erp")
    assert (older.slot, older.ok, older.detail, older.node) == (SLOT, True, "12 records", "node-a")
    assert newer.finished_at is None


def test_a_stale_claim_is_taken_over_and_renewal_keeps_it(store: CheckpointStore) -> None:
    assert store.claim_slot("erp", SLOT, "node-a", lease=60)
    assert not store.claim_slot("erp", SLOT, "node-b", lease=60)
    assert store.claim_slot("erp", SLOT, "node-b", lease=0)  # node-a's claim is older than the lease
    assert not store.renew_slot("erp", SLOT, "node-a")       # no longer node-a's
    assert store.renew_slot("erp", SLOT, "node-b")


def test_release_gives_the_slot_back(store: CheckpointStore) -> None:
    assert store.claim_slot("erp", SLOT, "node-a")
    assert not store.release_slot("erp", SLOT, "node-b")
    assert store.release_slot("erp", SLOT, "node-a")
    assert store.last_slot("erp") is None
    assert store.claim_slot("erp", SLOT, "node-b")
    store.finish_slot("erp", SLOT, ok=False, detail="db down")
    assert not store.release_slot("erp", SLOT, "node-b")  # a finished slot stays


def test_purge_keeps_the_latest_slot(store: CheckpointStore) -> None:
    for day in range(3):
        slot = SLOT + timedelta(days=day)
        store.claim_slot("erp", slot, "n")
        store.finish_slot("erp", slot, ok=True)
    assert store.purge_slots(SLOT + timedelta(days=10)) == 2
    assert [s.slot for s in store.slots("erp")] == [SLOT + timedelta(days=2)]


CLAIMER = textwrap.dedent("""
    import sys
    from datetime import datetime
    from syncbus.state.checkpoints import CheckpointStore
    store = CheckpointStore(sys.argv[1])
    print(store.claim_slot("erp", datetime.fromisoformat(sys.argv[2]), sys.argv[3]))
""")


def test_many_processes_claim_a_slot_exactly_once(url: str) -> None:
    CheckpointStore(url).close()  # tables first, so the race is on the claim, not on CREATE TABLE
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, SLOT.isoformat(), f"node-{i}"],
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(results) == ["False", "False", "False", "True"]
